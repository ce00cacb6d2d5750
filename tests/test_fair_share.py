"""Claims take turns between tenants with queued work, by weight: one tenant's burst
delays another's job by at most its share, never by the length of the burst."""

from __future__ import annotations

import dataclasses

import redis.asyncio as aredis

from scheduler.dispatch.fleet import Fleet
from scheduler.dispatch.spillover import Spillover
from scheduler.policy import PolicyConfig
from scheduler.store import keys
from scheduler.store.jobs import JobSpec
from scheduler.store.jobstore import JobStore
from tests.conftest import AUTH, OTHER_AUTH, Stack
from tests.test_metrics import render_info
from tests.test_rest_e2e import FPS

SPEC = JobSpec(prompt="a tide", model="sora-2", seconds=4, width=720, height=1280, priority=5)


async def claim_order(store: JobStore, count: int) -> list[str]:
    order = []
    for _ in range(count):
        job = await store.claim("r1", "inhouse", 30, cap=10**6)
        assert job is not None
        order.append(job.tenant)
    return order


async def test_claims_alternate_between_tenants(redis_client: aredis.Redis) -> None:
    store = JobStore(
        redis_client, retention_s=3600, events_maxlen=64, max_attempts=3, max_queued=10**6
    )
    for _ in range(20):
        await store.submit("flood", SPEC)
    for _ in range(3):
        await store.submit("quiet", SPEC)
    # The burst came first, yet the quiet tenant's jobs go every other claim.
    assert await claim_order(store, 7) == [
        "flood", "quiet", "flood", "quiet", "flood", "quiet", "flood"
    ]  # fmt: skip


async def test_weights_and_no_credit_banked_while_idle(redis_client: aredis.Redis) -> None:
    store = JobStore(
        redis_client, retention_s=3600, events_maxlen=64, max_attempts=3, max_queued=10**6
    )
    await redis_client.hset(keys.TENANT_WEIGHTS, "big", "2")
    for _ in range(12):
        await store.submit("big", SPEC)
        await store.submit("small", SPEC)
    order = await claim_order(store, 9)
    assert (order.count("big"), order.count("small")) == (6, 3)
    # A tenant that was idle while others were served does not then get a run of its own.
    await claim_order(store, 15)
    for _ in range(6):
        await store.submit("late", SPEC)
        await store.submit("small", SPEC)
    order = await claim_order(store, 8)
    # Its share of 8 is 4; starting from the turn being served costs it at most one more.
    assert order.count("late") <= 5, order


async def test_a_flood_delays_another_tenant_by_its_share_only(stack: Stack) -> None:
    """End to end: 30 jobs of one tenant queued first, then 2 of another; the second
    tenant's jobs are among the first 4 dispatched (by the dispatched events)."""
    import grpc
    from spillway.v1 import scheduler_pb2 as pb
    from spillway.v1 import scheduler_pb2_grpc

    renderer = await stack.start_renderer(slots=2, fps=FPS)
    scheduler = await stack.start_scheduler(SPILLWAY_INHOUSE_RENDERERS=f"{renderer.address}=2")
    await scheduler.fleet.edit("drain", renderer.address)
    request = pb.SubmitRenderRequest(prompt="a wave", seconds=4, size="720x1280")
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        flood = [(await stub.SubmitRender(request, metadata=AUTH)).job.id for _ in range(30)]
        quiet = [(await stub.SubmitRender(request, metadata=OTHER_AUTH)).job.id for _ in range(2)]
        await scheduler.fleet.edit("add", renderer.address, 2)

        async def dispatched_at(job_id: str) -> int:
            call = stub.WatchJob(
                pb.WatchJobRequest(id=job_id), metadata=OTHER_AUTH if job_id in quiet else AUTH
            )
            async for response in call:
                if response.event.type == "dispatched":
                    call.cancel()
                    return int(response.event.time.ToMilliseconds())
            raise AssertionError(f"{job_id} ended undispatched")

        quiet_at = [await dispatched_at(j) for j in quiet]
        flood_at = [await dispatched_at(j) for j in flood[:6]]
    # Two slots: the first round holds one job of each tenant, the second the same.
    ahead = sum(1 for t in flood_at if t < max(quiet_at))
    assert ahead <= 2, (quiet_at, flood_at)


async def test_a_job_queued_before_tenant_queues_existed_is_served(
    redis_client: aredis.Redis,
) -> None:
    """An upgrade finds jobs in the queue that no tenant queue holds: they still go."""
    store = JobStore(
        redis_client, retention_s=3600, events_maxlen=64, max_attempts=3, max_queued=10**6
    )
    job = (await store.submit("old", SPEC)).job
    await redis_client.delete(keys.tenant_queue("old"), keys.FAIR)
    claimed = await store.claim("r1", "inhouse", 30, cap=10)
    assert claimed is not None and claimed.id == job.id


async def test_a_split_budget_stops_a_tenant_spilling_past_its_share(
    redis_client: aredis.Redis,
) -> None:
    """Weights 3 and 1 split a $4 budget into $3 and $1: the tenant that spent its $1
    spills no more (its jobs wait for in-house, which still takes them); the other does.
    The spend comes from the meter, as a spilled render records it."""
    store = JobStore(
        redis_client, retention_s=3600, events_maxlen=64, max_attempts=3, max_queued=10**6
    )
    await redis_client.hset(keys.FLEET_SLOTS, "127.0.0.1:9", 10)
    await redis_client.hset(keys.TENANT_WEIGHTS, mapping={"big": 3, "small": 1})
    config = dataclasses.replace(PolicyConfig(), budget_usd_month=4.0, gpu_usd_per_s=1.0)
    spillover = Spillover(
        redis_client,
        config,
        inhouse_pool="inhouse",
        spill_pool="modal",
        fleet=Fleet(redis_client, eject_after=1),
    )
    budgets = spillover.tenant_budgets({"big": 3, "small": 1})
    # One second of GPU at $1/s, metered as a spilled render's is: the small tenant's
    # whole share.
    await store.submit("small", SPEC)
    rendering = await store.claim("r1", "modal", 30, cap=10)
    assert rendering is not None
    observed = spillover.observe("modal", render_info(render_s=1.0), 1.0)
    assert await store.rendered(rendering, observed, 95)
    assert await store.rendered(rendering, observed, 95), "a retry meters nothing more"
    assert await redis_client.hget(keys.tenant_spend(observed.month), "small") == "1"
    small = (await store.submit("small", SPEC)).job.id
    big = (await store.submit("big", SPEC)).job.id
    spilled = await store.claim("r1", "modal", 30, cap=10, budgets=budgets)
    assert spilled is not None and spilled.id == big
    assert await store.claim("r1", "modal", 30, cap=10, budgets=budgets) is None
    home = await store.claim("r1", "inhouse", 30, cap=-1)
    assert home is not None and home.id == small
