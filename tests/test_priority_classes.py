"""Priority classes: every interactive job is served before any batch job; batch jobs
never count toward spilling and never spill unless an operator allows it; a job may
opt out of spilling. The same rules hold in the store's claim, the pure policy, the
simulator and end to end."""

from __future__ import annotations

import dataclasses

import grpc
import httpx
import pytest
import redis.asyncio as aredis
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

from scheduler.policy import Controls, Mode, PolicyState, Reason, Target, decide
from scheduler.sim import parse_config, parse_trace, simulate
from scheduler.sim.engine import Pool
from scheduler.sim.report import summarize, to_table
from scheduler.store import keys
from scheduler.store.jobs import JobSpec, PriorityClass
from scheduler.store.jobstore import JobStore
from tests.conftest import API_KEY, AUTH, OPERATOR_AUTH, Stack
from tests.test_controls import admin
from tests.test_policy import SPILLING, T0, config, sig
from tests.test_spillover_e2e import SPILL_ENV, final_jobs

INTERACTIVE = JobSpec(
    prompt="a tide", model="sora-2", seconds=4, width=720, height=1280, priority=0
)
BATCH = dataclasses.replace(INTERACTIVE, priority_class=PriorityClass.BATCH, priority=9)
PINNED = dataclasses.replace(INTERACTIVE, inhouse_only=True)


async def new_store(client: aredis.Redis) -> JobStore:
    """A store whose in-house fleet is one roomy endpoint (in-house claims need one)."""
    await client.hset(keys.FLEET_SLOTS, "127.0.0.1:9", 100)
    return JobStore(client, retention_s=3600, events_maxlen=64, max_attempts=3, max_queued=10**6)


async def test_every_interactive_job_goes_before_any_batch_job(
    redis_client: aredis.Redis,
) -> None:
    store = await new_store(redis_client)
    # Batch first, at the highest priority, and from a tenant whose turn it would be.
    batch = [(await store.submit("nightly", BATCH)).job.id for _ in range(3)]
    interactive = [(await store.submit("app", INTERACTIVE)).job.id for _ in range(2)]
    claimed = []
    for _ in range(5):
        job = await store.claim("r1", "inhouse", 30, cap=-1)
        assert job is not None
        claimed.append(job.id)
    assert claimed == interactive + batch


async def test_a_batch_job_counts_every_interactive_job_ahead(redis_client: aredis.Redis) -> None:
    store = await new_store(redis_client)
    batch = (await store.submit("nightly", BATCH)).job.id
    for _ in range(4):
        await store.submit("app", INTERACTIVE)
    _, ahead = await store.get_with_ahead(batch)
    assert ahead == 4


async def test_a_spill_takes_neither_batch_nor_inhouse_only_jobs(
    redis_client: aredis.Redis,
) -> None:
    store = await new_store(redis_client)
    batch = (await store.submit("nightly", BATCH)).job.id
    pinned = (await store.submit("app", PINNED)).job.id
    spillable = (await store.submit("app", INTERACTIVE)).job.id
    assert (await store.claim("r1", "modal", 30, cap=10)).id == spillable  # type: ignore[union-attr]
    assert await store.claim("r1", "modal", 30, cap=10) is None
    # With batch allowed to spill, the batch job goes; the pinned one never does.
    allowed = await store.claim("r1", "modal", 30, cap=10, batch=True)
    assert allowed is not None and allowed.id == batch
    assert await store.claim("r1", "modal", 30, cap=10, batch=True) is None
    home = await store.claim("r1", "inhouse", 30, cap=-1)
    assert home is not None and home.id == pinned


def test_batch_never_counts_toward_spilling() -> None:
    normal = PolicyState(mode=Mode.NORMAL, mode_since_ms=T0 - 3_600_000)
    flood = dataclasses.replace(sig(0, ages=[]), batch_queued=500)
    plan = decide(normal, flood, config(enter_dwell_ms=0), T0)
    assert plan.state.mode is Mode.NORMAL and plan.transition is None
    assert [(d.target, d.count, d.reason) for d in plan.decisions] == [
        (Target.HOLD, 500, Reason.BATCH_INHOUSE)
    ]
    # Spilling for interactive work, batch still stays in line; free slots take it.
    spilling = dataclasses.replace(sig(12, busy=1), batch_queued=5)
    plan = decide(SPILLING, spilling, config(), T0)
    assert plan.count(Target.MODAL) > 0
    assert plan.count(Target.INHOUSE) == 1, "the one free slot goes to interactive work"
    assert plan.sent(Target.HOLD, Reason.BATCH_INHOUSE) == 5
    idle = dataclasses.replace(sig(0, busy=0), batch_queued=5)
    assert decide(SPILLING, idle, config(), T0).count(Target.INHOUSE) == 2


def test_an_operator_may_let_batch_spill() -> None:
    normal = PolicyState(mode=Mode.NORMAL, mode_since_ms=T0 - 3_600_000)
    flood = dataclasses.replace(
        sig(0, ages=[]), batch_queued=50, controls=Controls(batch_spill=True)
    )
    plan = decide(normal, flood, config(enter_dwell_ms=0), T0)
    assert plan.state.mode is Mode.SPILL
    assert plan.count(Target.MODAL) > 0


def test_the_simulator_keeps_batch_in_house_and_behind() -> None:
    rows = ["arrival_s,render_s,priority"]
    rows += ["0,60,batch" for _ in range(40)]
    rows += [f"{1 + i},60,interactive" for i in range(40)]
    trace = parse_trace("\n".join(rows) + "\n")
    config = parse_config("[inhouse]\nslots = 4\n[policy]\nhigh_watermark = 4\n")
    result = simulate(trace, config, "spillway")
    batch = [j for j in result.jobs if j.batch]
    interactive = [j for j in result.jobs if not j.batch]
    assert all(j.pool is Pool.INHOUSE for j in batch)
    assert all(j.outcome.value == "completed" for j in result.jobs)
    assert any(j.pool is Pool.MODAL for j in interactive), "interactive work spilled"
    summary = summarize(result)
    assert summary["batch"] == 40
    assert summary["latency_s"]["p99"] < summary["batch_latency_s"]["p99"]
    header, row = to_table([summary]).splitlines()
    assert header.split()[-3:] == ["batch", "p99", "s"]
    assert float(row.split()[-1]) == summary["batch_latency_s"]["p99"]


@pytest.mark.timeout(240)
async def test_batch_stays_in_line_until_an_operator_lets_it_spill(stack: Stack) -> None:
    """End to end, over REST and the admin CLI, with the in-house fleet drained and
    spilling forced: interactive work spills at once; batch and in-house-only jobs wait.
    Allowed, batch spills; the fleet back, the in-house-only jobs render there."""
    renderer = await stack.start_renderer(slots=2, fps=8)
    scheduler = await stack.start_scheduler(**SPILL_ENV)
    await scheduler.fleet.edit("drain", renderer.address)
    base_url = await stack.start_gateway(scheduler)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with (
        httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http,
        grpc.aio.insecure_channel(scheduler.address) as channel,
    ):
        stub = scheduler_pb2_grpc.SchedulerStub(channel)

        async def submit(n: int, **extra: object) -> list[str]:
            body = {"prompt": "a lighthouse", "seconds": 4, "size": "720x1280", **extra}
            answers = [await http.post("/v1/videos", json=body) for _ in range(n)]
            assert all(a.status_code == 200 for a in answers), answers[0].text
            return [a.json()["id"] for a in answers]

        async def statuses(ids: list[str]) -> set[int]:
            jobs = [(await stub.GetJob(pb.GetJobRequest(id=i), metadata=AUTH)).job for i in ids]
            return {j.status for j in jobs}

        bad = await http.post("/v1/videos", json={"prompt": "x", "priority": "urgent"})
        assert (bad.status_code, bad.json()["error"]["param"]) == (400, "priority")

        assert (await admin(scheduler.address, "spill", "force"))[0] == 0
        batch = await submit(4, priority="batch")
        pinned = await submit(2, inhouse_only=True)
        interactive = await final_jobs(stub, await submit(2))
        assert {j.pool for j in interactive} == {"burst"}
        assert await statuses(batch + pinned) == {pb.JOB_STATUS_QUEUED}
        video = (await http.get(f"/v1/videos/{batch[0]}")).json()
        assert (video["priority"], video["inhouse_only"]) == ("batch", False)
        status = await stub.GetSpillover(pb.GetSpilloverRequest(), metadata=OPERATOR_AUTH)
        assert (status.batch_queued, status.batch_control) == (4, "inhouse")
        # The interactive jobs' spill is billed, and their GPU time is their tenant's.
        assert status.spent_usd > 0
        assert set(status.spent_usd_by_tenant) == {"acme"}
        assert status.spent_usd_by_tenant["acme"] > 0

        assert (await admin(scheduler.address, "batch", "spill"))[0] == 0
        spilled = await final_jobs(stub, batch)
        assert {(j.pool, j.status) for j in spilled} == {("burst", pb.JOB_STATUS_COMPLETED)}
        assert spilled[0].priority_class == pb.PRIORITY_CLASS_BATCH
        assert await statuses(pinned) == {pb.JOB_STATUS_QUEUED}

        await scheduler.fleet.edit("add", renderer.address, 2)
        home = await final_jobs(stub, pinned)
        assert {(j.pool, j.status) for j in home} == {("inhouse", pb.JOB_STATUS_COMPLETED)}
