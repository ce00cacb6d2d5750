"""Live job events: one pub/sub connection per replica feeds every local watcher.

Each event is appended to the job's capped stream and published on the job's channel
by the same Lua script. The hub holds one pattern subscription to every job's channel,
made at start: a watcher costs no Redis command, and a replica hears each event once,
whoever watches it. A watcher first registers (with the hub), then reads the stream's
backlog, then follows the live events, skipping what the backlog already gave, so
nothing falls between the two. After a reconnect the hub tells watchers to read the
stream again, since pub/sub drops what is sent while a connection is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import redis.asyncio as redis

from scheduler.store import keys
from scheduler.store.jobs import Event, stream_id_after
from scheduler.store.jobstore import JobStore
from scheduler.tasks import cancel_and_wait, cancel_requested

log = logging.getLogger(__name__)

RESYNC: Final = None
"""Put on a watcher's queue when live messages may have been lost."""

LiveQueue = asyncio.Queue[Event | None]

_PATTERN = keys.CHANNEL_PREFIX + "*"
_CONFIRM_S = 10.0


class EventHub:
    def __init__(self, client: redis.Redis) -> None:
        self._pubsub = client.pubsub()
        self._watchers: dict[str, set[LiveQueue]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribes, and returns once Redis confirmed it: an event published after
        `start()` reaches the watchers."""
        await self._pubsub.psubscribe(_PATTERN)
        async with asyncio.timeout(_CONFIRM_S):
            while (await self._pubsub.get_message(timeout=_CONFIRM_S)) is None:
                pass
        self._task = asyncio.create_task(self._read(), name="event-hub")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self._pubsub.aclose()

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[LiveQueue]:
        """A queue of the job's live events from now on, until the block exits."""
        queue: LiveQueue = asyncio.Queue()
        watchers = self._watchers.setdefault(job_id, set())
        watchers.add(queue)
        try:
            yield queue
        finally:
            watchers.discard(queue)
            if not watchers and self._watchers.get(job_id) is watchers:
                del self._watchers[job_id]

    async def _read(self) -> None:
        while True:
            try:
                async for message in self._pubsub.listen():
                    self._dispatch(message)
            except Exception as exc:
                if cancel_requested():
                    raise asyncio.CancelledError from exc
                if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
                    log.warning("event hub lost its Redis connection, reconnecting: %s", exc)
                    await asyncio.sleep(0.5)
                else:
                    log.exception("event hub failed on a message; carrying on")

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] == "psubscribe":
            # Subscribed again after a reconnect: messages may have been lost.
            for watchers in self._watchers.values():
                for queue in watchers:
                    queue.put_nowait(RESYNC)
            return
        if message["type"] != "pmessage":
            return
        job_id = _text(message["channel"]).removeprefix(keys.CHANNEL_PREFIX)
        queues = self._watchers.get(job_id)
        if not queues:
            return
        event_id, _, data = _text(message["data"]).partition(" ")
        event = Event.decode(job_id, event_id, data)
        for queue in queues:
            queue.put_nowait(event)


async def watch(
    store: JobStore, hub: EventHub, job_id: str, after: str = ""
) -> AsyncIterator[Event]:
    """The job's events after the stream id `after`, in order, ending with the terminal
    one (or at once, if the caller has already seen it)."""
    async with hub.subscribe(job_id) as live:
        last = after
        while True:
            # The status is read before the backlog: if it is terminal, the backlog
            # holds the terminal event unless the caller resumed after it.
            job = await store.get(job_id)
            for event in await store.events_after(job_id, last):
                yield event
                last = event.id
                if event.terminal:
                    return
            if job is None or job.status.terminal:
                return
            while (news := await live.get()) is not RESYNC:
                if last and not stream_id_after(news.id, last):
                    continue
                yield news
                last = news.id
                if news.terminal:
                    return


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
