"""One attempt of one job on one pool: render, upload, complete, and the attempt's
spans (see `scheduler.telemetry.tracing`). The dispatcher decides and claims; this runs what it
claimed, until the job ends, is handed on, or is cancelled elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from opentelemetry import trace
from structlog.contextvars import bound_contextvars

from scheduler.dispatch.fleet import Fleet
from scheduler.dispatch.spillover import Spillover
from scheduler.pools.base import Pool, Rendered, RenderError, RenderInfo, Slot, Superseded
from scheduler.store.events import EventHub, LiveQueue
from scheduler.store.jobs import Job, Output, Status
from scheduler.store.jobstore import Finish, JobStore
from scheduler.store.storage import ObjectStore, StorageError
from scheduler.tasks import cancel_and_wait
from scheduler.telemetry import tracing
from scheduler.telemetry.metrics import SchedulerMetrics, failure_reason
from scheduler.telemetry.outage import CONNECTION_ERRORS, Outage

log = logging.getLogger(__name__)

T = TypeVar("T")

# Job progress while rendering spans 1-90; uploading is 95; completed is 100.
_RENDER_SPAN = 89
_UPLOADING = 95
_PROGRESS_STEP = 5
_MIN_BACKOFF_S = 0.2
_MAX_UPLOAD_BACKOFF_S = 30.0
_MAX_REDIS_BACKOFF_S = 2.0


@dataclass(frozen=True)
class RunnerConfig:
    replica_id: str
    upload_retry_s: float
    """How long an upload is retried through an S3 outage before the job fails."""
    redis_retry_s: float
    """How long the attempt's own writes (progress, complete, requeue) are retried
    through a Redis outage; past it the job is left to its lease, which another replica
    reclaims."""


@dataclass(eq=False)
class Attempt:
    job: Job
    pool: Pool
    spilled: bool
    mode: str
    """The spillover mode when the job was dispatched."""
    reason: str
    """Why the policy sent it to this pool (or `adopted`)."""
    call_id: str = ""
    started: bool = False
    """The pool reported the render's start (recorded on the job), or refused a recall
    (`Pool.claim_recall`): no recall now."""
    outcome: str = "interrupted"
    """How the attempt ended: completed, requeued, failed, cancelled, superseded, ..."""
    task: asyncio.Task[None] = field(init=False)

    @property
    def adopted(self) -> bool:
        return self.reason == "adopted"


class AttemptRunner:
    def __init__(
        self,
        store: JobStore,
        hub: EventHub,
        spillover: Spillover,
        fleet: Fleet,
        objects: ObjectStore,
        metrics: SchedulerMetrics,
        config: RunnerConfig,
    ) -> None:
        self._store = store
        self._hub = hub
        self._spillover = spillover
        self._fleet = fleet
        self._objects = objects
        self._metrics = metrics
        self._config = config
        self._replica_id = config.replica_id
        self._s3 = Outage("S3 uploads", log, expected=(StorageError,))
        self._redis = Outage("job updates to Redis", log)

    async def run(self, attempt: Attempt) -> None:
        job = attempt.job
        parent = tracing.extract(job.trace_context)
        if not attempt.adopted and job.started_ms:
            waited = tracing.tracer.start_span(
                "queue_wait",
                context=parent,
                start_time=tracing.ms_to_ns(job.queued_ms or job.created_ms),
                attributes={"spillway.job_id": job.id, "spillway.attempt": job.attempt},
            )
            waited.end(end_time=tracing.ms_to_ns(job.started_ms))
        span = tracing.tracer.start_span(
            "dispatch",
            context=parent,
            start_time=None if attempt.adopted else tracing.ms_to_ns(job.started_ms),
            attributes={
                "spillway.job_id": job.id,
                "spillway.pool": attempt.pool.name,
                "spillway.spilled": attempt.spilled,
                "spillway.mode": attempt.mode,
                "spillway.reason": attempt.reason,
                "spillway.attempt": job.attempt,
                "spillway.replica": self._replica_id,
            },
        )
        try:
            with (
                trace.use_span(span, record_exception=False, set_status_on_exception=False),
                bound_contextvars(job_id=job.id, trace_id=job.trace_id),
            ):
                await self._supervise(attempt)
        finally:
            span.set_attribute("spillway.outcome", attempt.outcome)
            if attempt.call_id:
                span.set_attribute("spillway.call_id", attempt.call_id)
            span.end()

    async def _supervise(self, attempt: Attempt) -> None:
        """Runs the attempt until it ends or the job is cancelled (or deleted) first."""
        job = attempt.job
        async with self._hub.subscribe(job.id) as live:
            work = asyncio.create_task(self._execute(attempt), name=f"render-{job.id}")
            ended = asyncio.create_task(_until_cancelled(live))
            try:
                await asyncio.wait({work, ended}, return_when=asyncio.FIRST_COMPLETED)
                if ended.done() and not work.done():
                    log.info("job %s ended elsewhere (cancelled or deleted); stopping", job.id)
                    attempt.outcome = "cancelled"
                    await cancel_and_wait(work)
                    if attempt.call_id:
                        await attempt.pool.cancel(job, attempt.call_id)
            finally:
                await cancel_and_wait(ended)
                await cancel_and_wait(work)

    async def _execute(self, attempt: Attempt) -> None:
        job, pool = attempt.job, attempt.pool
        rendered: Rendered | None = None
        try:
            # A pool that boots a container does it in acquire (the burst pool) or inside
            # the render call (Modal); the cold start is timed from before either.
            acquiring_ns = time.time_ns()
            slot = await pool.acquire()
            try:
                rendered = await self._render(attempt, slot, acquiring_ns)
                wall_s = (time.time_ns() - acquiring_ns) / 1e9
            finally:
                slot.release()
            self._metrics.render_observed(pool.name, wall_s, rendered.info)
            observed = self._spillover.observe(pool.name, rendered.info, wall_s)
            if not await self._durably(lambda: self._store.rendered(job, observed, _UPLOADING)):
                raise Superseded(job.id)
            output = await self._upload(attempt, rendered)
            if output is None:
                return
            result = await self._durably(lambda: self._store.complete(job, output))
            if result is not Finish.OK:
                # Deleted, cancelled or taken over while we uploaded: the object is this
                # attempt's own (its key carries the lease), and nobody will read it.
                await self._discard_object(output.key)
            attempt.outcome = {Finish.OK: "completed", Finish.GONE: "deleted"}.get(
                result, "superseded"
            )
            if result is Finish.OK:
                latency_s = max(0.0, time.time() - job.created_ms / 1000)
                self._metrics.job_finished(pool.name, "completed", latency_s)
            # A completion is every job's routine (the job and its events record it);
            # one that found the job gone or taken over is worth an operator's eye.
            log.log(
                logging.DEBUG if result is Finish.OK else logging.INFO,
                "job %s %s on %s (%d bytes)",
                job.id,
                result.value,
                pool.name,
                output.bytes,
            )
        except Superseded:
            attempt.outcome = "superseded"
            log.info("job %s was cancelled or taken over; dropped its render", job.id)
        except RenderError as exc:
            self._count_failure(pool, exc)
            if exc.endpoint_down and job.endpoint:
                await self._report_endpoint(job.endpoint, str(exc))
            await self._retry_or_fail(
                attempt, "render_failed", str(exc), exc.retryable, exc.charge_attempt
            )
        except asyncio.CancelledError:
            raise
        except CONNECTION_ERRORS as exc:
            # Redis stayed away longer than the attempt waits for it: the lease lapses
            # and another replica (or this one) reclaims the job once Redis is back.
            attempt.outcome = "abandoned"
            log.warning("job %s left to its lease: %s: %s", job.id, type(exc).__name__, exc)
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job.id)
            await self._retry_or_fail(
                attempt, "internal", f"{type(exc).__name__}: {exc}", True, True
            )
        finally:
            # A render held in memory has no file here (`_upload` removes the one it
            # may write).
            if rendered is not None and rendered.data is None:
                await asyncio.to_thread(rendered.path.unlink, missing_ok=True)

    async def _render(self, attempt: Attempt, slot: Slot, acquiring_ns: int) -> Rendered:
        pool = attempt.pool
        with tracing.traced("render", {"spillway.pool": pool.name}) as span:
            rendered = await pool.render(slot, attempt.job, _Hooks(self._store, attempt))
            info = rendered.info
            span.set_attributes(
                {
                    "spillway.engine": info.engine,
                    "spillway.frames": info.frames,
                    "spillway.container_id": info.container_id,
                    "spillway.cold_start": info.cold_start,
                    "spillway.render_seconds": info.render_s,
                    "spillway.bytes": info.bytes,
                }
            )
        if info.cold_start:
            _cold_start_span(pool.name, info, acquiring_ns)
        return rendered

    async def _upload(self, attempt: Attempt, rendered: Rendered) -> Output | None:
        """Stores the MP4, retrying with backoff through an S3 outage while the job keeps
        its lease (the dispatcher renews it, and cancels this attempt if the job moves
        on). A finished render is never redone for an S3 error; only past
        `upload_retry_s` does the job fail. Returns None then."""
        job = attempt.job
        key = self._objects.key_for(job.id, job.lease)
        attributes = {"spillway.bucket": self._objects.bucket, "spillway.key": key}
        deadline = time.monotonic() + self._config.upload_retry_s
        backoff = _MIN_BACKOFF_S
        tries = 0
        in_memory = rendered.data
        try:
            with tracing.traced("upload", attributes) as span:
                while True:
                    tries += 1
                    began = time.monotonic()
                    try:
                        if in_memory is not None:
                            uploaded = await self._objects.put_bytes(in_memory, key)
                        else:
                            uploaded = await self._objects.put_file(rendered.path, key)
                        break
                    except StorageError as exc:
                        self._metrics.upload_failed()
                        self._s3.failed(exc)
                        span.record_exception(exc, attributes={"spillway.try": tries})
                        if time.monotonic() + backoff > deadline:
                            span.set_attribute("spillway.upload_tries", tries)
                            await self._retry_or_fail(
                                attempt,
                                "upload_failed",
                                f"{exc} (tried {tries} times over "
                                f"{self._config.upload_retry_s:.0f} s)",
                                False,
                                True,
                            )
                            return None
                        if in_memory is not None:
                            # An outage can outlast many renders: the MP4s that wait
                            # for it wait on disk, not in memory.
                            data, in_memory = in_memory, None
                            await _write_whole(rendered.path, data)
                        await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                        backoff = min(backoff * 2, _MAX_UPLOAD_BACKOFF_S)
                self._s3.ok()
                self._metrics.upload_observed(uploaded.bytes, time.monotonic() - began)
                span.set_attributes(
                    {
                        "spillway.bytes": uploaded.bytes,
                        "spillway.parts": uploaded.parts,
                        "spillway.upload_tries": tries,
                    }
                )
        finally:
            # The file written here for an outage is this method's to remove; the
            # pool's own file is `_execute`'s.
            if rendered.data is not None and in_memory is None:
                await asyncio.to_thread(rendered.path.unlink, missing_ok=True)
        return Output(
            bucket=uploaded.bucket,
            key=key,
            bytes=uploaded.bytes,
            sha256=rendered.info.sha256,
            duration_s=rendered.info.duration_s,
        )

    async def _discard_object(self, key: str) -> None:
        try:
            await self._objects.delete(key)
        except StorageError as exc:
            log.warning("could not delete the unused object %s: %s", key, exc)

    async def _report_endpoint(self, address: str, failure: str) -> None:
        try:
            await self._fleet.report(address, failure)
        except CONNECTION_ERRORS as exc:
            log.debug("could not report renderer %s as failing: %s", address, exc)

    async def _durably(self, write: Callable[[], Awaitable[T]]) -> T:
        """Runs one of the attempt's fenced writes, retrying it through a Redis outage
        for up to `redis_retry_s` (the write is fenced, so a late one is harmless)."""
        deadline = time.monotonic() + self._config.redis_retry_s
        backoff = _MIN_BACKOFF_S
        while True:
            try:
                result = await write()
            except CONNECTION_ERRORS as exc:
                self._redis.failed(exc)
                if time.monotonic() + backoff > deadline:
                    raise
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_REDIS_BACKOFF_S)
                continue
            self._redis.ok()
            return result

    def _count_failure(self, pool: Pool, exc: RenderError) -> None:
        self._metrics.render_failed(pool.name, failure_reason(str(exc), exc.retryable))

    async def _retry_or_fail(
        self, attempt: Attempt, code: str, message: str, retryable: bool, charge: bool
    ) -> None:
        job = attempt.job
        log.warning("job %s attempt %d: %s: %s", job.id, job.attempt, code, message)
        try:
            if retryable:
                result = await self._durably(
                    lambda: self._store.requeue(job, code, message, counts=charge)
                )
            else:
                result = (await self._durably(lambda: self._store.fail(job, code, message))).value
        except CONNECTION_ERRORS as exc:
            attempt.outcome = "abandoned"
            log.warning("job %s left to its lease: %s: %s", job.id, type(exc).__name__, exc)
            return
        attempt.outcome = {"ok": "failed"}.get(result, result)
        if attempt.outcome == "failed":
            self._metrics.job_finished(attempt.pool.name, "failed", None)
        trace.get_current_span().set_attribute("spillway.error_code", code)


async def _write_whole(path: Path, data: bytes) -> None:
    """Writes `data` to a new file in a thread. Cancelled meanwhile, it still waits for
    the thread, so that whoever removes the file next finds it whole, not half made."""
    writing = asyncio.ensure_future(asyncio.to_thread(path.write_bytes, data))
    try:
        await asyncio.shield(writing)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await writing
        raise


def _cold_start_span(pool: str, info: RenderInfo, began_ns: int) -> None:
    """The time the input spent waiting for its container, as the renderer measured it
    (boot, or snapshot restore), from when the attempt asked its pool for room."""
    span = tracing.tracer.start_span(
        "cold_start",
        start_time=began_ns,
        attributes={
            "spillway.pool": pool,
            "spillway.container_id": info.container_id,
            "spillway.boot_seconds": info.boot_s,
            "spillway.restore_seconds": info.restore_s,
        },
    )
    span.end(end_time=began_ns + int((info.boot_s + info.restore_s) * 1e9))


class _Hooks:
    """What a render reports, applied to the job under its lease."""

    def __init__(self, store: JobStore, attempt: Attempt) -> None:
        self._store = store
        self._attempt = attempt
        self._reported = 1

    async def progress(self, percent: int) -> bool:
        progress = 1 + _RENDER_SPAN * min(max(percent, 0), 100) // 100
        if progress - self._reported < _PROGRESS_STEP and percent < 100:
            return True
        self._reported = progress
        try:
            return await self._store.progress(self._attempt.job, "progress", progress)
        except CONNECTION_ERRORS:
            # Progress is advisory: a render goes on through a Redis outage, and its
            # completion (which is retried) tells whether the job is still ours.
            return True

    async def remote_call(self, call_id: str) -> bool:
        self._attempt.call_id = call_id
        return await self._store.set_call(self._attempt.job, call_id)

    async def started(self) -> bool:
        # Set first, so the dispatcher does not try a recall the store would refuse.
        self._attempt.started = True
        return await self._store.mark_started(self._attempt.job)


async def _until_cancelled(live: LiveQueue) -> None:
    """Returns on the job's cancel (a delete cancels first). Its other terminal events
    are this attempt's own completion or failure, which its work sees through."""
    while (event := await live.get()) is None or event.status is not Status.CANCELLED:
        pass
