"""Unit tests of the gateway: the parts that need no scheduler.

The app-level tests point the gateway at a port that is bound but not listening, so any
call that reaches for the scheduler fails fast with a real UNAVAILABLE.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from spillway.v1 import scheduler_pb2
from starlette.requests import Request

from gateway import content
from gateway.app import create_app
from gateway.cli import main
from gateway.config import (
    CONTENT_MODE,
    MAX_BODY_BYTES,
    POLL_AFTER_MS,
    SCHEDULER_ADDR,
    TIMEOUT_S,
    ConfigError,
    ContentMode,
    GatewayConfig,
)
from gateway.create_params import read_create_params
from gateway.errors import ApiError, create_retry_unsafe, from_rpc_error
from gateway.videos import video_event, video_from_job

AUTH = {"authorization": "Bearer test-key"}

# --- job proto -> video object --------------------------------------------------------


def _job(**fields: Any) -> scheduler_pb2.Job:
    job = scheduler_pb2.Job(
        id="video_123",
        status=scheduler_pb2.JOB_STATUS_QUEUED,
        model="spillway-1",
        prompt="a red fox in snow",
        seconds=8,
        size="1280x720",
        trace_id="0af7651916cd43dd8448eb211c80319c",
    )
    job.created_at.seconds = 1_700_000_000
    job.created_at.nanos = 900_000_000
    job.expires_at.seconds = 1_700_086_400
    for name, value in fields.items():
        setattr(job, name, value)
    return job


def test_queued_job_reads_as_a_complete_video_object() -> None:
    """A queued job maps to every field of the Videos API object, with our extensions."""
    assert video_from_job(_job()) == {
        "id": "video_123",
        "object": "video",
        "model": "spillway-1",
        "status": "queued",
        "progress": 0,
        "created_at": 1_700_000_000,
        "completed_at": None,
        "expires_at": 1_700_086_400,
        "prompt": "a red fox in snow",
        "size": "1280x720",
        "seconds": "8",
        "remixed_from_video_id": None,
        "error": None,
        "deadline_at": None,
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "priority": "interactive",
        "inhouse_only": False,
        "placement": None,
    }


def test_cancelled_job_reads_failed_with_code_cancelled() -> None:
    """The Videos status enum has no cancelled, so a cancelled job reads failed/cancelled."""
    job = _job(status=scheduler_pb2.JOB_STATUS_CANCELLED)
    job.completed_at.seconds = 1_700_000_100
    video = video_from_job(job)
    assert video["status"] == "failed"
    assert video["error"] == {"code": "cancelled", "message": "The video job was cancelled."}
    assert video["completed_at"] == 1_700_000_100


def test_failed_job_carries_the_schedulers_error() -> None:
    """A failed job's error code and message come through unchanged."""
    job = _job(status=scheduler_pb2.JOB_STATUS_FAILED, progress=40)
    job.error.code = "render_failed"
    job.error.message = "the renderer crashed"
    video = video_from_job(job)
    assert (video["status"], video["progress"]) == ("failed", 40)
    assert video["error"] == {"code": "render_failed", "message": "the renderer crashed"}


def test_unset_timestamps_and_trace_id_read_null() -> None:
    """An all-zero timestamp is unset and reads null, as does an empty trace id."""
    job = _job(trace_id="")
    job.ClearField("created_at")
    job.ClearField("expires_at")
    video = video_from_job(job)
    assert (video["created_at"], video["completed_at"], video["expires_at"]) == (None, None, None)
    assert video["trace_id"] is None


def test_in_progress_and_completed_statuses_map_to_rest_names() -> None:
    """Running and completed jobs use the Videos API's status names."""
    running = video_from_job(_job(status=scheduler_pb2.JOB_STATUS_IN_PROGRESS))
    done = video_from_job(_job(status=scheduler_pb2.JOB_STATUS_COMPLETED, progress=100))
    assert running["status"] == "in_progress"
    assert (done["status"], done["progress"], done["error"]) == ("completed", 100, None)


def test_job_without_a_known_status_is_refused() -> None:
    """A job whose status the gateway cannot name is an error, not a guess."""
    with pytest.raises(ValueError, match="status"):
        video_from_job(_job(status=scheduler_pb2.JOB_STATUS_UNSPECIFIED))


def test_job_event_becomes_sse_data() -> None:
    """A JobEvent maps to the SSE data object, with the REST status and null pool."""
    event = scheduler_pb2.JobEvent(
        id="1700000000000-0",
        job_id="video_123",
        type="cancelled",
        status=scheduler_pb2.JOB_STATUS_CANCELLED,
        progress=30,
        terminal=True,
    )
    event.time.seconds = 1_700_000_005
    assert video_event(event) == {
        "id": "1700000000000-0",
        "video_id": "video_123",
        "type": "cancelled",
        "status": "failed",
        "progress": 30,
        "created_at": 1_700_000_005,
        "pool": None,
        "reason": None,
        "error": {"code": "cancelled", "message": "The video job was cancelled."},
    }


# --- rich gRPC status -> HTTP ---------------------------------------------------------


def _packed(*details: Any) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    return packed


def _rpc_error(code: int, message: str, *details: Any) -> grpc.aio.AioRpcError:
    """An AioRpcError as a scheduler's rich abort produces it."""
    status = rpc_status.to_status(
        status_pb2.Status(code=code, message=message, details=_packed(*details))
    )
    return grpc.aio.AioRpcError(
        status.code,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
        debug_error_string=None,
    )


def _bare_rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """An AioRpcError without rich details, as gRPC itself raises them."""
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details, debug_error_string=None
    )


def _bad_request(field: str) -> error_details_pb2.BadRequest:
    violation = error_details_pb2.BadRequest.FieldViolation(field=field, description="bad")
    return error_details_pb2.BadRequest(field_violations=[violation])


def _error_info(reason: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain="spillway")


def _retry_info(seconds: int, nanos: int = 0) -> error_details_pb2.RetryInfo:
    return error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)
    )


def test_invalid_argument_names_the_param_and_reason() -> None:
    """INVALID_ARGUMENT answers 400 with param from BadRequest and code from ErrorInfo."""
    err = _rpc_error(
        code_pb2.INVALID_ARGUMENT,
        "prompt is longer than 4000 characters",
        _error_info("prompt_too_long"),
        _bad_request("prompt"),
    )
    error = from_rpc_error(err)
    assert error.status_code == 400
    assert error.body() == {
        "error": {
            "message": "prompt is longer than 4000 characters",
            "type": "invalid_request_error",
            "param": "prompt",
            "code": "prompt_too_long",
        }
    }
    assert error.headers == {}


def test_resource_exhausted_answers_429_with_retry_after_from_retry_info() -> None:
    """RESOURCE_EXHAUSTED answers 429 and rounds RetryInfo up to whole Retry-After seconds."""
    err = _rpc_error(
        code_pb2.RESOURCE_EXHAUSTED, "queue full", _error_info("queue_full"), _retry_info(2, 500)
    )
    error = from_rpc_error(err)
    assert (error.status_code, error.code, error.type) == (429, "queue_full", "rate_limit_error")
    assert error.headers == {"retry-after": "3"}


def test_unavailable_without_details_answers_503_with_a_default_retry_after() -> None:
    """A bare UNAVAILABLE answers 503, Retry-After 1, and hides gRPC's internal text."""
    err = _bare_rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to 10.0.0.7:50051")
    error = from_rpc_error(err)
    assert (error.status_code, error.type, error.code) == (503, "server_error", "unavailable")
    assert error.headers == {"retry-after": "1"}
    assert "10.0.0.7" not in error.message


def test_unauthenticated_answers_401_invalid_api_key() -> None:
    """UNAUTHENTICATED answers 401 with the OpenAI code invalid_api_key."""
    error = from_rpc_error(
        _rpc_error(code_pb2.UNAUTHENTICATED, "unknown key", _error_info("unauthenticated"))
    )
    assert (error.status_code, error.type, error.code) == (
        401,
        "invalid_request_error",
        "invalid_api_key",
    )


@pytest.mark.parametrize(
    ("code", "reason", "status_code"),
    [
        (code_pb2.FAILED_PRECONDITION, "video_not_ready", 400),
        (code_pb2.NOT_FOUND, "not_found", 404),
        (code_pb2.PERMISSION_DENIED, "permission_denied", 403),
        (code_pb2.DEADLINE_EXCEEDED, "deadline_exceeded", 504),
        (code_pb2.INTERNAL, "internal", 500),
        (code_pb2.ABORTED, "aborted", 500),
    ],
)
def test_status_codes_map_to_http_statuses(code: int, reason: str, status_code: int) -> None:
    """Each gRPC code answers its HTTP status (never 409), keeping ErrorInfo's reason."""
    error = from_rpc_error(_rpc_error(code, "scheduler says no", _error_info(reason)))
    assert (error.status_code, error.code, error.message) == (
        status_code,
        reason,
        "scheduler says no",
    )
    assert error.type == ("server_error" if status_code >= 500 else "invalid_request_error")


def test_status_without_error_info_uses_the_code_name() -> None:
    """Without ErrorInfo the error code is the gRPC code's snake_case name."""
    error = from_rpc_error(_bare_rpc_error(grpc.StatusCode.NOT_FOUND, "no such video"))
    assert (error.status_code, error.code, error.message) == (404, "not_found", "no such video")


# --- the x-should-retry rule ----------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAVAILABLE,
    ],
)
def test_ambiguous_create_without_key_must_not_be_retried(code: grpc.StatusCode) -> None:
    """A create that may have saved its job, sent without a key, must not be retried."""
    assert create_retry_unsafe(code, is_create=True, has_idempotency_key=False)
    assert not create_retry_unsafe(code, is_create=True, has_idempotency_key=True)
    assert not create_retry_unsafe(code, is_create=False, has_idempotency_key=False)


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
    ],
)
def test_definite_create_failures_stay_retryable(code: grpc.StatusCode) -> None:
    """A create the scheduler definitely refused leaves retrying to the client."""
    assert not create_retry_unsafe(code, is_create=True, has_idempotency_key=False)


def test_retry_unsafe_error_carries_x_should_retry_false() -> None:
    """An error built as retry-unsafe tells the official client not to retry it."""
    err = _bare_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline")
    error = from_rpc_error(err, retry_unsafe=True)
    assert error.status_code == 504
    assert error.headers["x-should-retry"] == "false"


# --- config ---------------------------------------------------------------------------


def test_config_defaults_when_nothing_is_set() -> None:
    """An empty environment gives the documented defaults."""
    assert GatewayConfig.from_env({}) == GatewayConfig(
        scheduler_addr="127.0.0.1:50051",
        content_mode=ContentMode.REDIRECT,
        max_body_bytes=1_048_576,
        poll_after_ms=1000,
        timeout_s=10.0,
    )


def test_config_reads_every_variable() -> None:
    """Every setting is read from its environment variable."""
    config = GatewayConfig.from_env(
        {
            SCHEDULER_ADDR: "scheduler.internal:6000",
            CONTENT_MODE: "proxy",
            MAX_BODY_BYTES: "2048",
            POLL_AFTER_MS: "250",
            TIMEOUT_S: "2.5",
        }
    )
    assert config == GatewayConfig("scheduler.internal:6000", ContentMode.PROXY, 2048, 250, 2.5)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (SCHEDULER_ADDR, "scheduler"),
        (SCHEDULER_ADDR, "host:port"),
        (CONTENT_MODE, "stream"),
        (MAX_BODY_BYTES, "1MB"),
        (MAX_BODY_BYTES, "0"),
        (POLL_AFTER_MS, "-5"),
        (TIMEOUT_S, "soon"),
        (TIMEOUT_S, "0"),
        (TIMEOUT_S, "inf"),
    ],
)
def test_bad_config_value_is_refused_naming_key_and_value(key: str, value: str) -> None:
    """A value that does not parse stops startup with a message naming key and value."""
    with pytest.raises(ConfigError) as caught:
        GatewayConfig.from_env({key: value})
    assert key in str(caught.value)
    assert repr(value) in str(caught.value)


def test_cli_refuses_to_start_on_bad_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m gateway` exits 2 on a bad setting, saying which and why."""
    monkeypatch.setenv(POLL_AFTER_MS, "often")
    assert main(["--port", "0"]) == 2
    assert f"{POLL_AFTER_MS}='often'" in capsys.readouterr().err


# --- request bodies -------------------------------------------------------------------


def _request(body: bytes, content_type: str) -> Request:
    """A bare ASGI request carrying `body` in two chunks."""
    chunks = [body[: len(body) // 2], body[len(body) // 2 :]]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    headers = [(b"content-type", content_type.encode())]
    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


async def test_json_body_accepts_an_integer_seconds() -> None:
    """A JSON body may give seconds as a number; the key header becomes idempotency_key."""
    body = json.dumps({"prompt": "a fox", "seconds": 8, "size": "1280x720"}).encode()
    submit = await read_create_params(
        _request(body, "application/json"), max_body_bytes=1024, idempotency_key="k-1"
    )
    assert submit == scheduler_pb2.SubmitRenderRequest(
        prompt="a fox", seconds=8, size="1280x720", idempotency_key="k-1"
    )


async def test_multipart_body_reads_like_the_official_client_sends_it() -> None:
    """A multipart body with string fields becomes a SubmitRenderRequest; no priority."""
    request = httpx.Request(
        "POST",
        "http://gateway/v1/videos",
        files={"prompt": (None, "a fox"), "seconds": (None, "12"), "model": (None, "m")},
    )
    submit = await read_create_params(
        _request(request.read(), request.headers["content-type"]),
        max_body_bytes=4096,
        idempotency_key=None,
    )
    assert submit == scheduler_pb2.SubmitRenderRequest(prompt="a fox", seconds=12, model="m")


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"seconds": "4"}, "prompt", "missing_required_parameter"),
        ({"prompt": "p", "seconds": "four"}, "seconds", "invalid_value"),
        ({"prompt": "p", "seconds": True}, "seconds", "invalid_value"),
        ({"prompt": "p", "seconds": 4.5}, "seconds", "invalid_value"),
        ({"prompt": "p", "seconds": "0"}, "seconds", "invalid_value"),
        ({"prompt": 7}, "prompt", "invalid_type"),
        ({"prompt": "p", "priority": 9}, "priority", "invalid_type"),
        ({"prompt": "p", "priority": "urgent"}, "priority", "invalid_value"),
        ({"prompt": "p", "inhouse_only": "yes"}, "inhouse_only", "invalid_value"),
        ({"prompt": "p", "colour": "red"}, "colour", "unknown_parameter"),
        ({"prompt": "p", "input_reference": {"image_url": "x"}}, "input_reference", None),
    ],
)
async def test_malformed_json_fields_are_refused_with_their_param(
    fields: dict[str, object], param: str, code: str | None
) -> None:
    """Each malformed field is a 400 naming that field, before any scheduler call."""
    request = _request(json.dumps(fields).encode(), "application/json")
    with pytest.raises(ApiError) as caught:
        await read_create_params(request, max_body_bytes=1024, idempotency_key=None)
    assert (caught.value.status_code, caught.value.param) == (400, param)
    if code is not None:
        assert caught.value.code == code


async def test_body_past_the_cap_is_refused_while_reading() -> None:
    """A body with no declared length is cut off once it grows past the cap."""
    request = _request(json.dumps({"prompt": "p" * 200}).encode(), "application/json")
    with pytest.raises(ApiError) as caught:
        await read_create_params(request, max_body_bytes=100, idempotency_key=None)
    assert (caught.value.status_code, caught.value.code) == (400, "request_too_large")


# --- content ------------------------------------------------------------------------


async def _run_response(response: Any) -> tuple[int, dict[str, str], bytes]:
    """Run an ASGI response and collect its status, headers and body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "asgi": {"spec_version": "2.4"}}
    await response(scope, receive, send)
    start = sent[0]
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def test_content_redirect_points_at_the_presigned_url_uncached() -> None:
    """Redirect mode answers 307 to the presigned URL, which no cache may keep."""
    response = content.redirect_to("https://s3.example/bucket/video_1.mp4?X-Amz-Signature=abc")
    assert response.status_code == 307
    assert (
        response.headers["location"] == "https://s3.example/bucket/video_1.mp4?X-Amz-Signature=abc"
    )
    assert response.headers["cache-control"] == "no-store"


async def test_content_proxy_streams_the_object_as_mp4() -> None:
    """Proxy mode relays the object's bytes as video/mp4 with their length."""
    mp4 = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64

    async def chunks() -> AsyncIterator[bytes]:
        yield mp4[:1000]
        yield mp4[1000:]

    def storage(request: httpx.Request) -> httpx.Response:
        assert request.url.params["X-Amz-Signature"] == "abc"
        # A streamed body, as a real transport gives it (bytes would be pre-read).
        headers = {"content-type": "binary/octet-stream", "content-length": str(len(mp4))}
        return httpx.Response(200, content=chunks(), headers=headers)

    async with httpx.AsyncClient(transport=httpx.MockTransport(storage)) as http:
        response = await content.proxy(http, "https://s3.example/v.mp4?X-Amz-Signature=abc")
        status, headers, body = await _run_response(response)
    assert (status, body) == (200, mp4)
    assert headers["content-type"] == "video/mp4"
    assert headers["content-length"] == str(len(mp4))


async def test_content_proxy_refusal_by_storage_answers_502() -> None:
    """A storage answer other than 200 (an expired URL, say) is a 502, not a broken MP4."""
    transport = httpx.MockTransport(lambda request: httpx.Response(403, text="expired"))
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(ApiError) as caught:
            await content.proxy(http, "https://s3.example/v.mp4")
    assert (caught.value.status_code, caught.value.code) == (502, "storage_error")


# --- the app, without a scheduler -----------------------------------------------------


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port that is bound but never listens: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
async def client(dead_port: int) -> AsyncIterator[httpx.AsyncClient]:
    config = GatewayConfig(scheduler_addr=f"127.0.0.1:{dead_port}", max_body_bytes=1024)
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


def _assert_openai_error(response: httpx.Response, status_code: int, param: str | None) -> str:
    """Check the OpenAI error shape and return its code."""
    assert response.status_code == status_code
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["param"] == param
    return str(error["code"])


@pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwYXNz", "Bearer "])
async def test_missing_bearer_token_answers_401(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    """Without a Bearer token the gateway answers 401 itself."""
    headers = {"authorization": authorization} if authorization else {}
    response = await client.get("/v1/videos/video_1", headers=headers)
    assert _assert_openai_error(response, 401, None) == "invalid_api_key"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_malformed_json_answers_400(client: httpx.AsyncClient) -> None:
    """A create whose JSON does not parse answers 400 invalid_json."""
    response = await client.post(
        "/v1/videos", content=b'{"prompt": ', headers={**AUTH, "content-type": "application/json"}
    )
    assert _assert_openai_error(response, 400, None) == "invalid_json"


async def test_declared_length_over_the_cap_answers_400(client: httpx.AsyncClient) -> None:
    """A create declaring a body over the cap answers 400 request_too_large."""
    response = await client.post("/v1/videos", json={"prompt": "p" * 2000}, headers=AUTH)
    assert _assert_openai_error(response, 400, None) == "request_too_large"


async def test_chunked_body_over_the_cap_answers_400(client: httpx.AsyncClient) -> None:
    """A chunked create body (no length declared) over the cap answers 400."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(20):
            yield b"p" * 100
        yield b'"}'

    headers = {**AUTH, "content-type": "application/json"}
    response = await client.post("/v1/videos", content=chunks(), headers=headers)
    assert _assert_openai_error(response, 400, None) == "request_too_large"


async def test_input_reference_file_answers_400(client: httpx.AsyncClient) -> None:
    """An uploaded input_reference is refused with param input_reference."""
    response = await client.post(
        "/v1/videos",
        data={"prompt": "a fox"},
        files={"input_reference": ("ref.png", b"\x89PNG", "image/png")},
        headers=AUTH,
    )
    _assert_openai_error(response, 400, "input_reference")


async def test_unsupported_content_type_answers_400(client: httpx.AsyncClient) -> None:
    """A create body that is neither form nor JSON answers 400."""
    headers = {**AUTH, "content-type": "text/plain"}
    response = await client.post("/v1/videos", content=b"a fox", headers=headers)
    assert _assert_openai_error(response, 400, None) == "unsupported_content_type"


@pytest.mark.parametrize(
    ("query", "param"),
    [("limit=0", "limit"), ("limit=101", "limit"), ("limit=ten", "limit"), ("order=up", "order")],
)
async def test_bad_list_query_answers_400_not_422(
    client: httpx.AsyncClient, query: str, param: str
) -> None:
    """Query validation errors answer 400 in the OpenAI shape, naming the param."""
    response = await client.get(f"/v1/videos?{query}", headers=AUTH)
    assert _assert_openai_error(response, 400, param) == "invalid_value"


async def test_content_variant_other_than_video_answers_400(client: httpx.AsyncClient) -> None:
    """Only the video variant of the content exists."""
    response = await client.get("/v1/videos/video_1/content?variant=thumbnail", headers=AUTH)
    _assert_openai_error(response, 400, "variant")


async def test_unknown_route_answers_404_in_openai_shape(client: httpx.AsyncClient) -> None:
    """A path the gateway does not serve answers 404 unknown_url."""
    response = await client.get("/v1/images", headers=AUTH)
    assert _assert_openai_error(response, 404, None) == "unknown_url"


async def test_unreachable_scheduler_on_create_forbids_a_retry(
    client: httpx.AsyncClient,
) -> None:
    """A create that fails UNAVAILABLE without a key answers 503, x-should-retry false."""
    response = await client.post("/v1/videos", data={"prompt": "a fox"}, headers=AUTH)
    assert _assert_openai_error(response, 503, None) == "unavailable"
    assert response.headers["retry-after"] == "1"
    assert response.headers["x-should-retry"] == "false"


async def test_unreachable_scheduler_on_keyed_create_allows_a_retry(
    client: httpx.AsyncClient,
) -> None:
    """With an Idempotency-Key a retried create is safe, so no x-should-retry is sent."""
    headers = {**AUTH, "idempotency-key": "create-fox-1"}
    response = await client.post("/v1/videos", data={"prompt": "a fox"}, headers=headers)
    assert response.status_code == 503
    assert "x-should-retry" not in response.headers


async def test_events_error_before_the_first_event_is_plain_http(
    client: httpx.AsyncClient,
) -> None:
    """A watch that fails at once answers a JSON error, not an event stream."""
    response = await client.get("/v1/videos/video_1/events", headers=AUTH)
    _assert_openai_error(response, 503, None)
    assert response.headers["content-type"] == "application/json"


async def test_openapi_and_health_are_served_without_auth(client: httpx.AsyncClient) -> None:
    """/openapi.json documents the video routes and /healthz answers ok, with no key."""
    spec = (await client.get("/openapi.json")).json()
    assert {"/v1/videos", "/v1/videos/{video_id}", "/v1/videos/{video_id}/content"} <= set(
        spec["paths"]
    )
    health = await client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
