"""The Renderer gRPC service: validate, take a slot, render in a thread, stream the MP4.

Each call is one `renderer.render` span (see `renderer.tracing`), a child of the
caller's span when its metadata carries a W3C `traceparent`.

The event loop only relays: the render itself runs on a worker thread (one per slot),
and file reads and deletes go to threads too. A request past the slot count is refused
at once rather than queued, so the scheduler can send it to a renderer with room.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeAlias

import grpc
import structlog
from opentelemetry.trace import Span
from spillway.v1 import renderer_pb2, renderer_pb2_grpc

from renderer import tracing
from renderer.errors import RendererBusy, RendererError
from renderer.pipeline import FrameDecoder, RenderResult, TokenEngine, render_to_file
from renderer.remote import RemoteMetadata
from renderer.validation import render_spec

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 256 * 1024

Context: TypeAlias = grpc.aio.ServicerContext[
    renderer_pb2.RenderRequest, renderer_pb2.RenderResponse
]


class RendererService(renderer_pb2_grpc.RendererServicer):
    """Serves `Renderer.Render` with a fixed number of concurrent render slots, each
    with its own worker thread. A slot stays taken until its thread has stopped and its
    file is deleted, so a render never waits for a thread."""

    def __init__(
        self,
        *,
        engine: TokenEngine,
        decoder: FrameDecoder,
        slots: int,
        default_fps: int,
        preset: str,
        container_id: str,
        work_dir: Path,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        started_at: float | None = None,
    ) -> None:
        """`started_at`: when this renderer began to boot, on the `time.monotonic()`
        clock (default: now); the first render reports boot time from then to ready."""
        self._engine = engine
        self._decoder = decoder
        self._executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="render")
        self._slots = slots
        self._default_fps = default_fps
        self._preset = preset
        self._container_id = container_id
        self._work_dir = work_dir
        self._chunk_bytes = chunk_bytes
        self._created_at = time.monotonic() if started_at is None else started_at
        self._ready_at: float | None = None
        self._served_first = False
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._releasing: set[asyncio.Task[None]] = set()

    def mark_ready(self) -> None:
        """Record that the server now takes requests: the end of this process's boot."""
        self._ready_at = time.monotonic()

    async def wait_idle(self) -> None:
        """Wait until no render holds a slot (threads stopped, files deleted)."""
        await self._idle.wait()

    async def close(self) -> None:
        """Wait for in-flight renders, then release the worker threads. Call it after
        the gRPC server has stopped, so no new render can start."""
        await self.wait_idle()
        await asyncio.to_thread(self._executor.shutdown)

    async def Render(self, request: renderer_pb2.RenderRequest, context: Context) -> None:
        # The caller's trace context rides in the call's metadata (traceparent).
        parent = tracing.extract(context.invocation_metadata())
        try:
            with (
                tracing.render_span(parent, request.job_id) as span,
                structlog.contextvars.bound_contextvars(job_id=request.job_id),
            ):
                await self._render(request, context, span)
        except RendererError as error:
            await context.abort(error.status_code, str(error))
        except Exception as error:
            await context.abort(grpc.StatusCode.INTERNAL, f"render failed: {error!r}")

    async def _render(
        self, request: renderer_pb2.RenderRequest, context: Context, span: Span
    ) -> None:
        spec = render_spec(request, self._default_fps)
        boot_seconds = self._take_slot()
        tracing.started(
            span,
            spec,
            container_id=self._container_id,
            cold_start=boot_seconds is not None,
            engine=self._engine.name,
        )
        cancel = threading.Event()
        path = self._work_dir / f"render-{uuid.uuid4().hex}.mp4"
        progress: asyncio.Queue[renderer_pb2.RenderProgress | None] = asyncio.Queue()
        decoder = tracing.TimedDecoder(self._decoder)
        loop = asyncio.get_running_loop()
        render = loop.run_in_executor(
            self._executor,
            functools.partial(
                render_to_file,
                spec,
                path,
                engine=self._engine,
                decoder=decoder,
                preset=self._preset,
                on_progress=_ProgressRelay(loop, progress),
                cancel=cancel,
            ),
        )
        # Queued after every progress update the thread posted, so it marks the end.
        render.add_done_callback(lambda _: progress.put_nowait(None))
        try:
            while (update := await progress.get()) is not None:
                await context.write(renderer_pb2.RenderResponse(progress=update))
            result = render.result()
            tracing.finished(span, result, decoder.seconds)
            await self._send_file(result.path, context)
            await context.write(
                renderer_pb2.RenderResponse(metadata=self._metadata(result, boot_seconds))
            )
        except Exception as error:
            if not isinstance(error, RendererError):
                logger.exception("render failed", extra={"job_id": spec.job_id})
            raise
        finally:
            cancel.set()
            # A second cancellation (the server stopping) must not skip the cleanup: shield
            # it, and hold the task, since the loop keeps only a weak reference.
            release = asyncio.create_task(self._release_slot(render, path))
            self._releasing.add(release)
            release.add_done_callback(self._releasing.discard)
            await asyncio.shield(release)

    def _take_slot(self) -> float | None:
        """Claim a slot; returns the boot seconds if this is the process's first render."""
        if self._busy >= self._slots:
            raise RendererBusy(
                f"all {self._slots} render slots are busy; retry on another renderer or later"
            )
        self._busy += 1
        self._idle.clear()
        if self._served_first:
            return None
        self._served_first = True
        return (self._ready_at or time.monotonic()) - self._created_at

    async def _release_slot(self, render: asyncio.Future[RenderResult], path: Path) -> None:
        try:
            await asyncio.wait([render])
            # Mark a failure as seen (it was reported, or the caller is gone), so asyncio
            # does not log it again when the future is collected.
            with contextlib.suppress(BaseException):
                render.result()
            await asyncio.to_thread(path.unlink, missing_ok=True)
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()

    async def _send_file(self, path: Path, context: Context) -> None:
        with await asyncio.to_thread(path.open, "rb") as mp4:
            while chunk := await asyncio.to_thread(mp4.read, self._chunk_bytes):
                await context.write(renderer_pb2.RenderResponse(chunk=chunk))

    def _metadata(
        self, result: RenderResult, boot_seconds: float | None
    ) -> renderer_pb2.RenderMetadata:
        # The gRPC message and the Modal result carry the same fields.
        metadata = RemoteMetadata.of(
            result,
            container_id=self._container_id,
            cold_start=boot_seconds is not None,
            boot_seconds=boot_seconds or 0.0,
            restore_seconds=0.0,
        )
        return renderer_pb2.RenderMetadata(**dataclasses.asdict(metadata))


class _ProgressRelay:
    """The render thread's progress callback: hands the loop one update per whole
    percent, so a long render sends at most 101 progress messages."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[renderer_pb2.RenderProgress | None],
    ) -> None:
        self._loop = loop
        self._queue = queue
        self._percent = -1

    def __call__(self, frames_done: int, frames_total: int) -> None:
        percent = frames_done * 100 // frames_total
        if percent == self._percent:
            return
        self._percent = percent
        update = renderer_pb2.RenderProgress(
            percent=percent, frames_done=frames_done, frames_total=frames_total
        )
        self._loop.call_soon_threadsafe(self._queue.put_nowait, update)
