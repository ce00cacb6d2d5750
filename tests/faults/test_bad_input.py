"""Bad input at the edges: every malformed request answers a clear 4xx (or gRPC
INVALID_ARGUMENT / UNAUTHENTICATED) in the public error shape and writes nothing to
Redis; none answers 5xx or UNKNOWN. Against the real gateway, scheduler and Redis; each
test sends all its variants through one stack, which keeps the file quick."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import redis.asyncio as aredis
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc
from starlette.requests import Request

from gateway.create_params import read_create_params
from scheduler.api.errors import InvalidArgument
from scheduler.api.validation import validate_event_id
from scheduler.server import SERVICE_NAME, SchedulerServer
from tests.conftest import API_KEY, AUTH, Stack

pytestmark = pytest.mark.faults

JSON = "application/json"
URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=b"
UINT64_MAX = 2**64 - 1
BAD_KEY = b"Bearer sk-\xff\xfe-acme"


@dataclass
class Services:
    """The gateway and the scheduler it calls, with a client of each as tenant acme."""

    scheduler: SchedulerServer
    http: httpx.AsyncClient
    channel: grpc.aio.Channel

    @property
    def stub(self) -> scheduler_pb2_grpc.SchedulerStub:
        return scheduler_pb2_grpc.SchedulerStub(self.channel)

    async def create(self, body: bytes, content_type: str) -> httpx.Response:
        return await self.http.post(
            "/v1/videos", content=body, headers={"content-type": content_type}
        )

    async def submit(self) -> pb.Job:
        response = await self.stub.SubmitRender(
            pb.SubmitRenderRequest(prompt="a fox"), metadata=AUTH
        )
        job: pb.Job = response.job
        return job


@pytest.fixture
async def services(stack: Stack) -> AsyncIterator[Services]:
    await stack.start_renderer()
    scheduler = await stack.start_scheduler()
    base = await stack.start_gateway(scheduler)
    headers = {"authorization": f"Bearer {API_KEY}"}
    async with (
        httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http,
        grpc.aio.insecure_channel(scheduler.address) as channel,
    ):
        yield Services(scheduler, http, channel)


def assert_openai_error(
    response: httpx.Response, status_code: int, code: str, param: str | None = None
) -> None:
    """An error answer in the OpenAI shape; a failure names the request it answers."""
    sent = (response.request.url.path, response.request.content[:60])
    assert response.status_code == status_code, (sent, response.text)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] == ("server_error" if status_code >= 500 else "invalid_request_error")
    assert (error["code"], error["param"]) == (code, param), sent


def assert_invalid_argument(error: grpc.aio.AioRpcError, reason: str, field: str) -> None:
    """INVALID_ARGUMENT with the ErrorInfo reason and the BadRequest field given."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    details = status_pb2.Status.FromString(raw).details
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert details[0].Unpack(info) and details[1].Unpack(bad_request)
    assert (info.reason, [v.field for v in bad_request.field_violations]) == (reason, [field])


async def assert_no_job(redis_client: aredis.Redis) -> None:
    assert await redis_client.keys("spw:job:*") == []


def multipart(*fields: tuple[bytes, bytes]) -> bytes:
    parts = (
        b'--b\r\nContent-Disposition: form-data; name="' + name + b'"\r\n\r\n' + value + b"\r\n"
        for name, value in fields
    )
    return b"".join(parts) + b"--b--\r\n"


# --- create bodies ------------------------------------------------------------------


async def test_lone_surrogate_in_json_answers_400(
    services: Services, redis_client: aredis.Redis
) -> None:
    """JSON text holding half a surrogate pair, which no UTF-8 (nor protobuf) can carry,
    is refused naming its field, not failed with a 500."""
    for body, param in [
        (rb'{"prompt": "\ud800 x"}', "prompt"),
        (rb'{"prompt": "a fox", "model": "\udfff"}', "model"),
        (rb'{"\ud800": "x"}', None),
        # CESU-8 bytes of a surrogate, which Python's JSON decoder lets through.
        (b'{"prompt": "\xed\xa0\x80"}', "prompt"),
    ]:
        assert_openai_error(await services.create(body, JSON), 400, "invalid_encoding", param)
    await assert_no_job(redis_client)


async def test_deeply_nested_json_answers_400(
    services: Services, redis_client: aredis.Redis
) -> None:
    """JSON nested past the parser's recursion limit is a malformed body, not a 500."""
    for body in (b"[" * 100_000, b'{"prompt": ' + b"{" * 100_000):
        assert_openai_error(await services.create(body, JSON), 400, "invalid_json")
    await assert_no_job(redis_client)


async def test_form_that_is_not_utf8_answers_400(
    services: Services, redis_client: aredis.Redis
) -> None:
    """A form name or value whose bytes (raw or percent-escaped) are not UTF-8 is
    refused, where the form parser would have stored a Latin-1 or U+FFFD guess; a form
    that does not parse at all is refused too."""
    for body, content_type, param in [
        (b"prompt=a\xff+fox", URLENCODED, "prompt"),
        (b"prompt=a%FF+fox", URLENCODED, "prompt"),
        (b"prompt=%ED%A0%80", URLENCODED, "prompt"),
        (b"pr%C3ompt=a+fox", URLENCODED, None),
        (multipart((b"prompt", b"a\xff fox")), MULTIPART, "prompt"),
        (multipart((b"pr\xffompt", b"a fox")), MULTIPART, None),
    ]:
        response = await services.create(body, content_type)
        assert_openai_error(response, 400, "invalid_encoding", param)
    no_boundary = await services.create(multipart((b"prompt", b"x")), "multipart/form-data")
    assert_openai_error(no_boundary, 400, "invalid_form")
    await assert_no_job(redis_client)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"prompt=caf%C3%A9+%E2%98%95&seconds=8", URLENCODED),
        ("prompt=café ☕&seconds=8".encode(), URLENCODED),
        (multipart((b"prompt", "café ☕".encode()), (b"seconds", b"8")), MULTIPART),
    ],
)
async def test_utf8_forms_read_back_exactly(body: bytes, content_type: str) -> None:
    """UTF-8 text in a form, raw or percent-escaped, reads as the characters sent."""

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-type", content_type.encode())]
    request = Request({"type": "http", "method": "POST", "headers": headers}, receive)
    submit = await read_create_params(request, max_body_bytes=1024, idempotency_key=None)
    assert submit == pb.SubmitRenderRequest(prompt="café ☕", seconds=8)


# --- keys ---------------------------------------------------------------------------


async def test_non_ascii_bearer_key_is_unauthenticated(
    services: Services, redis_client: aredis.Redis
) -> None:
    """A key with bytes gRPC metadata cannot carry answers 401 over REST (not a 500),
    and UNAUTHENTICATED sent straight to the scheduler (which gRPC's own clients refuse
    to do, so a bare HTTP/2 client sends it)."""
    response = await services.http.post(
        "/v1/videos", json={"prompt": "a fox"}, headers={"authorization": BAD_KEY}
    )
    assert_openai_error(response, 401, "invalid_api_key")
    assert response.headers["www-authenticate"] == "Bearer"

    answer = await raw_grpc_call(
        services.scheduler.address,
        "/spillway.v1.Scheduler/SubmitRender",
        pb.SubmitRenderRequest(prompt="a fox").SerializeToString(),
        [(b"authorization", BAD_KEY)],
    )
    assert answer[b"grpc-status"] == b"%d" % grpc.StatusCode.UNAUTHENTICATED.value[0]
    await assert_no_job(redis_client)


async def raw_grpc_call(
    address: str, method: str, message: bytes, metadata: list[tuple[bytes, bytes]]
) -> dict[bytes, bytes]:
    """One unary call over a bare HTTP/2 connection, sending `metadata` as given; the
    response's headers and trailers together."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    connection = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding=None))
    connection.initiate_connection()
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", method.encode()),
        (b":authority", address.encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        *metadata,
    ]
    connection.send_headers(1, headers)
    connection.send_data(1, b"\0" + len(message).to_bytes(4, "big") + message, end_stream=True)
    answer: dict[bytes, bytes] = {}
    try:
        async with asyncio.timeout(10):
            while True:
                writer.write(connection.data_to_send())
                for event in connection.receive_data(await reader.read(65536)):
                    if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                        answer.update(event.headers)
                    elif isinstance(event, h2.events.StreamEnded):
                        return answer
    finally:
        writer.close()


# --- event ids ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_id",
    [
        f"{UINT64_MAX + 1}-0",
        f"0-{UINT64_MAX + 1}",
        "99999999999999999999-0",
        "\u0661-\u0660",  # Arabic-Indic digits, which int() reads and Redis refuses
        "1-1\n",
        "1",
    ],
)
def test_event_id_must_be_two_unsigned_64_bit_integers(event_id: str) -> None:
    """Each part of an event id (a Redis stream id) is ASCII digits up to 2^64-1."""
    assert validate_event_id(f"{UINT64_MAX}-{UINT64_MAX}") == f"{UINT64_MAX}-{UINT64_MAX}"
    with pytest.raises(InvalidArgument):
        validate_event_id(event_id)


async def test_event_id_out_of_range_is_refused(
    services: Services, redis_client: aredis.Redis
) -> None:
    """Resuming after an event id past 2^64 answers 400 over REST (Last-Event-ID or
    `after`) and INVALID_ARGUMENT naming `after` over gRPC, where Redis' own refusal
    answered UNKNOWN; nothing beyond the watched job is written."""
    job = await services.submit()
    events = f"/v1/videos/{job.id}/events"
    for response in [
        await services.http.get(events, headers={"last-event-id": "99999999999999999999-0"}),
        await services.http.get(events, params={"after": f"{UINT64_MAX + 1}-0"}),
    ]:
        assert_openai_error(response, 400, "invalid_value", "after")

    request = pb.WatchJobRequest(id=job.id, after_event_id=f"{UINT64_MAX + 1}-0")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await services.stub.WatchJob(request, metadata=AUTH).read()
    assert_invalid_argument(caught.value, "invalid_value", "after")
    assert await redis_client.keys("spw:job:*") == [f"spw:job:{job.id}"]


# --- undecodable gRPC requests ------------------------------------------------------


async def test_undecodable_request_is_invalid_argument(
    services: Services, redis_client: aredis.Redis
) -> None:
    """Request bytes that do not parse as the method's request message answer
    INVALID_ARGUMENT (reason malformed_request), not UNKNOWN, for a unary call and for
    one that streams its answer."""
    submit = services.channel.unary_unary("/spillway.v1.Scheduler/SubmitRender")
    # The second is a prompt (field 1) holding the bytes of a surrogate: not UTF-8.
    for message in (b"\xff\xfe not a protobuf", b"\x0a\x03\xed\xa0\x80"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(message, metadata=AUTH)
        assert_invalid_argument(caught.value, "malformed_request", "request")
        assert "could not be decoded" in (caught.value.details() or "")

    watch = services.channel.unary_stream("/spillway.v1.Scheduler/WatchJob")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watch(b"\xff\xfe", metadata=AUTH).read()
    assert_invalid_argument(caught.value, "malformed_request", "request")
    await assert_no_job(redis_client)


async def test_health_watch_still_streams_through_the_request_parsing(
    services: Services,
) -> None:
    """The health service's Watch, which writes to its context rather than yielding,
    still answers through the interceptor that parses requests."""
    health = health_pb2_grpc.HealthStub(services.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    first: Any = await watch.read()
    watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


# --- readiness ----------------------------------------------------------------------


async def test_readyz_follows_the_schedulers_health(
    services: Services, spans: InMemorySpanExporter
) -> None:
    """/readyz answers ready while the scheduler reports SERVING and 503 once it stops,
    while /healthz (liveness) stays ok; /readyz makes no spans."""
    ready = await services.http.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    await services.scheduler.stop()
    not_ready = await services.http.get("/readyz")
    assert_openai_error(not_ready, 503, "scheduler_not_ready")
    assert not_ready.headers["retry-after"] == "1"
    assert (await services.http.get("/healthz")).status_code == 200
    assert not [s for s in spans.get_finished_spans() if "readyz" in s.name]
