"""Starting and stopping an in-house renderer: the Renderer service plus standard gRPC
health checking and reflection, on one port."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from spillway.v1 import renderer_pb2, renderer_pb2_grpc

from renderer.cpu import CpuFrameDecoder, CpuTokenEngine
from renderer.encoder import DEFAULT_PRESET, X264_PRESETS
from renderer.pipeline import FrameDecoder, TokenEngine
from renderer.service import DEFAULT_CHUNK_BYTES, RendererService
from renderer.validation import MAX_FPS

RENDERER_SERVICE_NAME: str = renderer_pb2.DESCRIPTOR.services_by_name["Renderer"].full_name
DEFAULT_FPS = 24
DEFAULT_SLOTS = 2


class RendererServer:
    """A running renderer. Create it with `start_renderer_server`."""

    def __init__(
        self,
        server: grpc.aio.Server,
        service: RendererService,
        health_servicer: health.aio.HealthServicer,
        host: str,
        port: int,
    ) -> None:
        self._server = server
        self._service = service
        self._health = health_servicer
        self.port = port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._stopped: asyncio.Task[None] | None = None

    async def wait_idle(self) -> None:
        """Wait until no render is in flight: threads stopped, temp files deleted."""
        await self._service.wait_idle()

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking renders, give in-flight ones up to `grace` seconds to finish
        (None cancels them at once), and return once their threads have stopped and
        their files are gone. Later calls wait for the first to finish."""
        if self._stopped is None:
            self._stopped = asyncio.create_task(self._shutdown(grace))
        # Shielded so that a caller cancelled mid-stop cannot leave a half-stopped server.
        await asyncio.shield(self._stopped)

    async def _shutdown(self, grace: float | None) -> None:
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        await self._service.close()


async def start_renderer_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    slots: int = DEFAULT_SLOTS,
    fps: int = DEFAULT_FPS,
    preset: str = DEFAULT_PRESET,
    engine: TokenEngine | None = None,
    decoder: FrameDecoder | None = None,
    container_id: str | None = None,
    work_dir: Path | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    started_at: float | None = None,
) -> RendererServer:
    """Start a renderer on `host:port` (port 0 picks a free one) and return once it
    serves.

    `engine` and `decoder` default to the CPU stand-ins; one instance of each serves
    every render, from `slots` threads at once. Renders are written to `work_dir`
    (default: the system temp dir) and deleted once streamed.

    `started_at` is when this renderer began to boot, on the `time.monotonic()` clock
    (default: now): the first render reports a cold start with the boot seconds from
    then until this function returns.
    """
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    if not 1 <= fps <= MAX_FPS:
        raise ValueError(f"fps must be between 1 and {MAX_FPS}, got {fps}")
    if preset not in X264_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    service = RendererService(
        engine=engine or CpuTokenEngine(),
        decoder=decoder or CpuFrameDecoder(),
        slots=slots,
        default_fps=fps,
        preset=preset,
        container_id=container_id or f"{socket.gethostname()}-{os.getpid()}",
        work_dir=work_dir or Path(tempfile.gettempdir()),
        chunk_bytes=chunk_bytes,
        started_at=started_at,
    )
    # Without this, a second server could bind the same port and steal half the calls.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    renderer_pb2_grpc.add_RendererServicer_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (RENDERER_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    bound_port = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    for name in ("", RENDERER_SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    service.mark_ready()
    return RendererServer(server, service, health_servicer, host, bound_port)
