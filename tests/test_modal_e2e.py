"""A scheduler spilling to Modal through the real Modal pool, with only the Modal SDK
faked (tests/fake_modal.py): real Redis, S3, renderer and scheduler replicas."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aredis
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

from scheduler.pools.modal import ModalPool, ModalPoolConfig
from scheduler.store import keys
from tests.conftest import AUTH, S3Server, Stack, assert_eventually
from tests.fake_modal import FakeModal
from tests.test_spillover_e2e import final_jobs, submit_burst

MODAL_ENV = {
    "SPILLWAY_SPILL_POOL": "modal",
    "SPILLWAY_HIGH_WATERMARK": "2",
    "SPILLWAY_LOW_WATERMARK": "0",
    "SPILLWAY_ENTER_DWELL_S": "0",
    "SPILLWAY_EXIT_DWELL_S": "1",
    "SPILLWAY_MIN_MODE_S": "0.2",
    "SPILLWAY_SPILL_MAX_CONTAINERS": "4",
    "SPILLWAY_EST_INHOUSE_RENDER_S": "5",
    "SPILLWAY_EST_SPILL_RENDER_S": "1",
    "SPILLWAY_EST_COLD_START_S": "0.5",
    "SPILLWAY_AUTOSCALE_INTERVAL_S": "0.5",
}


@pytest.fixture
def modal(tmp_path: Path) -> Iterator[FakeModal]:
    with FakeModal(work_dir=tmp_path) as fake:
        yield fake


def modal_pool(fake: FakeModal, tmp: Path) -> ModalPool:
    return ModalPool(ModalPoolConfig(tmp_dir=tmp, poll_interval_s=0.2), sdk=fake)


async def test_spilled_call_survives_its_replica_and_is_adopted_not_respawned(
    stack: Stack, s3: S3Server, modal: FakeModal, redis_url: str
) -> None:
    """Jobs spilled to Modal keep rendering when their replica shuts down; another replica
    adopts each call by its id and completes the job, with no second spawn."""
    await stack.start_renderer(slots=1)
    modal.hold()
    first = await stack.start_scheduler(spill=modal_pool(modal, stack.tmp), **MODAL_ENV)
    client = aredis.Redis.from_url(redis_url, decode_responses=True)
    async with grpc.aio.insecure_channel(first.address) as channel:
        ids = await submit_burst(scheduler_pb2_grpc.SchedulerStub(channel), 6)

        async def spilled() -> None:
            recorded = [i for i in ids if await client.hget(keys.job(i), "call_id")]
            assert len(recorded) >= 2

        await assert_eventually(spilled, within=30, interval=0.05)
    await first.stop()
    # What the stopped replica left running on Modal: recorded calls, leases let go.
    with_calls = {
        i
        for i in ids
        if await client.hget(keys.job(i), "call_id")
        and await client.hget(keys.job(i), "status") == "in_progress"
    }
    assert len(with_calls) >= 2
    spawns_before = len(modal.spawned)

    second = await stack.start_scheduler(spill=modal_pool(modal, stack.tmp), **MODAL_ENV)
    modal.release()
    async with grpc.aio.insecure_channel(second.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        jobs = await final_jobs(stub, ids)
        assert [j.status for j in jobs] == [pb.JOB_STATUS_COMPLETED] * 6
        for job_id in with_calls:
            events = [
                r.event async for r in stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=AUTH)
            ]
            assert "adopted" in [e.type for e in events]
    per_pool = Counter(j.pool for j in jobs)
    assert len(modal.spawned) == spawns_before + (per_pool["modal"] - len(with_calls))
    assert len({c.call_id for c in modal.spawned}) == len(modal.spawned)
    await client.aclose()


async def test_job_cancelled_while_on_modal_cancels_the_call(
    stack: Stack, s3: S3Server, modal: FakeModal, redis_url: str
) -> None:
    """Cancelling a job that runs on Modal cancels its FunctionCall too."""
    await stack.start_renderer(slots=1)
    modal.hold()
    scheduler = await stack.start_scheduler(spill=modal_pool(modal, stack.tmp), **MODAL_ENV)
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        ids = await submit_burst(stub, 4)

        client = aredis.Redis.from_url(redis_url, decode_responses=True)

        async def on_modal() -> tuple[str, str]:
            for job_id in ids:
                if call_id := await client.hget(keys.job(job_id), "call_id"):
                    return job_id, call_id
            raise AssertionError("no call recorded yet")

        job_id, call_id = await assert_eventually(on_modal, within=30)
        await client.aclose()
        await stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=AUTH)

        async def call_cancelled() -> None:
            assert call_id in [cancelled for cancelled, _ in modal.cancels]

        await assert_eventually(call_cancelled, within=10)
        modal.release()
        jobs = await final_jobs(stub, ids)
        assert sum(j.status == pb.JOB_STATUS_CANCELLED for j in jobs) == 1
        assert sum(j.status == pb.JOB_STATUS_COMPLETED for j in jobs) == 3
