"""The in-house fleet in Redis: placement across replicas, ejection, drain, seeding and
fenced lease renewal, against a real redis-server (and real renderers for the probe)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aredis

from renderer.server import start_renderer_server
from scheduler.config import RendererEndpoint
from scheduler.dispatch.fleet import Fleet, FleetMonitor, capacity
from scheduler.pools.inhouse import InhousePool
from scheduler.store import keys
from scheduler.store.jobs import JobSpec
from scheduler.store.jobstore import JobStore
from tests.conftest import assert_eventually, free_port

SPEC = JobSpec(prompt="a red fox", model="sora-2", seconds=4, width=720, height=1280, priority=5)
A, B = "127.0.0.1:1001", "127.0.0.1:1002"


@pytest.fixture
def store(redis_client: aredis.Redis) -> JobStore:
    return JobStore(
        redis_client, retention_s=3600, events_maxlen=64, max_attempts=3, max_queued=1000
    )


@pytest.fixture
async def fleet(redis_client: aredis.Redis) -> Fleet:
    fleet = Fleet(redis_client, eject_after=1)
    await fleet.seed((RendererEndpoint(A, 2), RendererEndpoint(B, 1)))
    return fleet


async def claim(store: JobStore, owner: str) -> str | None:
    job = await store.claim(owner, "inhouse", 30, cap=-1)
    return job.endpoint if job else None


async def test_replicas_share_endpoint_slots_through_redis(store: JobStore, fleet: Fleet) -> None:
    """Claims by two replicas fill the freest endpoint first and never book more jobs on
    an endpoint than it has slots; the fleet's capacity counts both replicas' jobs."""
    for _ in range(5):
        await store.submit("t", SPEC)
    placed = [await claim(store, owner) for owner in ("r1", "r2", "r1", "r2")]
    assert sorted(p for p in placed if p) == [A, A, B]
    assert placed[3] is None
    view = {e.address: e for e in await fleet.view()}
    assert (view[A].busy, view[B].busy) == (2, 1)
    assert capacity(list(view.values())).busy == 3


async def test_finished_job_frees_its_endpoint_slot(store: JobStore, fleet: Fleet) -> None:
    """A requeued job gives its slot back; the next claim may take it."""
    for _ in range(4):
        await store.submit("t", SPEC)
    jobs = [await store.claim("r1", "inhouse", 30, cap=-1) for _ in range(3)]
    assert await claim(store, "r1") is None
    on_b = next(j for j in jobs if j and j.endpoint == B)
    assert await store.requeue(on_b, "render_failed", "x", counts=False) == "requeued"
    assert await claim(store, "r2") == B


async def test_ejected_and_draining_endpoints_get_no_work_and_no_capacity(
    store: JobStore, fleet: Fleet
) -> None:
    """An ejected endpoint (a failure) and a draining one take nothing and count for no
    slots; a success re-admits the ejected one."""
    assert await fleet.report(A, "connect refused") == "ejected"
    await fleet.edit("drain", B)
    assert capacity(await fleet.view()).slots == 0
    await store.submit("t", SPEC)
    assert await claim(store, "r1") is None
    assert await fleet.report(A, "") == "readmitted"
    assert capacity(await fleet.view()).slots == 2
    assert await claim(store, "r1") == A


async def test_ejection_waits_for_consecutive_failures(redis_client: aredis.Redis) -> None:
    """With a threshold of 3, two failures leave the endpoint in; a success resets the
    count."""
    fleet = Fleet(redis_client, eject_after=3)
    await fleet.seed((RendererEndpoint(A, 1),))
    assert [await fleet.report(A, "down") for _ in range(2)] == ["", ""]
    assert await fleet.report(A, "") == ""
    assert [await fleet.report(A, "down") for _ in range(3)] == ["", "", "ejected"]


async def test_seed_does_not_undo_operator_edits(redis_client: aredis.Redis) -> None:
    """A replica restarting with the same endpoints leaves a removal in place; a changed
    list adds its endpoints."""
    fleet = Fleet(redis_client, eject_after=1)
    first = (RendererEndpoint(A, 2), RendererEndpoint(B, 1))
    assert await fleet.seed(first)
    assert await fleet.edit("remove", B)
    assert not await fleet.seed(first)
    assert [e.address for e in await fleet.view()] == [A]
    assert await fleet.seed((*first, RendererEndpoint("127.0.0.1:1003", 4)))
    assert [e.address for e in await fleet.view()] == [A, B, "127.0.0.1:1003"]


async def test_renew_reports_jobs_whose_lease_moved_on(
    store: JobStore, fleet: Fleet, redis_client: aredis.Redis
) -> None:
    """Renewal is fenced: a stale lease number is not renewed and its job is reported
    lost, so the stale attempt stops; the current one is renewed."""
    await store.submit("t", SPEC)
    first = await store.claim("r1", "inhouse", 30, cap=-1)
    assert first is not None
    assert await store.requeue(first, "render_failed", "x", counts=False) == "requeued"
    second = await store.claim("r1", "inhouse", 30, cap=-1)
    assert second is not None and second.lease == first.lease + 1
    lost = await store.renew({first.id: first.lease}, 30)
    assert lost == [first.id]
    assert await store.renew({second.id: second.lease}, 30) == []
    deadline = await redis_client.zscore(keys.LEASES, second.id)
    assert deadline is not None


async def test_probe_ejects_a_dead_renderer_and_readmits_it_when_it_serves(
    redis_client: aredis.Redis, tmp_path: Path
) -> None:
    """The monitor's gRPC health probe ejects a port nothing listens on, and re-admits it
    once a renderer serves there (within a few probes: the probe's channel may still be
    backing off from the refused connections)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    fleet = Fleet(redis_client, eject_after=1)
    await fleet.seed((RendererEndpoint(address, 1),))
    pool = InhousePool(timeout_s=5, tmp_dir=tmp_path)
    monitor = FleetMonitor(fleet, pool.check, owner="r1", interval_s=0.2)
    try:
        await monitor.probe_once()
        [down] = await fleet.view()
        assert down.state == "ejected" and down.down.startswith("health check")
        renderer = await start_renderer_server(port=port, work_dir=tmp_path)

        async def readmitted() -> None:
            await monitor.probe_once()
            [up] = await fleet.view()
            assert up.state == "active" and up.failures == 0

        try:
            await assert_eventually(readmitted, within=15, interval=0.2)
        finally:
            await renderer.stop(0)
    finally:
        await pool.close()


async def test_monitor_probes_only_while_it_holds_the_fleet_lease(
    redis_client: aredis.Redis, tmp_path: Path
) -> None:
    """Of two replicas' monitors, one probes; the other leaves the fleet alone."""
    fleet = Fleet(redis_client, eject_after=1)
    await fleet.seed((RendererEndpoint(f"127.0.0.1:{free_port()}", 1),))
    probed: list[str] = []

    async def probe(owner: str, address: str) -> str:
        probed.append(owner)
        return "down"

    monitors = [
        FleetMonitor(fleet, lambda a, _t, o=o: probe(o, a), owner=o, interval_s=0.05)
        for o in ("r1", "r2")
    ]
    for m in monitors:
        m.start()
    await asyncio.sleep(0.5)
    for m in monitors:
        await m.stop()
    assert len(set(probed)) == 1 and len(probed) >= 3


async def test_the_spillover_read_survives_a_lost_script_cache(
    redis_client: aredis.Redis,
) -> None:
    """The read sends the fleet view by sha in its pipeline; a Redis that has not seen
    the script (a fresh or restarted one) gets it loaded, and the read goes on."""
    from scheduler.dispatch.spillover import Spillover
    from scheduler.policy import PolicyConfig

    fleet = Fleet(redis_client, eject_after=1)
    await fleet.seed([RendererEndpoint("127.0.0.1:1", 3)])
    spillover = Spillover(
        redis_client, PolicyConfig(), inhouse_pool="inhouse", spill_pool=None, fleet=fleet
    )
    for _ in range(2):
        await redis_client.script_flush()
        _, _, signal, _ = await spillover.read(None, False)
        assert (signal.inhouse_slots, signal.inhouse_busy) == (3, 0)
