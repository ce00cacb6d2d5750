"""What every request gets, in one ASGI layer: an ``x-request-id`` on its response, a
SERVER span that continues the caller's W3C trace (named by its route template once
the router has matched it: ``GET /v1/videos/{video_id}``), and its count and time on
``GET /metrics`` (`gateway.metrics`).

One layer rather than a middleware each and the OpenTelemetry ASGI instrumentation:
that stack wrapped every response message three times and cost the gateway about half
its CPU on a small GET (`make bench`). Probes and scrapes get no span.

Every response carries ``x-request-id``, as OpenAI's do, so a caller can quote it in a
report and an operator can find the request's logs and trace by it: the caller's own
when it sends a short safe one, else a new ``req_...``.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import UNMATCHED, GatewayMetrics

REQUEST_ID = b"x-request-id"
# A caller's own id is kept when it is one a log line can hold safely.
_ACCEPTED = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_UNTRACED = frozenset(("/healthz", "/readyz", "/metrics"))
_PROPAGATED = frozenset((b"traceparent", b"tracestate", b"baggage"))
# Anything else a client sends as a method is one label value, not one per spelling.
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
_EVENT_STREAM = b"text/event-stream"

_tracer = trace.get_tracer("spillway.gateway")


class Telemetry:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        request_id = b""
        carrier: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == REQUEST_ID:
                request_id = value
            elif name in _PROPAGATED:
                carrier[name.decode("latin-1")] = value.decode("latin-1")
        if not _ACCEPTED.fullmatch(request_id):
            request_id = f"req_{secrets.token_hex(16)}".encode()
        status: int | None = None
        recorded = False

        def record(code: int) -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                seconds = time.perf_counter() - started
                self.metrics.observe(_route(scope), method, code, seconds)

        async def send_and_count(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID, request_id)]
                # An event stream may stay open for minutes: it counts when it starts.
                if _is_event_stream(message["headers"]):
                    record(status)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Before the send, so that the count is in place once the client has
                # the whole response.
                record(status or 200)
            await send(message)

        if scope["path"] in _UNTRACED:
            try:
                await self.app(scope, receive, send_and_count)
            finally:
                record(500 if status is None else status)
            return
        span = _tracer.start_span(
            method,
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "http.request_id": request_id.decode(),
            },
        )
        token = context.attach(trace.set_span_in_context(span))
        try:
            await self.app(scope, receive, send_and_count)
        except Exception as exc:
            span.record_exception(exc)
            status = 500 if status is None else status
            raise
        finally:
            context.detach(token)
            # A response cut short (the client left mid-body) still counts.
            record(500 if status is None else status)
            _end(span, scope, method, status)


def _end(span: Any, scope: Scope, method: str, status: int | None) -> None:
    route = _route(scope)
    if route != UNMATCHED:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    if status is not None:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    span.end()


def _route(scope: Scope) -> str:
    """The template of the route that handled the request (set by the router)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


def _is_event_stream(headers: Any) -> bool:
    return any(
        name.lower() == b"content-type" and value.startswith(_EVENT_STREAM)
        for name, value in headers
    )
