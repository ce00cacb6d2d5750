"""`spillway webhooks`: a tenant's webhook endpoints through the REST gateway, with the
caller's API key: a table for people, `--json` for scripts, one line on stderr for an
expected failure. The signing secret is printed only by create and rotate-secret.

Exit codes: 0 done; 1 the gateway refused the request (or a test got no 2xx); 2 bad
usage; 3 no such endpoint; 4 the gateway could not be reached.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx

from scheduler.cli.jobs import FAILED, NOT_FOUND, OK, UNREACHABLE, USAGE, fail, table, when
from scheduler.cli.rest_client import ApiError, RestClient

ACTIONS = (
    "list",
    "create",
    "get",
    "update",
    "delete",
    "rotate-secret",
    "test",
    "deliveries",
    "event-types",
)
_NEEDS_ID = frozenset(ACTIONS) - {"list", "create", "event-types"}
_PATH = "/webhook_endpoints"


async def run(args: argparse.Namespace) -> int:
    name = f"spillway webhooks {args.action}"
    if args.action in _NEEDS_ID and not args.id:
        return fail(name, "give the endpoint's id (we_...)", USAGE)
    if args.action == "create" and not (args.url and args.name):
        return fail(name, "give --url and --name (and --event, default both)", USAGE)
    try:
        async with RestClient(args.base_url, args.api_key) as client:
            return await _run(client, args)
    except ApiError as exc:
        return fail(name, str(exc), NOT_FOUND if exc.status == 404 else FAILED)
    except httpx.TransportError as exc:
        return fail(name, f"cannot reach {args.base_url}: {exc}", UNREACHABLE)


async def _run(client: RestClient, args: argparse.Namespace) -> int:
    one = f"{_PATH}/{args.id}"
    action = args.action
    if action == "list":
        page = await client.call("GET", _PATH, params={"limit": args.limit})
        return _print(args, page, to_table(page["data"]))
    if action == "event-types":
        types = await client.call("GET", "/webhook_event_types")
        return _print(args, types, "\n".join(types["data"]))
    if action == "create":
        events = args.event or ["video.completed", "video.failed"]
        body = {"name": args.name, "url": args.url, "event_types": events}
        return _print_endpoint(args, await client.call("POST", _PATH, body=body))
    if action == "get":
        return _print_endpoint(args, await client.call("GET", one))
    if action == "update":
        changes = {k: v for k, v in (("name", args.name), ("url", args.url)) if v}
        if args.event:
            changes["event_types"] = args.event
        return _print_endpoint(args, await client.call("POST", one, body=changes))
    if action == "delete":
        deleted = await client.call("DELETE", one)
        return _print(args, deleted, f"deleted {deleted['id']}")
    if action == "rotate-secret":
        body = {"keep_old_secret_active_for_24_hours": not args.revoke_old}
        return _print_endpoint(args, await client.call("POST", f"{one}/rotate_secret", body=body))
    if action == "test":
        event = (args.event or ["video.completed"])[0]
        result = await client.call("POST", f"{one}/test", body={"event_type": event})
        _print(args, result, f"{event} -> HTTP {result['status_code']}")
        return OK if 200 <= result["status_code"] < 300 else FAILED
    log = await client.call("GET", f"{one}/deliveries", params={"limit": args.limit})
    return _print(args, log, deliveries_table(log["data"]))


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> int:
    print(json.dumps(data, sort_keys=True) if args.json else text)
    return OK


def _print_endpoint(args: argparse.Namespace, endpoint: dict[str, Any]) -> int:
    fields = [
        ("id", endpoint["id"]),
        ("name", endpoint["name"]),
        ("url", endpoint["url"]),
        ("events", ", ".join(endpoint["event_types"])),
        ("created", when(endpoint.get("created_at"))),
        ("secret", endpoint.get("signing_secret") or endpoint.get("signing_secret_hint")),
        ("disabled", endpoint.get("disabled_reason")),
    ]
    text = "\n".join(f"{k:<10}{v}" for k, v in fields if v)
    if endpoint.get("signing_secret"):
        text += "\n(the secret is shown only now: store it where your receiver reads it)"
    return _print(args, endpoint, text)


def to_table(endpoints: list[dict[str, Any]]) -> str:
    if not endpoints:
        return "no webhook endpoints"
    rows = [("id", "name", "url", "events", "state")]
    rows += [
        (
            e["id"],
            e["name"],
            e["url"],
            ",".join(e["event_types"]),
            "disabled" if e.get("disabled_reason") else "enabled",
        )
        for e in endpoints
    ]
    return table(rows)


def deliveries_table(deliveries: list[dict[str, Any]]) -> str:
    if not deliveries:
        return "no deliveries"
    rows = [("time (UTC)", "event", "video", "attempt", "status", "outcome", "error")]
    rows += [
        (
            when(d["created_at"]),
            d["event_type"] or "",
            d["video_id"] or "",
            str(d["attempt"]),
            str(d["status_code"] or "-"),
            d["outcome"],
            d["error"] or "",
        )
        for d in deliveries
    ]
    return table(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("id", nargs="?", help="the endpoint's id (we_...), where one is needed")
    parser.add_argument("--name", help="for create and update")
    parser.add_argument("--url", help="for create and update: the receiver's https URL")
    parser.add_argument(
        "--event",
        action="append",
        choices=("video.completed", "video.failed"),
        help="for create and update (repeat for both; create defaults to both), and test",
    )
    parser.add_argument(
        "--revoke-old",
        action="store_true",
        help="for rotate-secret: the old secret stops signing at once (default: 24 h more)",
    )
    parser.add_argument("--limit", type=int, default=20, help="for list and deliveries")
    parser.add_argument("--json", action="store_true", help="JSON instead of text")
