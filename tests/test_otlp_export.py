"""Traces leave spillway's processes over OTLP: `spillway dev` run as a user runs it,
as a subprocess, exporting to a stand-in OTLP endpoint (`tests.otlp_receiver`)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, group_by_trace

REPO = Path(__file__).resolve().parent.parent
BURST = 3
JOBS = 1 + BURST  # the sample, then the burst
DEV_TIMEOUT_S = 240.0

# Settings that make a burst of 3 spill at once onto a 1-slot in-house fleet, and the
# demo drain back quickly. `spillway dev` lets the environment override its defaults.
SPILL_NOW = {
    "SPILLWAY_HIGH_WATERMARK": "1",
    "SPILLWAY_LOW_WATERMARK": "0",
    "SPILLWAY_ENTER_DWELL_S": "0",
    "SPILLWAY_EXIT_DWELL_S": "0.5",
    "SPILLWAY_MIN_MODE_S": "0.5",
    "SPILLWAY_SPILL_SCALEDOWN_S": "1",
    "SPILLWAY_BURST_COLD_START_S": "0.3",
    "SPILLWAY_EST_COLD_START_S": "0.1",
    "SPILLWAY_EST_SPILL_RENDER_S": "0.1",
    "SPILLWAY_EST_INHOUSE_RENDER_S": "2",
    "SPILLWAY_AUTOSCALE_INTERVAL_S": "0.5",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def dev_env(endpoint: str) -> dict[str, str]:
    """This process's environment without OTEL_*, SPILLWAY_*, REDIS_URL or proxies,
    plus plain-gRPC OTLP export to `endpoint` and SPILL_NOW."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "SPILLWAY_"))
        and k != "REDIS_URL"
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy")
    }
    env.update(SPILL_NOW)
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            # gRPC reads the lowercase form; its own override goes first.
            "no_grpc_proxy": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    return env


def run_dev(argv: Sequence[str], env: dict[str, str]) -> tuple[int, str]:
    """Runs `spillway dev` to its end; on the deadline, interrupts it (so that it stops
    its children in order), then kills it. Returns its status and output."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=DEV_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        output += f"\n[killed after {DEV_TIMEOUT_S} s]"
    return proc.returncode, output


def job_ids(spans: Sequence[ReceivedSpan]) -> list[str]:
    return sorted({str(s.attr("spillway.job_id")) for s in spans if s.name == "submit"})


def children(trace: Sequence[ReceivedSpan], parent: ReceivedSpan, name: str) -> list[ReceivedSpan]:
    return [s for s in trace if s.parent_id == parent.span_id and s.name == name]


def job_problems(job_id: str, spans: Sequence[ReceivedSpan]) -> Iterator[str]:
    """What the job's trace lacks: one submit with queue_wait and dispatch below it, and
    a completed dispatch with render (continued in a renderer process) and upload."""
    # The gateway's later reads of the video (status, events, content) are requests of
    # their own, in traces of their own; they carry the job id too, to be found by it.
    mine = [
        s
        for s in spans
        if s.attr("spillway.job_id") == job_id and not s.name.startswith(("GET ", "DELETE "))
    ]
    if len({s.trace_id for s in mine}) != 1:
        yield f"{job_id}: its spans are in {len({s.trace_id for s in mine})} traces"
        return
    trace = group_by_trace(spans)[mine[0].trace_id]
    submits = [s for s in mine if s.name == "submit"]
    if len(submits) != 1:
        yield f"{job_id}: {len(submits)} submit spans"
        return
    [submit] = submits
    if not children(trace, submit, "queue_wait"):
        yield f"{job_id}: no queue_wait under submit"
    completed = [
        d for d in children(trace, submit, "dispatch") if d.attr("spillway.outcome") == "completed"
    ]
    if len(completed) != 1:
        yield f"{job_id}: {len(completed)} completed dispatch spans under submit"
        return
    [dispatch] = completed
    if not children(trace, dispatch, "upload"):
        yield f"{job_id}: no upload under dispatch"
    renders = children(trace, dispatch, "render")
    if len(renders) != 1:
        yield f"{job_id}: {len(renders)} render spans under dispatch"
        return
    remote = children(trace, renders[0], "renderer.render")
    if len(remote) != 1:
        yield f"{job_id}: {len(remote)} renderer.render spans under render"
    elif remote[0].service == submit.service or remote[0].attr("spillway.job_id") != job_id:
        yield f"{job_id}: renderer.render is not the renderer process's span for this job"


def problems(spans: Sequence[ReceivedSpan]) -> list[str]:
    """Everything still missing from the export, as sentences; empty once it is whole."""
    ids = job_ids(spans)
    found = [] if len(ids) == JOBS else [f"{len(ids)} jobs have a submit span, not {JOBS}"]
    return found + [p for job_id in ids for p in job_problems(job_id, spans)]


def out_of_time(spans: Sequence[ReceivedSpan]) -> list[str]:
    """The spans that lie outside their parent in time (render and upload in dispatch,
    renderer.render in render), and the cold_starts that begin before their dispatch or
    after its render; with 2 ms of slack, since a dispatch starts on a whole ms."""
    slack = 2_000_000
    by_id = {s.span_id: s for s in spans}
    found = []
    for span in spans:
        parent = by_id.get(span.parent_id)
        if parent is None or parent.trace_id != span.trace_id:
            continue
        early = span.start_ns < parent.start_ns - slack
        if span.name in ("render", "upload", "renderer.render"):
            if early or span.end_ns > parent.end_ns + slack:
                found.append(f"{span.name} {span.span_id} is outside its {parent.name}")
        elif span.name == "cold_start":
            renders = children(spans, parent, "render")
            if early or any(r.start_ns < span.start_ns for r in renders):
                found.append(f"cold_start {span.span_id} is not where its dispatch begins")
    return found


def spilled_with_cold_start(spans: Sequence[ReceivedSpan]) -> list[ReceivedSpan]:
    """The dispatch spans on the burst pool that have a cold_start child."""
    return [
        d
        for d in spans
        if d.name == "dispatch"
        and d.attr("spillway.pool") == "burst"
        and any(c.parent_id == d.span_id and c.name == "cold_start" for c in spans)
    ]


@dataclass(frozen=True)
class Export:
    """What one `spillway dev` run printed and exported."""

    status: int
    output: str
    spans: list[ReceivedSpan]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Export:
    """Runs `spillway dev --once` (a sample, then a burst of 3 onto 1 in-house slot)
    with an OTLP endpoint, once for this module; the spans are those received by the
    time its export is whole, or by a deadline."""
    argv = [
        "dev",
        "--once",
        "--metrics-port",
        "0",
        "--port",
        str(free_port()),
        "--burst",
        str(BURST),
        "--inhouse-slots",
        "1",
        "--seconds",
        "4",
        "--output",
        str(tmp_path_factory.mktemp("dev") / "sample.mp4"),
    ]
    with OtlpReceiver() as receiver:
        status, output = run_dev(argv, dev_env(receiver.endpoint))
        # Each process flushes its spans before it exits, so this rarely waits.
        with contextlib.suppress(TimeoutError):
            receiver.wait_until(lambda s: not problems(s), timeout_s=15)
        return Export(status, output, receiver.spans())


@pytest.mark.timeout(DEV_TIMEOUT_S + 60)
def test_dev_stack_exports_one_complete_trace_per_job_over_otlp(exported: Export) -> None:
    """`spillway dev --once` with an OTLP endpoint exits 0 having exported one trace per
    job, from the scheduler and the renderer processes, with every parent in its trace,
    every span under a dispatch within it in time, and a spilled job's cold start under
    its burst dispatch."""
    print(exported.output)  # pytest shows it when the test fails
    assert exported.status == 0, f"spillway dev exited with {exported.status}"
    assert problems(exported.spans) == []
    traces = group_by_trace(exported.spans)
    assert len({s.trace_id for s in exported.spans if s.name == "submit"}) == JOBS
    for trace_id, trace in traces.items():
        ids = {s.span_id for s in trace}
        roots = [s.name for s in trace if not s.parent_id]
        orphans = [s.name for s in trace if s.parent_id and s.parent_id not in ids]
        assert len(roots) == 1 and not orphans, f"trace {trace_id}: roots {roots}, {orphans=}"
    assert out_of_time(exported.spans) == []
    assert spilled_with_cold_start(exported.spans), "a job spilled to a cold burst container"
