"""The gateway's traces and metrics: its request spans, the trace context it hands the
scheduler, ``GET /metrics``, and the trace id on video objects.

Most tests run the gateway against a small in-process gRPC scheduler that records the
metadata of every call; the last one runs the real stack.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.embedded import EmbeddedServer
from tests.conftest import API_KEY, Stack, free_port

AUTH = {"authorization": "Bearer test-key"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
JOB_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def job(video_id: str = "video_123") -> pb.Job:
    return pb.Job(
        id=video_id,
        status=pb.JOB_STATUS_QUEUED,
        model="spillway-1",
        prompt="a fox",
        seconds=4,
        size="720x1280",
        trace_id=JOB_TRACE_ID,
    )


def event(event_id: str, *, terminal: bool) -> pb.WatchJobResponse:
    status = pb.JOB_STATUS_COMPLETED if terminal else pb.JOB_STATUS_QUEUED
    return pb.WatchJobResponse(
        event=pb.JobEvent(
            id=event_id, job_id="video_123", type="queued", status=status, terminal=terminal
        )
    )


@dataclass
class RecordingScheduler(scheduler_pb2_grpc.SchedulerServicer):
    """Answers every call with one queued job, keeping the metadata each call carried.
    A job id starting with ``missing`` is NOT_FOUND; a watch sends one event, then waits
    for `finish_watch` before its final one."""

    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    finish_watch: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.calls.append((method, metadata))

    async def SubmitRender(
        self, request: pb.SubmitRenderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SubmitRenderResponse:
        self.record("SubmitRender", context)
        return pb.SubmitRenderResponse(job=job(), created=True)

    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetJobResponse:
        self.record("GetJob", context)
        if request.id.startswith("missing"):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no video {request.id}")
        return pb.GetJobResponse(job=job(request.id))

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListJobsResponse:
        self.record("ListJobs", context)
        return pb.ListJobsResponse(jobs=[job()])

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchJobResponse]:
        self.record("WatchJob", context)
        yield event("1-0", terminal=False)
        await self.finish_watch.wait()
        yield event("2-0", terminal=True)


@pytest.fixture
async def scheduler() -> AsyncIterator[tuple[RecordingScheduler, str]]:
    servicer = RecordingScheduler()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        servicer.finish_watch.set()
        await server.stop(None)


@pytest.fixture
async def client(scheduler: tuple[RecordingScheduler, str]) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway app in-process, over the recording scheduler."""
    app = create_app(GatewayConfig(scheduler_addr=scheduler[1]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


@contextlib.asynccontextmanager
async def served_gateway(scheduler_addr: str) -> AsyncIterator[str]:
    """The gateway app on a real uvicorn server on loopback; yields its base URL."""
    port = free_port()
    server = EmbeddedServer(
        uvicorn.Config(
            create_app(GatewayConfig(scheduler_addr=scheduler_addr)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def server_spans(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def traceparent_ids(metadata: dict[str, str]) -> tuple[str, str]:
    """The trace id and parent span id of the `traceparent` in `metadata`."""
    version, trace_id, parent_id, _flags = metadata["traceparent"].split("-")
    assert version == "00"
    return trace_id, parent_id


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


# --- traces ---------------------------------------------------------------------------


async def test_request_span_continues_the_callers_trace(
    client: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    """A request carrying `traceparent` is served in one SERVER span of that trace, a
    child of the caller's span, named by its route template rather than its path."""
    response = await client.get(
        "/v1/videos/video_123", headers={**AUTH, "traceparent": TRACEPARENT}
    )

    assert response.status_code == 200
    [span] = server_spans(spans)
    assert span.name == "GET /v1/videos/{video_id}"
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_ID
    assert (span.attributes or {})["http.route"] == "/v1/videos/{video_id}"
    assert (span.attributes or {})["spillway.job_id"] == "video_123"
    # Only the server span: no per-message "http send"/"http receive" spans.
    assert [s.name for s in spans.get_finished_spans()] == [span.name]


@pytest.mark.parametrize(
    ("method", "path", "rpc"),
    [
        ("POST", "/v1/videos", "SubmitRender"),
        ("GET", "/v1/videos/video_123", "GetJob"),
        ("GET", "/v1/videos", "ListJobs"),
        ("GET", "/v1/videos/video_123/events", "WatchJob"),
    ],
)
async def test_scheduler_calls_carry_the_request_span(
    scheduler: tuple[RecordingScheduler, str],
    client: httpx.AsyncClient,
    spans: InMemorySpanExporter,
    method: str,
    path: str,
    rpc: str,
) -> None:
    """Each scheduler call carries the caller's key and a `traceparent` naming the
    gateway's request span as parent, so the scheduler's spans continue the trace."""
    recorder, _ = scheduler
    recorder.finish_watch.set()
    headers = {**AUTH, "traceparent": TRACEPARENT}
    data = {"prompt": "a fox"} if method == "POST" else None

    response = await client.request(method, path, headers=headers, data=data)

    assert response.status_code == 200
    [span] = server_spans(spans)
    [(called, metadata)] = recorder.calls
    assert called == rpc
    assert metadata["authorization"] == "Bearer test-key"
    assert traceparent_ids(metadata) == (TRACE_ID, f"{span.context.span_id:016x}")


async def test_a_request_without_context_starts_a_trace_the_scheduler_joins(
    scheduler: tuple[RecordingScheduler, str],
    client: httpx.AsyncClient,
    spans: InMemorySpanExporter,
) -> None:
    """Without an incoming `traceparent` the request span starts a new trace, and the
    scheduler call still carries it."""
    response = await client.post("/v1/videos", headers=AUTH, data={"prompt": "a fox"})

    assert response.status_code == 200
    [span] = server_spans(spans)
    assert span.parent is None
    [(_, metadata)] = scheduler[0].calls
    ctx = span.context
    assert traceparent_ids(metadata) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")


async def test_probes_and_scrapes_make_no_spans(
    client: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    """`/healthz` and `/metrics` are served without spans."""
    for path in ("/healthz", "/metrics"):
        assert (await client.get(path, headers={"traceparent": TRACEPARENT})).status_code == 200

    assert spans.get_finished_spans() == ()


# --- metrics --------------------------------------------------------------------------


async def test_metrics_count_requests_by_route_template_and_status(
    client: httpx.AsyncClient,
) -> None:
    """`/metrics` counts requests by route template, method and status (a path no route
    matches reads `unmatched`) and times them, with no video id in any label."""
    for video_id in ("video_1", "video_2", "missing_3"):
        await client.get(f"/v1/videos/{video_id}", headers=AUTH)
    await client.post("/v1/videos", data={"prompt": "a fox"})  # no key: 401
    await client.get("/v1/images/abc", headers=AUTH)

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "video_1" not in response.text and "/v1/images" not in response.text
    got = samples(response.text)
    retrieve = {"route": "/v1/videos/{video_id}", "method": "GET"}
    assert got["spillway_gateway_requests_total", labels(**retrieve, status="200")] == 2
    assert got["spillway_gateway_requests_total", labels(**retrieve, status="404")] == 1
    create = labels(route="/v1/videos", method="POST", status="401")
    assert got["spillway_gateway_requests_total", create] == 1
    unmatched = labels(route="unmatched", method="GET", status="404")
    assert got["spillway_gateway_requests_total", unmatched] == 1
    assert got["spillway_gateway_request_seconds_count", labels(**retrieve)] == 3
    assert got["spillway_gateway_request_seconds_sum", labels(**retrieve)] > 0
    assert got["spillway_gateway_request_seconds_bucket", labels(**retrieve, le="+Inf")] == 3


async def test_each_app_counts_only_its_own_requests(
    scheduler: tuple[RecordingScheduler, str], client: httpx.AsyncClient
) -> None:
    """Two apps in one process keep separate registries."""
    await client.get("/v1/videos/video_1", headers=AUTH)
    other = create_app(GatewayConfig(scheduler_addr=scheduler[1]))
    transport = httpx.ASGITransport(other)
    async with httpx.AsyncClient(transport=transport, base_url="http://other") as other_client:
        page = (await other_client.get("/metrics")).text

    assert 'route="/v1/videos/{video_id}"' not in page
    assert 'route="/v1/videos/{video_id}"' in (await client.get("/metrics")).text


async def test_event_stream_counts_when_it_starts_and_is_not_buffered(
    scheduler: tuple[RecordingScheduler, str],
) -> None:
    """An event stream reaches the client event by event, and counts as a request as
    soon as its headers go out, while it is still open."""
    recorder, address = scheduler
    route = labels(route="/v1/videos/{video_id}/events", method="GET", status="200")
    async with served_gateway(address) as base, httpx.AsyncClient(base_url=base) as http:
        async with http.stream("GET", "/v1/videos/video_123/events", headers=AUTH) as stream:
            lines = stream.aiter_lines()
            assert await anext(lines) == "id: 1-0"
            open_page = (await http.get("/metrics")).text
            recorder.finish_watch.set()
            rest = [line async for line in lines]
        closed_page = (await http.get("/metrics")).text

    assert "id: 2-0" in rest
    assert samples(open_page)["spillway_gateway_requests_total", route] == 1
    assert samples(closed_page)["spillway_gateway_requests_total", route] == 1


# --- trace id on videos ---------------------------------------------------------------


async def test_video_objects_carry_the_jobs_trace_id(client: httpx.AsyncClient) -> None:
    """Created, retrieved and listed videos carry the job's trace id, a field the
    OpenAPI schema documents."""
    created = (await client.post("/v1/videos", headers=AUTH, data={"prompt": "a fox"})).json()
    retrieved = (await client.get("/v1/videos/video_123", headers=AUTH)).json()
    listed = (await client.get("/v1/videos", headers=AUTH)).json()
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["Video"]

    assert created["trace_id"] == retrieved["trace_id"] == JOB_TRACE_ID
    assert listed["data"][0]["trace_id"] == JOB_TRACE_ID
    assert "trace id" in schema["properties"]["trace_id"]["description"]


async def test_submit_span_and_video_join_the_callers_trace(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    """Through the real scheduler, a create carrying `traceparent` returns a video whose
    trace_id is the caller's trace, and the scheduler's `submit` span is a child of the
    gateway's request span."""
    await stack.start_renderer()
    base = await stack.start_gateway(await stack.start_scheduler())
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post(
            "/v1/videos",
            headers={"authorization": f"Bearer {API_KEY}", "traceparent": TRACEPARENT},
            data={"prompt": "a lighthouse at dusk", "seconds": "4", "size": "720x1280"},
        )

    assert response.status_code == 200, response.text
    assert response.json()["trace_id"] == TRACE_ID
    by_name = {s.name: s for s in spans.get_finished_spans()}
    request_span, submit = by_name["POST /v1/videos"], by_name["submit"]
    assert submit.parent is not None
    assert submit.parent.span_id == request_span.context.span_id
    assert f"{submit.context.trace_id:032x}" == TRACE_ID
