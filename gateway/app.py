"""The gateway's ASGI app: the OpenAI Videos API over the Scheduler's gRPC service.

Every request but ``/healthz`` and ``/metrics`` gets an OpenTelemetry SERVER span named
by its route (``GET /v1/videos/{video_id}``), continuing the caller's trace when the
request carries a W3C ``traceparent``; the scheduler calls made while serving it carry
that context on (`gateway.auth`). Requests are counted and timed on ``GET /metrics``
(`gateway.metrics`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from gateway import errors, routes
from gateway.backends import open_backends
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics, MetricsMiddleware

# Regexes over the request's full URL (scheme://host/path), as the instrumentation
# matches them: probes and scrapes make no spans.
_UNTRACED_URLS = r"^[a-z]+://[^/]+/healthz$,^[a-z]+://[^/]+/metrics$"


def create_app(config: GatewayConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_backends(config) as backends:
            app.state.backends = backends
            yield

    app = FastAPI(
        title="spillway gateway",
        summary="Video render jobs in the shape of the OpenAI Videos API.",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    app.include_router(routes.router)
    app.add_api_route("/healthz", _healthz, methods=["GET"], include_in_schema=False)
    metrics = GatewayMetrics()
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_api_route("/metrics", metrics.endpoint, methods=["GET"], include_in_schema=False)
    # Without the per-message "http send"/"http receive" spans: an event stream would
    # make one per event.
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=_UNTRACED_URLS, exclude_spans=["receive", "send"]
    )
    return app


async def _healthz() -> JSONResponse:
    """The process serves requests; says nothing about the scheduler behind it."""
    return JSONResponse({"status": "ok"})
