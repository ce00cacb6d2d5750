"""A scheduler spilling to Modal through the real Modal pool, with only the Modal SDK
faked (tests/fake_modal.py): real Redis, S3, renderer and scheduler replicas."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aredis
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

from scheduler.dispatch.meter import decode
from scheduler.pools.modal import ModalPool, ModalPoolConfig
from scheduler.store import keys
from tests.conftest import AUTH, OPERATOR_AUTH, S3Server, Stack, assert_eventually
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
    "SPILLWAY_METER_INTERVAL_S": "0.2",
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


# One in-house slot, busy with a long job while a second one spills to Modal.
RECALL_ENV = {
    **MODAL_ENV,
    "SPILLWAY_HIGH_WATERMARK": "1",
    "SPILLWAY_EXIT_DWELL_S": "60",
    "SPILLWAY_SPILL_MAX_CONTAINERS": "1",
    "SPILLWAY_EST_INHOUSE_RENDER_S": "30",
}


async def spill_one_beside_a_busy_slot(
    stack: Stack, modal: FakeModal, *, cold_start_s: str, margin_s: str
) -> tuple[scheduler_pb2_grpc.SchedulerStub, grpc.aio.Channel, list[str]]:
    """Starts a scheduler with one in-house slot, renders a long job there and spills a
    second to Modal; returns the stub, its channel and the two job ids."""
    renderer = await stack.start_renderer(slots=1)
    scheduler = await stack.start_scheduler(
        spill=modal_pool(modal, stack.tmp),
        **{
            **RECALL_ENV,
            "SPILLWAY_INHOUSE_RENDERERS": f"{renderer.address}=1",
            "SPILLWAY_EST_COLD_START_S": cold_start_s,
            "SPILLWAY_RECALL_MARGIN_S": margin_s,
        },
    )
    channel = grpc.aio.insecure_channel(scheduler.address)
    stub = scheduler_pb2_grpc.SchedulerStub(channel)
    request = pb.SubmitRenderRequest(prompt="a lighthouse in a storm", seconds=12, size="720x1280")
    busy = (await stub.SubmitRender(request, metadata=AUTH)).job.id

    async def rendering() -> None:
        job = (await stub.GetJob(pb.GetJobRequest(id=busy), metadata=AUTH)).job
        assert job.status == pb.JOB_STATUS_IN_PROGRESS and job.pool == "inhouse"

    await assert_eventually(rendering, within=30)
    (spilled,) = await submit_burst(stub, 1)
    return stub, channel, [busy, spilled]


async def events_of(stub: scheduler_pb2_grpc.SchedulerStub, job_id: str) -> list[pb.JobEvent]:
    return [r.event async for r in stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=AUTH)]


async def test_a_recall_that_closes_the_gate_first_moves_the_job_and_modal_does_no_work(
    stack: Stack, s3: S3Server, tmp_path: Path
) -> None:
    """A job on Modal whose container is still booting when an in-house slot frees is
    recalled: the scheduler closes its start gate first, so the booted container does
    no work for it, and the job completes once, in-house, with one object and its
    attempt uncharged."""
    with FakeModal(work_dir=tmp_path, boot_s=40) as modal:
        stub, channel, ids = await spill_one_beside_a_busy_slot(
            stack, modal, cold_start_s="20", margin_s="600"
        )
        async with channel:
            jobs = await final_jobs(stub, ids)
            assert [j.status for j in jobs] == [pb.JOB_STATUS_COMPLETED] * 2
            events = await events_of(stub, ids[1])
        (call,) = modal.spawned
        gates = modal.dicts["spillway-starts"]
        assert gates.entries == {call.request["start_key"]: "recalled"}
        assert call.renders == 0 and call.call_id in [c for c, _ in modal.cancels]
    moves = [(e.type, e.pool, e.reason) for e in events if e.type in ("dispatched", "recalled")]
    assert moves == [
        ("dispatched", "modal", "modal_faster"),
        ("recalled", "modal", "inhouse_sooner"),
        ("dispatched", "inhouse", "inhouse_slot_free"),
    ]
    assert [e.type for e in events].count("completed") == 1
    objects = s3.client().list_objects_v2(Bucket=s3.bucket).get("Contents", [])
    assert sorted(o["Key"] for o in objects) == sorted(j.output.key for j in jobs)
    assert jobs[1].pool == "inhouse" and jobs[1].attempt == 1


@pytest.mark.parametrize("gate", ["opened by the container", "failing"])
async def test_no_recall_once_the_container_opened_the_gate_or_when_it_fails(
    stack: Stack, s3: S3Server, tmp_path: Path, gate: str
) -> None:
    """A job on Modal past its recall limit stays there when its container opened the
    start gate first (its render started), or when the scheduler cannot write the gate
    (an error from Modal): it completes on Modal, once, never recalled."""
    boot_s = 0.0 if gate == "opened by the container" else 3.0
    with FakeModal(work_dir=tmp_path, boot_s=boot_s) as modal:
        if gate == "opened by the container":
            modal.hold()  # rendering, past the gate, until released
        else:
            # The first write is the recall's, due long before the container boots.
            modal.fail_gate(modal.exception.InternalError("Dict update failed"))
        stub, channel, ids = await spill_one_beside_a_busy_slot(
            stack, modal, cold_start_s="0.5", margin_s="0"
        )
        async with channel:

            async def spawned() -> None:
                assert len(modal.spawned) == 1

            await assert_eventually(spawned, within=30, interval=0.02)
            key = modal.spawned[0].request["start_key"]
            gates = modal.Dict.from_name("spillway-starts")
            # The recall's write: refused, as the key exists, or failed.
            outcome = False if gate == "opened by the container" else None

            async def recall_refused() -> None:
                tried = [p for p in gates.puts if p[:2] == (key, "recalled")]
                assert tried == [(key, "recalled", outcome)]

            await assert_eventually(recall_refused, within=30, interval=0.02)
            modal.release()
            jobs = await final_jobs(stub, ids)
            events = await events_of(stub, ids[1])
        assert gates.entries == {key: "started"}
        assert modal.spawned[0].renders == 1
    assert [j.status for j in jobs] == [pb.JOB_STATUS_COMPLETED] * 2
    assert jobs[1].pool == "modal" and jobs[1].attempt == 1
    types = [e.type for e in events]
    assert "recalled" not in types and types.count("completed") == 1


async def test_spilled_renders_charge_their_containers_from_boot_to_stop(
    stack: Stack, s3: S3Server, modal: FakeModal, redis_url: str
) -> None:
    """A burst spills to Modal: the month's spend is what its containers cost while up,
    each named by the renders it served, and it stops growing once they are gone."""
    await stack.start_renderer(slots=1)
    # Stats fresh within a look of the meter, which counts the containers with them.
    pool = ModalPool(
        ModalPoolConfig(tmp_dir=stack.tmp, poll_interval_s=0.2, stats_ttl_s=0.1), sdk=modal
    )
    scheduler = await stack.start_scheduler(spill=pool, **MODAL_ENV)
    client = aredis.Redis.from_url(redis_url, decode_responses=True)
    spend_key = keys.spend(time.strftime("%Y-%m", time.gmtime()))
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        jobs = await final_jobs(stub, await submit_burst(stub, 6))
    assert [j.status for j in jobs] == [pb.JOB_STATUS_COMPLETED] * 6
    served = {c.container_id for c in modal.spawned if c.state == "done" and c.renders}
    assert served

    async def named_and_charged() -> None:
        tracker = decode(await client.get(keys.METER)).tracker
        assert {cid for cid, _ in tracker.meter.live} == set(modal.containers())
        assert served <= {cid for cid, _ in tracker.meter.live}
        assert float(await client.get(spend_key) or 0) > 0

    await assert_eventually(named_and_charged, within=10)
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        status = await stub.GetSpillover(pb.GetSpilloverRequest(), metadata=OPERATOR_AUTH)
    # What an operator sees: the containers billing now, and the month's bill.
    assert status.metered_containers == len(modal.containers())
    assert status.spent_usd > 0 and status.bill_corrected_usd == 0
    modal.scale_to_zero()

    async def all_stopped() -> float:
        assert decode(await client.get(keys.METER)).tracker.meter.live == ()
        return float(await client.get(spend_key) or 0)

    charged = await assert_eventually(all_stopped, within=10)
    await asyncio.sleep(1.0)
    assert float(await client.get(spend_key) or 0) == charged
    await client.aclose()
