"""The body of ``POST /v1/videos`` (multipart, urlencoded or JSON) as a SubmitRenderRequest.

The gateway checks only shapes and types; the scheduler validates values (prompt length,
known models and sizes, allowed durations) and names the offending field itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from spillway.v1 import scheduler_pb2
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message, Receive

from gateway.errors import ApiError

_FIELDS = frozenset({"prompt", "model", "seconds", "size", "input_reference"})
_FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})
_UINT32_MAX = 2**32 - 1


async def read_create_params(
    request: Request, *, max_body_bytes: int, idempotency_key: str | None
) -> scheduler_pb2.SubmitRenderRequest:
    """Read and parse the create body, reading at most `max_body_bytes` of it."""
    _check_declared_length(request, max_body_bytes)
    capped = Request(request.scope, _capped_receive(request.receive, max_body_bytes))
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type == "application/json":
        return _submit_request(_json_object(await capped.body()), idempotency_key)
    if media_type in _FORM_TYPES:
        # Closing the form releases an uploaded input_reference, which is refused anyway.
        # The field limit leaves room for a few strays, so our own check names them.
        async with capped.form(
            max_files=1, max_fields=4 * len(_FIELDS), max_part_size=max_body_bytes
        ) as form:
            return _submit_request(form, idempotency_key)
    raise ApiError(
        400,
        "Send the request body as multipart/form-data or application/json.",
        code="unsupported_content_type",
    )


def _too_large(max_body_bytes: int) -> ApiError:
    return ApiError(
        400,
        f"The request body is larger than {max_body_bytes} bytes.",
        code="request_too_large",
    )


def _check_declared_length(request: Request, max_body_bytes: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdecimal() and int(declared) > max_body_bytes:
        raise _too_large(max_body_bytes)


def _capped_receive(receive: Receive, max_body_bytes: int) -> Receive:
    """`receive`, failing once the body grows past the cap (a chunked body declares no
    length, and a declared length is only a claim)."""
    received = 0

    async def capped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_body_bytes:
                raise _too_large(max_body_bytes)
        return message

    return capped


def _json_object(body: bytes) -> Mapping[str, object]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(value, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return value


def _submit_request(
    fields: Mapping[str, object], idempotency_key: str | None
) -> scheduler_pb2.SubmitRenderRequest:
    for name in fields:
        if name not in _FIELDS:
            raise ApiError(
                400, f"Unknown parameter: '{name}'.", code="unknown_parameter", param=name
            )
    if fields.get("input_reference") is not None:
        raise ApiError(
            400,
            "input_reference is not supported.",
            code="unsupported_parameter",
            param="input_reference",
        )
    prompt = _string(fields, "prompt")
    if prompt is None:
        raise ApiError(
            400,
            "Missing required parameter: 'prompt'.",
            code="missing_required_parameter",
            param="prompt",
        )
    return scheduler_pb2.SubmitRenderRequest(
        prompt=prompt,
        model=_string(fields, "model") or "",
        seconds=_seconds(fields.get("seconds")),
        size=_string(fields, "size") or "",
        idempotency_key=idempotency_key or "",
    )


def _string(fields: Mapping[str, object], name: str) -> str | None:
    value = fields.get(name)
    if value is None or isinstance(value, str):
        return value
    kind = "a file" if isinstance(value, UploadFile) else type(value).__name__
    raise ApiError(
        400,
        f"Invalid type for '{name}': expected a string, got {kind}.",
        code="invalid_type",
        param=name,
    )


def _seconds(value: object) -> int:
    """The clip length; 0 (the scheduler's default) when not given."""
    if value is None:
        return 0
    # A JSON true is an int to Python, but not a duration.
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and len(value) <= 10 and value.isascii() and value.isdecimal():
        seconds = int(value)
    else:
        seconds = 0
    if not 0 < seconds <= _UINT32_MAX:
        raise ApiError(
            400,
            "Invalid value for 'seconds': expected a positive whole number such as '4'.",
            code="invalid_value",
            param="seconds",
        )
    return seconds
