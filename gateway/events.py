"""``GET /v1/videos/{id}/events``: the scheduler's WatchJob stream as Server-Sent Events.

Each message carries ``id:`` (the scheduler's event id, so ``Last-Event-ID`` resumes
where a dropped connection left off), ``event: video.<type>`` and the JSON of a
`VideoEvent`. The stream ends after the job's terminal event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
from spillway.v1 import scheduler_pb2, scheduler_pb2_grpc
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway.auth import Metadata
from gateway.errors import from_rpc_error
from gateway.videos import video_event

FIRST_EVENT_WAIT_S = 2.0
"""How long to hold the response back for the first event. A watch the scheduler
refuses (unknown job, bad key) fails at once and then answers a plain HTTP error; a
resumed watch of an idle job may see no event for minutes, and must not keep the
client waiting for its headers that long."""


async def relay_events(
    scheduler: scheduler_pb2_grpc.SchedulerStub,
    video_id: str,
    after_event_id: str,
    metadata: Metadata,
) -> EventSourceResponse:
    """Open the watch, and answer with its event stream or with the error it failed with."""
    request = scheduler_pb2.WatchJobRequest(id=video_id, after_event_id=after_event_id)
    relay = _Relay(scheduler.WatchJob(request, metadata=metadata))
    try:
        await asyncio.wait({relay.first}, timeout=FIRST_EVENT_WAIT_S)
        if relay.first.done():
            relay.first.result()
    except BaseException:
        relay.close()
        raise
    return EventSourceResponse(relay.messages())


class _Relay:
    def __init__(
        self,
        call: grpc.aio.UnaryStreamCall[
            scheduler_pb2.WatchJobRequest, scheduler_pb2.WatchJobResponse
        ],
    ) -> None:
        self.call = call
        self.first = asyncio.ensure_future(call.read())

    async def messages(self) -> AsyncIterator[ServerSentEvent]:
        try:
            response = await self.first
            # read() answers a non-message EOF sentinel once the stream has ended.
            while isinstance(response, scheduler_pb2.WatchJobResponse):
                event = response.event
                data = json.dumps(video_event(event), separators=(",", ":"))
                yield ServerSentEvent(data, id=event.id, event=f"video.{event.type}")
                if event.terminal:
                    return
                response = await self.call.read()
        except grpc.aio.AioRpcError as err:
            body = json.dumps(from_rpc_error(err).body(), separators=(",", ":"))
            yield ServerSentEvent(body, event="error")
        finally:
            self.close()

    def close(self) -> None:
        """Stop the watch: the client left, the stream ended, or the request failed."""
        if not self.first.cancel() and not self.first.cancelled():
            # Marks a failure that nobody awaited as seen, or asyncio reports it as lost.
            self.first.exception()
        self.call.cancel()
