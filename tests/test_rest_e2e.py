"""The REST gateway end to end: HTTP clients against the real gateway, scheduler, renderer,
Redis and S3. Every video here goes through the OpenAI Videos API shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import openai
import pytest
import redis.asyncio as aredis
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

from renderer.probe import probe_mp4
from scheduler.server import SchedulerServer
from tests.conftest import API_KEY, AUTH, OTHER_API_KEY, S3Server, Stack, assert_eventually

FPS = 8  # the stack's renderers run at this frame rate
VALID = {"prompt": "a lighthouse at dusk", "seconds": "4", "size": "720x1280"}
LONG = {"prompt": "a long voyage", "seconds": "12", "size": "1792x1024"}
UNKNOWN_ID = "video_" + "0" * 32
STREAM_TIMEOUT_S = 30  # a bound on reading one event stream, so a stuck one fails


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@dataclass
class Gateway:
    """A gateway over a scheduler whose fleet is one in-house renderer."""

    base: str
    scheduler: SchedulerServer
    http: httpx.AsyncClient  # authenticated as tenant acme


@dataclass(frozen=True)
class Sse:
    """One Server-Sent Event, its data decoded from JSON."""

    id: str | None
    event: str
    data: dict[str, Any]


def http_client(base: str, key: str | None = API_KEY) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base, headers=bearer(key) if key else {}, timeout=30, follow_redirects=False
    )


async def start_gateway(stack: Stack, *, slots: int = 2, **gateway_env: str) -> Gateway:
    renderer = await stack.start_renderer(slots=slots, fps=FPS)
    scheduler = await stack.start_scheduler(
        SPILLWAY_INHOUSE_RENDERERS=f"{renderer.address}={slots}"
    )
    base = await stack.start_gateway(scheduler, **gateway_env)
    return Gateway(base, scheduler, http_client(base))


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[Gateway]:
    """The stack behind a gateway with default settings; its renderer has two slots."""
    gw = await start_gateway(stack)
    async with gw.http:
        yield gw


async def create(http: httpx.AsyncClient, **fields: object) -> dict[str, Any]:
    response = await http.post("/v1/videos", json={**VALID, **fields})
    assert response.status_code == 200, response.text
    video: dict[str, Any] = response.json()
    return video


async def iter_events(response: httpx.Response) -> AsyncIterator[Sse]:
    """Parse an open `text/event-stream` response into events (comments are skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield Sse(
                    fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])
                )
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[name] = (
                f"{fields[name]}\n{value}" if name == "data" and name in fields else value
            )


async def read_events(
    http: httpx.AsyncClient,
    video_id: str,
    *,
    last_event_id: str | None = None,
    until: str | None = None,
) -> list[Sse]:
    """The video's events until its stream ends, or until an event of type `until`."""
    headers = {"last-event-id": last_event_id} if last_event_id else {}
    events: list[Sse] = []
    async with (
        asyncio.timeout(STREAM_TIMEOUT_S),
        http.stream("GET", f"/v1/videos/{video_id}/events", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in iter_events(response):
            events.append(event)
            if event.event == until:
                break
    return events


async def wait_final(http: httpx.AsyncClient, video_id: str) -> Sse:
    """Follow the video's events to its final one."""
    events = await read_events(http, video_id)
    assert events, "the event stream ended without any event"
    return events[-1]


def assert_openai_error(
    response: httpx.Response, status: int, *, param: str | None, code: str | None = None
) -> dict[str, Any]:
    """The response is an OpenAI-shaped error; returns its `error` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def s3_keys(s3: S3Server) -> list[str]:
    return [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket).get("Contents", [])]


async def assert_nothing_stored(redis_client: aredis.Redis) -> None:
    assert await redis_client.keys("spw:job:*") == []
    assert await redis_client.keys("spw:ev:*") == []
    assert await redis_client.keys("spw:tenant:*") == []
    assert await redis_client.zcard("spw:queue") == 0


# --- the official client --------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # openai marks videos deprecated
async def test_official_openai_client_round_trip(gateway: Gateway, s3: S3Server) -> None:
    """The unmodified openai client creates, polls, retrieves, downloads, lists and deletes."""
    async with openai.AsyncOpenAI(base_url=f"{gateway.base}/v1", api_key=API_KEY) as client:
        first = await client.videos.create(prompt="a red fox in snow", seconds="4", size="720x1280")
        assert first.object == "video" and first.status == "queued" and first.progress == 0
        assert first.id.startswith("video_") and first.prompt == "a red fox in snow"

        video = await client.videos.create_and_poll(
            prompt="a lighthouse at dusk", seconds="4", size="720x1280"
        )
        assert video.status == "completed" and video.error is None

        retrieved = await client.videos.retrieve(video.id)
        assert (retrieved.id, retrieved.status, retrieved.progress) == (video.id, "completed", 100)
        assert (retrieved.seconds, retrieved.size) == ("4", "720x1280")
        assert (retrieved.prompt, retrieved.model) == ("a lighthouse at dusk", "sora-2")
        assert retrieved.completed_at is not None and retrieved.expires_at is not None
        assert retrieved.created_at <= retrieved.completed_at < retrieved.expires_at

        content = await client.videos.download_content(video.id)
        info = probe_mp4(content.content)
        assert (info.width, info.height) == (720, 1280)
        assert info.frames == 4 * FPS
        assert info.duration_seconds == pytest.approx(4.0, abs=0.5 / FPS)

        listed = [v.id async for v in client.videos.list()]
        assert listed == [video.id, first.id]  # newest first

        deleted = await client.videos.delete(video.id)
        assert (deleted.id, deleted.object, deleted.deleted) == (video.id, "video.deleted", True)
        with pytest.raises(openai.NotFoundError):
            await client.videos.retrieve(video.id)
        with pytest.raises(openai.NotFoundError):
            await client.videos.download_content(video.id)
        assert [v.id async for v in client.videos.list()] == [first.id]
    assert not [k for k in s3_keys(s3) if k.startswith(f"videos/{video.id}/")]


# --- create, retrieve, list -----------------------------------------------------------


async def test_create_with_json_and_with_multipart(gateway: Gateway) -> None:
    """A JSON body and a multipart form both create a queued video with the fields sent."""
    from_json = await create(gateway.http, prompt="json prompt", seconds="8", size="1280x720")
    form = {"prompt": (None, "form prompt"), "seconds": (None, "4"), "size": (None, "720x1280")}
    response = await gateway.http.post("/v1/videos", files=form)
    assert response.status_code == 200, response.text
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    from_form = response.json()
    for video, prompt, seconds, size in (
        (from_json, "json prompt", "8", "1280x720"),
        (from_form, "form prompt", "4", "720x1280"),
    ):
        assert video["object"] == "video" and video["id"].startswith("video_")
        assert (video["status"], video["progress"], video["error"]) == ("queued", 0, None)
        assert (video["prompt"], video["seconds"], video["size"]) == (prompt, seconds, size)
        assert video["model"] == "sora-2" and isinstance(video["created_at"], int)
        assert video["completed_at"] is None
    assert from_json["id"] != from_form["id"]
    # A JSON integer is a duration too.
    from_int = await create(gateway.http, seconds=4)
    assert from_int["seconds"] == "4"
    for video in (from_json, from_form, from_int):
        assert (await wait_final(gateway.http, video["id"])).event == "video.completed"


async def test_retrieve_hints_when_to_poll_only_while_pending(gateway: Gateway) -> None:
    """GET of a queued or running video carries openai-poll-after-ms, the scheduler's
    estimate (1 to 60 s); a finished one not."""
    video = await create(gateway.http, **LONG)
    pending = await gateway.http.get(f"/v1/videos/{video['id']}")
    assert pending.status_code == 200
    assert pending.json()["status"] in ("queued", "in_progress")
    assert 1000 <= int(pending.headers["openai-poll-after-ms"]) <= 60_000
    await read_events(gateway.http, video["id"], until="video.progress")
    running = await gateway.http.get(f"/v1/videos/{video['id']}")
    assert running.json()["status"] == "in_progress" and running.json()["progress"] > 0
    assert 1000 <= int(running.headers["openai-poll-after-ms"]) <= 60_000
    short = await create(gateway.http)
    assert (await wait_final(gateway.http, short["id"])).event == "video.completed"
    done = await gateway.http.get(f"/v1/videos/{short['id']}")
    assert (done.json()["status"], done.json()["progress"]) == ("completed", 100)
    assert "openai-poll-after-ms" not in done.headers
    assert (await gateway.http.delete(f"/v1/videos/{video['id']}")).status_code == 200


async def test_list_pages_in_both_orders(gateway: Gateway) -> None:
    """The list pages by `after` and `limit`, oldest first with order=asc, newest by default."""
    ids = [(await create(gateway.http, prompt=f"clip {n}"))["id"] for n in range(3)]

    first = (await gateway.http.get("/v1/videos", params={"limit": 2, "order": "asc"})).json()
    assert set(first) == {"object", "data", "first_id", "last_id", "has_more"}
    assert first["object"] == "list" and first["has_more"] is True
    assert [v["id"] for v in first["data"]] == ids[:2]
    assert [v["prompt"] for v in first["data"]] == ["clip 0", "clip 1"]
    assert all(v["object"] == "video" for v in first["data"])
    assert (first["first_id"], first["last_id"]) == (ids[0], ids[1])

    params = {"limit": 2, "order": "asc", "after": first["last_id"]}
    rest = (await gateway.http.get("/v1/videos", params=params)).json()
    assert [v["id"] for v in rest["data"]] == ids[2:]
    assert (rest["first_id"], rest["last_id"], rest["has_more"]) == (ids[2], ids[2], False)

    desc = (await gateway.http.get("/v1/videos", params={"order": "desc"})).json()
    assert [v["id"] for v in desc["data"]] == ids[::-1] and desc["has_more"] is False
    default = (await gateway.http.get("/v1/videos")).json()
    assert [v["id"] for v in default["data"]] == ids[::-1]
    desc_page = (await gateway.http.get("/v1/videos", params={"limit": 2, "after": ids[2]})).json()
    assert [v["id"] for v in desc_page["data"]] == [ids[1], ids[0]]
    assert desc_page["has_more"] is False


# --- events ---------------------------------------------------------------------------


async def test_events_stream_in_order_and_resume_after_last_event_id(gateway: Gateway) -> None:
    """SSE delivers every event in order ending in video.completed; Last-Event-ID resumes."""
    video = await create(gateway.http)
    events = await read_events(gateway.http, video["id"])
    types = [e.event for e in events]
    assert types[:2] == ["video.queued", "video.dispatched"]
    assert types[-1] == "video.completed" and types.count("video.completed") == 1
    assert "video.progress" in types and "video.uploading" in types
    assert all(e.id for e in events) and len({e.id for e in events}) == len(events)
    for event in events:
        assert event.data["id"] == event.id and event.data["video_id"] == video["id"]
        assert event.event == f"video.{event.data['type']}"
    progress = [e.data["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 100
    statuses = [e.data["status"] for e in events]
    assert statuses == ["queued"] + ["in_progress"] * (len(events) - 2) + ["completed"]
    assert all(isinstance(e.data["created_at"], int) for e in events)
    assert (events[1].data["pool"], events[1].data["reason"]) == ("inhouse", "inhouse_slot_free")
    done = (await gateway.http.get(f"/v1/videos/{video['id']}")).json()
    assert done["placement"] == {"pool": "inhouse", "reason": "inhouse_slot_free"}
    assert (events[-1].data["status"], events[-1].data["error"]) == ("completed", None)

    resumed = await read_events(gateway.http, video["id"], last_event_id=events[2].id)
    assert [e.id for e in resumed] == [e.id for e in events[3:]]
    assert [e.data for e in resumed] == [e.data for e in events[3:]]
    # `after` in the query resumes too, for clients that cannot set headers.
    async with gateway.http.stream(
        "GET", f"/v1/videos/{video['id']}/events", params={"after": events[2].id}
    ) as response:
        assert response.status_code == 200
        assert [e.id async for e in iter_events(response)] == [e.id for e in events[3:]]
    # Resuming after the final event ends at once with nothing more.
    assert await read_events(gateway.http, video["id"], last_event_id=events[-1].id) == []


# --- idempotency ----------------------------------------------------------------------


async def test_idempotency_key_creates_one_video(gateway: Gateway) -> None:
    """Two creates with one Idempotency-Key give one video; without a key, two."""
    keyed = {"idempotency-key": "order-42"}
    first = await gateway.http.post("/v1/videos", json=VALID, headers=keyed)
    form = {k: (None, v) for k, v in VALID.items()}
    second = await gateway.http.post("/v1/videos", files=form, headers=keyed)
    assert first.status_code == second.status_code == 200
    video_id = first.json()["id"]
    assert second.json()["id"] == video_id
    plain = [(await create(gateway.http))["id"] for _ in range(2)]
    assert plain[0] != plain[1] and video_id not in plain
    listed = (await gateway.http.get("/v1/videos")).json()["data"]
    assert sorted(v["id"] for v in listed) == sorted([video_id, *plain])
    # The key is the tenant's own: another tenant using it gets a video of its own.
    async with http_client(gateway.base, OTHER_API_KEY) as globex:
        theirs = await globex.post("/v1/videos", json=VALID, headers=keyed)
    assert theirs.status_code == 200 and theirs.json()["id"] not in (video_id, *plain)
    # The same key with another request is refused, and creates nothing.
    reused = await gateway.http.post(
        "/v1/videos", json={**VALID, "prompt": "another film"}, headers=keyed
    )
    assert_openai_error(reused, 400, param="idempotency_key", code="idempotency_key_reused")
    assert video_id in reused.json()["error"]["message"]
    listed = (await gateway.http.get("/v1/videos")).json()["data"]
    assert sorted(v["id"] for v in listed) == sorted([video_id, *plain])
    # Deleting the finished video frees its key.
    assert (await wait_final(gateway.http, video_id)).event == "video.completed"
    assert (await gateway.http.delete(f"/v1/videos/{video_id}")).status_code == 200
    again = await gateway.http.post("/v1/videos", json=VALID, headers=keyed)
    assert again.status_code == 200 and again.json()["id"] != video_id


# --- cancel and delete ----------------------------------------------------------------


async def test_delete_of_a_running_video_stops_it_and_stores_nothing(
    stack: Stack, s3: S3Server
) -> None:
    """DELETE of a rendering video cancels it, answers video.deleted, and uploads no MP4."""
    gw = await start_gateway(stack, slots=1)
    async with gw.http as http:
        video = await create(http, **LONG)
        async with (
            asyncio.timeout(STREAM_TIMEOUT_S),
            http.stream("GET", f"/v1/videos/{video['id']}/events") as response,
        ):
            events = aiter(iter_events(response))
            seen = [await anext(events)]
            while seen[-1].event != "video.progress":  # the renderer is drawing frames
                seen.append(await anext(events))
            assert [e.event for e in seen[:2]] == ["video.queued", "video.dispatched"]
            running = (await http.get(f"/v1/videos/{video['id']}")).json()
            assert running["status"] == "in_progress"

            deleted = await http.delete(f"/v1/videos/{video['id']}")
            assert deleted.status_code == 200
            assert deleted.json() == {"id": video["id"], "object": "video.deleted", "deleted": True}
            # A watcher of the deleted video sees it end, cancelled.
            rest = [e async for e in events]
            assert [e.event for e in rest][-1:] == ["video.cancelled"]
            assert rest[-1].data["status"] == "failed"
            assert rest[-1].data["error"]["code"] == "cancelled"

        gone = await http.get(f"/v1/videos/{video['id']}")
        assert_openai_error(gone, 404, param=None, code="not_found")
        assert_openai_error(await http.delete(f"/v1/videos/{video['id']}"), 404, param=None)
        await stack.renderers[0].wait_idle()
        assert s3_keys(s3) == []
        # The renderer's only slot is free again: the next video completes.
        follow = await create(http)
        assert (await wait_final(http, follow["id"])).event == "video.completed"
        assert s3_keys(s3) == [f"videos/{follow['id']}/1.mp4"]


async def test_video_cancelled_over_grpc_reads_failed_with_code_cancelled(
    gateway: Gateway, stack: Stack, s3: S3Server
) -> None:
    """A job cancelled through gRPC CancelJob reads over REST as failed, code cancelled."""
    video = await create(gateway.http, **LONG)
    await read_events(gateway.http, video["id"], until="video.progress")
    async with grpc.aio.insecure_channel(gateway.scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        reply = await stub.CancelJob(pb.CancelJobRequest(id=video["id"]), metadata=AUTH)
    assert reply.job.status == pb.JOB_STATUS_CANCELLED

    response = await gateway.http.get(f"/v1/videos/{video['id']}")
    assert response.status_code == 200
    cancelled = response.json()
    assert cancelled["status"] == "failed"
    assert cancelled["error"]["code"] == "cancelled" and cancelled["error"]["message"]
    assert cancelled["completed_at"] is not None
    assert "openai-poll-after-ms" not in response.headers
    last = await wait_final(gateway.http, video["id"])
    assert (last.event, last.data["status"]) == ("video.cancelled", "failed")
    listed = (await gateway.http.get("/v1/videos")).json()["data"]
    assert [(v["id"], v["status"]) for v in listed] == [(video["id"], "failed")]
    content = await gateway.http.get(f"/v1/videos/{video['id']}/content")
    assert_openai_error(content, 400, param=None, code="video_not_ready")
    await stack.renderers[0].wait_idle()
    assert s3_keys(s3) == []


async def test_videos_deleted_as_they_are_dispatched_leave_no_temp_files(
    stack: Stack, s3: S3Server
) -> None:
    """Deleting videos the moment they start leaves no temp MP4 on the scheduler's disk."""
    gw = await start_gateway(stack)
    attempts = 60  # the delete must land while the render is starting; most runs hit it
    async with gw.http as http:
        for _ in range(attempts):
            video = await create(http)
            assert (await http.delete(f"/v1/videos/{video['id']}")).status_code == 200
        assert (await http.get("/v1/videos")).json()["data"] == []

    async def dispatcher_idle() -> None:
        assert gw.scheduler.dispatcher.running == 0

    await assert_eventually(dispatcher_idle)
    await stack.renderers[0].wait_idle()
    assert s3_keys(s3) == []
    # The scheduler downloads each render to `video_<id>-<attempt>-<random>.mp4`.
    leftovers = sorted(p.name for p in stack.tmp.glob("video_*.mp4"))
    assert leftovers == [], (
        f"{len(leftovers)} of {attempts} videos deleted as they were dispatched "
        "left a temp file in the scheduler's temp dir"
    )


# --- tenants --------------------------------------------------------------------------


async def test_other_tenant_sees_404_everywhere(gateway: Gateway) -> None:
    """Another tenant's video is 404 on retrieve, content, events and delete, and unlisted."""
    video = await create(gateway.http)
    assert (await wait_final(gateway.http, video["id"])).event == "video.completed"
    async with http_client(gateway.base, OTHER_API_KEY) as globex:
        path = f"/v1/videos/{video['id']}"
        for response in (
            await globex.get(path),
            await globex.get(f"{path}/content"),
            await globex.get(f"{path}/events"),
            await globex.delete(path),
        ):
            error = assert_openai_error(response, 404, param=None, code="not_found")
            assert video["id"] in error["message"]
        listed = (await globex.get("/v1/videos")).json()
        assert (listed["data"], listed["first_id"], listed["has_more"]) == ([], None, False)
    owned = await gateway.http.get(f"/v1/videos/{video['id']}")
    assert owned.status_code == 200 and owned.json()["status"] == "completed"
    assert (await gateway.http.get(f"/v1/videos/{video['id']}/content")).status_code == 307


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"prompt": ""}, "prompt", "missing_prompt"),
        ({"prompt": "x" * 4001}, "prompt", "prompt_too_long"),
        ({"model": "dall-e-9"}, "model", "unknown_model"),
        ({"seconds": "5"}, "seconds", "unsupported_seconds"),
        ({"size": "640x480"}, "size", "unsupported_size"),
    ],
)
async def test_invalid_create_is_400_naming_the_param_and_stores_nothing(
    gateway: Gateway,
    redis_client: aredis.Redis,
    fields: dict[str, str],
    param: str,
    code: str,
) -> None:
    """Each invalid field answers 400 in the OpenAI shape naming it, and nothing is stored."""
    body = {**VALID, **fields}
    as_json = await gateway.http.post("/v1/videos", json=body)
    assert_openai_error(as_json, 400, param=param, code=code)
    as_form = await gateway.http.post("/v1/videos", files={k: (None, v) for k, v in body.items()})
    assert_openai_error(as_form, 400, param=param, code=code)
    await assert_nothing_stored(redis_client)


async def test_malformed_json_is_400_and_stores_nothing(
    gateway: Gateway, redis_client: aredis.Redis
) -> None:
    """A body that is not JSON, or not a JSON object, answers 400 invalid_json."""
    for content in (b'{"prompt": "a lighthouse', b'["a lighthouse"]'):
        response = await gateway.http.post(
            "/v1/videos", content=content, headers={"content-type": "application/json"}
        )
        assert_openai_error(response, 400, param=None, code="invalid_json")
    await assert_nothing_stored(redis_client)


async def test_body_over_the_gateway_limit_is_400_and_stores_nothing(
    stack: Stack, redis_client: aredis.Redis
) -> None:
    """A create body past SPILLWAY_GATEWAY_MAX_BODY_BYTES answers 400 before it is read."""
    gw = await start_gateway(stack, SPILLWAY_GATEWAY_MAX_BODY_BYTES="2048")
    async with gw.http as http:
        prompt = "a lighthouse at dusk " * 120  # 2520 characters: valid, but too long a body
        response = await http.post("/v1/videos", json={**VALID, "prompt": prompt})
        assert_openai_error(response, 400, param=None, code="request_too_large")
        form = await http.post("/v1/videos", files={"prompt": (None, prompt)})
        assert_openai_error(form, 400, param=None, code="request_too_large")
        # A chunked body declares no length: the gateway stops reading it at the limit.
        body = json.dumps({**VALID, "prompt": prompt}).encode()

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 512):
                yield body[start : start + 512]

        chunked = await http.post(
            "/v1/videos", content=chunks(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in chunked.request.headers
        assert_openai_error(chunked, 400, param=None, code="request_too_large")
        await assert_nothing_stored(redis_client)
        # Under the limit the same gateway creates.
        assert (await create(http))["status"] == "queued"


async def test_missing_or_wrong_key_is_401(gateway: Gateway, redis_client: aredis.Redis) -> None:
    """Without a key, or with one the scheduler does not know, every call answers 401."""
    for key in (None, "sk-nope-nope-nope"):
        async with http_client(gateway.base, key) as http:
            for response in (
                await http.post("/v1/videos", json=VALID),
                await http.get("/v1/videos"),
                await http.get(f"/v1/videos/{UNKNOWN_ID}"),
                await http.get(f"/v1/videos/{UNKNOWN_ID}/content"),
                await http.get(f"/v1/videos/{UNKNOWN_ID}/events"),
                await http.delete(f"/v1/videos/{UNKNOWN_ID}"),
            ):
                assert_openai_error(response, 401, param=None, code="invalid_api_key")
                assert response.headers["www-authenticate"] == "Bearer"
    await assert_nothing_stored(redis_client)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # openai marks videos deprecated
async def test_any_id_not_ours_is_404(gateway: Gateway) -> None:
    """An id the caller cannot see is 404 whatever its form: the official client's
    callers catch NotFoundError."""
    for method in ("GET", "DELETE"):
        for video_id in ("nope", "video_doesnotexist_123"):
            response = await gateway.http.request(method, f"/v1/videos/{video_id}")
            assert_openai_error(response, 404, param=None, code="not_found")
    async with openai.AsyncOpenAI(base_url=f"{gateway.base}/v1", api_key=API_KEY) as client:
        with pytest.raises(openai.NotFoundError):
            await client.videos.retrieve("video_doesnotexist_123")
    for path in (f"/v1/videos/{UNKNOWN_ID}", f"/v1/videos/{UNKNOWN_ID}/content"):
        assert_openai_error(await gateway.http.get(path), 404, param=None, code="not_found")
    assert_openai_error(await gateway.http.delete(f"/v1/videos/{UNKNOWN_ID}"), 404, param=None)
    events = await gateway.http.get(f"/v1/videos/{UNKNOWN_ID}/events")
    assert_openai_error(events, 404, param=None, code="not_found")


async def test_content_of_an_unfinished_video_is_400_not_409(gateway: Gateway) -> None:
    """Content of a video still rendering is 400 video_not_ready (the client retries 409)."""
    video = await create(gateway.http, **LONG)
    path = f"/v1/videos/{video['id']}"
    just_created = await gateway.http.get(f"{path}/content")
    assert_openai_error(just_created, 400, param=None, code="video_not_ready")
    await read_events(gateway.http, video["id"], until="video.progress")
    rendering = await gateway.http.get(f"{path}/content")
    error = assert_openai_error(rendering, 400, param=None, code="video_not_ready")
    assert video["id"] in error["message"]
    assert (await gateway.http.get(path)).json()["status"] == "in_progress"
    assert (await gateway.http.delete(path)).status_code == 200


# --- content --------------------------------------------------------------------------


async def test_content_redirects_by_default_and_streams_in_proxy_mode(
    gateway: Gateway, stack: Stack, s3: S3Server
) -> None:
    """By default content is a 307 to the presigned S3 URL; in proxy mode it is the MP4."""
    video = await create(gateway.http)
    assert (await wait_final(gateway.http, video["id"])).event == "video.completed"
    key = f"videos/{video['id']}/1.mp4"
    stored = s3.client().get_object(Bucket=s3.bucket, Key=key)
    mp4 = stored["Body"].read()

    redirect = await gateway.http.get(f"/v1/videos/{video['id']}/content")
    assert redirect.status_code == 307
    location = redirect.headers["location"]
    assert location.startswith(f"{s3.endpoint_url}/{s3.bucket}/{key}?")
    assert redirect.headers["cache-control"] == "no-store"
    async with httpx.AsyncClient() as anonymous:  # the presigned URL alone authorises
        presigned = await anonymous.get(location)
    assert presigned.status_code == 200 and presigned.content == mp4

    proxy_base = await stack.start_gateway(gateway.scheduler, SPILLWAY_CONTENT_MODE="proxy")
    async with http_client(proxy_base) as http:
        proxied = await http.get(f"/v1/videos/{video['id']}/content")
    assert proxied.status_code == 200
    assert proxied.headers["content-type"] == "video/mp4"
    assert proxied.headers["content-length"] == str(len(mp4))
    assert proxied.content == mp4
    info = probe_mp4(proxied.content)
    assert (info.width, info.height, info.frames) == (720, 1280, 4 * FPS)
