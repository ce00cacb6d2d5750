"""The job as stored in Redis: ids, statuses, the submitted spec and events."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

_ID = re.compile(r"^video_[0-9a-f]{32}$")


_last_id = 0

_RANDOM_BLOCK = 4096
_random = b""
_random_at = 0


def random_bytes(n: int) -> bytes:
    """`n` bytes from the OS's CSPRNG, as unguessable as `os.urandom(n)`: read in
    blocks, because each `os.urandom` call releases the GIL around its getrandom, and
    on a loaded replica the event loop then waits (up to the switch interval) for an
    S3 or gRPC thread to hand the GIL back; a job id was one such call per submit."""
    global _random, _random_at
    if _random_at + n > len(_random):
        _random, _random_at = os.urandom(max(n, _RANDOM_BLOCK)), 0
    _random_at += n
    return _random[_random_at - n : _random_at]


def _forget_random() -> None:
    global _random, _random_at
    _random, _random_at = b"", 0


# A forked child must not hand out the ids its parent has already used.
os.register_at_fork(after_in_child=_forget_random)


def ordered_id(prefix: str) -> str:
    """A time-ordered id, like a monotonic ULID: 48 bits of milliseconds then 80 random
    bits, kept increasing within the process, so ids sort by creation time and a
    tenant's jobs (or webhook endpoints) page by id."""
    global _last_id
    ms = time.time_ns() // 1_000_000
    _last_id = max(ms << 80 | int.from_bytes(random_bytes(10)), _last_id + 1)
    return f"{prefix}{_last_id:032x}"


def new_job_id() -> str:
    return ordered_id("video_")


def is_job_id(value: str) -> bool:
    return bool(_ID.match(value))


class Status(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


class PriorityClass(StrEnum):
    """Which line a job waits in: every interactive job is served before any batch job."""

    INTERACTIVE = "interactive"
    """Someone waits for it: the default, and the wait the spillover policy bounds."""
    BATCH = "batch"
    """Renders on in-house slots interactive jobs leave free; never counts toward
    spilling and never spills unless an operator allows it; not shed by the queue
    timeout."""


@dataclass(frozen=True)
class JobSpec:
    """What a caller asked for, validated."""

    prompt: str
    model: str
    seconds: int
    width: int
    height: int
    priority: int
    """0-9 within the job's class and tenant, higher first."""
    priority_class: PriorityClass = PriorityClass.INTERACTIVE
    inhouse_only: bool = False
    """Never spilled (e.g. data that must stay on the in-house fleet)."""

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class Output:
    bucket: str
    key: str
    bytes: int
    sha256: str
    duration_s: float


@dataclass(frozen=True)
class Job:
    id: str
    tenant: str
    status: Status
    progress: int
    spec: JobSpec
    created_ms: int
    started_ms: int
    completed_ms: int
    expires_ms: int
    pool: str
    placement: str
    """Why the policy placed the last attempt on `pool` (a `Reason` value)."""
    attempt: int
    """Attempts charged against the job's limit."""
    lease: int
    """The fencing token: raised whenever a replica takes the job (a claim, or adopting a
    remote call), so that a replica that lost the job cannot overwrite the next one."""
    call_id: str
    """The remote call (a Modal FunctionCall id) rendering the job, once spawned."""
    error_code: str
    error_message: str
    idempotency_key: str
    trace_id: str
    output: Output | None
    trace_context: Mapping[str, str] = field(default_factory=dict)
    """W3C context (traceparent, tracestate) of the job's submit span: the parent of
    every span the job's dispatches make, on whichever replica."""
    queued_ms: int = 0
    """When the job last entered the queue (Redis server ms)."""
    endpoint: str = ""
    """The in-house renderer the claim placed the job on; empty elsewhere."""
    deadline_ms: int = 0
    """When the job, still queued, fails with `expired` (Redis server ms); 0: never."""
    render_started_ms: int = 0
    """When this attempt's render started on its fleet, as the pool reported it before
    the input reached a renderer (Redis server ms); 0: not yet (or not reported)."""

    @classmethod
    def from_hash(cls, h: Mapping[str, str]) -> Job:
        output = None
        if h.get("key"):
            output = Output(
                bucket=h["bucket"],
                key=h["key"],
                bytes=int(h["bytes"]),
                sha256=h["sha256"],
                duration_s=float(h["duration_s"]),
            )
        return cls(
            id=h["id"],
            tenant=h["tenant"],
            status=Status(h["status"]),
            progress=int(h.get("progress", 0)),
            spec=JobSpec(
                prompt=h["prompt"],
                model=h["model"],
                seconds=int(h["seconds"]),
                width=int(h["width"]),
                height=int(h["height"]),
                priority=int(h["priority"]),
                priority_class=PriorityClass(h.get("class") or PriorityClass.INTERACTIVE),
                inhouse_only=h.get("inhouse_only") == "1",
            ),
            created_ms=int(h["created_ms"]),
            started_ms=int(h.get("started_ms") or 0),
            completed_ms=int(h.get("completed_ms") or 0),
            expires_ms=int(h["expires_ms"]),
            pool=h.get("pool", ""),
            placement=h.get("placement", ""),
            attempt=int(h.get("attempt") or 0),
            lease=int(h.get("lease") or 0),
            call_id=h.get("call_id", ""),
            error_code=h.get("error_code", ""),
            error_message=h.get("error_message", ""),
            idempotency_key=h.get("idem", ""),
            trace_id=h.get("trace_id", ""),
            trace_context=json.loads(h.get("trace_ctx") or "{}"),
            queued_ms=int(h.get("queued_ms") or 0),
            endpoint=h.get("endpoint", ""),
            deadline_ms=int(h.get("deadline_ms") or 0),
            render_started_ms=int(h.get("render_started_ms") or 0),
            output=output,
        )


def initial_fields(
    job_id: str,
    tenant: str,
    spec: JobSpec,
    *,
    idempotency_key: str,
    trace_id: str,
    trace_context: Mapping[str, str],
    deadline_s: int = 0,
) -> dict[str, str]:
    """The fields a new job starts with; the submit script adds server timestamps (and
    turns `deadline_s` into `deadline_ms`)."""
    return {
        "id": job_id,
        "tenant": tenant,
        "status": Status.QUEUED.value,
        "progress": "0",
        "prompt": spec.prompt,
        "model": spec.model,
        "seconds": str(spec.seconds),
        "width": str(spec.width),
        "height": str(spec.height),
        "priority": str(spec.priority),
        "class": spec.priority_class.value,
        "inhouse_only": "1" if spec.inhouse_only else "0",
        "attempt": "0",
        "lease": "0",
        "call_id": "",
        "idem": idempotency_key,
        "trace_id": trace_id,
        "trace_ctx": json.dumps(dict(trace_context), separators=(",", ":")),
        "deadline_s": str(deadline_s),
    }


@dataclass(frozen=True)
class Event:
    """One entry of a job's event stream."""

    id: str
    job_id: str
    type: str
    status: Status
    progress: int
    time_ms: int
    pool: str
    reason: str
    error_code: str
    error_message: str

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @classmethod
    def decode(cls, job_id: str, event_id: str, data: str) -> Event:
        d = json.loads(data)
        return cls(
            id=event_id,
            job_id=job_id,
            type=d["type"],
            status=Status(d["status"]),
            progress=int(d["progress"]),
            time_ms=int(d["t"]),
            pool=d.get("pool", ""),
            reason=d.get("reason", ""),
            error_code=d.get("error_code", ""),
            error_message=d.get("error_message", ""),
        )


def stream_id_after(a: str, b: str) -> bool:
    """Whether Redis stream id `a` comes after `b`."""
    a_ms, _, a_seq = a.partition("-")
    b_ms, _, b_seq = b.partition("-")
    return (int(a_ms), int(a_seq or 0)) > (int(b_ms), int(b_seq or 0))
