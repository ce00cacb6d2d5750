"""The gateway's Prometheus metrics, served on ``GET /metrics``.

    spillway_gateway_requests_total{route,method,status}   requests answered
    spillway_gateway_request_seconds{route,method}         time to answer them

``route`` is the route template (``/v1/videos/{video_id}``), never the raw path, so
video ids do not become label values; a path no route matches reads ``unmatched``.
A request counts once its response is complete, except an event stream, which counts
when its headers go out (it may stay open for minutes). Each app owns its registry, so
several apps can live in one process.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"
"""The route label of a request no route matched (a 404)."""

# Anything else a client sends as a method is one label value, not one per spelling.
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
_EVENT_STREAM = b"text/event-stream"


class GatewayMetrics:
    """The gateway's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "spillway_gateway_requests",
            "HTTP requests the gateway answered, by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "spillway_gateway_request_seconds",
            "Seconds from a request's arrival to its complete response (to the headers, "
            "for an event stream), by route template and method.",
            ("route", "method"),
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    async def endpoint(self, request: Request) -> Response:
        """``GET /metrics``: the registry in the Prometheus text format."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts and times every HTTP request without touching the response: messages pass
    through as they come, so a streamed body (an MP4, Server-Sent Events) is never
    buffered."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None
        recorded = False

        def record(code: int) -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
                seconds = time.perf_counter() - started
                self.metrics.observe(_route(scope), method, code, seconds)

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if _is_event_stream(message.get("headers", ())):
                    record(status)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Before the send, so that the count is in place once the client has
                # the whole response.
                record(status or 200)
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            # Unhandled: the outermost error middleware answers 500 after this.
            record(500 if status is None else status)
            raise
        finally:
            # A response cut short (the client left mid-body) still counts.
            if status is not None:
                record(status)


def _route(scope: Scope) -> str:
    """The template of the route that handled the request (set by the router)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


def _is_event_stream(headers: Any) -> bool:
    return any(
        name.lower() == b"content-type" and value.startswith(_EVENT_STREAM)
        for name, value in headers
    )
