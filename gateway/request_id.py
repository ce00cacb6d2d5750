"""Every response carries ``x-request-id``, as OpenAI's do, so a caller can quote it in a
report and an operator can find the request's logs and trace by it."""

from __future__ import annotations

import re
import secrets

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
# A caller's own id is kept when it is one a log line can hold safely.
_ACCEPTED = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == HEADER), b"")
        request_id = (
            given if _ACCEPTED.fullmatch(given) else f"req_{secrets.token_hex(16)}".encode()
        )
        trace.get_current_span().set_attribute("http.request_id", request_id.decode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (HEADER, request_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)
