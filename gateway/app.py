"""The gateway's ASGI app: the OpenAI Videos API over the Scheduler's gRPC service.

Every request but ``/healthz``, ``/readyz`` and ``/metrics`` gets an OpenTelemetry SERVER
span named by its route (``GET /v1/videos/{video_id}``), continuing the caller's trace
when the request carries a W3C ``traceparent``; the scheduler calls made while serving it
carry that context on (`gateway.auth`). Requests are counted and timed on ``GET /metrics``
(`gateway.metrics`). One layer does both, and the ``x-request-id`` (`gateway.telemetry`).

``/healthz`` answers while the process serves requests (liveness); ``/readyz`` only while
the scheduler behind it reports SERVING (readiness), so that a load balancer sends
nothing to a gateway that could only fail it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2
from spillway.v1 import scheduler_pb2

from gateway import errors, models, routes, webhook_routes
from gateway.backends import backends, open_backends
from gateway.config import GatewayConfig
from gateway.errors import ApiError
from gateway.metrics import GatewayMetrics
from gateway.telemetry import Telemetry

SCHEDULER_SERVICE = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name
# Within a probe's own deadline (Kubernetes gives up after 1 s by default), so that the
# probe gets the 503 and its reason rather than a timeout.
_READY_TIMEOUT_S = 0.9


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
        docs_url="/docs",
        redoc_url=None,
        # `gateway.telemetry` traces and counts each request once; FastAPI's own
        # telemetry would add spans per dependency and serialization on top.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(models.router)
    app.include_router(webhook_routes.router)
    app.add_api_route("/healthz", _healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", _readyz, methods=["GET"], include_in_schema=False)
    metrics = GatewayMetrics()
    app.state.metrics = metrics
    app.add_middleware(Telemetry, metrics=metrics)
    app.add_api_route("/metrics", metrics.endpoint, methods=["GET"], include_in_schema=False)
    return app


async def _healthz() -> JSONResponse:
    """The process serves requests; says nothing about the scheduler behind it."""
    return JSONResponse({"status": "ok"})


async def _readyz(request: Request) -> JSONResponse:
    """The scheduler answers its standard health check SERVING over the gateway's
    channel; 503 otherwise."""
    check = health_pb2.HealthCheckRequest(service=SCHEDULER_SERVICE)
    try:
        response = await backends(request).health.Check(check, timeout=_READY_TIMEOUT_S)
    except grpc.aio.AioRpcError as err:
        reason = f"its health check failed with {err.code().name}"
    else:
        if response.status == health_pb2.HealthCheckResponse.SERVING:
            return JSONResponse({"status": "ready"})
        reason = "it reports that it is not serving"
    raise ApiError(
        503,
        f"The scheduler is not ready: {reason}.",
        code="scheduler_not_ready",
        headers={"retry-after": "1"},
    )
