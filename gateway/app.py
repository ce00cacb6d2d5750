"""The gateway's ASGI app: the OpenAI Videos API over the Scheduler's gRPC service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from gateway import errors, routes
from gateway.backends import open_backends
from gateway.config import GatewayConfig


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
    return app


async def _healthz() -> JSONResponse:
    """The process serves requests; says nothing about the scheduler behind it."""
    return JSONResponse({"status": "ok"})
