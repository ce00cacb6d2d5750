"""The Renderer gRPC server, in-process on a free port, called over a real channel."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from spillway.v1 import renderer_pb2, renderer_pb2_grpc

from renderer.cpu import CpuTokenEngine
from renderer.pipeline import FrameTokens, RenderSpec
from renderer.probe import probe_mp4
from renderer.server import RendererServer, start_renderer_server

PROMPT = "A lighthouse in a storm, waves breaking over the rocks"
SERVER_FPS = 8


def render_request(**fields: Any) -> renderer_pb2.RenderRequest:
    defaults: dict[str, Any] = {
        "job_id": "job-1",
        "prompt": PROMPT,
        "model": "stand-in",
        "seconds": 2,
        "width": 160,
        "height": 128,
    }
    return renderer_pb2.RenderRequest(**(defaults | fields))


async def files_in(directory: Path) -> list[str]:
    return await asyncio.to_thread(os.listdir, directory)


@dataclass
class Rendered:
    kinds: list[str]
    progress: list[renderer_pb2.RenderProgress]
    chunks: list[bytes]
    metadata: renderer_pb2.RenderMetadata

    @property
    def mp4(self) -> bytes:
        return b"".join(self.chunks)


async def render(stub: Any, request: renderer_pb2.RenderRequest) -> Rendered:
    responses = [response async for response in stub.Render(request)]
    kinds = [response.WhichOneof("payload") for response in responses]
    return Rendered(
        kinds=kinds,
        progress=[r.progress for r in responses if r.HasField("progress")],
        chunks=[r.chunk for r in responses if r.WhichOneof("payload") == "chunk"],
        metadata=next(r.metadata for r in responses if r.HasField("metadata")),
    )


@contextlib.asynccontextmanager
async def renderer(
    work_dir: Path, **options: Any
) -> AsyncIterator[tuple[RendererServer, grpc.aio.Channel]]:
    server = await start_renderer_server(fps=SERVER_FPS, work_dir=work_dir, **options)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield server, channel
    finally:
        await server.stop()


class GatedEngine:
    """The CPU engine, held before its first frame until the test opens the gate: a
    stand-in for a GPU that is still working."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = threading.Event()

    def tokens(self, spec: RenderSpec) -> Iterator[FrameTokens]:
        if not self.gate.wait(timeout=60):
            raise TimeoutError("the test never opened the gate")
        yield from CpuTokenEngine().tokens(spec)


class CountingEngine:
    """The CPU engine, counting the frames it was asked for."""

    name = "counting"

    def __init__(self) -> None:
        self.frames = 0

    def tokens(self, spec: RenderSpec) -> Iterator[FrameTokens]:
        for token in CpuTokenEngine().tokens(spec):
            self.frames += 1
            yield token


class BrokenEngine:
    """An engine whose GPU fails before the first frame."""

    name = "broken"

    def tokens(self, spec: RenderSpec) -> Iterator[FrameTokens]:
        raise RuntimeError("GPU fell off the bus")


async def test_render_streams_progress_then_mp4_then_metadata(tmp_path: Path) -> None:
    """A render streams rising progress to 100, then MP4 chunks, then one metadata message."""
    async with renderer(tmp_path, chunk_bytes=4096) as (_, channel):
        result = await render(renderer_pb2_grpc.RendererStub(channel), render_request())

    progress, chunks = len(result.progress), len(result.chunks)
    assert result.kinds == ["progress"] * progress + ["chunk"] * chunks + ["metadata"]
    percents = [update.percent for update in result.progress]
    assert percents[0] == 0
    assert percents[-1] == 100
    assert percents == sorted(set(percents))
    assert result.progress[-1].frames_done == result.progress[-1].frames_total == 16
    assert chunks > 1
    assert all(len(chunk) == 4096 for chunk in result.chunks[:-1])


async def test_streamed_mp4_matches_request_and_metadata(tmp_path: Path) -> None:
    """The streamed chunks form an MP4 of the requested size and length that the metadata
    describes; fps 0 takes the server's default."""
    async with renderer(tmp_path, container_id="renderer-a") as (_, channel):
        result = await render(renderer_pb2_grpc.RendererStub(channel), render_request(fps=0))

    info = probe_mp4(result.mp4)
    assert (info.codec, info.width, info.height, info.frames) == ("h264", 160, 128, 16)
    assert info.duration_seconds == pytest.approx(2.0, abs=1 / SERVER_FPS)
    metadata = result.metadata
    assert metadata.bytes == len(result.mp4)
    assert metadata.sha256 == hashlib.sha256(result.mp4).hexdigest()
    assert (metadata.frames, metadata.fps, metadata.duration_seconds) == (16, SERVER_FPS, 2.0)
    assert (metadata.container_id, metadata.engine) == ("renderer-a", "cpu")
    assert metadata.render_seconds > 0
    assert metadata.restore_seconds == 0


async def test_only_the_first_render_is_a_cold_start(tmp_path: Path) -> None:
    """The process's first render reports a cold start with its boot time; the next does not."""
    async with renderer(tmp_path) as (_, channel):
        stub = renderer_pb2_grpc.RendererStub(channel)
        first = await render(stub, render_request(seconds=1, fps=4))
        second = await render(stub, render_request(seconds=1, fps=4))

    assert first.metadata.cold_start
    assert first.metadata.boot_seconds > 0
    assert not second.metadata.cold_start
    assert second.metadata.boot_seconds == 0
    assert first.metadata.container_id == second.metadata.container_id


async def test_request_beyond_the_slots_is_refused(tmp_path: Path) -> None:
    """With every slot rendering, another request fails at once with RESOURCE_EXHAUSTED."""
    engine = GatedEngine()
    async with renderer(tmp_path, slots=1, engine=engine) as (_, channel):
        stub = renderer_pb2_grpc.RendererStub(channel)
        try:
            busy = stub.Render(render_request(seconds=1, fps=4))
            started = await anext(aiter(busy))
            assert started.progress.percent == 0

            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await render(stub, render_request(job_id="job-2"))
        finally:
            engine.gate.set()
        remaining = [response async for response in busy]

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1 render slots are busy" in (refused.value.details() or "")
    assert remaining[-1].HasField("metadata")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"prompt": "  "}, "prompt must not be empty"),
        ({"seconds": 0}, "seconds must be between 1 and 60, got 0"),
        ({"seconds": 61}, "seconds must be between 1 and 60, got 61"),
        ({"width": 161}, "width must be an even number"),
        ({"height": 8}, "height must be an even number of pixels between 16 and 4096, got 8"),
        ({"width": 4098}, "width must be an even number"),
        ({"fps": 500}, "fps must be between 1 and 120"),
    ],
)
async def test_invalid_request_is_rejected(
    tmp_path: Path, fields: dict[str, Any], problem: str
) -> None:
    """A request with a bad field fails with INVALID_ARGUMENT naming the field."""
    async with renderer(tmp_path) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as rejected:
            await render(renderer_pb2_grpc.RendererStub(channel), render_request(**fields))

    assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem in (rejected.value.details() or "")


async def test_engine_failure_is_internal_and_leaves_no_file(tmp_path: Path) -> None:
    """An engine that raises fails the call with INTERNAL naming the error, and frees its slot
    and file."""
    async with renderer(tmp_path, slots=1, engine=BrokenEngine()) as (server, channel):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await render(renderer_pb2_grpc.RendererStub(channel), render_request())
        await server.wait_idle()

        assert await files_in(tmp_path) == []
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert "GPU fell off the bus" in (failed.value.details() or "")


async def test_health_check_reports_serving(tmp_path: Path) -> None:
    """The standard health service reports the server and the Renderer service SERVING."""
    async with renderer(tmp_path) as (_, channel):
        health = health_pb2_grpc.HealthStub(channel)
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
        service = await health.Check(health_pb2.HealthCheckRequest(service="spillway.v1.Renderer"))

    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    assert service.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_renderer(tmp_path: Path) -> None:
    """Server reflection lists the Renderer and health services."""
    async with renderer(tmp_path) as (_, channel):
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = [r async for r in reflection.ServerReflectionInfo(iter([request]))]

    names = {s.name for s in responses[0].list_services_response.service}
    assert {"spillway.v1.Renderer", "grpc.health.v1.Health"} <= names


async def test_cancelled_render_stops_and_leaves_no_file(tmp_path: Path) -> None:
    """A client cancelling mid-render stops the render early and its temp file is deleted."""
    engine = CountingEngine()
    long_render = render_request(seconds=60, width=640, height=480, fps=24)
    async with renderer(tmp_path, engine=engine) as (server, channel):
        call = renderer_pb2_grpc.RendererStub(channel).Render(long_render)
        async for response in call:
            if response.progress.frames_done > 0:
                break
        assert len(await files_in(tmp_path)) == 1

        call.cancel()
        await server.wait_idle()

        assert await files_in(tmp_path) == []
    assert 0 < engine.frames < 60 * 24


async def test_stop_cancels_in_flight_renders_and_cleans_up(tmp_path: Path) -> None:
    """Stopping without grace ends an in-flight render, removes its file, and stop can be
    called again."""
    engine = GatedEngine()
    async with renderer(tmp_path, engine=engine) as (server, channel):
        call = renderer_pb2_grpc.RendererStub(channel).Render(render_request())
        await anext(aiter(call))

        stopping = asyncio.create_task(server.stop())
        with pytest.raises(grpc.aio.AioRpcError):
            _ = [response async for response in call]
        engine.gate.set()
        await stopping
        await server.stop()

        assert await files_in(tmp_path) == []


async def test_command_line_serves_until_sigterm(tmp_path: Path) -> None:
    """`python -m renderer serve` prints its address, serves health checks, and exits 0 on
    SIGTERM."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "renderer",
        "serve",
        "--port",
        "0",
        "--slots",
        "1",
        "--work-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        ready = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        assert ready.startswith("renderer listening on 127.0.0.1:")
        assert ready.rstrip().endswith("(1 slots)")
        address = ready.split()[3]
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert status.status == health_pb2.HealthCheckResponse.SERVING

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
