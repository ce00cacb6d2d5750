"""Jobs and events to their protobuf form."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from spillway.v1 import scheduler_pb2 as pb

from scheduler.jobs import Event, Job, Status
from scheduler.storage import CONTENT_TYPE

STATUS = {
    Status.QUEUED: pb.JOB_STATUS_QUEUED,
    Status.IN_PROGRESS: pb.JOB_STATUS_IN_PROGRESS,
    Status.COMPLETED: pb.JOB_STATUS_COMPLETED,
    Status.FAILED: pb.JOB_STATUS_FAILED,
    Status.CANCELLED: pb.JOB_STATUS_CANCELLED,
}


def timestamp(ms: int) -> Timestamp | None:
    if not ms:
        return None
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def job_to_proto(job: Job) -> pb.Job:
    msg = pb.Job(
        id=job.id,
        status=STATUS[job.status],
        progress=job.progress,
        model=job.spec.model,
        prompt=job.spec.prompt,
        seconds=job.spec.seconds,
        size=job.spec.size,
        priority=job.spec.priority,
        created_at=timestamp(job.created_ms),
        started_at=timestamp(job.started_ms),
        completed_at=timestamp(job.completed_ms),
        expires_at=timestamp(job.expires_ms),
        pool=job.pool,
        attempt=job.attempt,
        idempotency_key=job.idempotency_key,
        trace_id=job.trace_id,
    )
    if job.error_code:
        msg.error.code = job.error_code
        msg.error.message = job.error_message
    if job.output is not None:
        msg.output.CopyFrom(output_to_proto(job))
    return msg


def output_to_proto(job: Job) -> pb.JobOutput:
    assert job.output is not None
    out = job.output
    return pb.JobOutput(
        bucket=out.bucket,
        key=out.key,
        bytes=out.bytes,
        sha256=out.sha256,
        duration_seconds=out.duration_s,
        content_type=CONTENT_TYPE,
    )


def event_to_proto(event: Event) -> pb.JobEvent:
    msg = pb.JobEvent(
        id=event.id,
        job_id=event.job_id,
        type=event.type,
        status=STATUS[event.status],
        progress=event.progress,
        time=timestamp(event.time_ms),
        pool=event.pool,
        terminal=event.terminal,
    )
    if event.error_code:
        msg.error.code = event.error_code
        msg.error.message = event.error_message
    return msg
