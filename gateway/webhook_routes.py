"""``/v1/webhook_endpoints`` and ``/v1/webhook_event_types``: the shapes the official
``openai`` client's ``client.webhooks`` sends and parses, each one call to the
scheduler's `Webhooks` service. ``GET .../{id}/deliveries`` is spillway's extension: the
endpoint's delivery log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from spillway.v1 import webhooks_pb2 as pb

from gateway.auth import CallerMetadata
from gateway.backends import backends
from gateway.errors import ErrorBody

router = APIRouter(prefix="/v1", responses={"default": {"model": ErrorBody}})


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateEndpoint(_Body):
    name: str
    url: str
    event_types: list[str]


class UpdateEndpoint(_Body):
    name: str | None = None
    url: str | None = None
    event_types: list[str] | None = None


class RotateSecret(_Body):
    keep_old_secret_active_for_24_hours: bool | None = None


class TestEndpoint(_Body):
    event_type: str


def _endpoint(e: pb.WebhookEndpoint) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": e.id,
        "object": "webhook_endpoint",
        "name": e.name,
        "url": e.url,
        "event_types": list(e.event_types),
        "created_at": e.created_at.seconds,
        "updated_at": e.updated_at.seconds,
        "signing_secret_hint": e.signing_secret_hint,
        # spillway's extension: why deliveries stopped (a 410), else null.
        "disabled_reason": e.disabled_reason or None,
    }
    if e.signing_secret:
        out["signing_secret"] = e.signing_secret
    return out


@router.post("/webhook_endpoints")
async def create_webhook_endpoint(
    request: Request, metadata: CallerMetadata, body: CreateEndpoint
) -> JSONResponse:
    """Register a URL for a tenant's video events; the answer alone holds the secret."""
    gateway = backends(request)
    response: pb.CreateWebhookEndpointResponse = await gateway.webhooks.CreateWebhookEndpoint(
        pb.CreateWebhookEndpointRequest(name=body.name, url=body.url, event_types=body.event_types),
        metadata=metadata,
        timeout=gateway.config.timeout_s,
    )
    return JSONResponse(_endpoint(response.endpoint))


@router.get("/webhook_endpoints")
async def list_webhook_endpoints(
    request: Request,
    metadata: CallerMetadata,
    after: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=100)] = None,
) -> JSONResponse:
    """The tenant's endpoints, newest first."""
    gateway = backends(request)
    response: pb.ListWebhookEndpointsResponse = await gateway.webhooks.ListWebhookEndpoints(
        pb.ListWebhookEndpointsRequest(page_size=limit or 0, page_token=after or ""),
        metadata=metadata,
        timeout=gateway.config.timeout_s,
    )
    data = [_endpoint(e) for e in response.endpoints]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": response.has_more,
        }
    )


@router.get("/webhook_endpoints/{endpoint_id}")
async def retrieve_webhook_endpoint(
    request: Request, metadata: CallerMetadata, endpoint_id: str
) -> JSONResponse:
    gateway = backends(request)
    response: pb.GetWebhookEndpointResponse = await gateway.webhooks.GetWebhookEndpoint(
        pb.GetWebhookEndpointRequest(id=endpoint_id),
        metadata=metadata,
        timeout=gateway.config.timeout_s,
    )
    return JSONResponse(_endpoint(response.endpoint))


@router.post("/webhook_endpoints/{endpoint_id}")
async def update_webhook_endpoint(
    request: Request, metadata: CallerMetadata, endpoint_id: str, body: UpdateEndpoint
) -> JSONResponse:
    """Change the fields given; any change re-enables an endpoint a 410 disabled."""
    gateway = backends(request)
    update = pb.UpdateWebhookEndpointRequest(id=endpoint_id)
    if body.name is not None:
        update.name = body.name
    if body.url is not None:
        update.url = body.url
    if body.event_types is not None:
        update.event_types.values.extend(body.event_types)
    response: pb.UpdateWebhookEndpointResponse = await gateway.webhooks.UpdateWebhookEndpoint(
        update, metadata=metadata, timeout=gateway.config.timeout_s
    )
    return JSONResponse(_endpoint(response.endpoint))


@router.delete("/webhook_endpoints/{endpoint_id}")
async def delete_webhook_endpoint(
    request: Request, metadata: CallerMetadata, endpoint_id: str
) -> JSONResponse:
    gateway = backends(request)
    response: pb.DeleteWebhookEndpointResponse = await gateway.webhooks.DeleteWebhookEndpoint(
        pb.DeleteWebhookEndpointRequest(id=endpoint_id),
        metadata=metadata,
        timeout=gateway.config.timeout_s,
    )
    return JSONResponse(
        {"id": response.id, "object": "webhook_endpoint.deleted", "deleted": response.deleted}
    )


@router.post("/webhook_endpoints/{endpoint_id}/rotate_secret")
async def rotate_webhook_secret(
    request: Request,
    metadata: CallerMetadata,
    endpoint_id: str,
    body: RotateSecret | None = None,
) -> JSONResponse:
    """A new signing secret. The old one keeps signing beside it for 24 hours unless
    `keep_old_secret_active_for_24_hours` is false."""
    gateway = backends(request)
    rotate = pb.RotateWebhookSecretRequest(id=endpoint_id)
    if body is not None and body.keep_old_secret_active_for_24_hours is not None:
        rotate.keep_old_secret = body.keep_old_secret_active_for_24_hours
    response: pb.RotateWebhookSecretResponse = await gateway.webhooks.RotateWebhookSecret(
        rotate, metadata=metadata, timeout=gateway.config.timeout_s
    )
    return JSONResponse(_endpoint(response.endpoint))


@router.post("/webhook_endpoints/{endpoint_id}/test")
async def test_webhook_endpoint(
    request: Request, metadata: CallerMetadata, endpoint_id: str, body: TestEndpoint
) -> JSONResponse:
    """Send one signed sample event now; the answer holds the receiver's status."""
    gateway = backends(request)
    response: pb.TestWebhookEndpointResponse = await gateway.webhooks.TestWebhookEndpoint(
        pb.TestWebhookEndpointRequest(id=endpoint_id, event_type=body.event_type),
        metadata=metadata,
        # The receiver gets its own timeout on top of the scheduler's.
        timeout=gateway.config.timeout_s + 15,
    )
    return JSONResponse(
        {
            "object": "webhook_endpoint.test",
            "webhook_endpoint_id": response.webhook_endpoint_id,
            "event_type": response.event_type,
            "status_code": response.status_code,
            "success": True,
        }
    )


@router.get("/webhook_endpoints/{endpoint_id}/deliveries")
async def list_webhook_deliveries(
    request: Request,
    metadata: CallerMetadata,
    endpoint_id: str,
    limit: Annotated[int | None, Query(ge=1, le=100)] = None,
) -> JSONResponse:
    """spillway's extension: the endpoint's delivery attempts, newest first."""
    gateway = backends(request)
    response: pb.ListWebhookDeliveriesResponse = await gateway.webhooks.ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(id=endpoint_id, page_size=limit or 0),
        metadata=metadata,
        timeout=gateway.config.timeout_s,
    )
    data = [
        {
            "object": "webhook_endpoint.delivery",
            "event_id": d.event_id,
            "event_type": d.event_type or None,
            "video_id": d.video_id or None,
            "attempt": d.attempt,
            "status_code": d.status_code or None,
            "error": d.error or None,
            "outcome": d.outcome,
            "created_at": d.at.seconds,
        }
        for d in response.deliveries
    ]
    return JSONResponse({"object": "list", "data": data, "has_more": False})


@router.get("/webhook_event_types")
async def list_webhook_event_types(request: Request, metadata: CallerMetadata) -> JSONResponse:
    gateway = backends(request)
    response: pb.ListWebhookEventTypesResponse = await gateway.webhooks.ListWebhookEventTypes(
        pb.ListWebhookEventTypesRequest(), metadata=metadata, timeout=gateway.config.timeout_s
    )
    return JSONResponse({"object": "list", "data": list(response.event_types)})
