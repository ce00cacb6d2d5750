"""Fixtures that start real servers: `redis-server` and an S3-compatible server (moto),
each on a free loopback port, once per test session and reset before every test."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import boto3
import grpc
import pytest
import redis
import redis.asyncio as aredis
import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.embedded import EmbeddedServer
from renderer.server import RendererServer, start_renderer_server
from scheduler.config import SchedulerConfig
from scheduler.pools.base import Pool
from scheduler.server import SchedulerServer

T = TypeVar("T")

# One tracer provider for the whole test process (OpenTelemetry allows one): every
# span any in-process service ends lands in SPANS, which each test starts empty.
SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_provider)

S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing"
S3_REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


async def assert_eventually(
    check: Callable[[], Awaitable[T]], *, within: float = 10.0, interval: float = 0.02
) -> T:
    """Re-run `check` until it stops raising AssertionError, or fail at the deadline."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(interval)


@dataclass
class RedisServer:
    """A `redis-server` child process that tests may kill and restart on the same port."""

    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run the README's setup")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(port=free_port(), dir=Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A flushed Redis for this test."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aredis.Redis]:
    client = aredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str = "spillway-test"

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=S3_REGION,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """A reset S3 server holding one empty bucket, with credentials in the environment."""
    request = urllib.request.Request(f"{s3_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
    for key, value in {
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": S3_REGION,
    }.items():
        monkeypatch.setenv(key, value)
    server = S3Server(endpoint_url=s3_server)
    server.client().create_bucket(Bucket=server.bucket)
    return server


@pytest.fixture(autouse=True)
def spans() -> InMemorySpanExporter:
    """The spans ended during this test (the exporter is cleared before each test)."""
    SPANS.clear()
    return SPANS


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loopback servers only: a proxy from the environment must not intercept them.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


API_KEY = "sk-test-acme-0001"
OTHER_API_KEY = "sk-test-globex-0002"
OPERATOR_KEY = "sk-test-operator-0003"
AUTH = (("authorization", f"Bearer {API_KEY}"),)
OTHER_AUTH = (("authorization", f"Bearer {OTHER_API_KEY}"),)
OPERATOR_AUTH = (("authorization", f"Bearer {OPERATOR_KEY}"),)


class Stack:
    """A renderer, scheduler replicas and a gateway on loopback, over the test's Redis
    and S3. Renders run at a low frame rate so that tests stay quick."""

    def __init__(self, redis_url: str, s3: S3Server, tmp: Path) -> None:
        self.redis_url = redis_url
        self.s3 = s3
        self.tmp = tmp
        self.renderers: list[RendererServer] = []
        self.schedulers: list[SchedulerServer] = []
        self._gateways: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start_renderer(self, *, slots: int = 2, fps: int = 8) -> RendererServer:
        renderer = await start_renderer_server(
            slots=slots, fps=fps, preset="ultrafast", work_dir=self.tmp
        )
        self.renderers.append(renderer)
        return renderer

    def scheduler_env(self, **overrides: str) -> dict[str, str]:
        env = {
            "REDIS_URL": self.redis_url,
            "SPILLWAY_SCHEDULER_LISTEN": "127.0.0.1:0",
            "SPILLWAY_API_KEYS": f"{API_KEY}=acme,{OTHER_API_KEY}=globex",
            "SPILLWAY_OPERATOR_KEYS": f"{OPERATOR_KEY}=ops",
            "SPILLWAY_INHOUSE_RENDERERS": ",".join(f"{r.address}=2" for r in self.renderers),
            "SPILLWAY_S3_BUCKET": self.s3.bucket,
            "SPILLWAY_S3_ENDPOINT_URL": self.s3.endpoint_url,
            "SPILLWAY_LEASE_S": "2",
            "SPILLWAY_SHUTDOWN_GRACE_S": "2",
            "SPILLWAY_METRICS_LISTEN": "127.0.0.1:0",
        }
        env.update(overrides)
        return env

    async def start_scheduler(self, spill: Pool | None = None, **overrides: str) -> SchedulerServer:
        server = SchedulerServer(
            SchedulerConfig.from_env(self.scheduler_env(**overrides)), spill=spill, tmp_dir=self.tmp
        )
        await server.start()
        self.schedulers.append(server)
        return server

    async def start_gateway(self, scheduler: SchedulerServer, **overrides: str) -> str:
        env = {"SPILLWAY_SCHEDULER_ADDR": scheduler.address, "SPILLWAY_POLL_AFTER_MS": "50"}
        env.update(overrides)
        port = free_port()
        server = EmbeddedServer(
            uvicorn.Config(
                create_app(GatewayConfig.from_env(env)),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="on",
            )
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        self._gateways.append((server, task))
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        for server, task in self._gateways:
            server.should_exit = True
            await task
        for scheduler in self.schedulers:
            await scheduler.stop()
        for renderer in self.renderers:
            await renderer.stop(0)


@pytest.fixture
async def stack(redis_url: str, s3: S3Server, tmp_path: Path) -> AsyncIterator[Stack]:
    stack = Stack(redis_url, s3, tmp_path)
    try:
        yield stack
    finally:
        await stack.close()


@pytest.fixture
async def scheduler_channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a scheduler whose in-house fleet is one renderer with two slots."""
    await stack.start_renderer()
    scheduler = await stack.start_scheduler()
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        yield channel


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """A webhook receiver (uvicorn, a real HTTP server) on a fixed loopback port: it
    records each request and answers `status`; `hold` keeps requests waiting (a receiver
    that hangs) until released. `stop()` and `start()` take it down and up again on the
    same port, which meanwhile refuses connections."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[Received] = []
        self.status = 200
        self.hold = False
        self.released = asyncio.Event()
        self._server: EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def _app(self, scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(headers, body))
        if self.hold:
            await self.released.wait()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def start(self) -> None:
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
        )
        self._server = EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.released.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """A webhook receiver, started; the test may stop and start it."""
    hooks = WebhookReceiver()
    await hooks.start()
    try:
        yield hooks
    finally:
        await hooks.stop()


async def run_spillway(*args: str, env: Mapping[str, str]) -> tuple[int, str, str]:
    """`python -m scheduler ARGS` with `env` over this process's environment: its exit
    code, stdout and stderr. A subprocess awaited, not run: the stack serves from this
    test's event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scheduler",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
