"""Real processes on loopback for the fault suite, and the figures an operator checks.

Every process here is a child of the test process: its output goes to a log file under
the test's tmp dir, and every signal (SIGKILL, SIGSTOP, SIGCONT, the proxy's SIGUSR1/2)
goes to its own PID, never to a name, so the suite touches nothing it did not start.

The report reads Redis and S3 directly, as an operator would, rather than trusting the
scheduler's answers: a job is lost if Redis does not hold it as terminal, and an object
matches only if the bytes at the job's recorded bucket and key hash to its recorded
sha256 (read from moto itself, not through the proxy the scheduler uses).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
import redis.asyncio as aredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

from scheduler.store import keys
from tests.conftest import API_KEY, S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, S3Server, free_port

REPO = Path(__file__).resolve().parents[2]
"""The checkout under test: its renderer and scheduler run as `python -m` from here."""

AUTH = (("authorization", f"Bearer {API_KEY}"),)
TERMINAL = frozenset({"completed", "failed", "cancelled"})
READY_S = 30.0
"""How long a process may take to come up on a busy 2-core machine."""


async def eventually(
    check: Callable[[], Awaitable[bool] | bool],
    *,
    within: float,
    what: str,
    interval: float = 0.05,
) -> None:
    """Polls `check` until it returns true; fails the test with `what` at the deadline."""
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}")
        await asyncio.sleep(interval)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Process:
    """One child process; stdout and stderr append to `log` across restarts."""

    def __init__(
        self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = dict(env if env is not None else os.environ)
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._started_at_byte = 0
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self._popen is not None, f"{self.name} never started"
        return self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        self._close_log()
        self._log_file = self.log.open("ab")
        self.starts += 1
        self._log_file.write(f"---- {self.name}: start {self.starts}\n".encode())
        self._log_file.flush()
        self._started_at_byte = self._log_file.tell()
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=REPO,
        )

    def output(self) -> str:
        """What the process wrote since its latest start."""
        with self.log.open("rb") as f:
            f.seek(self._started_at_byte)
            return f.read().decode(errors="replace")

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def signal(self, signum: signal.Signals) -> None:
        assert self.running, f"{self.name} is not running"
        os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would; reaped before returning."""
        if self._popen is not None:
            if self._popen.poll() is None:
                self._popen.kill()
            self._popen.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def died(self) -> str | None:
        """Why the process is gone, with its output, if it exited."""
        if self._popen is None or self._popen.poll() is None:
            return None
        return f"{self.name} exited with {self._popen.returncode}:\n{self.tail()}"


class Service:
    """A process on a fixed loopback port, restartable on that same port."""

    def __init__(self, process: Process, port: int) -> None:
        self.process = process
        self.port = port

    @property
    def name(self) -> str:
        return self.process.name

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.process.start()
        await eventually(self._ready_or_dead, within=READY_S, what=f"{self.name} ready")

    async def _ready_or_dead(self) -> bool:
        if (why := self.process.died()) is not None:
            raise AssertionError(why)
        return await self.ready()

    async def ready(self) -> bool:
        return port_open(self.port)

    def kill(self) -> None:
        self.process.kill()


class RedisService(Service):
    """redis-server with AOF fsynced on every write, as production should run it: a
    kill -9 then loses nothing Redis acknowledged."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed: run the README's setup"
        port = free_port()
        data = tmp / "redis"
        data.mkdir()
        argv = [
            binary,
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)),
            *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
            *("--protected-mode", "no"),
        ]
        super().__init__(Process("redis", argv, tmp / "redis.log"), port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def ready(self) -> bool:
        client = aredis.Redis.from_url(self.url)
        try:
            # PING answers LOADING while the AOF is replayed.
            return bool(await client.ping())
        except aredis.RedisError:
            return False
        finally:
            await client.aclose()


class ProxyService(Service):
    """tests/faults/tcp_proxy.py in front of moto: the S3 endpoint schedulers use."""

    def __init__(self, tmp: Path, target_port: int, throttle_bps: int) -> None:
        argv = [sys.executable, str(Path(__file__).with_name("tcp_proxy.py"))]
        argv += [str(port := free_port()), str(target_port), f"--throttle-bps={throttle_bps}"]
        super().__init__(Process("s3-proxy", argv, tmp / "s3-proxy.log"), port)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    async def refuse(self) -> None:
        self.process.signal(signal.SIGUSR1)
        await eventually(lambda: not port_open(self.port), within=5, what="S3 refusing")

    async def accept(self) -> None:
        self.process.signal(signal.SIGUSR2)
        await eventually(lambda: port_open(self.port), within=5, what="S3 accepting")


class RendererService(Service):
    """`python -m renderer serve`: ready once it prints that it listens. Its finished
    renders are span lines on its log (console exporter), one per job it served."""

    def __init__(self, tmp: Path, name: str, *, slots: int, fps: int) -> None:
        self.slots = slots
        port = free_port()
        work = tmp / name
        work.mkdir()
        argv = [sys.executable, "-m", "renderer", "serve", "--port", str(port)]
        argv += ["--slots", str(slots), "--fps", str(fps), "--preset", "ultrafast"]
        argv += ["--work-dir", str(work), "--grace-seconds", "0"]
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "PYTHONUNBUFFERED": "1"}
        super().__init__(Process(name, argv, tmp / f"{name}.log", env), port)

    @property
    def endpoint(self) -> str:
        """This renderer as an entry of SPILLWAY_INHOUSE_RENDERERS."""
        return f"{self.address}={self.slots}"

    async def ready(self) -> bool:
        return "renderer listening on" in self.process.output()

    def renders_served(self) -> list[str]:
        """Job ids of the renders this process (since its latest start) finished and sent."""
        served = []
        for line in self.process.output().splitlines():
            if " renderer.render " in line and "status=ERROR" not in line:
                for word in line.split():
                    if word.startswith("spillway.job_id="):
                        served.append(word.partition("=")[2])
        return served


class ReplicaService(Service):
    """`python -m scheduler scheduler`, configured by environment; ready once gRPC
    health says SERVING."""

    def __init__(self, tmp: Path, name: str, env: Mapping[str, str]) -> None:
        port = free_port()
        # Render files a killed replica leaves behind stay in the test's tmp dir.
        (scratch := tmp / f"{name}-tmp").mkdir()
        env = {
            **env,
            "SPILLWAY_SCHEDULER_LISTEN": f"127.0.0.1:{port}",
            "SPILLWAY_REPLICA_ID": name,
            "TMPDIR": str(scratch),
        }
        argv = [sys.executable, "-m", "scheduler", "scheduler"]
        super().__init__(Process(name, argv, tmp / f"{name}.log", env), port)

    async def ready(self) -> bool:
        if not port_open(self.port):
            return False
        async with grpc.aio.insecure_channel(self.address) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1
                )
            except grpc.aio.AioRpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def freeze(self) -> None:
        self.process.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.signal(signal.SIGCONT)


class Fleet:
    """Redis, S3 behind its proxy, renderers and scheduler replicas for one test."""

    def __init__(self, tmp: Path, s3: S3Server, *, s3_throttle_bps: int = 0) -> None:
        self.tmp = tmp
        self.s3 = s3
        self.redis = RedisService(tmp)
        moto_port = int(s3.endpoint_url.rpartition(":")[2])
        self.s3_proxy = ProxyService(tmp, moto_port, s3_throttle_bps)
        self.renderers: list[RendererService] = []
        self.replicas: list[ReplicaService] = []

    @property
    def services(self) -> list[Service]:
        return [self.redis, self.s3_proxy, *self.renderers, *self.replicas]

    async def start(self) -> None:
        await self.redis.start()
        await self.s3_proxy.start()

    async def start_renderers(self, count: int, *, slots: int, fps: int) -> list[RendererService]:
        started = []
        for _ in range(count):
            renderer = RendererService(
                self.tmp, f"renderer-{len(self.renderers)}", slots=slots, fps=fps
            )
            self.renderers.append(renderer)
            started.append(renderer)
        # Started together: each takes a few seconds of imports.
        await asyncio.gather(*(r.start() for r in started))
        return started

    def replica_env(self, endpoints: Iterable[str], **overrides: str) -> dict[str, str]:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "REDIS_URL": self.redis.url,
            "SPILLWAY_API_KEYS": f"{API_KEY}=acme",
            "SPILLWAY_INHOUSE_RENDERERS": ",".join(endpoints),
            "SPILLWAY_S3_BUCKET": self.s3.bucket,
            "SPILLWAY_S3_ENDPOINT_URL": self.s3_proxy.url,
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_DEFAULT_REGION": S3_REGION,
            "SPILLWAY_LEASE_S": "1.5",
            "SPILLWAY_SHUTDOWN_GRACE_S": "2",
            "SPILLWAY_METRICS_LISTEN": "",
            # Room for every event of a job retried many times: the report counts them.
            "SPILLWAY_EVENTS_MAXLEN": "100000",
            "OTEL_TRACES_EXPORTER": "none",
        }
        env.update(overrides)
        return env

    async def start_replicas(
        self, count: int, endpoints: Iterable[str] | None = None, **env: str
    ) -> list[ReplicaService]:
        if endpoints is None:
            endpoints = [r.endpoint for r in self.renderers]
        environment = self.replica_env(endpoints, **env)
        started = []
        for _ in range(count):
            replica = ReplicaService(self.tmp, f"replica-{len(self.replicas)}", environment)
            self.replicas.append(replica)
            started.append(replica)
        await asyncio.gather(*(r.start() for r in started))
        return started

    def client(self) -> Client:
        """A client of every replica started so far."""
        return Client([r.address for r in self.replicas], self.redis.url, self.s3)

    def close(self) -> None:
        # The test is over: nothing needs a graceful stop, and SIGKILL ends a frozen one.
        for service in reversed(self.services):
            service.kill()

    def logs(self, lines: int = 25) -> str:
        return "\n\n".join(
            f"==== {s.name} (tail of {s.process.log})\n{s.process.tail(lines)}"
            for s in self.services
        )


@dataclass
class Submitted:
    ids: list[str] = field(default_factory=list)
    """Acknowledged jobs: the scheduler answered, so Redis must hold them."""
    errors: Counter[str] = field(default_factory=Counter)
    """Refused submits by gRPC status code."""


@dataclass
class Report:
    """What an operator checks after trouble, for a set of acknowledged jobs."""

    jobs: int
    lost: list[str]
    """Acknowledged, but missing from Redis or not terminal by the deadline."""
    failed: dict[str, str]
    """Job id -> `error_code: error_message`."""
    cancelled: list[str]
    duplicate_completions: dict[str, int]
    """Jobs with more than one `completed` event -> how many."""
    mismatched: dict[str, str]
    """Completed jobs whose object is missing or does not hash to the job's sha256."""
    dispatches: dict[str, int]
    """Job id -> `dispatched` events (1 = rendered once)."""
    requeues: Counter[str]
    """`requeued` events by error code, over all the jobs."""

    @property
    def re_renders(self) -> int:
        return sum(max(n - 1, 0) for n in self.dispatches.values())

    def line(self, name: str) -> str:
        failed_codes = Counter(why.partition(":")[0] for why in self.failed.values())
        figures = [
            f"{name}: {self.jobs} jobs, lost={len(self.lost)}",
            f"failed={len(self.failed)}" + (f" {dict(failed_codes)}" if failed_codes else ""),
            f"duplicate_completions={len(self.duplicate_completions)}",
            f"cancelled={len(self.cancelled)}",
            f"sha_mismatch={len(self.mismatched)}",
            f"re_renders={self.re_renders}",
            f"max_dispatches={max(self.dispatches.values(), default=0)}",
            f"requeued={dict(self.requeues)}",
        ]
        return " ".join(figures)

    def examples(self, limit: int = 3) -> str:
        """A few failures and mismatches, for an assertion message."""
        picks = [*self.failed.items()][:limit] + [*self.mismatched.items()][:limit]
        return "; ".join(f"{job}: {why}" for job, why in picks)


class Client:
    """Submits over gRPC, spread over replicas; judges the outcome from Redis and S3."""

    def __init__(self, addresses: Sequence[str], redis_url: str, s3: S3Server) -> None:
        self.addresses = list(addresses)
        self.redis_url = redis_url
        self.s3 = s3

    async def submit(
        self,
        count: int,
        *,
        prompt: str = "fault",
        seconds: int = 4,
        size: str = "720x1280",
        concurrency: int = 32,
    ) -> Submitted:
        submitted = Submitted()
        limit = asyncio.Semaphore(concurrency)
        channels = [grpc.aio.insecure_channel(a) for a in self.addresses]
        try:
            stubs = [scheduler_pb2_grpc.SchedulerStub(c) for c in channels]

            async def one(i: int) -> None:
                request = pb.SubmitRenderRequest(prompt=f"{prompt} {i}", seconds=seconds, size=size)
                async with limit:
                    try:
                        reply = await stubs[i % len(stubs)].SubmitRender(
                            request, metadata=AUTH, timeout=30
                        )
                    except grpc.aio.AioRpcError as exc:
                        submitted.errors[exc.code().name] += 1
                        return
                submitted.ids.append(reply.job.id)

            await asyncio.gather(*(one(i) for i in range(count)))
        finally:
            for channel in channels:
                await channel.close()
        return submitted

    async def statuses(self, ids: Sequence[str]) -> list[str | None]:
        async with aredis.Redis.from_url(self.redis_url, decode_responses=True) as r:
            pipe = r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hget(keys.job(job_id), "status")
            return list(await pipe.execute())

    async def wait_terminal(self, ids: Sequence[str], *, within: float) -> float:
        """Waits until every job is terminal or the deadline passes (the report then
        names the rest as lost); returns the seconds waited."""
        began = time.monotonic()
        while time.monotonic() - began < within:
            try:
                if all(s in TERMINAL for s in await self.statuses(ids)):
                    break
            except aredis.ConnectionError:
                pass  # Redis is restarting: the report will read it once it is back.
            await asyncio.sleep(0.5)
        return time.monotonic() - began

    async def report(self, ids: Sequence[str]) -> Report:
        async with aredis.Redis.from_url(self.redis_url, decode_responses=True) as r:
            pipe = r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(keys.job(job_id))
                pipe.xrange(keys.events(job_id))
            replies = await pipe.execute()
        report = Report(
            jobs=len(ids),
            lost=[],
            failed={},
            cancelled=[],
            duplicate_completions={},
            mismatched={},
            dispatches={},
            requeues=Counter(),
        )
        completed: dict[str, dict[str, str]] = {}
        for job_id, h, events in zip(ids, replies[::2], replies[1::2], strict=True):
            types: Counter[str] = Counter()
            for _, fields in events:
                event = json.loads(fields["d"])
                types[event["type"]] += 1
                if event["type"] == "requeued":
                    report.requeues[event.get("error_code", "")] += 1
            report.dispatches[job_id] = types["dispatched"]
            if types["completed"] > 1:
                report.duplicate_completions[job_id] = types["completed"]
            status = h.get("status")
            if status == "completed":
                completed[job_id] = h
            elif status == "failed":
                report.failed[job_id] = f"{h.get('error_code')}: {h.get('error_message')}"
            elif status == "cancelled":
                report.cancelled.append(job_id)
            else:
                report.lost.append(job_id)
        report.mismatched = await asyncio.to_thread(self._check_objects, completed)
        return report

    def _check_objects(self, completed: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
        client = self.s3.client()  # type: ignore[no-untyped-call]

        def check(item: tuple[str, Mapping[str, str]]) -> tuple[str, str | None]:
            job_id, h = item
            try:
                body = client.get_object(Bucket=h["bucket"], Key=h["key"])["Body"].read()
            except Exception as exc:
                return job_id, f"s3://{h.get('bucket')}/{h.get('key')}: {exc}"
            digest = hashlib.sha256(body).hexdigest()
            if digest != h.get("sha256") or str(len(body)) != h.get("bytes"):
                return job_id, (
                    f"object has {len(body)} bytes sha256 {digest[:12]}, job records"
                    f" {h.get('bytes')} bytes sha256 {h.get('sha256', '')[:12]}"
                )
            return job_id, None

        with ThreadPoolExecutor(8) as pool:
            return {j: why for j, why in pool.map(check, completed.items()) if why is not None}


@dataclass(frozen=True)
class InFlight:
    job_id: str
    owner: str
    progress: int


async def in_flight(redis_url: str, ids: Sequence[str]) -> list[InFlight]:
    """The jobs some replica holds now, with which replica and how far along (95 is
    uploading)."""
    async with aredis.Redis.from_url(redis_url, decode_responses=True) as r:
        pipe = r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id), ["status", "owner", "progress"])
        rows = await pipe.execute()
    return [
        InFlight(job_id, owner or "", int(progress or 0))
        for job_id, (status, owner, progress) in zip(ids, rows, strict=True)
        if status == "in_progress"
    ]


async def job_hash(redis_url: str, job_id: str) -> dict[str, str]:
    async with aredis.Redis.from_url(redis_url, decode_responses=True) as r:
        return {str(k): str(v) for k, v in (await r.hgetall(keys.job(job_id))).items()}
