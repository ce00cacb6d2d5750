"""The spill path end to end: a real scheduler over real Redis and S3, an in-house
renderer with two slots, and the local burst pool as the second fleet."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from collections import Counter

import av
import grpc
import httpx
import pytest
import redis.asyncio as aredis
from google.rpc import error_details_pb2, status_pb2
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

from scheduler.store import keys
from tests.conftest import (
    API_KEY,
    AUTH,
    OPERATOR_AUTH,
    OPERATOR_KEY,
    S3Server,
    Stack,
    assert_eventually,
    free_port,
)

# Small watermarks and short dwells so that a burst of 20 spills within seconds; the
# burst containers boot in 0.3 s and scale down after 1 s idle.
SPILL_ENV = {
    "SPILLWAY_SPILL_POOL": "burst",
    "SPILLWAY_HIGH_WATERMARK": "4",
    "SPILLWAY_LOW_WATERMARK": "1",
    "SPILLWAY_ENTER_DWELL_S": "0",
    "SPILLWAY_EXIT_DWELL_S": "1",
    "SPILLWAY_MIN_MODE_S": "0.5",
    "SPILLWAY_SPILL_MAX_CONTAINERS": "3",
    "SPILLWAY_SPILL_BUFFER_CONTAINERS": "0",
    "SPILLWAY_SPILL_SCALEDOWN_S": "1",
    "SPILLWAY_BURST_COLD_START_S": "0.3",
    "SPILLWAY_BURST_FPS": "8",
    "SPILLWAY_EST_INHOUSE_RENDER_S": "2",
    "SPILLWAY_EST_SPILL_RENDER_S": "1",
    "SPILLWAY_EST_COLD_START_S": "0.5",
    "SPILLWAY_AUTOSCALE_INTERVAL_S": "0.5",
    "SPILLWAY_METER_INTERVAL_S": "0.2",
}
REQUEST = {"prompt": "a lighthouse in a storm", "seconds": 4, "size": "720x1280"}


async def submit_burst(stub: scheduler_pb2_grpc.SchedulerStub, n: int) -> list[str]:
    responses = await asyncio.gather(
        *(stub.SubmitRender(pb.SubmitRenderRequest(**REQUEST), metadata=AUTH) for _ in range(n))
    )
    return [r.job.id for r in responses]


async def final_jobs(stub: scheduler_pb2_grpc.SchedulerStub, ids: list[str]) -> list[pb.Job]:
    async def all_done() -> list[pb.Job]:
        jobs = [(await stub.GetJob(pb.GetJobRequest(id=i), metadata=AUTH)).job for i in ids]
        pending = [
            j.id for j in jobs if j.status in (pb.JOB_STATUS_QUEUED, pb.JOB_STATUS_IN_PROGRESS)
        ]
        assert not pending, f"{len(pending)} jobs still running"
        return jobs

    return await assert_eventually(all_done, within=150, interval=0.25)


def assert_valid_mp4(s3: S3Server, key: str) -> None:
    body = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    with av.open(io.BytesIO(body)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames > 0, f"{key} decodes to no frames"


async def test_burst_spills_completes_and_drains_back(stack: Stack, s3: S3Server) -> None:
    """With 2 in-house slots, a burst of 20 spills some jobs to the burst pool; all 20
    complete with valid MP4s, the mode goes back to normal and the burst pool scales to
    zero after its scaledown window."""
    await stack.start_renderer(slots=2)
    scheduler = await stack.start_scheduler(**SPILL_ENV)
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        ids = await submit_burst(stub, 20)
        jobs = await final_jobs(stub, ids)

        assert [j.status for j in jobs] == [pb.JOB_STATUS_COMPLETED] * 20
        per_pool = Counter(j.pool for j in jobs)
        assert per_pool["burst"] > 0 and per_pool["inhouse"] > 0, per_pool
        assert set(per_pool) == {"burst", "inhouse"}
        # Each job says why it went where it went.
        placed = {(j.pool, j.placement_reason) for j in jobs}
        assert ("inhouse", "inhouse_slot_free") in placed
        assert {r for p, r in placed if p == "burst"} <= {
            "modal_faster",
            "modal_warm",
            "timeout_rescue",
        }
        for job in jobs:
            assert_valid_mp4(s3, job.output.key)

        async def drained() -> pb.GetSpilloverResponse:
            status: pb.GetSpilloverResponse = await stub.GetSpillover(
                pb.GetSpilloverRequest(), metadata=OPERATOR_AUTH
            )
            assert status.mode == pb.SPILLOVER_MODE_NORMAL
            burst = next(p for p in status.pools if p.name == "burst")
            assert burst.containers == 0 and burst.inflight == 0
            return status

        status = await assert_eventually(drained, within=30, interval=0.2)
        changes = [(getattr(c, "from"), c.to) for c in status.recent_changes]
        assert (pb.SPILLOVER_MODE_NORMAL, pb.SPILLOVER_MODE_SPILL) in changes
        assert changes[-1] == (pb.SPILLOVER_MODE_SPILL, pb.SPILLOVER_MODE_NORMAL)
        dispatched = {p.name: p.dispatched for p in status.pools}
        assert dispatched == {"inhouse": per_pool["inhouse"], "burst": per_pool["burst"]}


async def test_killed_replica_loses_and_duplicates_nothing(
    stack: Stack, s3: S3Server, redis_url: str
) -> None:
    """A scheduler replica killed with SIGKILL mid-burst loses no job and duplicates none:
    another replica reclaims its jobs, and every job completes exactly once, with
    exactly one MP4 in the bucket."""
    await stack.start_renderer(slots=2)
    port = free_port()
    env = {
        **os.environ,
        **stack.scheduler_env(**SPILL_ENV, SPILLWAY_SCHEDULER_LISTEN=f"127.0.0.1:{port}"),
    }
    doomed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scheduler",
        "scheduler",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            ids = await submit_burst(stub, 12)
            client = aredis.Redis.from_url(redis_url, decode_responses=True)

            async def busy_on_both_fleets() -> None:
                assert await client.scard(keys.running("inhouse")) >= 2
                assert await client.scard(keys.running("burst")) >= 1

            await assert_eventually(busy_on_both_fleets, within=60)
            doomed.send_signal(signal.SIGKILL)
            await doomed.wait()
    finally:
        if doomed.returncode is None:
            doomed.kill()
            await doomed.wait()

    survivor = await stack.start_scheduler(**SPILL_ENV)
    async with grpc.aio.insecure_channel(survivor.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        jobs = await final_jobs(stub, ids)
        assert [j.status for j in jobs] == [pb.JOB_STATUS_COMPLETED] * 12
        for job in jobs:
            events = [
                r.event async for r in stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=AUTH)
            ]
            assert [e.type for e in events].count("completed") == 1
    objects = s3.client().list_objects_v2(Bucket=s3.bucket).get("Contents", [])
    assert sorted(o["Key"] for o in objects) == sorted(j.output.key for j in jobs)
    reclaimed = await client.xrange(keys.events(ids[0]))
    assert reclaimed  # the event stream survived the replica
    await client.aclose()


async def test_full_queue_refuses_with_retry_info_over_grpc_and_429_over_rest(
    stack: Stack,
) -> None:
    """Past the queue bound a submit is refused, never dropped: gRPC RESOURCE_EXHAUSTED
    with reason queue_full and a RetryInfo, HTTP 429 in the OpenAI error shape with
    Retry-After; the jobs already queued are untouched."""
    await stack.start_renderer(slots=1)
    scheduler = await stack.start_scheduler(SPILLWAY_MAX_QUEUED="2")
    # A stopped dispatcher keeps the jobs in line, so the bound is reached for sure.
    await scheduler.dispatcher.stop()
    base = await stack.start_gateway(scheduler)
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        queued = await submit_burst(stub, 2)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitRender(pb.SubmitRenderRequest(**REQUEST), metadata=AUTH)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        status = status_pb2.Status.FromString(
            dict(refused.value.trailing_metadata() or ())["grpc-status-details-bin"]
        )
        infos = {d.type_url.rsplit(".", 1)[-1]: d for d in status.details}
        info = error_details_pb2.ErrorInfo()
        infos["ErrorInfo"].Unpack(info)
        retry = error_details_pb2.RetryInfo()
        infos["RetryInfo"].Unpack(retry)
        assert info.reason == "queue_full" and retry.retry_delay.seconds >= 1
        for job_id in queued:
            job = (await stub.GetJob(pb.GetJobRequest(id=job_id), metadata=AUTH)).job
            assert job.status == pb.JOB_STATUS_QUEUED

    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post(
            "/v1/videos",
            json={"prompt": "one too many", "seconds": "4"},
            headers={"authorization": f"Bearer {API_KEY}"},
        )
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "queue_full"


async def test_spillover_cli_reports_mode_and_pools_as_json(stack: Stack) -> None:
    """`spillway spillover --json` prints the mode and, per pool, its in-flight and
    dispatched counts; the table shows the spend and the containers billing."""
    await stack.start_renderer(slots=2)
    scheduler = await stack.start_scheduler(**SPILL_ENV)
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        await final_jobs(stub, await submit_burst(stub, 1))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scheduler",
        "spillover",
        "--json",
        "--addr",
        scheduler.address,
        "--api-key",
        OPERATOR_KEY,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    status = json.loads(out)
    assert status["mode"] == "normal"
    assert status["pools"]["inhouse"]["dispatched"] == 1
    assert status["pools"]["inhouse"]["inflight"] == 0
    assert status["pools"]["burst"] == {
        "inflight": 0,
        "cap": 3,
        "dispatched": 0,
        "containers": 0,
        "ready_slots": 0,
    }
    assert status["spend"]["metered_containers"] == 0
    # The table a person reads says the same.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scheduler",
        "spillover",
        "--addr",
        scheduler.address,
        "--api-key",
        OPERATOR_KEY,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    spend_line = next(line for line in out.decode().splitlines() if line.startswith("spend"))
    assert "this month of $" in spend_line and "0 containers billing now" in spend_line


# One in-house slot, and a burst container that takes far longer to boot than any
# render here: a job spilled to it can only finish if it is moved.
RECALL_ENV = {
    **SPILL_ENV,
    "SPILLWAY_HIGH_WATERMARK": "1",
    "SPILLWAY_LOW_WATERMARK": "0",
    "SPILLWAY_EXIT_DWELL_S": "60",
    "SPILLWAY_SPILL_MAX_CONTAINERS": "1",
    "SPILLWAY_BURST_COLD_START_S": "40",
    "SPILLWAY_EST_INHOUSE_RENDER_S": "30",
}


async def run_recall(
    stack: Stack, s3: S3Server, *, cold_start_s: str, margin_s: str
) -> list[pb.JobEvent]:
    """Renders a job in-house and, while it renders, one that spills to the slow burst
    container; returns the spilled job's events once both completed, after checking
    that each completed once with one object."""
    renderer = await stack.start_renderer(slots=1)
    scheduler = await stack.start_scheduler(
        **{
            **RECALL_ENV,
            "SPILLWAY_INHOUSE_RENDERERS": f"{renderer.address}=1",
            "SPILLWAY_EST_COLD_START_S": cold_start_s,
            "SPILLWAY_RECALL_MARGIN_S": margin_s,
        }
    )
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        busy = (
            await stub.SubmitRender(
                pb.SubmitRenderRequest(**{**REQUEST, "seconds": 12}), metadata=AUTH
            )
        ).job.id

        async def rendering() -> None:
            job = (await stub.GetJob(pb.GetJobRequest(id=busy), metadata=AUTH)).job
            assert job.status == pb.JOB_STATUS_IN_PROGRESS and job.pool == "inhouse"

        await assert_eventually(rendering, within=30)
        (moved,) = await submit_burst(stub, 1)
        jobs = await final_jobs(stub, [busy, moved])
        assert [j.status for j in jobs] == [pb.JOB_STATUS_COMPLETED] * 2
        events = [r.event async for r in stub.WatchJob(pb.WatchJobRequest(id=moved), metadata=AUTH)]
    objects = s3.client().list_objects_v2(Bucket=s3.bucket).get("Contents", [])
    assert sorted(o["Key"] for o in objects) == sorted(j.output.key for j in jobs)
    assert jobs[1].pool == "inhouse" and jobs[1].attempt == 1
    assert_valid_mp4(s3, jobs[1].output.key)
    assert [e.type for e in events].count("completed") == 1
    return events


async def test_a_spilled_job_not_started_moves_to_a_freed_inhouse_slot(
    stack: Stack, s3: S3Server
) -> None:
    """A job spilled to a burst container expected to boot later than the in-house slot
    frees is recalled when it frees (inhouse_sooner), rendered there, and completes
    once with one object."""
    events = await run_recall(stack, s3, cold_start_s="20", margin_s="600")
    moves = [(e.type, e.pool, e.reason) for e in events if e.type in ("dispatched", "recalled")]
    assert moves == [
        ("dispatched", "burst", "modal_faster"),
        ("recalled", "burst", "inhouse_sooner"),
        ("dispatched", "inhouse", "inhouse_slot_free"),
    ]
    assert events[-1].type == "completed"


async def test_a_spilled_job_not_started_in_time_is_recalled(stack: Stack, s3: S3Server) -> None:
    """A job whose burst container does not boot within the cold-start estimate plus
    the margin is recalled (not_started_in_time), placed again each time, and completes
    once, in-house, uncharged for its moves."""
    events = await run_recall(stack, s3, cold_start_s="0.5", margin_s="0")
    moves = [(e.type, e.pool, e.reason) for e in events if e.type in ("dispatched", "recalled")]
    assert moves[:2] == [
        ("dispatched", "burst", "modal_faster"),
        ("recalled", "burst", "not_started_in_time"),
    ]
    # Every placement on the burst pool ended in a recall; the last went in-house.
    assert moves[-1] == ("dispatched", "inhouse", "inhouse_slot_free")
    for placed, recalled in zip(moves[:-1:2], moves[1::2], strict=True):
        assert placed[:2] == ("dispatched", "burst") and recalled[:2] == ("recalled", "burst")
    assert events[-1].type == "completed"
