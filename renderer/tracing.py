"""The renderer's span: one `renderer.render` SERVER span per render, in-house or on
Modal, continuing the caller's trace (the scheduler's `render` span) from the W3C
context it sent: gRPC metadata in-house, `RemoteRequest.trace_context` into Modal.

    renderer.render   spillway.job_id, .container_id, .cold_start, .engine, .frames,
                      .fps, .width, .height; when done .render_seconds, .bytes,
                      .generate_seconds, .encode_seconds

Generating and encoding interleave frame by frame (`render_to_file` pulls one frame
from the decoder, writes it, pulls the next), so they are not child spans: the span
carries the time spent waiting for frames (engine and decoder) as `generate_seconds`,
and the rest of the render (encoding, muxing, hashing) as `encode_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from renderer.errors import RenderCancelled
from renderer.pipeline import Frame, FrameDecoder, FrameTokens, RenderResult, RenderSpec

RENDER_SPAN = "renderer.render"

tracer = trace.get_tracer("spillway.renderer")


def extract(carrier: Iterable[tuple[str, Any]] | Mapping[str, Any] | None) -> context.Context:
    """The caller's context from W3C headers (gRPC metadata pairs or a dict); text
    values only, so binary metadata and a malformed carrier are ignored."""
    if carrier is None:
        return propagate.extract({})
    pairs = carrier.items() if isinstance(carrier, Mapping) else carrier
    return propagate.extract({k: v for k, v in pairs if isinstance(k, str) and isinstance(v, str)})


@contextlib.contextmanager
def render_span(parent: context.Context, job_id: str) -> Iterator[Span]:
    """The current span for one render, a child of `parent`. An exception escaping it is
    recorded and sets ERROR; a cancellation is a `cancelled` event, not an error."""
    with tracer.start_as_current_span(
        RENDER_SPAN,
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"spillway.job_id": job_id},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except (asyncio.CancelledError, RenderCancelled):
            span.add_event("cancelled")
            raise
        except Exception as exc:
            fail(span, exc)
            raise


def fail(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def started(
    span: Span, spec: RenderSpec, *, container_id: str, cold_start: bool, engine: str
) -> None:
    """Record what is about to render, where."""
    span.set_attributes(
        {
            "spillway.container_id": container_id,
            "spillway.cold_start": cold_start,
            "spillway.engine": engine,
            "spillway.frames": spec.frames,
            "spillway.fps": spec.fps,
            "spillway.width": spec.width,
            "spillway.height": spec.height,
        }
    )


def finished(span: Span, result: RenderResult, generate_seconds: float) -> None:
    """Record a finished render's time, split into its phases, and size."""
    span.set_attributes(
        {
            "spillway.render_seconds": result.render_seconds,
            "spillway.bytes": result.bytes,
            "spillway.generate_seconds": generate_seconds,
            "spillway.encode_seconds": max(result.render_seconds - generate_seconds, 0.0),
        }
    )


class TimedDecoder:
    """One render's decoder, timed: `seconds` sums the time spent waiting for its frames,
    which covers the engine's tokens too, since the decoder pulls them as it goes."""

    def __init__(self, decoder: FrameDecoder) -> None:
        self._decoder = decoder
        self.seconds = 0.0

    def frames(self, spec: RenderSpec, tokens: Iterable[FrameTokens]) -> Iterator[Frame]:
        frames = self._decoder.frames(spec, tokens)
        try:
            while True:
                asked = time.perf_counter()
                frame = next(frames, None)
                self.seconds += time.perf_counter() - asked
                if frame is None:
                    return
                yield frame
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()
