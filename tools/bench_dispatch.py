"""Submit-to-dispatch latency of the job store, against a bare Redis queue, side by side.

    .venv/bin/python tools/bench_dispatch.py [--jobs 2000]

Starts its own redis-server on a free port. One task submits jobs one at a time (the
submit script: job hash, queue entry, event, wake token); another blocks on the wake
token and claims them (the claim script: pop, lease, status, event). The third path is
what the dispatcher does: each wake-up first reads the spillover signal and decides
(one pipelined round trip plus the pure policy), then claims what the plan sends
in-house. The baseline is the least a Redis queue can do: LPUSH, and BLPOP on the other
side. Latency is from just before the submit call to just after the claim returns.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time

import redis.asyncio as redis

from scheduler.config import RendererEndpoint
from scheduler.dispatch.fleet import Fleet
from scheduler.dispatch.spillover import Spillover
from scheduler.policy import PolicyConfig, Target
from scheduler.store.jobs import JobSpec
from scheduler.store.jobstore import JobStore

SPEC = JobSpec(prompt="bench", model="m", seconds=4, width=720, height=1280, priority=5)


async def spillway(client: redis.Redis, jobs: int) -> list[float]:
    return await _spillway(client, jobs, decide=False)


async def spillway_with_policy(client: redis.Redis, jobs: int) -> list[float]:
    return await _spillway(client, jobs, decide=True)


async def _spillway(client: redis.Redis, jobs: int, *, decide: bool) -> list[float]:
    store = JobStore(client, retention_s=3600, events_maxlen=64, max_attempts=3, max_queued=10**6)
    # One renderer with room for every job: the claim places each job on it, as the
    # dispatcher's in-house claims do.
    fleet = Fleet(client, eject_after=1)
    await fleet.seed([RendererEndpoint("127.0.0.1:1", 10**6)])
    spillover = Spillover(
        client, PolicyConfig(), inhouse_pool="inhouse", spill_pool=None, fleet=fleet
    )
    sent: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def dispatcher() -> None:
        while len(latencies) < jobs:
            wanted = 1
            if decide:
                plan, _ = await spillover.decide(None, False)
                wanted = plan.count(Target.INHOUSE)
            claimed = 0
            for _ in range(wanted):
                job = await store.claim("bench", "inhouse", 30, cap=-1)
                if job is None:
                    break
                latencies.append(time.perf_counter() - sent[job.id])
                claimed += 1
            if not claimed:
                await store.wait_for_work(5)
        done.set()

    task = asyncio.create_task(dispatcher())
    for _ in range(jobs):
        t0 = time.perf_counter()
        submitted = await store.submit("t", SPEC)
        sent[submitted.job.id] = t0
        await asyncio.sleep(0.0005)
    await done.wait()
    await task
    return latencies


async def baseline(client: redis.Redis, jobs: int) -> list[float]:
    sent: dict[str, float] = {}
    latencies: list[float] = []

    async def consumer() -> None:
        while len(latencies) < jobs:
            _, item = await client.blpop(["q"], timeout=5)  # type: ignore[misc]
            latencies.append(time.perf_counter() - sent[item])

    task = asyncio.create_task(consumer())
    for i in range(jobs):
        sent[str(i)] = time.perf_counter()
        await client.lpush("q", str(i))  # type: ignore[misc]
        await asyncio.sleep(0.0005)
    await task
    return latencies


def quantiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return pick(0.5), pick(0.99), sum(ordered) / len(ordered) * 1000


async def main(jobs: int, port: int) -> None:
    client = redis.Redis(port=port, decode_responses=True)
    results = {}
    for name, run in (
        ("redis LPUSH/BLPOP", baseline),
        ("spillway submit->claim", spillway),
        ("+ spillover decision", spillway_with_policy),
    ):
        await client.flushall()
        await run(client, 200)  # warm-up: script cache, connections
        await client.flushall()
        results[name] = quantiles(await run(client, jobs))
    await client.aclose()
    base_p50, base_p99, _ = results["redis LPUSH/BLPOP"]
    print(f"{'path':<26}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'p50 x':>8}{'p99 x':>8}")
    for name, (p50, p99, mean) in results.items():
        print(
            f"{name:<26}{p50:9.3f}{p99:9.3f}{mean:9.3f}{p50 / base_p50:8.2f}{p99 / base_p99:8.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(port),
                "--dir",
                tmp,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.2)
            asyncio.run(main(args.jobs, port))
        finally:
            server.kill()
