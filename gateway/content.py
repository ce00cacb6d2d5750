"""``GET /v1/videos/{id}/content``: a redirect to the MP4's presigned URL, or its bytes.

The official client follows the redirect and drops ``Authorization`` on the way to
another host, so the presigned URL alone authorises the download.
"""

from __future__ import annotations

import logging

import httpx
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.errors import ApiError

MEDIA_TYPE = "video/mp4"

logger = logging.getLogger(__name__)


def redirect_to(url: str) -> RedirectResponse:
    # The URL expires soon: no cache may keep the redirect past it.
    return RedirectResponse(url, status_code=307, headers={"cache-control": "no-store"})


async def proxy(http: httpx.AsyncClient, url: str) -> Response:
    """Stream the object at `url` through the gateway."""
    try:
        upstream = await http.send(http.build_request("GET", url), stream=True)
    except httpx.HTTPError as exc:
        logger.warning("reading a video from storage failed: %r", exc)
        raise _storage_error() from None
    if upstream.status_code != 200:
        await upstream.aclose()
        logger.warning("reading a video from storage answered %d", upstream.status_code)
        raise _storage_error()
    return _UpstreamResponse(upstream)


def _storage_error() -> ApiError:
    return ApiError(502, "The video could not be read from storage.", code="storage_error")


class _UpstreamResponse(StreamingResponse):
    """Relays an upstream body as is, and closes it however the relay ends (a client
    that leaves early ends it with an exception, not at the end of the body)."""

    def __init__(self, upstream: httpx.Response) -> None:
        headers = {
            name: upstream.headers[name]
            for name in ("content-length", "content-encoding")
            if name in upstream.headers
        }
        super().__init__(upstream.aiter_raw(), headers=headers, media_type=MEDIA_TYPE)
        self._upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._upstream.aclose()
