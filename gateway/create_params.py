"""The body of ``POST /v1/videos`` (multipart, urlencoded or JSON) as a SubmitRenderRequest.

The gateway checks only shapes, types and encodings; the scheduler validates values
(prompt length, known models and sizes, allowed durations) and names the offending field
itself. Text must be UTF-8: a form whose bytes do not decode, or JSON that escapes half a
surrogate pair, is refused. (Starlette's own form parsing would guess instead, storing
Latin-1 or U+FFFD in place of what does not decode.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import unquote_to_bytes

from python_multipart import create_form_parser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import Field, File
from spillway.v1 import scheduler_pb2
from starlette.requests import Request
from starlette.types import Message, Receive

from gateway.errors import ApiError

# spillway's extensions: OpenAI's API has no deadline, priority class or in-house pin.
_EXTENSIONS = frozenset({"deadline_seconds", "priority", "inhouse_only"})
_FIELDS = frozenset({"prompt", "model", "seconds", "size", "input_reference"}) | _EXTENSIONS
_PRIORITY_CLASSES = {
    "interactive": scheduler_pb2.PRIORITY_CLASS_INTERACTIVE,
    "batch": scheduler_pb2.PRIORITY_CLASS_BATCH,
}
_JSON_TYPE = "application/json"
_URLENCODED_TYPE = "application/x-www-form-urlencoded"
_FORM_TYPES = frozenset({"multipart/form-data", _URLENCODED_TYPE})
# Room for a few strays, so that our own check names them, without collecting thousands.
_MAX_FORM_FIELDS = 4 * len(_FIELDS)
_UINT32_MAX = 2**32 - 1


class _Upload:
    """A file part of a form: refused, so only its presence is kept."""


async def read_create_params(
    request: Request, *, max_body_bytes: int, idempotency_key: str | None
) -> scheduler_pb2.SubmitRenderRequest:
    """Read and parse the create body, reading at most `max_body_bytes` of it."""
    _check_declared_length(request, max_body_bytes)
    content_type = request.headers.get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type != _JSON_TYPE and media_type not in _FORM_TYPES:
        raise ApiError(
            400,
            "Send the request body as multipart/form-data or application/json.",
            code="unsupported_content_type",
        )
    capped = Request(request.scope, _capped_receive(request.receive, max_body_bytes))
    body = await capped.body()
    if media_type == _JSON_TYPE:
        fields = _json_object(body)
    else:
        fields = _form_fields(body, content_type, urlencoded=media_type == _URLENCODED_TYPE)
    return _submit_request(fields, idempotency_key)


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
    except RecursionError:
        # The parser recurses once per level of nesting.
        raise ApiError(400, "The request body is nested too deeply.", code="invalid_json") from None
    if not isinstance(value, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    for name, field in value.items():
        if not _is_utf8(name):
            raise _not_utf8(None)
        if isinstance(field, str) and not _is_utf8(field):
            raise _not_utf8(name)
    return value


def _form_fields(body: bytes, content_type: str, *, urlencoded: bool) -> Mapping[str, object]:
    """The fields of a multipart or urlencoded body, their names and values UTF-8."""
    parts: list[tuple[bytes, bytes | _Upload]] = []

    def add(name: bytes | None, value: bytes | _Upload) -> None:
        if len(parts) == _MAX_FORM_FIELDS:
            message = f"The form has more than {_MAX_FORM_FIELDS} fields."
            raise ApiError(400, message, code="invalid_form")
        parts.append((name or b"", value))

    def on_field(field: Field) -> None:
        add(field.field_name, field.value or b"")

    def on_file(file: File) -> None:
        file.close()
        add(file.field_name, _Upload())

    # A file part never reaches the disk: it is no larger than the body, held in memory.
    config = {"MAX_MEMORY_FILE_SIZE": len(body)}
    try:
        parser = create_form_parser(
            {"Content-Type": content_type.encode("latin-1")}, on_field, on_file, config
        )
        parser.write(body)
        parser.finalize()
    except FormParserError:
        raise ApiError(
            400, "The request body is not a well-formed form.", code="invalid_form"
        ) from None

    def text(raw: bytes, param: str | None) -> str:
        if urlencoded:
            raw = unquote_to_bytes(raw.replace(b"+", b" "))
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise _not_utf8(param) from None

    fields: dict[str, object] = {}
    for raw_name, raw_value in parts:
        name = text(raw_name, None)
        fields[name] = raw_value if isinstance(raw_value, _Upload) else text(raw_value, name)
    return fields


def _is_utf8(text: str) -> bool:
    """Whether `text` encodes as UTF-8: all but a lone surrogate, which JSON can escape."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _not_utf8(param: str | None) -> ApiError:
    """The error for a parameter's value, or (`param` None) a parameter's name, that is
    not UTF-8 text."""
    if param is None:
        return ApiError(400, "A parameter name is not valid UTF-8 text.", code="invalid_encoding")
    return ApiError(
        400,
        f"Invalid value for '{param}': not valid UTF-8 text.",
        code="invalid_encoding",
        param=param,
    )


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
        deadline_seconds=_deadline(fields.get("deadline_seconds")),
        priority_class=_priority_class(_string(fields, "priority")),
        inhouse_only=_flag(fields.get("inhouse_only"), "inhouse_only"),
    )


def _priority_class(value: str | None) -> scheduler_pb2.PriorityClass:
    if value is None:
        return scheduler_pb2.PRIORITY_CLASS_UNSPECIFIED
    found = _PRIORITY_CLASSES.get(value)
    if found is None:
        raise ApiError(
            400,
            f"Invalid value for 'priority': expected 'interactive' or 'batch', got {value!r}.",
            code="invalid_value",
            param="priority",
        )
    return found


def _flag(value: object, name: str) -> bool:
    """A JSON boolean, or a form's 'true'/'false'."""
    if value is None or value is False or value == "false":
        return False
    if value is True or value == "true":
        return True
    raise ApiError(
        400,
        f"Invalid value for '{name}': expected true or false.",
        code="invalid_value",
        param=name,
    )


def _string(fields: Mapping[str, object], name: str) -> str | None:
    value = fields.get(name)
    if value is None or isinstance(value, str):
        return value
    kind = "a file" if isinstance(value, _Upload) else type(value).__name__
    raise ApiError(
        400,
        f"Invalid type for '{name}': expected a string, got {kind}.",
        code="invalid_type",
        param=name,
    )


def _deadline(value: object) -> int:
    """Seconds after submit at which the job is useless; 0 (none) when not given. The
    scheduler checks the range."""
    if value is None:
        return 0
    seconds = _whole(value)
    if seconds is None:
        raise ApiError(
            400,
            "Invalid value for 'deadline_seconds': expected a whole number of seconds.",
            code="invalid_value",
            param="deadline_seconds",
        )
    return min(_UINT32_MAX, seconds)


def _whole(value: object) -> int | None:
    # A JSON true is an int to Python, but not a number of seconds.
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str) and len(value) <= 10 and value.isascii() and value.isdecimal():
        return int(value)
    return None


def _seconds(value: object) -> int:
    """The clip length; 0 (the scheduler's default) when not given."""
    if value is None:
        return 0
    seconds = _whole(value) or 0
    if not 0 < seconds <= _UINT32_MAX:
        raise ApiError(
            400,
            "Invalid value for 'seconds': expected a positive whole number such as '4'.",
            code="invalid_value",
            param="seconds",
        )
    return seconds
