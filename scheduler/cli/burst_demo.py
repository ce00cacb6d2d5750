"""`spillway dev --burst N`: submits N jobs at once through the REST API and shows, live,
the spillover mode, jobs per fleet and the burst containers rising and falling back to
zero, from the scheduler's `GetSpillover` RPC."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import grpc
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

from scheduler.cli import spillover as spillover_cli
from scheduler.cli.rest_client import RestClient

_TICK_S = 0.25
_LIVE = (pb.JOB_STATUS_QUEUED, pb.JOB_STATUS_IN_PROGRESS)


async def run_burst(
    base_url: str,
    scheduler_address: str,
    api_key: str,
    *,
    jobs: int,
    seconds: int,
    size: str,
    say: Callable[[str], None],
    drain_timeout_s: float = 600.0,
) -> int:
    """Returns 0 once every job completed and the burst pool is back to zero."""
    started = time.monotonic()
    async with RestClient(base_url, api_key) as client:
        created = await asyncio.gather(
            *(
                client.create(f"burst job {i + 1} of {jobs}", seconds=seconds, size=size)
                for i in range(jobs)
            )
        )
    ids = [video["id"] for video in created]
    say(f"burst      submitted {jobs} jobs in {time.monotonic() - started:.1f} s")
    metadata = (("authorization", f"Bearer {api_key}"),)
    async with grpc.aio.insecure_channel(scheduler_address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        seen_changes = 0
        last_line = ""
        while True:
            status = await stub.GetSpillover(pb.GetSpilloverRequest(), metadata=metadata)
            found = [
                (await stub.GetJob(pb.GetJobRequest(id=i), metadata=metadata)).job for i in ids
            ]
            s = spillover_cli.to_dict(status)
            for change in s["recent_changes"][seen_changes:]:
                say(
                    f"  mode     {change['from']} -> {change['to']} "
                    f"({change['reason']}, {change['queued']} queued)"
                )
            seen_changes = len(s["recent_changes"])
            done = Counter(j.pool for j in found if j.status not in _LIVE)
            pools = s["pools"]
            burst = pools.get("burst") or pools.get("modal") or {}
            line = (
                f"  {time.monotonic() - started:5.1f} s  {s['mode']:<6} queued {s['queued']:>3}"
                f"  in-house {pools['inhouse']['inflight']}/{pools['inhouse']['cap']}"
                f"  burst {burst.get('inflight', 0)}/{burst.get('cap', 0)}"
                f" containers {burst.get('containers', 0)}"
                f"  done {sum(done.values())}/{jobs}"
                f" (in-house {done['inhouse']}, burst {done['burst'] + done['modal']})"
            )
            if line.split("s  ", 1)[-1] != last_line.split("s  ", 1)[-1]:
                say(line)
                last_line = line
            finished = all(j.status not in _LIVE for j in found)
            if finished and s["mode"] == "normal" and not burst.get("containers", 0):
                break
            if time.monotonic() - started > drain_timeout_s:
                say("burst      gave up waiting for the burst to drain")
                return 1
            await asyncio.sleep(_TICK_S)
    failed = [j for j in found if j.status != pb.JOB_STATUS_COMPLETED]
    per_pool = Counter(j.pool for j in found if j.status == pb.JOB_STATUS_COMPLETED)
    say(
        f"burst      {jobs - len(failed)}/{jobs} completed in {time.monotonic() - started:.1f} s: "
        + ", ".join(f"{n} on {pool}" for pool, n in sorted(per_pool.items()))
        + "; mode back to normal, burst pool at zero containers\n"
    )
    for job in failed:
        say(f"  failed   {job.id}: {job.error.code}: {job.error.message}")
    return 1 if failed else 0
