"""The ``/v1/videos`` endpoints: each one scheduler call over the long-lived channel.

Handlers answer with ready-made responses rather than models FastAPI would validate and
serialise again; the models below only document the shapes in ``/openapi.json``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from opentelemetry import trace
from spillway.v1 import scheduler_pb2
from sse_starlette import EventSourceResponse
from starlette.responses import Response

from gateway import content
from gateway.auth import CallerMetadata
from gateway.backends import backends
from gateway.create_params import read_create_params
from gateway.errors import ApiError, ErrorBody
from gateway.events import relay_events
from gateway.videos import (
    Video,
    VideoDeleted,
    VideoList,
    is_pending,
    video_from_job,
    video_list,
)

router = APIRouter(prefix="/v1", responses={"default": {"model": ErrorBody}})


async def _video_id(video_id: str) -> str:
    """The path's video id, also put on the request's span so that every request about
    a video (reads, events, content) can be found by its job id."""
    trace.get_current_span().set_attribute("spillway.job_id", video_id)
    return video_id


VideoId = Annotated[str, Depends(_video_id)]

_ORDER = {
    None: scheduler_pb2.LIST_ORDER_UNSPECIFIED,
    "asc": scheduler_pb2.LIST_ORDER_ASC,
    "desc": scheduler_pb2.LIST_ORDER_DESC,
}

_CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "prompt": {"type": "string", "description": "What the video shows."},
        "model": {"type": "string", "description": "Empty selects the default model."},
        "seconds": {
            "anyOf": [{"type": "string"}, {"type": "integer"}],
            "description": "Clip length: 4 (default), 8 or 12; a string in a form.",
        },
        "size": {"type": "string", "description": "WIDTHxHEIGHT; default 720x1280."},
        "deadline_seconds": {
            "anyOf": [{"type": "string"}, {"type": "integer"}],
            "description": "spillway's extension: the video is useless this many seconds "
            "after submit (1 to 604800); still queued then, it fails with code 'expired'.",
        },
        "priority": {
            "type": "string",
            "enum": ["interactive", "batch"],
            "description": "spillway's extension: the priority class (default interactive). "
            "Every interactive video is served before any batch one; batch renders on "
            "in-house slots left free and never spills unless an operator allows it.",
        },
        "inhouse_only": {
            "anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false"]}],
            "description": "spillway's extension: never spill this video off the in-house "
            "fleet (e.g. data that must stay there).",
        },
    },
}
_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _CREATE_SCHEMA},
            "application/json": {"schema": _CREATE_SCHEMA},
        },
    }
}


@router.post("/videos", responses={200: {"model": Video}}, openapi_extra=_CREATE_BODY)
async def create_video(
    request: Request,
    metadata: CallerMetadata,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Submit a render job."""
    gateway = backends(request)
    submit = await read_create_params(
        request, max_body_bytes=gateway.config.max_body_bytes, idempotency_key=idempotency_key
    )
    response: scheduler_pb2.SubmitRenderResponse = await gateway.scheduler.SubmitRender(
        submit, metadata=metadata, timeout=gateway.config.timeout_s
    )
    return JSONResponse(video_from_job(response.job))


@router.get("/videos", responses={200: {"model": VideoList}})
async def list_videos(
    request: Request,
    metadata: CallerMetadata,
    after: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=100)] = None,
    order: Literal["asc", "desc"] | None = None,
) -> JSONResponse:
    """Page through the caller's videos, newest first unless `order=asc`."""
    gateway = backends(request)
    list_request = scheduler_pb2.ListJobsRequest(
        page_size=limit or 0, page_token=after or "", order=_ORDER[order]
    )
    response: scheduler_pb2.ListJobsResponse = await gateway.scheduler.ListJobs(
        list_request, metadata=metadata, timeout=gateway.config.timeout_s
    )
    return JSONResponse(video_list(response.jobs, has_more=response.has_more))


@router.get("/videos/{video_id}", responses={200: {"model": Video}})
async def retrieve_video(
    request: Request, metadata: CallerMetadata, video_id: VideoId
) -> JSONResponse:
    """The video's current state; while it is pending, a hint of when to poll again."""
    gateway = backends(request)
    response: scheduler_pb2.GetJobResponse = await gateway.scheduler.GetJob(
        scheduler_pb2.GetJobRequest(id=video_id),
        metadata=metadata,
        timeout=gateway.config.timeout_s,
    )
    headers = None
    if is_pending(response.job):
        # The scheduler's estimate from the queue ahead; the setting where it has none.
        poll_ms = response.poll_after_ms or gateway.config.poll_after_ms
        headers = {"openai-poll-after-ms": str(poll_ms)}
    return JSONResponse(video_from_job(response.job), headers=headers)


@router.delete("/videos/{video_id}", responses={200: {"model": VideoDeleted}})
async def delete_video(
    request: Request, metadata: CallerMetadata, video_id: VideoId
) -> JSONResponse:
    """Delete the video and its MP4, cancelling its render first if it still runs."""
    gateway = backends(request)
    response: scheduler_pb2.DeleteJobResponse = await gateway.scheduler.DeleteJob(
        scheduler_pb2.DeleteJobRequest(id=video_id),
        metadata=metadata,
        timeout=gateway.config.timeout_s,
    )
    deleted: VideoDeleted = {
        "id": response.id or video_id,
        "object": "video.deleted",
        "deleted": response.deleted,
    }
    return JSONResponse(deleted)


@router.post("/videos/{video_id}/retry", responses={200: {"model": Video}})
async def retry_video(
    request: Request, metadata: CallerMetadata, video_id: VideoId
) -> JSONResponse:
    """spillway's extension: put a failed or cancelled video back in line (400
    `video_not_retryable` for one queued, running or completed)."""
    gateway = backends(request)
    response: scheduler_pb2.RetryJobResponse = await gateway.scheduler.RetryJob(
        scheduler_pb2.RetryJobRequest(id=video_id),
        metadata=metadata,
        timeout=gateway.config.timeout_s,
    )
    return JSONResponse(video_from_job(response.job))


@router.get(
    "/videos/{video_id}/content",
    response_class=Response,
    responses={
        200: {"content": {content.MEDIA_TYPE: {}}},
        307: {"description": "Redirect to a short-lived URL of the MP4."},
    },
)
async def download_video(
    request: Request, metadata: CallerMetadata, video_id: VideoId, variant: str = "video"
) -> Response:
    """The MP4 of a completed video."""
    if variant != "video":
        raise ApiError(
            400,
            f"Unsupported variant {variant!r}: only 'video' is available.",
            code="invalid_value",
            param="variant",
        )
    gateway = backends(request)
    response: scheduler_pb2.GetJobContentResponse = await gateway.scheduler.GetJobContent(
        scheduler_pb2.GetJobContentRequest(id=video_id),
        metadata=metadata,
        timeout=gateway.config.timeout_s,
    )
    if gateway.http is None:
        return content.redirect_to(response.url)
    return await content.proxy(gateway.http, response.url)


@router.get(
    "/videos/{video_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def watch_video(
    request: Request,
    metadata: CallerMetadata,
    video_id: VideoId,
    after: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """The video's events as Server-Sent Events, resuming after `Last-Event-ID` (or
    `after`), until its final event."""
    gateway = backends(request)
    resume_after = last_event_id or after or ""
    return await relay_events(gateway.scheduler, video_id, resume_after, metadata)
