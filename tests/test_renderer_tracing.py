"""The renderer's `renderer.render` span, from a real in-process renderer server called
over a real channel with the caller's trace context in its metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from spillway.v1 import renderer_pb2_grpc

from renderer.server import RendererServer, start_renderer_server
from tests.conftest import assert_eventually
from tests.test_renderer_server import SERVER_FPS, BrokenEngine, GatedEngine, render_request

tracer = trace.get_tracer("tests")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RendererServer]:
    server = await start_renderer_server(
        fps=SERVER_FPS, work_dir=tmp_path, container_id="renderer-test-1"
    )
    try:
        yield server
    finally:
        await server.stop()


def caller_metadata() -> tuple[tuple[str, str], ...]:
    """The current context as the scheduler sends it: W3C headers as gRPC metadata."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return tuple(headers.items())


def render_spans(spans: InMemorySpanExporter) -> Sequence[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == "renderer.render"]


async def test_render_span_is_a_child_of_the_callers_span(
    server: RendererServer, spans: InMemorySpanExporter
) -> None:
    """A render called with `traceparent` metadata is one SERVER span under the caller's
    span, describing the job, the container and the render, its time split into
    generating and encoding."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = renderer_pb2_grpc.RendererStub(channel)
        with tracer.start_as_current_span("scheduler.render") as caller:
            responses = [r async for r in stub.Render(render_request(), metadata=caller_metadata())]

    [span] = render_spans(spans)
    mp4_bytes = sum(len(r.chunk) for r in responses if r.WhichOneof("payload") == "chunk")
    assert span.kind is SpanKind.SERVER
    assert span.context.trace_id == caller.get_span_context().trace_id
    assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    render_seconds = attributes.pop("spillway.render_seconds")
    generate_seconds = attributes.pop("spillway.generate_seconds")
    encode_seconds = attributes.pop("spillway.encode_seconds")
    assert attributes == {
        "spillway.job_id": "job-1",
        "spillway.container_id": "renderer-test-1",
        "spillway.cold_start": True,
        "spillway.engine": "cpu",
        "spillway.frames": 2 * SERVER_FPS,
        "spillway.fps": SERVER_FPS,
        "spillway.width": 160,
        "spillway.height": 128,
        "spillway.bytes": mp4_bytes,
    }
    assert isinstance(render_seconds, float) and render_seconds > 0
    assert isinstance(generate_seconds, float) and isinstance(encode_seconds, float)
    assert generate_seconds > 0 and encode_seconds > 0
    assert generate_seconds + encode_seconds == pytest.approx(render_seconds)


async def test_second_render_is_warm_and_a_call_without_context_starts_a_trace(
    server: RendererServer, spans: InMemorySpanExporter
) -> None:
    """Only a renderer's first render is a cold start; a call without trace context gets
    a root span of its own rather than none."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = renderer_pb2_grpc.RendererStub(channel)
        for job_id in ("job-1", "job-2"):
            _ = [r async for r in stub.Render(render_request(job_id=job_id))]

    first, second = render_spans(spans)
    assert (first.attributes or {})["spillway.cold_start"] is True
    assert (second.attributes or {})["spillway.cold_start"] is False
    assert (second.attributes or {})["spillway.job_id"] == "job-2"
    assert first.parent is None and second.parent is None
    assert first.context.trace_id != second.context.trace_id


async def test_invalid_request_sets_error_status(
    server: RendererServer, spans: InMemorySpanExporter
) -> None:
    """A request that can never render ends its span with ERROR and the exception
    recorded, and the caller still gets INVALID_ARGUMENT."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = renderer_pb2_grpc.RendererStub(channel)
        with tracer.start_as_current_span("scheduler.render") as caller:
            call = stub.Render(render_request(width=161), metadata=caller_metadata())
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                _ = [r async for r in call]

    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    [span] = render_spans(spans)
    assert span.context.trace_id == caller.get_span_context().trace_id
    assert span.status.status_code is StatusCode.ERROR
    assert "width must be an even number" in (span.status.description or "")
    [event] = span.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "renderer.errors.InvalidRenderRequest"
    assert (span.attributes or {})["spillway.job_id"] == "job-1"


async def test_broken_engine_sets_error_status(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    """An engine failing mid-render ends the span with ERROR and the engine's exception,
    with what was being rendered still on it."""
    server = await start_renderer_server(fps=SERVER_FPS, work_dir=tmp_path, engine=BrokenEngine())
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = renderer_pb2_grpc.RendererStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                _ = [r async for r in stub.Render(render_request())]
    finally:
        await server.stop()

    assert raised.value.code() is grpc.StatusCode.INTERNAL
    [span] = render_spans(spans)
    assert span.status.status_code is StatusCode.ERROR
    assert "GPU fell off the bus" in (span.status.description or "")
    assert [e.name for e in span.events] == ["exception"]
    assert (span.attributes or {})["spillway.engine"] == "broken"
    assert "spillway.render_seconds" not in (span.attributes or {})


async def test_cancelled_render_records_a_cancelled_event(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    """A caller that goes away mid-render leaves a `cancelled` event on the span, not an
    error."""
    engine = GatedEngine()
    server = await start_renderer_server(fps=SERVER_FPS, work_dir=tmp_path, engine=engine)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            call = renderer_pb2_grpc.RendererStub(channel).Render(render_request())
            await anext(aiter(call))
            call.cancel()
            engine.gate.set()

            async def ended() -> ReadableSpan:
                ended_spans = render_spans(spans)
                assert len(ended_spans) == 1
                return ended_spans[0]

            span = await assert_eventually(ended)
    finally:
        await server.stop()

    assert [e.name for e in span.events] == ["cancelled"]
    assert span.status.status_code is StatusCode.UNSET
