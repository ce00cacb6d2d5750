"""One attempt of one job on one pool: render, upload, complete, and the attempt's
spans (see `scheduler.tracing`). The dispatcher decides and claims; this runs what it
claimed, until the job ends, is handed on, or is cancelled elsewhere."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from opentelemetry import trace
from structlog.contextvars import bound_contextvars

from scheduler import tracing
from scheduler.events import EventHub, LiveQueue
from scheduler.jobs import Job, Output, Status
from scheduler.metrics import SchedulerMetrics, failure_reason
from scheduler.pools.base import Pool, Rendered, RenderError, RenderInfo, Slot, Superseded
from scheduler.spillover import Spillover
from scheduler.storage import ObjectStore, StorageError
from scheduler.store import Finish, JobStore
from scheduler.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Job progress while rendering spans 1-90; uploading is 95; completed is 100.
_RENDER_SPAN = 89
_UPLOADING = 95
_PROGRESS_STEP = 5
# A fleet that turned a job away keeps its slot reserved this long, so the requeued
# job is not sent straight back to it.
_FULL_FLEET_HOLD_S = 0.5


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
        objects: ObjectStore,
        metrics: SchedulerMetrics,
        replica_id: str,
    ) -> None:
        self._store = store
        self._hub = hub
        self._spillover = spillover
        self._objects = objects
        self._metrics = metrics
        self._replica_id = replica_id

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
            except RenderError as exc:
                if not exc.charge_attempt:
                    self._count_failure(pool, exc)
                    await self._retry_or_fail(attempt, "render_failed", str(exc), True, False)
                    await asyncio.sleep(_FULL_FLEET_HOLD_S)
                    return
                raise
            finally:
                slot.release()
            self._metrics.render_observed(pool.name, wall_s, rendered.info)
            await self._spillover.record(pool.name, rendered.info, wall_s)
            if not await self._store.progress(job, "uploading", _UPLOADING):
                raise Superseded(job.id)
            output = await self._upload(job, rendered)
            result = await self._store.complete(job, output)
            if result is Finish.GONE:
                # Deleted while we rendered: nobody will read this object.
                await self._objects.delete(output.key)
            attempt.outcome = {Finish.OK: "completed", Finish.GONE: "deleted"}.get(
                result, "superseded"
            )
            if result is Finish.OK:
                latency_s = max(0.0, time.time() - job.created_ms / 1000)
                self._metrics.job_finished(pool.name, "completed", latency_s)
            log.info("job %s %s on %s (%d bytes)", job.id, result.value, pool.name, output.bytes)
        except Superseded:
            attempt.outcome = "superseded"
            log.info("job %s was cancelled or taken over; dropped its render", job.id)
        except RenderError as exc:
            self._count_failure(pool, exc)
            await self._retry_or_fail(
                attempt, "render_failed", str(exc), exc.retryable, exc.charge_attempt
            )
        except StorageError as exc:
            await self._retry_or_fail(attempt, "upload_failed", str(exc), True, True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job.id)
            await self._retry_or_fail(
                attempt, "internal", f"{type(exc).__name__}: {exc}", True, True
            )
        finally:
            if rendered is not None:
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

    async def _upload(self, job: Job, rendered: Rendered) -> Output:
        key = self._objects.key_for(job.id)
        attributes = {"spillway.bucket": self._objects.bucket, "spillway.key": key}
        began = time.monotonic()
        with tracing.traced("upload", attributes) as span:
            try:
                uploaded = await self._objects.put_file(rendered.path, key)
            except StorageError:
                self._metrics.upload_failed()
                raise
            self._metrics.upload_observed(uploaded.bytes, time.monotonic() - began)
            span.set_attributes(
                {"spillway.bytes": uploaded.bytes, "spillway.parts": uploaded.parts}
            )
        return Output(
            bucket=uploaded.bucket,
            key=key,
            bytes=uploaded.bytes,
            sha256=rendered.info.sha256,
            duration_s=rendered.info.duration_s,
        )

    def _count_failure(self, pool: Pool, exc: RenderError) -> None:
        self._metrics.render_failed(pool.name, failure_reason(str(exc), exc.retryable))

    async def _retry_or_fail(
        self, attempt: Attempt, code: str, message: str, retryable: bool, charge: bool
    ) -> None:
        job = attempt.job
        log.warning("job %s attempt %d: %s: %s", job.id, job.attempt, code, message)
        if retryable:
            result = await self._store.requeue(job, code, message, counts=charge)
        else:
            result = (await self._store.fail(job, code, message)).value
        attempt.outcome = {"ok": "failed"}.get(result, result)
        if attempt.outcome == "failed":
            self._metrics.job_finished(attempt.pool.name, "failed", None)
        trace.get_current_span().set_attribute("spillway.error_code", code)


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
        return await self._store.progress(self._attempt.job, "progress", progress)

    async def remote_call(self, call_id: str) -> bool:
        self._attempt.call_id = call_id
        return await self._store.set_call(self._attempt.job, call_id)


async def _until_cancelled(live: LiveQueue) -> None:
    """Returns on the job's cancel (a delete cancels first). Its other terminal events
    are this attempt's own completion or failure, which its work sees through."""
    while (event := await live.get()) is None or event.status is not Status.CANCELLED:
        pass
