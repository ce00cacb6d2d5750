"""`make bench`: how lean the control plane is, with the bare baselines measured in the
same run, on this machine.

    .venv/bin/python tools/bench.py [--jobs 2000] [--json bench.json]

Starts its own redis-server, a null renderer (a tiny MP4 at once), a null S3 sink and
the bare baselines (`tools/bench_servers.py`), each a process of its own, and scheduler
replicas and a gateway as `python -m`, all on loopback. Prints a table (and JSON):

- end to end, one and two replicas: jobs/s and CPU ms per job (the replicas, and all
  processes), Redis commands per job (INFO commandstats, inside Lua included), and Redis
  round trips per job (commands sent by clients, counted with MONITOR in a shorter run);
- submit -> dispatch, open loop at 50 jobs/s on an idle fleet: from just before the
  gRPC submit to the null renderer receiving the Render call, against LPUSH -> BLPOP;
- the gateway's GET /v1/videos/{id} against a bare FastAPI handler doing one HGETALL;
- WatchJob fan-out to 2,000 watchers against a bare gRPC server-stream echo;
- uploads (MiB/s, peak RSS) of S3ObjectStore against raw boto3, to the null sink.

Nothing here asserts: the numbers are for reading side by side (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as aredis
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench-0001"
AUTH = (("authorization", f"Bearer {KEY}"),)
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) * TICK_S

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
    log = open(os.path.join(tempfile.gettempdir(), f"spillway-bench-{name}.log"), "wb")  # noqa: SIM115
    popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Proc(name, popen)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Stack:
    """Redis, the null renderer and S3 sink, and scheduler replicas, for one measurement."""

    tmp: Path
    replicas: int
    procs: list[Proc] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.redis_port = free_port()
        self.renderer_port = free_port()
        self.s3_port = free_port()
        self.arrivals = self.tmp / f"arrivals-{self.renderer_port}.log"
        py = sys.executable
        redis_dir = self.tmp / f"redis-{self.redis_port}"
        redis_dir.mkdir()
        self.redis = start(
            "redis",
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.redis_port),
                "--dir",
                str(redis_dir),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )
        servers = str(ROOT / "tools" / "bench_servers.py")
        self.renderer = start(
            "renderer", [py, servers, "renderer", str(self.renderer_port), str(self.arrivals)]
        )
        self.s3 = start("s3", [py, servers, "s3", str(self.s3_port)])
        self.procs += [self.redis, self.renderer, self.s3]
        for port in (self.redis_port, self.renderer_port, self.s3_port):
            wait_port(port)
        self.schedulers = []
        for i in range(self.replicas):
            port = free_port()
            env = {
                **os.environ,
                "REDIS_URL": self.redis_url,
                "SPILLWAY_SCHEDULER_LISTEN": f"127.0.0.1:{port}",
                "SPILLWAY_API_KEYS": f"{KEY}=bench",
                "SPILLWAY_INHOUSE_RENDERERS": f"127.0.0.1:{self.renderer_port}=64",
                "SPILLWAY_S3_BUCKET": "bench",
                "SPILLWAY_S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "SPILLWAY_METRICS_LISTEN": "",
                "SPILLWAY_REPLICA_ID": f"replica-{i}",
                "SPILLWAY_MAX_QUEUED": "100000",
                "SPILLWAY_LEASE_S": "600",
                "OTEL_TRACES_EXPORTER": "none",
            }
            proc = start(f"replica-{i}", [py, "-m", "scheduler", "scheduler"], env)
            self.procs.append(proc)
            self.schedulers.append(proc)
            self.addresses.append(f"127.0.0.1:{port}")
        for address in self.addresses:
            wait_port(int(address.rpartition(":")[2]))

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def arrivals_by_prompt(self) -> dict[str, float]:
        # The renderer writes as it goes; lines are whole once it was stopped or flushed.
        out = {}
        for line in self.arrivals.read_text().splitlines():
            prompt, _, at = line.partition(" ")
            out[prompt] = float(at)
        return out


@contextlib.contextmanager
def stack(tmp: Path, replicas: int) -> Iterator[Stack]:
    s = Stack(tmp, replicas)
    try:
        yield s
    finally:
        s.close()


async def commandstats(client: aredis.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def submit_all(addresses: list[str], prompts: list[str], in_flight: int) -> dict[str, float]:
    """Submits one job per prompt over gRPC, `in_flight` at a time, spread over the
    replicas; returns when each was sent (unix time)."""
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    stubs = [scheduler_pb2_grpc.SchedulerStub(c) for c in channels]
    limit = asyncio.Semaphore(in_flight)
    sent: dict[str, float] = {}

    async def one(i: int, prompt: str) -> None:
        async with limit:
            sent[prompt] = time.time()
            await stubs[i % len(stubs)].SubmitRender(
                pb.SubmitRenderRequest(prompt=prompt, seconds=4, size="720x1280"),
                metadata=AUTH,
                timeout=60,
            )

    await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    for channel in channels:
        await channel.close()
    return sent


async def drained(client: aredis.Redis) -> Counter[str]:
    """Until nothing is queued or running: every job submitted has ended. Returns the
    commands it sent, which are the bench's, not the control plane's."""
    sent: Counter[str] = Counter()
    while True:
        sent["zcard"] += 1
        if not await client.zcard("spw:queue"):
            sent["scard"] += 1
            if not await client.scard("spw:running:inhouse"):
                return sent
        await asyncio.sleep(0.05)


async def e2e(tmp: Path, replicas: int, jobs: int) -> dict[str, float]:
    with stack(tmp, replicas) as s:
        client = aredis.Redis.from_url(s.redis_url, decode_responses=True)
        await submit_all(s.addresses, [f"warm {i}" for i in range(50)], 50)
        await drained(client)
        before = await commandstats(client)
        cpu0 = {p.name: p.cpu_s() for p in s.procs}
        began = time.monotonic()
        await submit_all(s.addresses, [f"job {i}" for i in range(jobs)], 50)
        ours = await drained(client)
        elapsed = time.monotonic() - began
        cpu = {p.name: p.cpu_s() - cpu0[p.name] for p in s.procs}
        after = await commandstats(client)
        ours["info"] += 1
        async with client.pipeline(transaction=False) as pipe:
            for key in await client.keys("spw:job:*"):
                pipe.hget(key, "status")
            done = sum(status == "completed" for status in await pipe.execute())
        await client.aclose()
    # The bench's own calls (drain polls, INFO) are not the control plane's work.
    commands = sum(n - before.get(k, 0) - ours[k] for k, n in after.items())
    scheduler_cpu = sum(v for k, v in cpu.items() if k.startswith("replica"))
    return {
        "jobs": jobs,
        "completed": done - 50,
        "jobs_per_s": jobs / elapsed,
        "cpu_ms_per_job_schedulers": scheduler_cpu / jobs * 1000,
        "cpu_ms_per_job_all": sum(cpu.values()) / jobs * 1000,
        "cpu_ms_per_job_redis": cpu["redis"] / jobs * 1000,
        "redis_commands_per_job": commands / jobs,
    }


async def round_trips(tmp: Path, jobs: int) -> dict[str, float]:
    """Redis commands sent by clients per job (each one a round trip, or part of a
    pipelined one), from MONITOR: slower, so a run of its own."""
    with stack(tmp, 1) as s:
        client = aredis.Redis.from_url(s.redis_url, decode_responses=True)
        await submit_all(s.addresses, [f"warm {i}" for i in range(20)], 20)
        await drained(client)
        poller = aredis.Redis.from_url(
            s.redis_url, decode_responses=True, single_connection_client=True
        )
        own = (await poller.client_info())["addr"]
        reader, writer = await asyncio.open_connection("127.0.0.1", s.redis_port)
        writer.write(b"MONITOR\r\n")
        await reader.readline()
        lines: list[str] = []

        async def read() -> None:
            while line := await reader.readline():
                lines.append(line.decode(errors="replace"))

        task = asyncio.create_task(read())
        await submit_all(s.addresses, [f"job {i}" for i in range(jobs)], 50)
        await drained(poller)
        await asyncio.sleep(0.2)
        task.cancel()
        writer.close()
        await poller.aclose()
        await client.aclose()
    sent = [ln for ln in lines if "[0 lua]" not in ln and f" {own}]" not in ln]
    inside = [ln for ln in lines if "[0 lua]" in ln]
    return {
        "redis_round_trips_per_job": _round_trips(sent) / jobs,
        "redis_commands_sent_per_job": len(sent) / jobs,
        "redis_commands_in_lua_per_job": len(inside) / jobs,
    }


def _round_trips(monitored: list[str]) -> int:
    """Commands sent, with each pipeline counted once: Redis runs a pipeline's commands
    back to back, microseconds apart, while a client's next round trip comes at least a
    loopback round trip later."""
    trips, last_client, last_at = 0, "", 0.0
    for line in monitored:
        at, _, rest = line.partition(" ")
        client = rest.partition("]")[0]
        t = float(at)
        if client != last_client or t - last_at > 30e-6:
            trips += 1
        last_client, last_at = client, t
    return trips


async def open_loop(tmp: Path, jobs: int, rate: float) -> dict[str, float]:
    with stack(tmp, 1) as s:
        client = aredis.Redis.from_url(s.redis_url, decode_responses=True)
        await submit_all(s.addresses, [f"warm {i}" for i in range(20)], 1)
        await drained(client)
        channel = grpc.aio.insecure_channel(s.addresses[0])
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        sent: dict[str, float] = {}
        tasks: list[Any] = []
        began = time.monotonic()
        for i in range(jobs):
            await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
            prompt = f"open {i}"
            sent[prompt.replace(" ", "_")] = time.time()
            tasks.append(
                asyncio.ensure_future(
                    stub.SubmitRender(
                        pb.SubmitRenderRequest(prompt=prompt, seconds=4, size="720x1280"),
                        metadata=AUTH,
                        timeout=60,
                    )
                )
            )
        await asyncio.gather(*tasks)
        await drained(client)
        await channel.close()
        s.renderer.stop()
        arrived = s.arrivals_by_prompt()
        latencies = [arrived[p] - t for p, t in sent.items() if p in arrived]

        # The least a Redis queue can do, at the same rate, on the same server.
        base: list[float] = []
        consumer = aredis.Redis.from_url(s.redis_url, decode_responses=True)

        async def consume() -> None:
            while len(base) < jobs:
                _, item = await consumer.blpop(["bench:q"], timeout=10)  # type: ignore[misc]
                base.append(time.time() - float(item))

        task = asyncio.create_task(consume())
        began = time.monotonic()
        for i in range(jobs):
            await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
            await client.lpush("bench:q", repr(time.time()))  # type: ignore[misc]
        await task
        await consumer.aclose()
        await client.aclose()
    return {
        "dispatch_p50_ms": quantile(latencies, 0.5) * 1000,
        "dispatch_p99_ms": quantile(latencies, 0.99) * 1000,
        "dispatch_base_p50_ms": quantile(base, 0.5) * 1000,
        "dispatch_base_p99_ms": quantile(base, 0.99) * 1000,
    }


async def http_load(port: int, path: str, seconds: float, conns: int) -> dict[str, float]:
    """A lean keep-alive HTTP/1.1 client: `conns` connections, each one request at a
    time, for `seconds`. Cheap enough per request not to be what it measures."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    async def conn() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
        writer.close()

    began = time.monotonic()
    await asyncio.gather(*(conn() for _ in range(conns)))
    elapsed = time.monotonic() - began
    return {
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": quantile(latencies, 0.5) * 1000,
        "p99_ms": quantile(latencies, 0.99) * 1000,
    }


async def gateway(tmp: Path, seconds: float) -> dict[str, float]:
    with stack(tmp, 1) as s:
        client = aredis.Redis.from_url(s.redis_url, decode_responses=True)
        await submit_all(s.addresses, ["gateway 0"], 1)
        await drained(client)
        video = (await client.keys("spw:job:*"))[0].removeprefix("spw:job:")
        await client.aclose()
        gw_port, bare_port = free_port(), free_port()
        py = sys.executable
        env = {
            **os.environ,
            "SPILLWAY_SCHEDULER_ADDR": s.addresses[0],
            "OTEL_TRACES_EXPORTER": "none",
        }
        gw = start("gateway", [py, "-m", "gateway", "--port", str(gw_port)], env)
        bare = start(
            "bare-api",
            [py, str(ROOT / "tools" / "bench_servers.py"), "bare-api", str(bare_port), s.redis_url],
        )
        s.procs += [gw, bare]
        wait_port(gw_port)
        wait_port(bare_port)
        path = f"/v1/videos/{video}"
        results = {}
        for name, port in (("gateway", gw_port), ("bare", bare_port)):
            await http_load(port, path, 1.0, 8)  # warm-up
            results[name] = await http_load(port, path, seconds, 16)
    g, b = results["gateway"], results["bare"]
    return {
        "gateway_req_per_s": g["req_per_s"],
        "gateway_p99_ms": g["p99_ms"],
        "bare_req_per_s": b["req_per_s"],
        "bare_p99_ms": b["p99_ms"],
        "gateway_rps_ratio": g["req_per_s"] / b["req_per_s"],
        "gateway_p99_ratio": g["p99_ms"] / b["p99_ms"],
    }


async def _watchers(
    streams: list[AsyncIterator[Any]], rounds: int, decode: Any
) -> tuple[list[float], list[float], int]:
    """Reads every stream; returns per-message arrival times, their publish times, and
    failed streams."""
    arrivals: list[float] = []
    published: list[float] = []
    failed = 0

    async def read(stream: AsyncIterator[Any]) -> None:
        nonlocal failed
        got = 0
        try:
            async for message in stream:
                at = decode(message)
                if at is None:
                    continue
                arrivals.append(time.time())
                published.append(at)
                got += 1
                if got == rounds:
                    return
        except grpc.aio.AioRpcError:
            failed += 1

    await asyncio.gather(*(read(s) for s in streams))
    return arrivals, published, failed


async def watch_fanout(tmp: Path, watchers: int, rounds: int) -> dict[str, float]:
    from scheduler.dispatch.fleet import Fleet
    from scheduler.store import keys
    from scheduler.store.jobs import JobSpec
    from scheduler.store.jobstore import JobStore, load_script

    spec = JobSpec(prompt="w", model="sora-2", seconds=4, width=720, height=1280, priority=5)
    with stack(tmp, 1) as s:
        client = aredis.Redis.from_url(s.redis_url, decode_responses=True)
        store = JobStore(
            client, retention_s=3600, events_maxlen=64, max_attempts=3, max_queued=10**6
        )
        # Jobs the bench holds itself (leased to it, on a pool of its own): their events
        # come from here, at a known time.
        # The replica must not dispatch them: its only renderer is drained first.
        await Fleet(client, eject_after=1).edit("drain", f"127.0.0.1:{s.renderer_port}")
        jobs = []
        for _ in range(watchers):
            await store.submit("bench", spec)
        while len(jobs) < watchers:
            job = await store.claim("bench", "bench", 600, cap=10**6)
            assert job is not None
            jobs.append(job)
        channels = [grpc.aio.insecure_channel(s.addresses[0]) for _ in range(4)]
        stubs = [scheduler_pb2_grpc.SchedulerStub(c) for c in channels]
        streams = [
            stubs[i % 4].WatchJob(pb.WatchJobRequest(id=j.id), metadata=AUTH)
            for i, j in enumerate(jobs)
        ]
        stamps: dict[int, float] = {}

        def decode(response: Any) -> float | None:
            if response.event.type != "progress":
                return None
            return stamps[response.event.progress]

        reading = asyncio.create_task(_watchers(streams, rounds, decode))
        await asyncio.sleep(3)  # every watcher subscribed
        # Each round is one progress event per job, through the store's own script, sent
        # in one pipeline: the producer must not be what limits the rate.
        progress = client.register_script(load_script("progress"))
        cpu0 = s.schedulers[0].cpu_s()
        for r in range(rounds):
            stamps[10 + r] = time.time()
            async with client.pipeline(transaction=False) as pipe:
                for j in jobs:
                    await progress(
                        keys=[keys.job(j.id), keys.events(j.id)],
                        args=[keys.channel(j.id), 64, j.lease, "progress", 10 + r],
                        client=pipe,
                    )
                await pipe.execute()
        arrivals, published, failed = await asyncio.wait_for(reading, 120)
        cpu = s.schedulers[0].cpu_s() - cpu0
        for channel in channels:
            await channel.close()
        await client.aclose()
        ours = _rate(arrivals, published)

        echo_port = free_port()
        echo = start(
            "echo",
            [sys.executable, str(ROOT / "tools" / "bench_servers.py"), "echo", str(echo_port)],
        )
        s.procs.append(echo)
        wait_port(echo_port)
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") for _ in range(4)]
        streams = [channels[i % 4].unary_stream("/bench.Echo/Watch")(b"") for i in range(watchers)]
        reading = asyncio.create_task(
            _watchers(streams, rounds, lambda m: None if m == b"ping" else float(m.decode()))
        )
        publish = channels[0].unary_unary("/bench.Echo/Publish")
        # Unlike WatchJob's, the echo's streams have no backlog: wait until each is open
        # (a stream opened late would miss the first round).
        opened = 0
        for _ in range(60):
            await asyncio.sleep(1)
            if (opened := int(await publish(b"ping"))) >= watchers:
                break
        print(f"echo: {opened} of {watchers} streams open", file=sys.stderr)
        for _ in range(rounds):
            await publish(repr(time.time()).encode())
            await asyncio.sleep(0)
        b_arrivals, b_published, b_failed = await asyncio.wait_for(reading, 120)
        for channel in channels:
            await channel.close()
        base = _rate(b_arrivals, b_published)
    return {
        "watch_events_per_s": ours[0],
        "watch_p99_ms": ours[1],
        "watch_failed": failed,
        "watch_scheduler_cpu_ms_per_event": cpu / max(1, len(arrivals)) * 1000,
        "echo_events_per_s": base[0],
        "echo_p99_ms": base[1],
        "echo_failed": b_failed,
        "watch_rate_ratio": ours[0] / base[0],
    }


def _rate(arrivals: list[float], published: list[float]) -> tuple[float, float]:
    if not arrivals:
        return 0.0, 0.0
    span = max(arrivals) - min(published)
    delays = [a - p for a, p in zip(arrivals, published, strict=True)]
    return len(arrivals) / span, quantile(delays, 0.99) * 1000


UPLOAD_WORKER = """
import os, sys, time, asyncio, boto3
from pathlib import Path
kind, endpoint, path, count = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
size = path.stat().st_size
if kind == "ours":
    from scheduler.config import S3Config
    from scheduler.store.storage import S3ObjectStore
    async def run():
        store = await S3ObjectStore.connect(
            S3Config("bench", endpoint, None, "us-east-1", "v/", 8 << 20, 8 << 20, 60, 8, 0))
        t0 = time.perf_counter()
        for i in range(count):
            await store.put_file(path, f"v/{i}.mp4")
        took = time.perf_counter() - t0
        await store.close()
        return took
    took = asyncio.run(run())
else:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    t0 = time.perf_counter()
    for i in range(count):
        client.upload_file(str(path), "bench", f"b/{i}.mp4")
    took = time.perf_counter() - t0
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(size * count / took / 2**20, int(hwm.split()[1]) / 1024)
"""


def uploads(tmp: Path, mib: int, count: int) -> dict[str, float]:
    port = free_port()
    sink = start("s3", [sys.executable, str(ROOT / "tools" / "bench_servers.py"), "s3", str(port)])
    try:
        wait_port(port)
        path = tmp / "clip.mp4"
        path.write_bytes(os.urandom(mib << 20))
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
        out: dict[str, list[tuple[float, float]]] = {"ours": [], "boto3": []}
        for _ in range(2):
            for kind in out:
                result = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        UPLOAD_WORKER,
                        kind,
                        f"http://127.0.0.1:{port}",
                        str(path),
                        str(count),
                    ],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if result.returncode:
                    raise RuntimeError(f"upload worker failed: {result.stderr[-2000:]}")
                mibs, rss = map(float, result.stdout.split())
                out[kind].append((mibs, rss))
    finally:
        sink.stop()
    ours = max(m for m, _ in out["ours"]), min(r for _, r in out["ours"])
    base = max(m for m, _ in out["boto3"]), min(r for _, r in out["boto3"])
    return {
        "upload_mib_per_s": ours[0],
        "upload_rss_mib": ours[1],
        "boto3_mib_per_s": base[0],
        "boto3_rss_mib": base[1],
        "upload_rate_ratio": ours[0] / base[0],
        "upload_rss_extra_mib": ours[1] - base[1],
    }


TARGETS = [
    ("cpu_ms_per_job_all", "CPU per job, all processes (ms)", "<=", 3.0),
    ("redis_round_trips_per_job", "Redis round trips per job", "<=", 6.0),
    ("dispatch_p99_ms", "submit->dispatch p99, idle fleet (ms)", "<=", 5.0),
    ("gateway_rps_ratio", "gateway GET req/s vs bare", ">=", 0.75),
    ("gateway_p99_ratio", "gateway GET p99 vs bare", "<=", 1.5),
    ("watch_rate_ratio", "WatchJob events/s vs echo (2,000 watchers)", ">=", 0.5),
    ("upload_rate_ratio", "upload MiB/s vs boto3", ">=", 0.9),
    ("upload_rss_extra_mib", "upload peak RSS over boto3's (MiB)", "<=", 16.0),
]


def report(results: dict[str, dict[str, float]]) -> str:
    lines = []
    for section, values in results.items():
        lines.append(f"[{section}]")
        lines += [f"  {k:<38}{v:12.3f}" for k, v in values.items()]
    # The targets are per replica: the one-replica run's figures.
    flat = {
        k: v
        for section, values in results.items()
        if section != "e2e_2_replica"
        for k, v in values.items()
    }
    lines.append("[targets]")
    for key, label, op, bound in TARGETS:
        if key not in flat:
            continue
        value = flat[key]
        held = value <= bound if op == "<=" else value >= bound
        lines.append(f"  {label:<46}{value:9.2f} {op} {bound:<6} {'met' if held else 'MISSED'}")
    return "\n".join(lines)


SECTIONS = ("e2e", "round_trips", "open_loop", "gateway", "watch", "upload")


async def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    only = set(args.only or SECTIONS)
    with tempfile.TemporaryDirectory(prefix="spillway-bench-") as name:
        tmp = Path(name)
        if "e2e" in only:
            for replicas in (1, 2):
                print(f"end to end, {replicas} replica(s), {args.jobs} jobs...", file=sys.stderr)
                results[f"e2e_{replicas}_replica"] = await e2e(tmp, replicas, args.jobs)
        if "round_trips" in only:
            print("round trips (MONITOR)...", file=sys.stderr)
            results["round_trips"] = await round_trips(tmp, 200)
        if "open_loop" in only:
            print("submit -> dispatch, open loop at 50 jobs/s...", file=sys.stderr)
            results["open_loop"] = await open_loop(tmp, args.open_loop_jobs, 50.0)
        if "gateway" in only:
            print("gateway GET...", file=sys.stderr)
            results["gateway"] = await gateway(tmp, args.seconds)
        if "watch" in only:
            print(f"WatchJob fan-out, {args.watchers} watchers...", file=sys.stderr)
            results["watch"] = await watch_fanout(tmp, args.watchers, 5)
        if "upload" in only:
            print("uploads...", file=sys.stderr)
            results["upload"] = uploads(tmp, 64, 4)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--open-loop-jobs", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0, help="per HTTP load run")
    parser.add_argument("--watchers", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run this part (repeatable)"
    )
    args = parser.parse_args()
    results = asyncio.run(run(args))
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
