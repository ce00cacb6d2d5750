"""The gateway's Prometheus metrics, served on ``GET /metrics``.

    spillway_gateway_requests_total{route,method,status}   requests answered
    spillway_gateway_request_seconds{route,method}         time to answer them

``route`` is the route template (``/v1/videos/{video_id}``), never the raw path, so
video ids do not become label values; a path no route matches reads ``unmatched``.
A request counts once its response is complete, except an event stream, which counts
when its headers go out (it may stay open for minutes): `gateway.telemetry` observes
them. Each app owns its registry, so several apps can live in one process.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from starlette.requests import Request
from starlette.responses import Response

UNMATCHED = "unmatched"
"""The route label of a request no route matched (a 404)."""


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
