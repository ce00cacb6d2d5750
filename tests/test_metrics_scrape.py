"""The scheduler's Prometheus endpoint, scraped over HTTP while a burst runs through a
real stack: the numbers an operator's dashboard and alerts read move as jobs do."""

from __future__ import annotations

import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

from tests.conftest import OPERATOR_AUTH, S3Server, Stack, assert_eventually
from tests.test_spillover_e2e import SPILL_ENV, final_jobs, submit_burst

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_as_a_burst_spills_and_drains(stack: Stack, s3: S3Server) -> None:
    """After a burst of 8 that spills, the endpoint counts every completed job by pool,
    the dispatches, renders, cold starts, uploads and mode changes, meters spend, and
    shows the queue empty and the mode back to normal."""
    await stack.start_renderer(slots=2)
    scheduler = await stack.start_scheduler(**SPILL_ENV)

    async def first_decision() -> None:
        before = scrape(scheduler.metrics_port)
        assert value(before, "spillway_pool_capacity", pool="inhouse") == 2
        assert value(before, "spillway_jobs_submitted_total") == 0

    await assert_eventually(first_decision)

    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        jobs = await final_jobs(stub, await submit_burst(stub, 8))
        per_pool = {p: sum(j.pool == p for j in jobs) for p in ("inhouse", "burst")}
        assert per_pool["burst"] > 0

        async def drained() -> None:
            status = await stub.GetSpillover(pb.GetSpilloverRequest(), metadata=OPERATOR_AUTH)
            assert status.mode == pb.SPILLOVER_MODE_NORMAL

        await assert_eventually(drained, within=30)

    async def settled() -> Samples:
        after = scrape(scheduler.metrics_port)
        assert value(after, "spillway_spillover_mode") == 0
        assert value(after, "spillway_queue_depth") == 0
        return after

    after = await assert_eventually(settled, within=10)
    # A spilled job may be recalled before it starts, and placed again.
    recalled = {
        pool: sum(
            v
            for (name, labels), v in after.items()
            if name == "spillway_jobs_recalled_total" and ("pool", pool) in labels
        )
        for pool in per_pool
    }
    for pool, n in per_pool.items():
        dispatched = n + recalled[pool]
        assert value(after, "spillway_jobs_finished_total", pool=pool, status="completed") == n
        assert value(after, "spillway_jobs_dispatched_total", pool=pool) == dispatched
        assert value(after, "spillway_render_seconds_count", pool=pool) == n
        assert value(after, "spillway_job_latency_seconds_count", pool=pool) == n
        waits = {
            labels: v
            for (name, labels), v in after.items()
            if name == "spillway_queue_wait_seconds_count" and ("pool", pool) in labels
        }
        assert sum(waits.values()) == dispatched, waits
    # Spilled jobs waited in the queue for the second fleet; they were sent for a reason.
    assert (
        value(after, "spillway_queue_wait_seconds_count", pool="burst", reason="modal_faster")
        + value(after, "spillway_queue_wait_seconds_count", pool="burst", reason="timeout_rescue")
        == per_pool["burst"] + recalled["burst"]
    )
    assert value(after, "spillway_jobs_submitted_total") == 8
    assert value(after, "spillway_cold_start_seconds_count", pool="burst") >= 1
    assert value(after, "spillway_upload_bytes_total") == sum(j.output.bytes for j in jobs)
    assert value(after, "spillway_spillover_transitions_total", **{"from": "normal", "to": "spill"})
    assert value(after, "spillway_spill_spend_usd") > 0
    assert value(after, "spillway_render_gpu_seconds_total", pool="burst") > 0
