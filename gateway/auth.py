"""The caller's API key, forwarded to the scheduler, which maps it to a tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.errors import ApiError

Metadata = tuple[tuple[str, str], ...]

_bearer = HTTPBearer(auto_error=False, description="The API key as a Bearer token.")


# async, so FastAPI calls it on the event loop rather than in its thread pool.
async def scheduler_metadata(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Metadata:
    """The gRPC metadata that carries the caller's key; 401 without a Bearer token."""
    if credentials is None:
        raise ApiError(
            401,
            "Missing API key: send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
            headers={"www-authenticate": "Bearer"},
        )
    return (("authorization", f"Bearer {credentials.credentials}"),)


CallerMetadata = Annotated[Metadata, Depends(scheduler_metadata)]
"""A route parameter holding the scheduler metadata of an authenticated caller."""
