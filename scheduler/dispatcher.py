"""The dispatcher: takes queued jobs when the pool has room, renders, uploads, completes.

It blocks on Redis for work (a wake token that every submit leaves), never on a timer.
Its one timer is lease upkeep: renewing the leases of the jobs it runs, and reclaiming
jobs whose replica stopped renewing theirs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass

from scheduler.events import EventHub, LiveQueue
from scheduler.jobs import Job, Output
from scheduler.pools.base import (
    Pool,
    ProgressCallback,
    Rendered,
    RenderError,
    Slot,
    Superseded,
)
from scheduler.storage import ObjectStore, StorageError
from scheduler.store import Finish, JobStore
from scheduler.tasks import cancel_and_wait, cancel_requested

log = logging.getLogger(__name__)

# Job progress while rendering spans 1-90; uploading is 95; completed is 100.
_RENDER_SPAN = 89
_UPLOADING = 95
_PROGRESS_STEP = 5
_MIN_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 5.0
# A renderer that turned a job away keeps its slot reserved this long, so the requeued
# job is not sent straight back to it.
_FULL_RENDERER_HOLD_S = 0.5


@dataclass(frozen=True)
class DispatcherConfig:
    replica_id: str
    lease_s: float
    shutdown_grace_s: float


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        hub: EventHub,
        pool: Pool,
        objects: ObjectStore,
        config: DispatcherConfig,
    ) -> None:
        self._store = store
        self._hub = hub
        self._pool = pool
        self._objects = objects
        self._config = config
        self._running: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._upkeep_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> int:
        return len(self._running)

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._take_jobs(), name="dispatch")
        self._upkeep_task = asyncio.create_task(self._upkeep(), name="lease-upkeep")

    async def stop(self) -> None:
        """Stops taking jobs, gives running ones the grace period, then hands the rest
        back to the queue for another replica. Idempotent."""
        self._stopping = True
        if self._loop_task is not None:
            await cancel_and_wait(self._loop_task)
            self._loop_task = None
        tasks = [task for _, task in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self._config.shutdown_grace_s)
        for job, task in list(self._running.values()):
            await cancel_and_wait(task)
            try:
                await self._store.requeue(
                    job, "shutdown", "the scheduler replica shut down", counts=False
                )
            except Exception:
                log.exception("could not hand job %s back; its lease will expire", job.id)
        if self._upkeep_task is not None:
            await cancel_and_wait(self._upkeep_task)
            self._upkeep_task = None

    async def _take_jobs(self) -> None:
        backoff = _MIN_BACKOFF_S
        while not self._stopping:
            try:
                await self._take_one()
                backoff = _MIN_BACKOFF_S
            except Exception as exc:
                if self._stopping or cancel_requested():
                    raise asyncio.CancelledError from exc
                # Redis went away or a script failed: the replica must keep dispatching
                # once it is back, so log and retry rather than let the loop die.
                log.exception("dispatch loop failed; retrying in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _take_one(self) -> None:
        slot = await self._pool.acquire()
        try:
            job = await self._store.claim(
                self._config.replica_id, self._pool.name, self._config.lease_s
            )
        except BaseException:
            slot.release()
            raise
        if job is None:
            slot.release()
            await self._store.wait_for_work(timeout_s=self._config.lease_s)
            return
        log.info("dispatched job %s to %s (attempt %d)", job.id, self._pool.name, job.attempt)
        task = asyncio.create_task(self._run(job, slot), name=f"job-{job.id}")
        self._running[job.id] = (job, task)
        task.add_done_callback(functools.partial(self._forget, job.id))

    def _forget(self, job_id: str, _: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)

    async def _run(self, job: Job, slot: Slot) -> None:
        """Runs the job until it ends or a terminal event (a cancel, a delete) ends it."""
        async with self._hub.subscribe(job.id) as live:
            work = asyncio.create_task(self._execute(job, slot), name=f"render-{job.id}")
            ended = asyncio.create_task(_until_terminal(live))
            try:
                await asyncio.wait({work, ended}, return_when=asyncio.FIRST_COMPLETED)
                if ended.done() and not work.done():
                    log.info("job %s ended elsewhere (cancelled or deleted); stopping", job.id)
            finally:
                await cancel_and_wait(ended)
                await cancel_and_wait(work)

    async def _execute(self, job: Job, slot: Slot) -> None:
        rendered: Rendered | None = None
        try:
            rendered = await self._pool.render(slot, job, self._progress_reporter(job))
            slot.release()
            if not await self._store.progress(job, "uploading", _UPLOADING):
                raise Superseded(job.id)
            key = self._objects.key_for(job.id)
            uploaded = await self._objects.put_file(rendered.path, key)
            output = Output(
                bucket=uploaded.bucket,
                key=key,
                bytes=uploaded.bytes,
                sha256=rendered.info.sha256,
                duration_s=rendered.info.duration_s,
            )
            result = await self._store.complete(job, output)
            if result is Finish.GONE:
                # Deleted while we rendered: nobody will read this object.
                await self._objects.delete(key)
            log.info("job %s %s (%d bytes)", job.id, result.value, uploaded.bytes)
        except Superseded:
            log.info("job %s was cancelled or taken over; dropped its render", job.id)
        except RenderError as exc:
            await self._retry_or_fail(
                job, "render_failed", str(exc), exc.retryable, charge=exc.charge_attempt
            )
            if not exc.charge_attempt:
                await asyncio.sleep(_FULL_RENDERER_HOLD_S)
        except StorageError as exc:
            await self._retry_or_fail(job, "upload_failed", str(exc), retryable=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job.id)
            await self._retry_or_fail(job, "internal", f"{type(exc).__name__}: {exc}", True)
        finally:
            slot.release()
            if rendered is not None:
                await asyncio.to_thread(rendered.path.unlink, missing_ok=True)

    async def _retry_or_fail(
        self, job: Job, code: str, message: str, retryable: bool, *, charge: bool = True
    ) -> None:
        log.warning("job %s attempt %d: %s: %s", job.id, job.attempt, code, message)
        if retryable:
            await self._store.requeue(job, code, message, counts=charge)
        else:
            await self._store.fail(job, code, message)

    def _progress_reporter(self, job: Job) -> ProgressCallback:
        reported = 1

        async def report(percent: int) -> bool:
            nonlocal reported
            progress = 1 + _RENDER_SPAN * min(max(percent, 0), 100) // 100
            if progress - reported < _PROGRESS_STEP and percent < 100:
                return True
            reported = progress
            return await self._store.progress(job, "progress", progress)

        return report

    async def _upkeep(self) -> None:
        period = self._config.lease_s / 3
        while True:
            try:
                await self._store.renew(list(self._running), self._config.lease_s)
                if reclaimed := await self._store.reclaim():
                    log.warning(
                        "reclaimed %d jobs with expired leases: %s",
                        len(reclaimed),
                        ", ".join(reclaimed),
                    )
            except Exception as exc:
                if cancel_requested():
                    raise asyncio.CancelledError from exc
                log.exception("lease upkeep failed; retrying")
            await asyncio.sleep(period)


async def _until_terminal(live: LiveQueue) -> None:
    while (event := await live.get()) is None or not event.terminal:
        pass
