"""`spillway fleet`: the in-house fleet's membership, edited in Redis at run time.

Every replica reads the fleet from Redis at each decision, so a change takes effect
at once, everywhere, without a restart. It is an operator's tool: it needs the Redis
URL (`REDIS_URL`), not an API key.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import redis.asyncio as redis

from scheduler.config import parse_address
from scheduler.dispatch.fleet import Endpoint, Fleet

ACTIONS = ("list", "add", "drain", "remove")


async def run(
    redis_url: str, action: str, address: str | None, slots: int, *, as_json: bool = False
) -> tuple[int, str]:
    """Returns an exit status and what to print."""
    if action != "list":
        if not address:
            return 2, f"spillway fleet {action}: give the renderer's host:port"
        try:
            parse_address(address)
        except ValueError as exc:
            return 2, f"spillway fleet {action}: {address!r}: {exc}"
        if action == "add" and slots < 1:
            return 2, "spillway fleet add: --slots must be at least 1"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        fleet = Fleet(client, eject_after=1)
        if action == "list":
            endpoints = await fleet.view()
            return 0, to_json(endpoints) if as_json else to_table(endpoints)
        was = await fleet.edit(action, address or "", slots)  # type: ignore[arg-type]
        if not was and action in ("drain", "remove"):
            return 1, f"spillway fleet {action}: {address} is not in the fleet"
        done = {
            "add": f"{'updated' if was else 'added'} {address} ({slots} slots)",
            "drain": f"draining {address}: no new work; what runs there finishes",
            "remove": f"removed {address}; what runs there finishes",
        }[action]
        return 0, done
    except redis.ConnectionError as exc:
        return 1, f"spillway fleet: Redis at {redis_url} unavailable: {exc}"
    finally:
        await client.aclose()


def to_table(endpoints: list[Endpoint]) -> str:
    if not endpoints:
        return "no in-house renderers (spillway fleet add HOST:PORT --slots N)"
    lines = [f"{'address':<28}{'slots':>6}{'busy':>6}  state"]
    for e in endpoints:
        state = e.state + (f": {e.down}" if e.down else "")
        lines.append(f"{e.address:<28}{e.slots:>6}{e.busy:>6}  {state}")
    return "\n".join(lines)


def to_json(endpoints: list[Endpoint]) -> str:
    return json.dumps([{**asdict(e), "state": e.state} for e in endpoints], sort_keys=True)
