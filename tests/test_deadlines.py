"""A job still queued at its deadline fails with `expired`; one that starts in time
renders as usual; a deadline out of range is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aredis
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

from scheduler.store.jobs import JobSpec, Status
from scheduler.store.jobstore import JobStore
from tests.conftest import AUTH, Stack
from tests.test_rest_e2e import (
    FPS,
    VALID,
    Gateway,
    assert_openai_error,
    create,
    http_client,
    read_events,
    wait_final,
)

SPEC = JobSpec(prompt="a comet", model="sora-2", seconds=4, width=720, height=1280, priority=5)


@pytest.fixture
async def drained(stack: Stack) -> AsyncIterator[tuple[Gateway, str]]:
    """A gateway whose only renderer is drained: nothing dispatches until re-added."""
    renderer = await stack.start_renderer(slots=2, fps=FPS)
    scheduler = await stack.start_scheduler(SPILLWAY_INHOUSE_RENDERERS=f"{renderer.address}=2")
    await scheduler.fleet.edit("drain", renderer.address)
    base = await stack.start_gateway(scheduler)
    async with http_client(base) as http:
        yield Gateway(base, scheduler, http), renderer.address


async def test_a_job_queued_past_its_deadline_expires(drained: tuple[Gateway, str]) -> None:
    gateway, renderer = drained
    late = await create(gateway.http, prompt="a flash in the pan", deadline_seconds=1)
    patient = await create(gateway.http, prompt="a slow dawn", deadline_seconds="3600")
    assert late["deadline_at"] == late["created_at"] + 1
    assert patient["deadline_at"] == patient["created_at"] + 3600

    final = await wait_final(gateway.http, late["id"])
    assert final.event == "video.failed"
    assert final.data["error"]["code"] == "expired"
    video = (await gateway.http.get(f"/v1/videos/{late['id']}")).json()
    assert video["status"] == "failed" and video["error"]["code"] == "expired"

    # The fleet comes back: the job with time left renders.
    await gateway.scheduler.fleet.edit("add", renderer, 2)
    assert (await wait_final(gateway.http, patient["id"])).event == "video.completed"


async def test_deadline_over_grpc(drained: tuple[Gateway, str]) -> None:
    gateway, _ = drained
    async with grpc.aio.insecure_channel(gateway.scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        request = pb.SubmitRenderRequest(prompt="a tide", deadline_seconds=60)
        job = (await stub.SubmitRender(request, metadata=AUTH)).job
        plain = (
            await stub.SubmitRender(pb.SubmitRenderRequest(prompt="a reef"), metadata=AUTH)
        ).job
        too_far = pb.SubmitRenderRequest(prompt="a tide", deadline_seconds=604_801)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitRender(too_far, metadata=AUTH)
    assert job.deadline.ToMilliseconds() - job.created_at.ToMilliseconds() == 60_000
    assert not plain.HasField("deadline")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("deadline", [-1, "soon", 604_801, True])
async def test_a_deadline_out_of_range_is_refused(
    drained: tuple[Gateway, str], deadline: object
) -> None:
    gateway, _ = drained
    response = await gateway.http.post("/v1/videos", json={**VALID, "deadline_seconds": deadline})
    assert_openai_error(response, 400, param="deadline_seconds")
    assert (await gateway.http.get("/v1/videos")).json()["data"] == []


async def test_a_job_requeued_past_its_deadline_expires(redis_client: aredis.Redis) -> None:
    """The deadline outlives an attempt: a job that was running at its deadline and
    then went back to the queue fails with `expired` instead of waiting on."""
    store = JobStore(
        redis_client, retention_s=3600, events_maxlen=64, max_attempts=3, max_queued=100
    )
    submitted = await store.submit("acme", SPEC, deadline_s=1)
    job = await store.claim("r1", "inhouse", 30, cap=10)
    assert job is not None and job.id == submitted.job.id
    await asyncio.sleep(1.1)
    # Due while it runs: nothing to fail, and the entry is dropped.
    assert await store.expire_deadlines() == ([], None)
    assert await store.requeue(job, "unavailable", "the renderer went away") == "requeued"
    expired, _ = await store.expire_deadlines()
    assert expired == [job.id]
    after = await store.get(job.id)
    assert after is not None and after.status is Status.FAILED
    assert after.error_code == "expired"


async def test_a_job_that_could_not_finish_in_time_is_not_spilled(
    redis_client: aredis.Redis,
) -> None:
    """The spill claim passes over a job whose deadline comes before a spilled render
    could finish, leaving it in line (for in-house, or to expire); others spill."""
    store = JobStore(
        redis_client, retention_s=3600, events_maxlen=64, max_attempts=3, max_queued=100
    )
    soon = (await store.submit("acme", SPEC, deadline_s=30)).job
    later = (await store.submit("acme", SPEC, deadline_s=3600)).job
    free = (await store.submit("acme", SPEC)).job
    spilled = [await store.claim("r1", "modal", 30, cap=10, finish_ms=60_000) for _ in range(3)]
    assert [j.id if j else None for j in spilled] == [later.id, free.id, None]
    waiting = await store.get(soon.id)
    assert waiting is not None and waiting.status is Status.QUEUED
    # In-house, where it may still finish, it is next.
    inhouse = await store.claim("r1", "inhouse", 30, cap=10)
    assert inhouse is not None and inhouse.id == soon.id


async def test_the_poll_hint_grows_with_the_queue_ahead(stack: Stack) -> None:
    """`openai-poll-after-ms` comes from the drain estimate: with one slot busy, a video
    further back in line is told to come back later than the one at its head."""
    renderer = await stack.start_renderer(slots=1, fps=FPS)
    scheduler = await stack.start_scheduler(
        SPILLWAY_INHOUSE_RENDERERS=f"{renderer.address}=1", SPILLWAY_EST_INHOUSE_RENDER_S="2"
    )
    base = await stack.start_gateway(scheduler)
    async with http_client(base) as http:
        busy = await create(http, prompt="a long take", seconds="12")
        await read_events(http, busy["id"], until="video.progress")
        videos = [await create(http, prompt=f"in line {i}") for i in range(8)]

        async def hint(video_id: str) -> int:
            return int((await http.get(f"/v1/videos/{video_id}")).headers["openai-poll-after-ms"])

        first, last = await hint(videos[0]["id"]), await hint(videos[-1]["id"])
        assert 1000 <= first < last <= 60_000
        for video in [busy, *videos]:
            await http.delete(f"/v1/videos/{video['id']}")
