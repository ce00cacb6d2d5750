"""The metadata of every scheduler call: the caller's API key, which the scheduler maps
to a tenant, and the request's trace context, so the scheduler's spans continue the
gateway's trace.

Every route takes its metadata from `CallerMetadata`, so this is the one place both are
added.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from opentelemetry import propagate

from gateway.errors import ApiError

Metadata = tuple[tuple[str, str], ...]

_bearer = HTTPBearer(auto_error=False, description="The API key as a Bearer token.")


# async, so FastAPI calls it on the event loop rather than in its thread pool.
async def scheduler_metadata(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Metadata:
    """The gRPC metadata that carries the caller's key and the current trace context
    (W3C ``traceparent``, ``tracestate``: the request's server span); 401 without a
    Bearer token."""
    if credentials is None:
        raise ApiError(
            401,
            "Missing API key: send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
            headers={"www-authenticate": "Bearer"},
        )
    trace_context: dict[str, str] = {}
    propagate.inject(trace_context)
    return (("authorization", f"Bearer {credentials.credentials}"), *trace_context.items())


CallerMetadata = Annotated[Metadata, Depends(scheduler_metadata)]
"""A route parameter holding the scheduler metadata of an authenticated caller."""
