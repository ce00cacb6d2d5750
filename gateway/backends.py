"""The long-lived clients the gateway calls through: one per process, opened in the app's
lifespan and closed, in reverse order, at shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import cast

import grpc
import httpx
from grpc_health.v1 import health_pb2_grpc
from spillway.v1 import scheduler_pb2_grpc, webhooks_pb2_grpc
from starlette.requests import Request

from gateway.config import ContentMode, GatewayConfig

# Spreads calls over every address the scheduler's name resolves to (its replicas),
# where the default would pin each gateway to the first one.
_CHANNEL_OPTIONS = (("grpc.lb_policy_name", "round_robin"),)


@dataclass(frozen=True, slots=True)
class Backends:
    """The app's config and clients, shared by every request."""

    config: GatewayConfig
    scheduler: scheduler_pb2_grpc.SchedulerStub
    webhooks: webhooks_pb2_grpc.WebhooksStub
    # The scheduler's standard health service, on the same channel.
    health: health_pb2_grpc.HealthStub
    # Set only in proxy content mode, the one that fetches the MP4 itself.
    http: httpx.AsyncClient | None


@asynccontextmanager
async def open_backends(config: GatewayConfig) -> AsyncIterator[Backends]:
    async with AsyncExitStack() as stack:
        channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(config.scheduler_addr, options=_CHANNEL_OPTIONS)
        )
        http = None
        if config.content_mode is ContentMode.PROXY:
            timeout = httpx.Timeout(config.timeout_s)
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=timeout))
        yield Backends(
            config,
            scheduler_pb2_grpc.SchedulerStub(channel),
            webhooks_pb2_grpc.WebhooksStub(channel),
            health_pb2_grpc.HealthStub(channel),
            http,
        )


def backends(request: Request) -> Backends:
    """The backends of the app serving `request` (set by its lifespan)."""
    return cast(Backends, request.app.state.backends)
