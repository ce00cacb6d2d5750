"""Work that one replica at a time does: the holder of a Redis lease runs it every
interval; the others keep trying to take the lease, so the work moves on when its
holder dies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import redis.asyncio as redis

from scheduler.store.jobstore import load_script
from scheduler.tasks import cancel_and_wait, cancel_requested
from scheduler.telemetry.outage import Outage


class LeaderLoop:
    """Runs `work` every `interval_s` while this replica holds `lease_key`; failures are
    logged once per outage. Owned, started and stopped by its component."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        name: str,
        lease_key: str,
        owner: str,
        interval_s: float,
        work: Callable[[], Awaitable[object]],
        outage: Outage,
    ) -> None:
        self._lease = client.register_script(load_script("lease"))
        self._name = name
        self._lease_key = lease_key
        self._owner = owner
        self._interval_s = interval_s
        self._work = work
        self._outage = outage
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        # The lease outlives a missed interval or two, not a dead holder.
        ttl_ms = int(self._interval_s * 3 * 1000)
        while True:
            try:
                if await self._lease(keys=[self._lease_key], args=[self._owner, ttl_ms]):
                    await self._work()
                self._outage.ok()
            except Exception as exc:
                if cancel_requested():
                    raise asyncio.CancelledError from exc
                self._outage.failed(exc)
            await asyncio.sleep(self._interval_s)
