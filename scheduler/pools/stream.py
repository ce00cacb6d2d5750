"""One render over the in-house gRPC protocol: a `Renderer.Render` stream (progress, MP4
chunks, metadata) written to a local file.

Every pool whose renderers speak that protocol (the in-house fleet, the local burst
pool's containers) renders through `stream_render`, so they map failures the same way:

- a gRPC status the renderer may not repeat (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL,
  ...) is a retryable `RenderError`; INVALID_ARGUMENT and the like are not;
- an endpoint that could not be reached before the render began (UNAVAILABLE before
  its first message), or was full (RESOURCE_EXHAUSTED), rendered nothing: the error is
  not charged to the job, and says the endpoint is down (`endpoint_down`) so that it is
  taken out of rotation; one that dies mid-render is charged (a job that kills its
  renderer must not loop forever) and is taken out too;
- an MP4 whose size or sha256 differs from the metadata is retryable (corrupted);
- whatever ends the render (an error, `Superseded`, a cancel), its file is removed.

An MP4 under `SPOOL_BYTES` comes back in memory and is never written to a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
from pathlib import Path
from typing import BinaryIO

import grpc
from spillway.v1 import renderer_pb2, renderer_pb2_grpc

from scheduler.pools.base import Rendered, RenderError, RenderHooks, RenderInfo, Superseded
from scheduler.store.jobs import Job, random_bytes
from scheduler.telemetry import tracing

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
"""Options for channels to renderers: room for a chunk, dead peers noticed, and a
renderer that comes back reconnected within seconds (gRPC's default backoff grows to
two minutes)."""

# A renderer that turns a request away, or is unreachable, leaves the job to another
# attempt; one that calls the request invalid will not change its mind.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)


async def stream_render(
    stub: renderer_pb2_grpc.RendererStub,
    job: Job,
    hooks: RenderHooks,
    *,
    address: str,
    timeout_s: float,
    tmp_dir: Path,
) -> Rendered:
    """Renders `job` on the renderer behind `stub` (named `address` in errors): in
    memory, or (past `SPOOL_BYTES`) into a new file under `tmp_dir` that the caller
    owns. Raises `RenderError` when no valid MP4 arrived, `Superseded` when
    `hooks.progress` says the job moved on."""
    request = renderer_pb2.RenderRequest(
        job_id=job.id,
        prompt=job.spec.prompt,
        model=job.spec.model,
        seconds=job.spec.seconds,
        width=job.spec.width,
        height=job.spec.height,
    )
    # Named before any await, so that whatever a cancel interrupts, we know what to
    # clean up; writing and cleanup finish even if we are cancelled meanwhile.
    path = tmp_dir / f"{job.id}-{job.attempt}-{random_bytes(4).hex()}.mp4"
    spool = _Spool(path)
    try:
        info = await _stream(stub, address, request, timeout_s, spool, hooks)
        data = await spool.finish()
    except BaseException:
        await asyncio.shield(spool.discard())
        raise
    return Rendered(path=path, info=info, data=data)


SPOOL_BYTES = 8 * 1024 * 1024
"""How much of an MP4 is held in memory before it goes to its file."""


class _Spool:
    """The MP4 as it arrives: in memory up to `SPOOL_BYTES`, then in its file. A clip
    under that size is uploaded from memory, with no file to write, read back and
    remove (three thread hops and their syscalls per job); a longer one holds at most
    that much in memory."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._pending = bytearray()
        self._out: BinaryIO | None = None
        self._finishing: asyncio.Future[None] | None = None

    async def write(self, chunk: bytes) -> None:
        self._pending += chunk
        if len(self._pending) >= SPOOL_BYTES:
            if self._out is None:
                self._out = await _create(self._path)
            data, self._pending = bytes(self._pending), bytearray()
            await asyncio.to_thread(self._out.write, data)

    async def finish(self) -> bytes | None:
        """The whole MP4 if it stayed in memory; else None, once its file is complete."""
        data, out = bytes(self._pending), self._out
        if out is None:
            return data
        self._finishing = asyncio.ensure_future(asyncio.to_thread(_finish, out, data))
        await asyncio.shield(self._finishing)
        return None

    async def discard(self) -> None:
        # A finish under way completes first: then there is a whole file to remove.
        if self._finishing is not None:
            with contextlib.suppress(Exception):
                await self._finishing
        # Without an open file there is none: only `_create` makes it, and cleans up
        # after itself when cancelled.
        if self._out is not None:
            await asyncio.to_thread(_discard, self._out, self._path)


async def _stream(
    stub: renderer_pb2_grpc.RendererStub,
    address: str,
    request: renderer_pb2.RenderRequest,
    timeout_s: float,
    out: _Spool,
    hooks: RenderHooks,
) -> RenderInfo:
    digest = hashlib.sha256()
    size = 0
    meta: renderer_pb2.RenderMetadata | None = None
    # The current span (the attempt's render) becomes the renderer's parent.
    call = stub.Render(request, timeout=timeout_s, metadata=tracing.metadata())
    began = False
    try:
        async for response in call:
            began = True
            kind = response.WhichOneof("payload")
            if kind == "progress":
                if not await hooks.progress(response.progress.percent):
                    raise Superseded(request.job_id)
            elif kind == "chunk":
                digest.update(response.chunk)
                size += len(response.chunk)
                await out.write(response.chunk)
            elif kind == "metadata":
                meta = response.metadata
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        full = code is grpc.StatusCode.RESOURCE_EXHAUSTED
        unreachable = code is grpc.StatusCode.UNAVAILABLE
        raise RenderError(
            f"renderer {address}: {code.name}: {exc.details()}",
            retryable=code in RETRYABLE,
            charge_attempt=not full and not (unreachable and not began),
            endpoint_down=full or unreachable,
        ) from exc
    finally:
        call.cancel()
    if meta is None:
        raise RenderError(f"renderer {address} sent no metadata", retryable=True)
    if meta.sha256 != digest.hexdigest() or meta.bytes != size:
        raise RenderError(
            f"renderer {address}: MP4 arrived corrupted "
            f"({size} bytes, sha256 {digest.hexdigest()[:12]}; "
            f"expected {meta.bytes}, {meta.sha256[:12]})",
            retryable=True,
        )
    return RenderInfo.from_metadata(meta)


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


def _finish(out: BinaryIO, data: bytes) -> None:
    out.write(data)
    out.close()


def _discard(out: BinaryIO, path: Path) -> None:
    out.close()
    path.unlink(missing_ok=True)
