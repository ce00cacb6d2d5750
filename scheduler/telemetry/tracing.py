"""The scheduler's spans. A job's trace reads like its life:

    submit                      the SubmitRender call (child of the caller's span)
    ├── queue_wait              from entering the queue to its claim, per attempt
    └── dispatch                one attempt on one pool: pool, policy mode, spilled
        ├── cold_start          the input met a cold container: boot, restore, container
        ├── render              the pool's render (the renderer's own spans below it)
        └── upload              the MP4 to S3: bytes, parts, bucket, key

Dispatch happens later and maybe on another replica, so the submit span's W3C context
is stored on the job and every later span descends from it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from scheduler.pools.base import Superseded

tracer = trace.get_tracer("spillway.scheduler")


def carrier() -> dict[str, str]:
    """The current context as W3C headers (`traceparent`, `tracestate`)."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def metadata() -> tuple[tuple[str, str], ...]:
    """The current context as gRPC metadata, for calls to renderers."""
    return tuple(carrier().items())


def extract(headers: Mapping[str, str]) -> context.Context:
    return propagate.extract(dict(headers))


def ms_to_ns(ms: int) -> int:
    return ms * 1_000_000


@contextlib.contextmanager
def traced(name: str, attributes: Mapping[str, AttributeValue]) -> Iterator[Span]:
    """A child span of the current one. A failure records the exception and sets ERROR;
    a job taken over or a task cancelled is an event, not an error."""
    with tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except Superseded:
            span.add_event("superseded")
            raise
        except asyncio.CancelledError:
            span.add_event("cancelled")
            raise
        except Exception as exc:
            fail(span, exc)
            raise


def fail(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
