"""What tracing costs on the end-to-end path: the same workload with tracing off, with
spillway's default SDK setup, and with OTLP export, side by side.

    .venv/bin/python tools/bench_tracing.py [--jobs 40] [--rounds 3] [--fps 2]

OpenTelemetry allows one tracer provider per process, so each mode runs in its own
child process (this script, with `--child MODE`):

    off    no SDK installed: the API's no-op tracer (no ids, nothing recorded)
    sdk    spillway's default: `setup_tracing` with `OTEL_TRACES_EXPORTER=none`, so spans
           get ids and context flows, but nothing is batched or sent
    otlp   `setup_tracing` with an OTLP endpoint: the batch processor exports over gRPC
           to a stand-in receiver (`tests.otlp_receiver`) that lives in this driver
           process, so decoding what arrives is not charged to the child

Each child starts its own `redis-server` and S3 server (moto) on free ports, runs an
in-house renderer and a scheduler in-process (the renderer at a low frame rate, so that
the render does not drown the control plane), then submits jobs over gRPC one at a
time and follows each with WatchJob to its `completed` event. The first jobs warm up
connections, scripts and the renderer, and are not counted. The modes take turns, for
`--rounds` rounds, and each mode's rounds are pooled: the submit-to-completed latency
(p50, p99), the process CPU time per job (`time.process_time()`, every thread of the
child: client, scheduler, renderer, exporter; not Redis or moto) with its range over
the rounds, and, for otlp, the spans per job the receiver got.

The last columns are a microbenchmark: the CPU cost of one job's spans alone (submit,
queue_wait, dispatch, cold_start, render, renderer.render, upload, with their
attributes and the W3C inject/extract between them), under the same provider; in the
otlp mode that includes flushing them through the exporter.

Nothing is asserted: the numbers are printed as measured, with ratios to `off`. On a
shared machine a few percent either way is noise; run it twice before reading much
into a small difference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MODES = ("off", "sdk", "otlp")
BUCKET = "spillway-bench"
API_KEY = "sk-bench-0001"
MICRO_SCOPE = "spillway.bench.micro"
MICRO_CHUNK = 200
"""Job traces per flush in the microbenchmark: 1,400 spans, under the batch
processor's default queue of 2,048, so none are dropped."""
_DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class ChildResult:
    """What one mode's child measured, sent to the driver as one JSON line."""

    mode: str
    jobs: int
    latencies_ms: list[float]
    cpu_s: float
    micro_traces: int
    micro_cpu_s: float


# --- the child: one mode, one process ---------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on port {port} within 30 s") from None
            time.sleep(0.02)


@contextmanager
def server_process(argv: Sequence[str], port: int, what: str) -> Iterator[None]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, what)
        yield
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run the README's setup")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp)]
    with server_process([*argv, "--save", "", "--appendonly", "no"], port, "redis-server"):
        yield f"redis://127.0.0.1:{port}/0"


@contextmanager
def s3_server() -> Iterator[str]:
    import boto3

    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with server_process(argv, port, "moto"):
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint


async def run_jobs(address: str, jobs: int) -> list[float]:
    """Submits `jobs` jobs one at a time, each followed to its completed event; returns
    each one's latency in ms."""
    import grpc
    from spillway.v1 import scheduler_pb2 as pb
    from spillway.v1 import scheduler_pb2_grpc

    auth = (("authorization", f"Bearer {API_KEY}"),)
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        for i in range(jobs):
            started = time.perf_counter()
            request = pb.SubmitRenderRequest(prompt=f"bench job {i}", seconds=4, size="720x1280")
            job = (await stub.SubmitRender(request, metadata=auth)).job
            last = None
            async for response in stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=auth):
                last = response.event
                if last.terminal:
                    break
            if last is None or last.type != "completed":
                raise RuntimeError(f"job {job.id} ended as {last}")
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def end_to_end(
    redis_url: str, s3_endpoint: str, tmp: Path, *, jobs: int, warmup: int, fps: int
) -> tuple[list[float], float]:
    """The measured jobs' latencies, and the process CPU seconds they took."""
    from renderer.server import start_renderer_server
    from scheduler.config import SchedulerConfig
    from scheduler.server import SchedulerServer

    renderer = await start_renderer_server(slots=2, fps=fps, preset="ultrafast", work_dir=tmp)
    config = SchedulerConfig.from_env(
        {
            "REDIS_URL": redis_url,
            "SPILLWAY_SCHEDULER_LISTEN": "127.0.0.1:0",
            "SPILLWAY_API_KEYS": f"{API_KEY}=bench",
            "SPILLWAY_INHOUSE_RENDERERS": f"{renderer.address}=2",
            "SPILLWAY_S3_BUCKET": BUCKET,
            "SPILLWAY_S3_ENDPOINT_URL": s3_endpoint,
            "SPILLWAY_SPILL_POOL": "none",
            "SPILLWAY_SHUTDOWN_GRACE_S": "2",
        }
    )
    scheduler = SchedulerServer(config, tmp_dir=tmp)
    await scheduler.start()
    try:
        await run_jobs(scheduler.address, warmup)
        cpu = time.process_time()
        latencies = await run_jobs(scheduler.address, jobs)
        cpu = time.process_time() - cpu
    finally:
        await scheduler.stop()
        await renderer.stop(0)
    return latencies, cpu


def job_spans(job_id: str) -> None:
    """The spans one job makes, shaped as the scheduler and renderer make them (names,
    nesting, attributes, the W3C context stored at submit and sent to the renderer)."""
    from opentelemetry import trace

    from renderer import tracing as renderer_tracing
    from scheduler.telemetry import tracing

    tracer = trace.get_tracer(MICRO_SCOPE)
    now = time.time_ns()
    with tracer.start_as_current_span(
        "submit",
        attributes={
            "spillway.job_id": job_id,
            "spillway.created": True,
            "spillway.model": "sora-2",
            "spillway.seconds": 4,
            "spillway.size": "720x1280",
            "spillway.priority": 5,
        },
    ):
        stored = tracing.carrier()
    parent = tracing.extract(stored)
    tracer.start_span(
        "queue_wait",
        context=parent,
        start_time=now,
        attributes={"spillway.job_id": job_id, "spillway.attempt": 1},
    ).end(end_time=now + 1_000_000)
    dispatch = tracer.start_span(
        "dispatch",
        context=parent,
        attributes={
            "spillway.job_id": job_id,
            "spillway.pool": "burst",
            "spillway.spilled": True,
            "spillway.mode": "spill",
            "spillway.reason": "modal_faster",
            "spillway.attempt": 1,
            "spillway.replica": "bench",
        },
    )
    with trace.use_span(dispatch, end_on_exit=True):
        with tracer.start_as_current_span("render", attributes={"spillway.pool": "burst"}) as r:
            metadata = tracing.metadata()
            with tracer.start_as_current_span(
                "renderer.render",
                context=renderer_tracing.extract(metadata),
                kind=trace.SpanKind.SERVER,
                attributes={"spillway.job_id": job_id},
            ) as remote:
                remote.set_attributes(
                    {
                        "spillway.container_id": "bench",
                        "spillway.cold_start": True,
                        "spillway.engine": "cpu",
                        "spillway.frames": 8,
                        "spillway.fps": 2,
                        "spillway.width": 720,
                        "spillway.height": 1280,
                    }
                )
                remote.set_attributes(
                    {
                        "spillway.render_seconds": 0.2,
                        "spillway.bytes": 40_000,
                        "spillway.generate_seconds": 0.01,
                        "spillway.encode_seconds": 0.19,
                    }
                )
            r.set_attributes(
                {
                    "spillway.engine": "cpu",
                    "spillway.frames": 8,
                    "spillway.container_id": "bench",
                    "spillway.cold_start": True,
                    "spillway.render_seconds": 0.2,
                    "spillway.bytes": 40_000,
                }
            )
        tracer.start_span(
            "cold_start",
            start_time=now,
            attributes={
                "spillway.pool": "burst",
                "spillway.container_id": "bench",
                "spillway.boot_seconds": 1.2,
                "spillway.restore_seconds": 0.0,
            },
        ).end(end_time=now + 1_200_000_000)
        with tracer.start_as_current_span(
            "upload", attributes={"spillway.bucket": BUCKET, "spillway.key": f"{job_id}.mp4"}
        ) as upload:
            upload.set_attributes({"spillway.bytes": 40_000, "spillway.parts": 1})
        dispatch.set_attribute("spillway.outcome", "completed")


def micro(traces: int) -> float:
    """CPU seconds to make `traces` jobs' spans, flushed through the exporter if any."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    flush = provider.force_flush if isinstance(provider, TracerProvider) else None
    started = time.process_time()
    for i in range(traces):
        job_spans(f"video_bench{i:08d}")
        if flush is not None and (i + 1) % MICRO_CHUNK == 0:
            flush()
    if flush is not None:
        flush()
    return time.process_time() - started


def child(mode: str, jobs: int, warmup: int, fps: int, micro_traces: int) -> ChildResult:
    from renderer.telemetry import setup_tracing

    shutdown = None if mode == "off" else setup_tracing("spillway-bench")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp_name:
            tmp = Path(tmp_name)
            with redis_server(tmp) as redis_url, s3_server() as s3_endpoint:
                latencies, cpu_s = asyncio.run(
                    end_to_end(redis_url, s3_endpoint, tmp, jobs=jobs, warmup=warmup, fps=fps)
                )
        micro_cpu_s = micro(micro_traces)
    finally:
        if shutdown is not None:
            shutdown()
    return ChildResult(mode, jobs, latencies, cpu_s, micro_traces, micro_cpu_s)


# --- the driver: three children, one table -----------------------------------------


def child_env(mode: str, endpoint: str) -> dict[str, str]:
    """This environment without OTEL_* or proxies, plus the mode's OTEL_* settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OTEL_")
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy")
    }
    env.update(_DUMMY_AWS)
    env.update({"no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"})
    if mode == "sdk":
        env["OTEL_TRACES_EXPORTER"] = "none"
    elif mode == "otlp":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        env["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
    return env


def run_child(mode: str, args: argparse.Namespace, endpoint: str) -> ChildResult:
    argv = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--jobs",
        str(args.jobs),
        "--warmup",
        str(args.warmup),
        "--fps",
        str(args.fps),
        "--micro",
        str(args.micro),
    ]
    done = subprocess.run(
        argv, env=child_env(mode, endpoint), stdout=subprocess.PIPE, text=True, check=True
    )
    fields: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return ChildResult(**fields)


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Totals:
    """One mode's children, pooled over the rounds."""

    latencies_ms: list[float]
    cpu_ms_per_job: list[float]
    cpu_s: float = 0.0
    jobs: int = 0
    micro_cpu_s: float = 0.0
    micro_traces: int = 0
    spans: int = 0
    micro_spans: int = 0

    def add(self, result: ChildResult, spans: int, micro_spans: int) -> None:
        self.latencies_ms += result.latencies_ms
        self.cpu_ms_per_job.append(result.cpu_s / result.jobs * 1000)
        self.cpu_s += result.cpu_s
        self.jobs += result.jobs
        self.micro_cpu_s += result.micro_cpu_s
        self.micro_traces += result.micro_traces
        self.spans += spans
        self.micro_spans += micro_spans

    def row(self) -> tuple[float, float, float, float]:
        """p50 and p99 latency (ms), CPU per job (ms), CPU per micro job trace (us)."""
        return (
            quantile(self.latencies_ms, 0.5),
            quantile(self.latencies_ms, 0.99),
            self.cpu_s / self.jobs * 1000,
            self.micro_cpu_s / max(self.micro_traces, 1) * 1e6,
        )


def drive(args: argparse.Namespace) -> None:
    # The receiver lives in tests/; this script runs with tools/ on sys.path.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.otlp_receiver import OtlpReceiver

    totals = {mode: Totals([], []) for mode in args.modes}
    with OtlpReceiver() as receiver:
        # Rounds interleave the modes, so that drift in the machine's load spreads
        # over all of them rather than landing on one.
        for round_ in range(1, args.rounds + 1):
            for mode in args.modes:
                print(f"round {round_}/{args.rounds}: {mode} ...", file=sys.stderr, flush=True)
                receiver.clear()
                result = run_child(mode, args, receiver.endpoint)
                spans = receiver.spans()
                micro_spans = sum(s.scope == MICRO_SCOPE for s in spans)
                totals[mode].add(result, len(spans) - micro_spans, micro_spans)
    print_table(totals, args)


def print_table(totals: dict[str, Totals], args: argparse.Namespace) -> None:
    base = totals["off"].row() if "off" in totals else None
    print(
        f"\n{args.rounds} rounds x {args.jobs} jobs per mode (each round after "
        f"{args.warmup} warm-up jobs), one at a time, 4 s 720x1280 at {args.fps} fps; "
        f"micro: {args.micro} job traces of 7 spans per round. x: ratio to off.\n"
    )
    print(
        f"{'mode':<6}{'p50 ms':>9}{'x':>6}{'p99 ms':>9}{'x':>6}"
        f"{'CPU ms/job':>12}{'(rounds)':>15}{'x':>6}{'spans/job':>11}"
        f"{'micro us/job':>14}{'x':>7}"
    )
    for mode, total in totals.items():
        row = total.row()
        p50, p99, cpu_ms, micro_us = row
        x = ["-"] * 4 if base is None else [f"{v / b:.2f}" for v, b in zip(row, base, strict=True)]
        spread = f"{min(total.cpu_ms_per_job):.1f}-{max(total.cpu_ms_per_job):.1f}"
        received = total.spans / (total.jobs + args.warmup * args.rounds)
        per_job = f"{received:.1f}" if mode == "otlp" else "-"
        print(
            f"{mode:<6}{p50:9.1f}{x[0]:>6}{p99:9.1f}{x[1]:>6}"
            f"{cpu_ms:12.2f}{spread:>15}{x[2]:>6}{per_job:>11}{micro_us:14.1f}{x[3]:>7}"
        )
    if "otlp" in totals:
        otlp = totals["otlp"]
        print(
            f"\notlp: the receiver got {otlp.spans} spans from "
            f"{otlp.jobs + args.warmup * args.rounds} jobs, and {otlp.micro_spans} of "
            f"{otlp.micro_traces * 7} micro spans"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=40, help="measured jobs per mode")
    parser.add_argument("--warmup", type=int, default=3, help="uncounted jobs first")
    parser.add_argument("--fps", type=int, default=2, help="render frame rate (1-120)")
    parser.add_argument("--micro", type=int, default=2000, help="job traces in the micro run")
    parser.add_argument("--rounds", type=int, default=3, help="children per mode, interleaved")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = child(args.child, args.jobs, args.warmup, args.fps, args.micro)
        print(json.dumps(asdict(result)), flush=True)
    else:
        drive(args)


if __name__ == "__main__":
    main()
