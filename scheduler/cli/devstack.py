"""`spillway dev`: the whole system on loopback, with real servers.

Starts a `redis-server` (unless REDIS_URL names one), an S3-compatible server (moto)
with its bucket, one in-house renderer process, the scheduler with the local burst pool
as its second fleet, and the REST gateway; then renders a sample video through the REST
API (and with `--burst N`, a burst that spills) and serves until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import boto3
import uvicorn

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.embedded import EmbeddedServer
from scheduler.cli.burst_demo import run_burst
from scheduler.cli.rest_client import RestClient, watch_with_bar
from scheduler.config import SchedulerConfig
from scheduler.server import SchedulerServer

BUCKET = "spillway-local"
TENANT = "local"
# moto accepts any credentials; boto3 only needs some to sign with.
_LOCAL_AWS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# Spillover settings scaled to a laptop and 4-second renders, so that a burst spills
# within seconds and the burst pool is back at zero soon after; webhooks to loopback.
# Any of them set in the environment wins.
DEV_SPILL_DEFAULTS = {
    "SPILLWAY_SPILL_POOL": "burst",
    "SPILLWAY_HIGH_WATERMARK": "4",
    "SPILLWAY_LOW_WATERMARK": "1",
    "SPILLWAY_ENTER_DWELL_S": "0.5",
    "SPILLWAY_EXIT_DWELL_S": "3",
    "SPILLWAY_MIN_MODE_S": "2",
    "SPILLWAY_SPILL_MAX_CONTAINERS": "3",
    "SPILLWAY_SPILL_BUFFER_CONTAINERS": "0",
    "SPILLWAY_SPILL_SCALEDOWN_S": "5",
    "SPILLWAY_BURST_COLD_START_S": "1.5",
    "SPILLWAY_EST_INHOUSE_RENDER_S": "2",
    "SPILLWAY_EST_SPILL_RENDER_S": "2",
    "SPILLWAY_EST_COLD_START_S": "1.5",
    "SPILLWAY_AUTOSCALE_INTERVAL_S": "2",
    "SPILLWAY_METER_INTERVAL_S": "1",
    # Webhook receivers on a laptop are plain http on loopback.
    "SPILLWAY_WEBHOOK_ALLOW_LOCAL": "1",
}


class StackError(RuntimeError):
    """The local stack could not start; the message says what to do."""


@dataclass(frozen=True)
class DevOptions:
    port: int
    metrics_port: int
    inhouse_slots: int
    burst: int
    demo: bool
    once: bool
    prompt: str
    seconds: int
    size: str
    output: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_for_port(port: int, proc: asyncio.subprocess.Process, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.returncode is not None:
            raise StackError(f"{what} exited with status {proc.returncode} while starting")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise StackError(f"{what} did not listen on port {port} within 30 s") from None
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return


@contextlib.asynccontextmanager
async def child(
    argv: Sequence[str], port: int, what: str, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A child process, up once it listens on `port`, terminated (then killed) on exit."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.DEVNULL,
        # Spans printed to the console (`--trace`) reach the terminal; otherwise quiet.
        stderr=None
        if os.environ.get("OTEL_TRACES_EXPORTER") == "console"
        else asyncio.subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
    )
    try:
        await wait_for_port(port, proc, what)
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@contextlib.asynccontextmanager
async def redis_server(tmp: Path) -> AsyncIterator[str]:
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError(
            "redis-server is not installed: `sudo apt-get install redis-server` "
            "(or set REDIS_URL to a Redis you run)"
        )
    port = free_port()
    # Append-only file on, so that a redis-server restarted within the stack comes back
    # with the queue and leases it had; its own directory keeps it apart from the pools'
    # scratch files in the same working dir.
    data = tmp / "redis"
    data.mkdir()
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
    ]
    async with child(argv, port, "redis-server"):
        yield f"redis://127.0.0.1:{port}/0"


@contextlib.asynccontextmanager
async def s3_server() -> AsyncIterator[str]:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise StackError("moto is not installed: pip install -e '.[dev]'") from None
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    async with child(argv, port, "the S3 server (moto)"):
        endpoint = f"http://127.0.0.1:{port}"

        def create_bucket() -> None:
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)

        await asyncio.to_thread(create_bucket)
        yield endpoint


def claim_port(port: int, option: str) -> socket.socket:
    """Binds the port before anything starts, so a port in use stops the stack at once
    with a clear message, rather than after Redis, S3 and the renderers are up."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise StackError(
            f"127.0.0.1:{port} is not free ({exc.strerror}); pass {option} with another port"
        ) from None
    return sock


@contextlib.asynccontextmanager
async def gateway(scheduler_address: str, sock: socket.socket) -> AsyncIterator[str]:
    config = GatewayConfig.from_env({**os.environ, "SPILLWAY_SCHEDULER_ADDR": scheduler_address})
    host, port = sock.getsockname()
    server = EmbeddedServer(
        uvicorn.Config(create_app(config), host=host, port=port, log_level="warning")
    )
    # Serving on our bound socket: uvicorn calls sys.exit when its own bind fails.
    task = asyncio.create_task(server.serve(sockets=[sock]), name="gateway")
    while not server.started:
        if task.done():
            task.result()
            raise StackError(f"the gateway stopped while starting on {host}:{port}")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def run(options: DevOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for key, value in _LOCAL_AWS.items():
        os.environ.setdefault(key, value)
    api_key = os.environ.get("SPILLWAY_API_KEY") or f"sk-local-{secrets.token_hex(12)}"
    say = functools.partial(print, flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spillway-dev-") as tmp_name:
        tmp = Path(tmp_name)
        async with contextlib.AsyncExitStack() as stack:
            gateway_sock = stack.enter_context(claim_port(options.port, "--port"))
            if options.metrics_port:
                # Checked now and released: the scheduler binds it itself.
                claim_port(options.metrics_port, "--metrics-port").close()
            redis_url = await stack.enter_async_context(redis_server(tmp))
            say(f"redis      {redis_url}")
            s3_endpoint = await stack.enter_async_context(s3_server())
            say(f"s3         {s3_endpoint}/{BUCKET} (moto)")
            renderer_port = free_port()
            await stack.enter_async_context(
                child(
                    [
                        sys.executable,
                        "-m",
                        "renderer",
                        "serve",
                        "--port",
                        str(renderer_port),
                        "--slots",
                        str(options.inhouse_slots),
                    ],
                    renderer_port,
                    "the in-house renderer",
                )
            )
            say(f"renderer   127.0.0.1:{renderer_port} ({options.inhouse_slots} slots, CPU)")
            config = SchedulerConfig.from_env(
                {
                    **DEV_SPILL_DEFAULTS,
                    **os.environ,
                    "REDIS_URL": redis_url,
                    "SPILLWAY_SCHEDULER_LISTEN": "127.0.0.1:0",
                    # The person running the stack operates it too: `spillway
                    # spillover` and `spillway keys` take this key.
                    "SPILLWAY_API_KEYS": "",
                    "SPILLWAY_OPERATOR_KEYS": f"{api_key}={TENANT}",
                    "SPILLWAY_INHOUSE_RENDERERS": (
                        f"127.0.0.1:{renderer_port}={options.inhouse_slots}"
                    ),
                    "SPILLWAY_S3_BUCKET": BUCKET,
                    "SPILLWAY_S3_ENDPOINT_URL": s3_endpoint,
                    "SPILLWAY_METRICS_LISTEN": f"127.0.0.1:{options.metrics_port}",
                }
            )
            scheduler = SchedulerServer(config, tmp_dir=tmp)
            await scheduler.start()
            stack.push_async_callback(scheduler.stop)
            say(f"scheduler  {scheduler.address} (gRPC: Scheduler, Webhooks, health, reflection)")
            policy = config.policy
            say(
                f"spillover  second fleet: {config.spill.kind.value} (up to "
                f"{policy.max_containers} x {policy.concurrency}); spills at "
                f"{policy.high_watermark} queued, returns at {policy.low_watermark}"
            )
            base = await stack.enter_async_context(gateway(scheduler.address, gateway_sock))
            say(f"gateway    {base}/v1   (OpenAPI: {base}/openapi.json)")
            say(
                f"metrics    http://127.0.0.1:{scheduler.metrics_port}/metrics (scheduler), "
                f"{base}/metrics (gateway)"
            )
            say(f"traces     {_tracing_destination()}")
            say(f"ready in {time.monotonic() - started:.1f} s\n")
            say(f"  export OPENAI_BASE_URL={base}/v1 SPILLWAY_BASE_URL={base}/v1")
            say(f"  export OPENAI_API_KEY={api_key} SPILLWAY_API_KEY={api_key}")
            say(f"  export SPILLWAY_SCHEDULER_ADDR={scheduler.address}   # spillway spillover\n")
            if options.demo:
                demo = asyncio.create_task(
                    _demo(f"{base}/v1", scheduler.address, api_key, options, say)
                )
                stopped = asyncio.create_task(stop.wait())
                await asyncio.wait({demo, stopped}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if not demo.done():
                    demo.cancel()
                    say("interrupted")
                    return 130
                if (status := demo.result()) != 0 or options.once:
                    return status
            say('serving; try `spillway submit "a cat on a skateboard" --watch -o cat.mp4`')
            say("Ctrl-C stops everything")
            await stop.wait()
            say("\nshutting down")
    return 0


def _tracing_destination() -> str:
    exporter = os.environ.get("OTEL_TRACES_EXPORTER")
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if exporter == "console":
        return "printed to stderr, one line per span"
    if exporter in (None, "", "otlp") and endpoint:
        return f"exported over OTLP to {endpoint}"
    return "not exported (set OTEL_EXPORTER_OTLP_ENDPOINT, or pass --trace to print them)"


async def _demo(
    base_url: str,
    scheduler_address: str,
    api_key: str,
    options: DevOptions,
    say: Callable[[str], None],
) -> int:
    if status := await _sample(base_url, api_key, options, say):
        return status
    if options.burst:
        return await run_burst(
            base_url,
            scheduler_address,
            api_key,
            jobs=options.burst,
            seconds=options.seconds,
            size=options.size,
            say=say,
        )
    return 0


async def _sample(
    base_url: str, api_key: str, options: DevOptions, say: Callable[[str], None]
) -> int:
    started = time.monotonic()
    async with RestClient(base_url, api_key) as client:
        video = await client.create(options.prompt, seconds=options.seconds, size=options.size)
        say(f"sample     POST /v1/videos -> {video['id']} ({video['status']})")
        last = await watch_with_bar(client, video["id"])
        if last.get("status") != "completed":
            say(f"sample     failed: {last.get('error')}")
            return 1
        size = await client.download(video["id"], options.output)
    elapsed = time.monotonic() - started
    say(
        f"sample     {options.seconds} s {options.size} MP4, {size} bytes, "
        f"end to end in {elapsed:.1f} s"
    )
    say(f"saved      {options.output.resolve()}\n")
    return 0
