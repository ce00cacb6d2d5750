"""The in-house fleet as Redis holds it: membership, drain, health and load, shared by
every replica.

An endpoint's capacity is its slots while it is a member, not draining and not
ejected. The claim script places each in-house job on the usable endpoint with the most
free slots, counting every replica's jobs, so replicas never overbook a renderer.

Health: an endpoint that cannot be reached (a render could not connect, or it turned a
job away as full) or fails its gRPC health probe `eject_after` times in a row is ejected:
it gets no work and its slots stop counting, so the policy spills or holds instead. One
replica at a time (the holder of the fleet lease) probes every endpoint each
`probe_interval_s`, and re-admits an ejected one as soon as it serves again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as redis

from scheduler.config import RendererEndpoint
from scheduler.dispatch.leader import LeaderLoop
from scheduler.store import keys
from scheduler.store.jobstore import load_script
from scheduler.telemetry.outage import Outage

log = logging.getLogger(__name__)

ENDPOINT_STATES = ("active", "draining", "ejected")


@dataclass(frozen=True)
class Endpoint:
    address: str
    slots: int
    busy: int
    """Jobs placed on it, by every replica."""
    draining: bool
    down: str
    """Why it was ejected; empty while it is healthy."""
    failures: int
    """Consecutive failures since its last success."""

    @property
    def usable(self) -> bool:
        return not self.draining and not self.down

    @property
    def state(self) -> str:
        if self.down:
            return "ejected"
        return "draining" if self.draining else "active"


@dataclass(frozen=True)
class Capacity:
    """What the usable part of the fleet offers the policy."""

    slots: int
    busy: int


def capacity(endpoints: Sequence[Endpoint]) -> Capacity:
    usable = [e for e in endpoints if e.usable]
    return Capacity(
        slots=sum(e.slots for e in usable), busy=sum(min(e.busy, e.slots) for e in usable)
    )


def decode_view(rows: Sequence[Sequence[object]]) -> list[Endpoint]:
    return [
        Endpoint(
            address=str(address),
            slots=int(str(slots)),
            busy=int(str(busy)),
            draining=bool(int(str(draining))),
            down=str(down),
            failures=int(str(failures)),
        )
        for address, slots, busy, draining, down, failures in rows
    ]


class Fleet:
    def __init__(self, client: redis.Redis, *, eject_after: int) -> None:
        self.client = client
        self._eject_after = eject_after
        self.view_script = client.register_script(load_script("fleet_view"))
        self._health = client.register_script(load_script("fleet_health"))
        self._edit = client.register_script(load_script("fleet_edit"))
        self._seed = client.register_script(load_script("fleet_seed"))

    async def seed(self, endpoints: Sequence[RendererEndpoint]) -> bool:
        """Adds the configured endpoints, unless this same list was seeded before."""
        seed = ",".join(f"{e.address}={e.slots}" for e in endpoints)
        pairs = [item for e in endpoints for item in (e.address, e.slots)]
        return bool(await self._seed(args=[seed, *pairs]))

    async def view(self) -> list[Endpoint]:
        return decode_view(await self.view_script())

    async def edit(
        self, action: Literal["add", "drain", "remove"], address: str, slots: int = 0
    ) -> bool:
        """Returns whether the address was a member before."""
        return bool(await self._edit(args=[action, address, slots]))

    async def report(self, address: str, failure: str) -> str:
        """Records a success ("") or a failure of the endpoint; returns "ejected" or
        "readmitted" when that changed its state, else ""."""
        changed: str = await self._health(args=[address, failure, self._eject_after])
        if changed == "ejected":
            log.warning("in-house renderer %s ejected: %s", address, failure)
        elif changed == "readmitted":
            log.warning("in-house renderer %s re-admitted: it serves again", address)
        return changed


Probe = Callable[[str, float], Awaitable[str]]
"""Checks one address within a timeout: "" if it serves, else why not."""


class FleetMonitor:
    """Probes the fleet while this replica holds the fleet lease. Owned, started and
    stopped by the scheduler server."""

    def __init__(self, fleet: Fleet, probe: Probe, *, owner: str, interval_s: float) -> None:
        self._fleet = fleet
        self._probe = probe
        self._interval_s = interval_s
        self._loop = LeaderLoop(
            fleet.client,
            name="fleet-monitor",
            lease_key=keys.FLEET_LEASE,
            owner=owner,
            interval_s=interval_s,
            work=self.probe_once,
            outage=Outage("fleet health probes", log),
        )

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def probe_once(self) -> None:
        endpoints = await self._fleet.view()
        timeout_s = max(0.2, min(2.0, self._interval_s))
        results = await asyncio.gather(*(self._probe(e.address, timeout_s) for e in endpoints))
        for endpoint, failure in zip(endpoints, results, strict=True):
            # Writes only what changes something: a healthy endpoint with no failures
            # on record needs none.
            if failure or endpoint.down or endpoint.failures:
                await self._fleet.report(endpoint.address, failure)
