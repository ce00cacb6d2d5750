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
    Bearer token, or with one that cannot be a key."""
    if credentials is None:
        raise _unauthorized("Missing API key: send it as 'Authorization: Bearer <key>'.")
    key = credentials.credentials
    # gRPC metadata carries printable ASCII only: any other key is no key of ours, and
    # would fail the scheduler call before it is sent.
    if not (key.isascii() and key.isprintable()):
        raise _unauthorized("Invalid API key: an API key is printable ASCII.")
    trace_context: dict[str, str] = {}
    propagate.inject(trace_context)
    return (("authorization", f"Bearer {key}"), *trace_context.items())


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_api_key", headers={"www-authenticate": "Bearer"})


CallerMetadata = Annotated[Metadata, Depends(scheduler_metadata)]
"""A route parameter holding the scheduler metadata of an authenticated caller."""
