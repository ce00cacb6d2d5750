"""The in-house fleet: gRPC `Renderer` endpoints, each with a number of slots."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import grpc
from spillway.v1 import renderer_pb2, renderer_pb2_grpc

from scheduler.config import RendererEndpoint
from scheduler.jobs import Job
from scheduler.pools.base import (
    Pool,
    ProgressCallback,
    Rendered,
    RenderError,
    RenderInfo,
    Slot,
    Superseded,
)

# A renderer that turns a request away, or is unreachable, leaves the job to another
# attempt; one that calls the request invalid will not change its mind.
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
}
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
]


@dataclass
class _Endpoint:
    address: str
    slots: int
    stub: renderer_pb2_grpc.RendererStub
    channel: grpc.aio.Channel
    busy: int = 0


@dataclass
class _InhouseSlot(Slot):
    endpoint: _Endpoint
    pool: InhousePool
    released: bool = field(default=False)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool._give_back(self.endpoint)


class InhousePool(Pool):
    name = "inhouse"

    def __init__(
        self, endpoints: tuple[RendererEndpoint, ...], *, timeout_s: float, tmp_dir: Path | None
    ) -> None:
        self._endpoints = []
        for e in endpoints:
            channel = grpc.aio.insecure_channel(e.address, options=_CHANNEL_OPTIONS)
            stub = renderer_pb2_grpc.RendererStub(channel)
            self._endpoints.append(_Endpoint(e.address, e.slots, stub, channel))
        self._timeout_s = timeout_s
        self._tmp_dir = tmp_dir or Path(tempfile.gettempdir())
        self._freed = asyncio.Event()

    def capacity(self) -> tuple[int, int]:
        return (
            sum(e.busy for e in self._endpoints),
            sum(e.slots for e in self._endpoints),
        )

    async def acquire(self) -> Slot:
        while True:
            endpoint = max(self._endpoints, key=lambda e: e.slots - e.busy)
            if endpoint.busy < endpoint.slots:
                endpoint.busy += 1
                return _InhouseSlot(endpoint, self)
            self._freed.clear()
            await self._freed.wait()

    def _give_back(self, endpoint: _Endpoint) -> None:
        endpoint.busy -= 1
        self._freed.set()

    async def render(self, slot: Slot, job: Job, on_progress: ProgressCallback) -> Rendered:
        assert isinstance(slot, _InhouseSlot)
        request = renderer_pb2.RenderRequest(
            job_id=job.id,
            prompt=job.spec.prompt,
            model=job.spec.model,
            seconds=job.spec.seconds,
            width=job.spec.width,
            height=job.spec.height,
        )
        # Named before any await, so that whatever a cancel interrupts, we know what
        # to clean up; creation and cleanup finish even if we are cancelled meanwhile.
        path = self._tmp_dir / f"{job.id}-{job.attempt}-{secrets.token_hex(4)}.mp4"
        out = await _create(path)
        try:
            info = await self._stream(slot.endpoint, request, out, on_progress)
            await asyncio.shield(asyncio.to_thread(out.close))
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_discard, out, path))
            raise
        return Rendered(path=path, info=info)

    async def _stream(
        self,
        endpoint: _Endpoint,
        request: renderer_pb2.RenderRequest,
        out: BinaryIO,
        on_progress: ProgressCallback,
    ) -> RenderInfo:
        digest = hashlib.sha256()
        size = 0
        meta: renderer_pb2.RenderMetadata | None = None
        call = endpoint.stub.Render(request, timeout=self._timeout_s)
        try:
            async for response in call:
                kind = response.WhichOneof("payload")
                if kind == "progress":
                    if not await on_progress(response.progress.percent):
                        raise Superseded(request.job_id)
                elif kind == "chunk":
                    digest.update(response.chunk)
                    size += len(response.chunk)
                    await asyncio.to_thread(out.write, response.chunk)
                elif kind == "metadata":
                    meta = response.metadata
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise RenderError(
                f"renderer {endpoint.address}: {code.name}: {exc.details()}",
                retryable=code in _RETRYABLE,
                charge_attempt=code is not grpc.StatusCode.RESOURCE_EXHAUSTED,
            ) from exc
        finally:
            call.cancel()
        if meta is None:
            raise RenderError(f"renderer {endpoint.address} sent no metadata", retryable=True)
        if meta.sha256 != digest.hexdigest() or meta.bytes != size:
            raise RenderError(
                f"renderer {endpoint.address}: MP4 arrived corrupted "
                f"({size} bytes, sha256 {digest.hexdigest()[:12]}; "
                f"expected {meta.bytes}, {meta.sha256[:12]})",
                retryable=True,
            )
        return RenderInfo(
            container_id=meta.container_id,
            cold_start=meta.cold_start,
            boot_s=meta.boot_seconds,
            restore_s=meta.restore_seconds,
            render_s=meta.render_seconds,
            bytes=meta.bytes,
            sha256=meta.sha256,
            duration_s=meta.duration_seconds,
            frames=meta.frames,
            engine=meta.engine,
        )

    async def close(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.channel.close()


async def _create(path: Path) -> BinaryIO:
    """Creates the file in a thread. If the caller is cancelled meanwhile, the file the
    thread made is closed and removed instead of leaking."""
    creating = asyncio.ensure_future(asyncio.to_thread(path.open, "xb"))
    try:
        return await asyncio.shield(creating)
    except asyncio.CancelledError:
        creating.add_done_callback(functools.partial(_discard_created, path))
        raise


def _discard_created(path: Path, creating: asyncio.Future[BinaryIO]) -> None:
    if not creating.cancelled() and creating.exception() is None:
        _discard(creating.result(), path)


def _discard(out: BinaryIO, path: Path) -> None:
    out.close()
    path.unlink(missing_ok=True)
