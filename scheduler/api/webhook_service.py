"""The gRPC `Webhooks` service: a tenant's webhook endpoints, over `WebhookStore`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx
from spillway.v1 import webhooks_pb2 as pb
from spillway.v1 import webhooks_pb2_grpc

from scheduler.api.auth import ApiKeys
from scheduler.api.convert import timestamp
from scheduler.api.errors import FailedPrecondition, InvalidArgument, NotFound
from scheduler.api.service import rpc_errors
from scheduler.api.validation import validate_page_size
from scheduler.dispatch.webhook_delivery import Refused, Sender, sample_event
from scheduler.store.webhooks import (
    EVENT_TYPES,
    Delivery,
    Endpoint,
    Targets,
    WebhookStore,
    is_endpoint_id,
)

log = logging.getLogger(__name__)

Ctx = Any
_MAX_NAME = 256


class WebhookService(webhooks_pb2_grpc.WebhooksServicer):
    def __init__(
        self, store: WebhookStore, keys: ApiKeys, targets: Targets, sender: Sender
    ) -> None:
        self._store = store
        self._keys = keys
        self._targets = targets
        self._sender = sender

    async def _own(self, context: Ctx, endpoint_id: str) -> Endpoint:
        tenant = await self._keys.tenant(context.invocation_metadata())
        endpoint = await self._store.get(tenant, endpoint_id)
        if endpoint is None:
            raise NotFound(f"webhook endpoint {endpoint_id!r} not found")
        return endpoint

    async def _checked_url(self, url: str) -> str:
        self._targets.check_url(url)
        if refusal := await self._targets.refusal(url):
            raise InvalidArgument("url", refusal, reason="webhook_target_refused")
        return url

    @rpc_errors
    async def CreateWebhookEndpoint(
        self, request: pb.CreateWebhookEndpointRequest, context: Ctx
    ) -> pb.CreateWebhookEndpointResponse:
        tenant = await self._keys.tenant(context.invocation_metadata())
        name = _name(request.name)
        event_types = _event_types(request.event_types)
        url = await self._checked_url(request.url)
        endpoint = await self._store.create(tenant, name, url, event_types)
        log.info("tenant %s registered webhook endpoint %s", tenant, endpoint.id)
        return pb.CreateWebhookEndpointResponse(endpoint=_to_proto(endpoint, with_secret=True))

    @rpc_errors
    async def GetWebhookEndpoint(
        self, request: pb.GetWebhookEndpointRequest, context: Ctx
    ) -> pb.GetWebhookEndpointResponse:
        endpoint = await self._own(context, request.id)
        return pb.GetWebhookEndpointResponse(endpoint=_to_proto(endpoint))

    @rpc_errors
    async def ListWebhookEndpoints(
        self, request: pb.ListWebhookEndpointsRequest, context: Ctx
    ) -> pb.ListWebhookEndpointsResponse:
        tenant = await self._keys.tenant(context.invocation_metadata())
        limit = validate_page_size(request.page_size)
        if request.page_token and not is_endpoint_id(request.page_token):
            raise InvalidArgument("after", "must be a webhook endpoint id (we_...)")
        endpoints, has_more = await self._store.list_page(
            tenant, after=request.page_token, limit=limit
        )
        return pb.ListWebhookEndpointsResponse(
            endpoints=[_to_proto(e) for e in endpoints],
            has_more=has_more,
            next_page_token=endpoints[-1].id if has_more and endpoints else "",
        )

    @rpc_errors
    async def UpdateWebhookEndpoint(
        self, request: pb.UpdateWebhookEndpointRequest, context: Ctx
    ) -> pb.UpdateWebhookEndpointResponse:
        endpoint = await self._own(context, request.id)
        endpoint = await self._store.update(
            endpoint,
            name=_name(request.name) if request.HasField("name") else None,
            url=await self._checked_url(request.url) if request.HasField("url") else None,
            event_types=_event_types(request.event_types.values)
            if request.HasField("event_types")
            else None,
        )
        return pb.UpdateWebhookEndpointResponse(endpoint=_to_proto(endpoint))

    @rpc_errors
    async def DeleteWebhookEndpoint(
        self, request: pb.DeleteWebhookEndpointRequest, context: Ctx
    ) -> pb.DeleteWebhookEndpointResponse:
        endpoint = await self._own(context, request.id)
        await self._store.delete(endpoint)
        log.info("tenant %s deleted webhook endpoint %s", endpoint.tenant, endpoint.id)
        return pb.DeleteWebhookEndpointResponse(id=endpoint.id, deleted=True)

    @rpc_errors
    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: Ctx
    ) -> pb.RotateWebhookSecretResponse:
        endpoint = await self._own(context, request.id)
        keep_old = request.keep_old_secret if request.HasField("keep_old_secret") else True
        endpoint = await self._store.rotate_secret(endpoint, keep_old=keep_old)
        return pb.RotateWebhookSecretResponse(endpoint=_to_proto(endpoint, with_secret=True))

    @rpc_errors
    async def TestWebhookEndpoint(
        self, request: pb.TestWebhookEndpointRequest, context: Ctx
    ) -> pb.TestWebhookEndpointResponse:
        endpoint = await self._own(context, request.id)
        (event_type,) = _event_types([request.event_type], field="event_type")
        event_id, body = sample_event(event_type)
        secrets = await self._store.secrets(endpoint)
        try:
            status = await self._sender.post(endpoint.url, event_id, body, secrets)
        except Refused as exc:
            raise FailedPrecondition(str(exc), reason="webhook_target_refused") from None
        except httpx.HTTPError as exc:
            raise FailedPrecondition(
                f"could not reach {endpoint.url}: {type(exc).__name__}: {exc}",
                reason="webhook_unreachable",
            ) from None
        return pb.TestWebhookEndpointResponse(
            webhook_endpoint_id=endpoint.id, event_type=event_type, status_code=status
        )

    @rpc_errors
    async def ListWebhookEventTypes(
        self, request: pb.ListWebhookEventTypesRequest, context: Ctx
    ) -> pb.ListWebhookEventTypesResponse:
        await self._keys.tenant(context.invocation_metadata())
        return pb.ListWebhookEventTypesResponse(event_types=EVENT_TYPES)

    @rpc_errors
    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: Ctx
    ) -> pb.ListWebhookDeliveriesResponse:
        endpoint = await self._own(context, request.id)
        limit = validate_page_size(request.page_size)
        deliveries = await self._store.deliveries(endpoint, limit)
        return pb.ListWebhookDeliveriesResponse(deliveries=[_delivery(d) for d in deliveries])


def _name(raw: str) -> str:
    name = raw.strip()
    if not name or len(name) > _MAX_NAME:
        raise InvalidArgument("name", f"must be 1 to {_MAX_NAME} characters")
    return name


def _event_types(raw: Sequence[str], field: str = "event_types") -> list[str]:
    if not raw:
        raise InvalidArgument(field, f"must name at least one of {', '.join(EVENT_TYPES)}")
    unknown = [t for t in raw if t not in EVENT_TYPES]
    if unknown:
        raise InvalidArgument(
            field,
            f"{unknown[0]!r} is not an event spillway sends; it sends {', '.join(EVENT_TYPES)}",
        )
    return list(dict.fromkeys(raw))


def _to_proto(endpoint: Endpoint, *, with_secret: bool = False) -> pb.WebhookEndpoint:
    return pb.WebhookEndpoint(
        id=endpoint.id,
        name=endpoint.name,
        url=endpoint.url,
        event_types=endpoint.event_types,
        created_at=timestamp(endpoint.created_ms),
        updated_at=timestamp(endpoint.updated_ms),
        signing_secret=endpoint.secret if with_secret else "",
        signing_secret_hint=endpoint.secret_hint,
        disabled_reason=endpoint.disabled,
    )


def _delivery(d: Delivery) -> pb.WebhookDelivery:
    return pb.WebhookDelivery(
        event_id=d.event_id,
        event_type=d.event_type,
        video_id=d.video_id,
        attempt=d.attempt,
        status_code=d.status_code,
        error=d.error,
        outcome=d.outcome,
        at=timestamp(d.at_ms),
    )
