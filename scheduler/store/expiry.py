"""Finished jobs' MP4s are deleted at the job's `expires_at`, when Redis forgets the job.

Completing a job indexes its object by expiry time in the same Lua step
(`keys.OBJECT_EXPIRY`); one replica at a time, the holder of `keys.EXPIRY_LEASE`,
deletes what is due and then drops it from the index, so an S3 outage delays deletion
but never loses it. Deleting is idempotent: a key deleted twice (a lease that moved
mid-sweep, a video the caller deleted first) costs one extra request.
"""

from __future__ import annotations

import logging
from typing import cast

import redis.asyncio as redis

from scheduler.dispatch.leader import LeaderLoop
from scheduler.store import keys
from scheduler.store.storage import ObjectStore, StorageError
from scheduler.telemetry.outage import CONNECTION_ERRORS, Outage

log = logging.getLogger(__name__)

BATCH = 100


class ObjectExpiry:
    """Owned, started and stopped by the scheduler server."""

    def __init__(
        self, client: redis.Redis, objects: ObjectStore, *, owner: str, interval_s: float
    ) -> None:
        self._r = client
        self._objects = objects
        self._loop = LeaderLoop(
            client,
            name="object-expiry",
            lease_key=keys.EXPIRY_LEASE,
            owner=owner,
            interval_s=interval_s,
            work=self._sweep_all,
            outage=Outage("expiring objects", log, (*CONNECTION_ERRORS, StorageError)),
        )

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def sweep_once(self) -> int:
        """Deletes up to `BATCH` objects that are due; returns how many."""
        seconds, micros = await self._r.time()
        now_ms = seconds * 1000 + micros // 1000
        due = cast(
            list[str],
            await self._r.zrangebyscore(keys.OBJECT_EXPIRY, "-inf", now_ms, start=0, num=BATCH),
        )
        for key in due:
            await self._objects.delete(key)
        if due:
            await self._r.zrem(keys.OBJECT_EXPIRY, *due)
            log.info("deleted %d expired objects", len(due))
        return len(due)

    async def _sweep_all(self) -> None:
        while await self.sweep_once() == BATCH:
            pass
