"""Telemetry setup for every spillway process: traces and structured logs.

Libraries use the OpenTelemetry API; each entry point (`spillway scheduler`, `spillway
gateway`, `renderer serve`, `spillway dev`, the Modal app) calls `setup_tracing` once.
It lives in the renderer package because that is the one every image carries.

Traces follow the standard variables: `OTEL_TRACES_EXPORTER` (`otlp`, `console` or
`none`; default `otlp` when `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, else `none`), `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, and the OTLP exporter's own
`OTEL_EXPORTER_OTLP_*`. With no exporter, spans still get ids (a job's trace id is
returned to its caller, and context still flows to renderers) but nothing is batched
or sent.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
SERVICE_NAME = "OTEL_SERVICE_NAME"
LOG_FORMAT = "SPILLWAY_LOG_FORMAT"
"""`json` (one JSON object per line, the default) or `console` (aligned key=value)."""
LOG_LEVEL = "SPILLWAY_LOG_LEVEL"
"""`debug`, `info`, `warning` or `error`: overrides the process's own level (servers log
at `info`, interactive commands at `warning`). `debug` adds a line per routine step of
every job (queued, dispatched, completed)."""
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def setup_tracing(
    default_service: str, environ: Mapping[str, str] | None = None
) -> Callable[[], None]:
    """Installs the SDK tracer provider for this process; returns its shutdown, which
    flushes spans not yet exported. Raises ValueError on an unknown exporter name."""
    env = os.environ if environ is None else environ
    exporter = env.get(TRACES_EXPORTER) or (
        "otlp" if env.get(OTLP_ENDPOINT) or env.get(OTLP_TRACES_ENDPOINT) else "none"
    )
    resource = Resource.create({"service.name": env.get(SERVICE_NAME) or default_service})
    provider = TracerProvider(resource=resource)
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(LineSpanExporter()))
    elif exporter != "none":
        raise ValueError(f"{TRACES_EXPORTER}={exporter!r}: expected otlp, console or none")
    trace.set_tracer_provider(provider)
    return provider.shutdown


class LineSpanExporter(SpanExporter):
    """Prints one short line per finished span to stderr: trace, span, parent, name,
    duration and attributes. Easier to read in a terminal than the SDK's JSON."""

    def export(self, spans: Any) -> SpanExportResult:
        for span in spans:
            print(format_span(span), file=sys.stderr, flush=True)
        return SpanExportResult.SUCCESS


def format_span(span: ReadableSpan) -> str:
    ctx = span.context
    parent = f"{span.parent.span_id:016x}" if span.parent else "-" * 16
    duration_ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    attrs = " ".join(f"{k}={v!s}" for k, v in sorted((span.attributes or {}).items()))
    status = "" if span.status.is_ok else f" status={span.status.status_code.name}"
    return (
        f"span trace={ctx.trace_id:032x} id={ctx.span_id:016x} parent={parent} "
        f"{span.name} {duration_ms:.1f}ms{status} {attrs}".rstrip()
    )


def current_trace_id() -> str:
    """The current span's trace id as 32 hex digits, or "" outside a recording span."""
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""


def _trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", f"{ctx.trace_id:032x}")
        event.setdefault("span_id", f"{ctx.span_id:016x}")
    return event


def setup_logging(level: int = logging.INFO, environ: Mapping[str, str] | None = None) -> None:
    """Routes every stdlib `logging` record through structlog: one line per event with
    time, level, logger, the message, and the job id and trace id bound to the context
    (`structlog.contextvars.bound_contextvars(job_id=...)`), at `level` unless
    `SPILLWAY_LOG_LEVEL` names another. Raises ValueError on a bad format or level."""
    env = os.environ if environ is None else environ
    style = env.get(LOG_FORMAT, "json")
    if style not in ("json", "console"):
        raise ValueError(f"{LOG_FORMAT}={style!r}: expected json or console")
    if named := env.get(LOG_LEVEL):
        if named.lower() not in _LEVELS:
            raise ValueError(f"{LOG_LEVEL}={named!r}: expected {', '.join(_LEVELS)}")
        level = _LEVELS[named.lower()]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if style == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    pre_chain: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _trace_ids,
    ]
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=pre_chain,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
