"""The gRPC `Scheduler` service: thin handlers over the store, the hub and the object store."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from functools import wraps
from typing import Any, Literal, TypeVar

import redis.asyncio as redis
from opentelemetry.trace import SpanKind
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

from renderer.telemetry import current_trace_id
from scheduler.api.auth import ApiKeys
from scheduler.api.convert import (
    PRIORITY_CLASS,
    event_to_proto,
    job_to_proto,
    output_to_proto,
    spillover_to_proto,
    timestamp,
)
from scheduler.api.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    SpillwayError,
    Unavailable,
    to_status,
)
from scheduler.api.validation import (
    require_job_id,
    validate_deadline,
    validate_event_id,
    validate_idempotency_key,
    validate_job_id,
    validate_page_size,
    validate_spec,
)
from scheduler.dispatch.spillover import Spillover
from scheduler.dispatch.spillover import Status as SpilloverStatus
from scheduler.store.events import EventHub, watch
from scheduler.store.jobs import Job, PriorityClass, Status
from scheduler.store.jobstore import JobStore, QueueFull, RateLimited
from scheduler.store.storage import ObjectStore, StorageError
from scheduler.telemetry import tracing
from scheduler.telemetry.metrics import SchedulerMetrics

log = logging.getLogger(__name__)

_MAX_CONTENT_EXPIRY_S = 604800

R = TypeVar("R")
S = TypeVar("S")
# grpcio ships no type information; its servicer context is untyped.
Ctx = Any


def rpc_errors(
    handler: Callable[[S, Any, Ctx], Coroutine[Any, Any, R]],
) -> Callable[[S, Any, Ctx], Coroutine[Any, Any, R]]:
    """Maps spillway errors (and a lost Redis) to rich gRPC statuses."""

    @wraps(handler)
    async def wrapper(self: S, request: Any, context: Ctx) -> R:
        try:
            return await handler(self, request, context)
        except SpillwayError as exc:
            await context.abort_with_status(to_status(exc))
        except redis.ConnectionError as exc:
            log.error("Redis unavailable: %s", exc)
            await context.abort_with_status(to_status(Unavailable("job store unavailable")))
        raise AssertionError("unreachable: abort_with_status raises")

    return wrapper


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(
        self,
        store: JobStore,
        hub: EventHub,
        objects: ObjectStore,
        keys: ApiKeys,
        spillover: Spillover,
        spillover_status: Callable[[], Coroutine[Any, Any, SpilloverStatus]],
        metrics: SchedulerMetrics,
        *,
        models: Sequence[str],
        presign_expires_s: int,
    ) -> None:
        self._store = store
        self._spillover = spillover
        self._spillover_status = spillover_status
        self._metrics = metrics
        self._hub = hub
        self._objects = objects
        self._keys = keys
        self._models = models
        self._presign_expires_s = presign_expires_s

    def _not_found(self, job_id: str) -> NotFound:
        return NotFound(
            f"video {job_id!r} not found: no video of yours has this id, or it expired "
            f"(finished videos and their MP4s are kept {self._store.retention_s} s)"
        )

    async def _own_job(self, context: Ctx, job_id: str) -> Job:
        tenant = await self._keys.tenant(context.invocation_metadata())
        require_job_id(job_id)
        job = await self._store.get(job_id)
        if job is None or job.tenant != tenant:
            raise self._not_found(job_id)
        return job

    @rpc_errors
    async def SubmitRender(
        self, request: pb.SubmitRenderRequest, context: Ctx
    ) -> pb.SubmitRenderResponse:
        metadata = context.invocation_metadata() or ()
        parent = tracing.extract({k: v for k, v in metadata if isinstance(v, str)})
        with tracing.tracer.start_as_current_span(
            "submit", context=parent, kind=SpanKind.SERVER
        ) as span:
            response = await self._submit(request, metadata)
            span.set_attributes(
                {
                    "spillway.job_id": response.job.id,
                    "spillway.created": response.created,
                    "spillway.model": response.job.model,
                    "spillway.seconds": response.job.seconds,
                    "spillway.size": response.job.size,
                    "spillway.priority": response.job.priority,
                }
            )
            return response

    async def _submit(
        self, request: pb.SubmitRenderRequest, metadata: Sequence[tuple[str, Any]]
    ) -> pb.SubmitRenderResponse:
        tenant = await self._keys.tenant(metadata)
        spec = validate_spec(
            prompt=request.prompt,
            model=request.model,
            seconds=request.seconds,
            size=request.size,
            priority=request.priority,
            models=self._models,
            priority_class=_priority_class(request.priority_class),
            inhouse_only=request.inhouse_only,
        )
        key = validate_idempotency_key(request.idempotency_key)
        deadline_s = validate_deadline(request.deadline_seconds)
        try:
            submitted = await self._store.submit(
                tenant,
                spec,
                idempotency_key=key,
                trace_id=current_trace_id(),
                trace_context=tracing.carrier(),
                deadline_s=deadline_s,
            )
        except QueueFull as exc:
            self._metrics.shed("queue_full")
            self._metrics.refused(tenant, "tenant_queue_full" if exc.tenant else "queue_full")
            retry_after_s = await self._spillover.retry_after_s()
            whose = "your share of the render queue" if exc.tenant else "the render queue"
            log.warning(
                "refused a job for tenant %s: %d jobs queued%s",
                tenant,
                exc.queued,
                " (its own bound)" if exc.tenant else "",
            )
            raise ResourceExhausted(
                f"{whose} is full ({exc.queued} jobs waiting); retry in {retry_after_s} s",
                retry_after_s=retry_after_s,
                reason="tenant_queue_full" if exc.tenant else "queue_full",
            ) from None
        except RateLimited as exc:
            self._metrics.refused(tenant, "rate_limited")
            retry_after_s = math.ceil(exc.retry_after_ms / 1000)
            raise ResourceExhausted(
                f"too many submits: over this tenant's rate; retry in {retry_after_s} s",
                retry_after_s=retry_after_s,
                reason="rate_limited",
            ) from None
        if not submitted.created and submitted.job.spec != spec:
            # Returning the first job would hand the caller a video of another request.
            raise InvalidArgument(
                "idempotency_key",
                f"was already used for video {submitted.job.id} with other parameters; "
                "send a new key with a new request",
                reason="idempotency_key_reused",
            )
        if submitted.created:
            self._metrics.submitted(tenant, spec.priority_class.value)
            # Every job's routine (the job and its events record it): DEBUG.
            log.debug("job %s queued for tenant %s", submitted.job.id, tenant)
        return pb.SubmitRenderResponse(job=job_to_proto(submitted.job), created=submitted.created)

    @rpc_errors
    async def GetJob(self, request: pb.GetJobRequest, context: Ctx) -> pb.GetJobResponse:
        tenant = await self._keys.tenant(context.invocation_metadata())
        require_job_id(request.id)
        job, ahead = await self._store.get_with_ahead(request.id)
        if job is None or job.tenant != tenant:
            raise self._not_found(request.id)
        poll_ms = 0
        if job.status is Status.QUEUED:
            poll_ms = self._spillover.poll_after_ms(ahead or 0)
        elif job.status is Status.IN_PROGRESS:
            poll_ms = self._spillover.poll_after_ms(None)
        return pb.GetJobResponse(job=job_to_proto(job), poll_after_ms=poll_ms)

    @rpc_errors
    async def ListJobs(self, request: pb.ListJobsRequest, context: Ctx) -> pb.ListJobsResponse:
        tenant = await self._keys.tenant(context.invocation_metadata())
        limit = validate_page_size(request.page_size)
        if request.page_token:
            validate_job_id(request.page_token, field="after")
        order: Literal["asc", "desc"] = "asc" if request.order == pb.LIST_ORDER_ASC else "desc"
        jobs, has_more = await self._store.list_page(
            tenant, after=request.page_token, limit=limit, order=order
        )
        return pb.ListJobsResponse(
            jobs=[job_to_proto(j) for j in jobs],
            has_more=has_more,
            next_page_token=jobs[-1].id if has_more and jobs else "",
        )

    @rpc_errors
    async def CancelJob(self, request: pb.CancelJobRequest, context: Ctx) -> pb.CancelJobResponse:
        tenant = await self._keys.tenant(context.invocation_metadata())
        require_job_id(request.id)
        found = await self._store.cancel(tenant, request.id)
        if found is None:
            raise self._not_found(request.id)
        job, ended = found
        if ended:
            self._metrics.job_finished(job.pool, "cancelled", None)
        return pb.CancelJobResponse(job=job_to_proto(job))

    @rpc_errors
    async def RetryJob(self, request: pb.RetryJobRequest, context: Ctx) -> pb.RetryJobResponse:
        tenant = await self._keys.tenant(context.invocation_metadata())
        require_job_id(request.id)
        found = await self._store.retry(tenant, request.id)
        if found is None:
            raise self._not_found(request.id)
        job, retried = found
        if not retried:
            raise FailedPrecondition(
                f"video {job.id!r} is {job.status.value}; only a failed or cancelled video "
                "can be retried",
                reason="video_not_retryable",
            )
        self._metrics.submitted(tenant, job.spec.priority_class.value)
        log.info("job %s retried for tenant %s", job.id, tenant)
        return pb.RetryJobResponse(job=job_to_proto(job))

    @rpc_errors
    async def DeleteJob(self, request: pb.DeleteJobRequest, context: Ctx) -> pb.DeleteJobResponse:
        tenant = await self._keys.tenant(context.invocation_metadata())
        require_job_id(request.id)
        found = await self._store.delete(tenant, request.id)
        if found is None:
            raise self._not_found(request.id)
        job, ended = found
        if ended:
            self._metrics.job_finished(job.pool, "cancelled", None)
        if job.output is not None:
            try:
                await self._objects.delete(job.output.key)
            except StorageError:
                # The job is gone either way; the expiry sweep deletes the MP4 at its
                # expires_at (scheduler/store/expiry.py).
                log.exception("job %s deleted but its MP4 was not", job.id)
        log.info("job %s deleted", job.id)
        return pb.DeleteJobResponse(id=job.id, deleted=True)

    @rpc_errors
    async def GetJobContent(
        self, request: pb.GetJobContentRequest, context: Ctx
    ) -> pb.GetJobContentResponse:
        job = await self._own_job(context, request.id)
        if job.status is not Status.COMPLETED or job.output is None:
            raise FailedPrecondition(
                f"video {job.id!r} is {job.status.value}; content exists once it is completed",
                reason="video_not_ready",
            )
        expires_s = request.expires_in_seconds or self._presign_expires_s
        if expires_s > _MAX_CONTENT_EXPIRY_S:
            raise InvalidArgument("expires_in_seconds", f"must be at most {_MAX_CONTENT_EXPIRY_S}")
        url = self._objects.presign_get(job.output.key, expires_s)
        return pb.GetJobContentResponse(
            url=url,
            expires_at=timestamp(int(time.time() * 1000) + expires_s * 1000),
            output=output_to_proto(job),
        )

    @rpc_errors
    async def GetSpillover(
        self, request: pb.GetSpilloverRequest, context: Ctx
    ) -> pb.GetSpilloverResponse:
        await self._keys.operator(context.invocation_metadata())
        return spillover_to_proto(await self._spillover_status(), self._spillover.config)

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchJobResponse]:
        try:
            job = await self._own_job(context, request.id)
            after = validate_event_id(request.after_event_id)
            async for event in watch(self._store, self._hub, job.id, after):
                yield pb.WatchJobResponse(event=event_to_proto(event))
        except SpillwayError as exc:
            await context.abort_with_status(to_status(exc))
        except redis.ConnectionError as exc:
            log.error("Redis unavailable: %s", exc)
            await context.abort_with_status(to_status(Unavailable("job store unavailable")))


_CLASS_OF: dict[int, PriorityClass] = {
    pb.PRIORITY_CLASS_UNSPECIFIED: PriorityClass.INTERACTIVE,
    **{v: k for k, v in PRIORITY_CLASS.items()},
}


def _priority_class(value: int) -> PriorityClass:
    found = _CLASS_OF.get(value)
    if found is None:
        raise InvalidArgument(
            "priority_class",
            f"must be PRIORITY_CLASS_INTERACTIVE or PRIORITY_CLASS_BATCH, got {value}",
        )
    return found
