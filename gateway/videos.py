"""Scheduler jobs and events as OpenAI Videos API objects.

The Videos status enum has no ``cancelled``: a cancelled job reads ``failed`` with
``error.code == "cancelled"``, while gRPC callers keep the scheduler's own state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import Field
from spillway.v1 import scheduler_pb2

# Pydantic, which renders these shapes into /openapi.json, needs this TypedDict on 3.11.
from typing_extensions import TypedDict

Status = Literal["queued", "in_progress", "completed", "failed"]

_STATUS: dict[scheduler_pb2.JobStatus, Status] = {
    scheduler_pb2.JOB_STATUS_QUEUED: "queued",
    scheduler_pb2.JOB_STATUS_IN_PROGRESS: "in_progress",
    scheduler_pb2.JOB_STATUS_COMPLETED: "completed",
    scheduler_pb2.JOB_STATUS_FAILED: "failed",
    scheduler_pb2.JOB_STATUS_CANCELLED: "failed",
}
_CANCELLED_MESSAGE = "The video job was cancelled."


class VideoError(TypedDict):
    code: str
    message: str


class Video(TypedDict):
    id: str
    object: Literal["video"]
    model: str
    status: Status
    progress: int
    created_at: int | None
    completed_at: int | None
    expires_at: int | None
    prompt: str
    size: str
    seconds: str
    remixed_from_video_id: None
    error: VideoError | None
    deadline_at: Annotated[
        int | None,
        Field(
            description="spillway's addition: when the video, if still queued, fails with "
            "error code 'expired' (unix seconds); null without a deadline_seconds.",
        ),
    ]
    trace_id: Annotated[
        str | None,
        Field(
            description="spillway's addition to the OpenAI object: the OpenTelemetry trace "
            "id (32 hex digits) of the job, to find its spans from submit to upload; null "
            "when the scheduler recorded none.",
            pattern="^[0-9a-f]{32}$",
        ),
    ]
    priority: Annotated[
        Literal["interactive", "batch"],
        Field(
            description="spillway's addition: the priority class. Every interactive video "
            "is served before any batch one; batch renders in-house only, unless an "
            "operator lets batch spill.",
        ),
    ]
    inhouse_only: Annotated[
        bool,
        Field(description="spillway's addition: the video never spills off the in-house fleet."),
    ]
    placement: Annotated[
        Placement | None,
        Field(
            description="spillway's addition: the pool of the latest attempt and why the "
            "spillover policy placed it there (e.g. inhouse_slot_free, modal_faster, "
            "timeout_rescue); null before dispatch.",
        ),
    ]


class Placement(TypedDict):
    pool: str
    reason: str | None


class VideoList(TypedDict):
    object: Literal["list"]
    data: list[Video]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(TypedDict):
    id: str
    object: Literal["video.deleted"]
    deleted: bool


class VideoEvent(TypedDict):
    """The data of one Server-Sent Event on ``GET /v1/videos/{id}/events``."""

    id: str
    video_id: str
    type: str
    status: Status
    progress: int
    created_at: int | None
    pool: str | None
    reason: str | None
    error: VideoError | None


def is_pending(job: scheduler_pb2.Job) -> bool:
    """Whether the job has yet to reach a final state, so polling it makes sense."""
    return job.status in (scheduler_pb2.JOB_STATUS_QUEUED, scheduler_pb2.JOB_STATUS_IN_PROGRESS)


def video_from_job(job: scheduler_pb2.Job) -> Video:
    return {
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": rest_status(job.status),
        "progress": job.progress,
        "created_at": unix_seconds(job.created_at),
        "completed_at": unix_seconds(job.completed_at),
        "expires_at": unix_seconds(job.expires_at),
        "prompt": job.prompt,
        "size": job.size,
        "seconds": str(job.seconds),
        "remixed_from_video_id": None,
        "error": _error(job.status, job.error),
        "deadline_at": unix_seconds(job.deadline),
        "trace_id": job.trace_id or None,
        "priority": "batch"
        if job.priority_class == scheduler_pb2.PRIORITY_CLASS_BATCH
        else "interactive",
        "inhouse_only": job.inhouse_only,
        "placement": {"pool": job.pool, "reason": job.placement_reason or None}
        if job.pool
        else None,
    }


def video_list(jobs: Sequence[scheduler_pb2.Job], *, has_more: bool) -> VideoList:
    return {
        "object": "list",
        "data": [video_from_job(job) for job in jobs],
        "first_id": jobs[0].id if jobs else None,
        "last_id": jobs[-1].id if jobs else None,
        "has_more": has_more,
    }


def video_event(event: scheduler_pb2.JobEvent) -> VideoEvent:
    return {
        "id": event.id,
        "video_id": event.job_id,
        "type": event.type,
        "status": rest_status(event.status),
        "progress": event.progress,
        "created_at": unix_seconds(event.time),
        "pool": event.pool or None,
        "reason": event.reason or None,
        "error": _error(event.status, event.error),
    }


def rest_status(status: scheduler_pb2.JobStatus) -> Status:
    try:
        return _STATUS[status]
    except KeyError:
        raise ValueError(f"the scheduler sent a job without a known status ({status})") from None


def unix_seconds(timestamp: Timestamp) -> int | None:
    """Whole unix seconds, or None for an unset timestamp (all zero)."""
    if timestamp.seconds == 0 and timestamp.nanos == 0:
        return None
    return timestamp.seconds


def _error(status: scheduler_pb2.JobStatus, error: scheduler_pb2.JobError) -> VideoError | None:
    if status == scheduler_pb2.JOB_STATUS_CANCELLED:
        return {"code": "cancelled", "message": error.message or _CANCELLED_MESSAGE}
    if status == scheduler_pb2.JOB_STATUS_FAILED and (error.code or error.message):
        return {"code": error.code, "message": error.message}
    return None
