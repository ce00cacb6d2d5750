"""Every error the gateway answers, in the OpenAI error shape, and where each comes from.

    Exception
     +-- ApiError                  one HTTP error answer: status, body, headers
     |     raised by the gateway itself (auth, request parsing), or built from a
     |     scheduler status by `from_rpc_error`
     +-- grpc.aio.AioRpcError      a scheduler call failed: mapped by `from_rpc_error`
     +-- RequestValidationError    FastAPI rejected a query or header: 400, not 422
     +-- HTTPException             routing (404, 405) or form parsing (400)
     +-- ClientDisconnect          the client left while sending its body
     +-- anything else             500 "server_error"

The body is always ``{"error": {"message", "type", "param", "code"}}``. `install`
registers `error_response` for all of them, so no handler builds an error answer itself.

The official `openai` client retries a POST on 408, 409, 429 and 5xx without an
idempotency key, so a create whose outcome is unknown (the job may have been saved)
answers ``x-should-retry: false`` unless the caller sent an ``Idempotency-Key``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from typing_extensions import TypedDict  # pydantic documents it in /openapi.json on 3.11

logger = logging.getLogger(__name__)

_DETAILS_KEY = "grpc-status-details-bin"

_HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    # Never 409 for "not ready yet": the official client retries 409.
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# Without a rich status these come from gRPC itself, whose text names internal
# addresses; callers get a plain sentence and operators the original in the log.
_PLAIN_MESSAGES: Mapping[int, str] = {
    500: "The scheduler failed to handle the request.",
    503: "The scheduler is unavailable; retry later.",
    504: "The scheduler did not answer in time.",
}

AMBIGUOUS_CODES = frozenset(
    {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAVAILABLE,
    }
)
"""Codes after which a submitted job may or may not have been saved."""

IDEMPOTENCY_HEADER = "idempotency-key"


class ErrorDetail(TypedDict):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(TypedDict):
    error: ErrorDetail


class ApiError(Exception):
    """An HTTP error answer in the OpenAI shape."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str | None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    @property
    def type(self) -> str:
        if self.status_code >= 500:
            return "server_error"
        if self.status_code == 429:
            return "rate_limit_error"
        return "invalid_request_error"

    def body(self) -> ErrorBody:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


def create_retry_unsafe(
    code: grpc.StatusCode, *, is_create: bool, has_idempotency_key: bool
) -> bool:
    """Whether a failed call must tell the client not to retry: a create without an
    idempotency key that may already have saved its job."""
    return is_create and not has_idempotency_key and code in AMBIGUOUS_CODES


def from_rpc_error(err: grpc.aio.AioRpcError, *, retry_unsafe: bool = False) -> ApiError:
    """Map a failed scheduler call, with its rich status details, to an HTTP error."""
    code = err.code()
    status_code = _HTTP_STATUS.get(code, 500)
    rich = _rich_status(err)
    reason: str | None = None
    param: str | None = None
    retry_after_s = 1
    for detail in rich.details if rich is not None else ():
        if reason is None and detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason or None
        elif param is None and detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            if bad_request.field_violations:
                param = bad_request.field_violations[0].field or None
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry_info = error_details_pb2.RetryInfo()
            detail.Unpack(retry_info)
            delay = retry_info.retry_delay
            retry_after_s = max(1, math.ceil(delay.seconds + delay.nanos / 1e9))

    if rich is not None and rich.message:
        message: str = rich.message
    elif status_code in _PLAIN_MESSAGES:
        message = _PLAIN_MESSAGES[status_code]
    else:
        message = err.details() or code.name.lower()
    if status_code >= 500:
        logger.warning("scheduler call failed: %s %s", code.name, err.details())

    headers: dict[str, str] = {}
    if status_code in (429, 503):
        headers["retry-after"] = str(retry_after_s)
    if status_code == 401:
        headers["www-authenticate"] = "Bearer"
        reason = "invalid_api_key"
    if retry_unsafe:
        headers["x-should-retry"] = "false"
    return ApiError(
        status_code, message, code=reason or code.name.lower(), param=param, headers=headers
    )


def _rich_status(err: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    # grpc-stubs gives AioRpcError the sync API's type; aio returns an aio.Metadata.
    for key, value in cast(grpc.aio.Metadata, err.trailing_metadata()):
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                logger.warning("scheduler sent an unreadable %s", _DETAILS_KEY)
                return None
    return None


def error_response(request: Request, exc: Exception) -> Response:
    """Answer any exception that reaches the app with an error in the OpenAI shape."""
    # The only POST creates a job; its failures decide whether a retry is safe.
    is_create = request.method == "POST"
    has_key = bool(request.headers.get(IDEMPOTENCY_HEADER))
    if isinstance(exc, ApiError):
        error = exc
    elif isinstance(exc, grpc.aio.AioRpcError):
        unsafe = create_retry_unsafe(exc.code(), is_create=is_create, has_idempotency_key=has_key)
        error = from_rpc_error(exc, retry_unsafe=unsafe)
    elif isinstance(exc, RequestValidationError):
        error = _from_validation_error(exc)
    elif isinstance(exc, HTTPException):
        error = _from_http_exception(request, exc)
    elif isinstance(exc, ClientDisconnect):
        error = ApiError(400, "The client disconnected.", code="client_disconnected")
    else:
        error = ApiError(500, "The gateway failed to handle the request.", code="internal_error")
        if is_create and not has_key:
            error.headers["x-should-retry"] = "false"
    return error.response()


def _from_validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    first: Mapping[str, Any] = errors[0] if errors else {}
    location: Sequence[object] = first.get("loc", ())
    param = str(location[-1]) if len(location) > 1 else None
    missing = first.get("type") == "missing"
    reason = first.get("msg", "invalid value")
    message = f"Invalid value for '{param}': {reason}." if param else f"{reason}."
    return ApiError(
        400,
        message,
        code="missing_required_parameter" if missing else "invalid_value",
        param=param,
    )


def _from_http_exception(request: Request, exc: HTTPException) -> ApiError:
    if exc.status_code == 404:
        message = f"Invalid URL ({request.method} {request.url.path})"
        return ApiError(404, message, code="unknown_url")
    if exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
        return ApiError(405, message, code="method_not_allowed", headers=exc.headers)
    return ApiError(exc.status_code, exc.detail, code="invalid_request", headers=exc.headers)


def install(app: FastAPI) -> None:
    """Route every error the app can raise through `error_response`."""
    handled = (ApiError, grpc.aio.AioRpcError, RequestValidationError, HTTPException)
    for exc_class in (*handled, ClientDisconnect):
        app.add_exception_handler(exc_class, error_response)
    # Registered for Exception, Starlette answers from its outermost middleware and then
    # re-raises, so the server still logs the traceback.
    app.add_exception_handler(Exception, error_response)
