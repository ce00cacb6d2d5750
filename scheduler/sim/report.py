"""A run's summary, as JSON lines or a table.

Per policy: `{"policy", "jobs", "completed", "shed", "timed_out", "spilled",
"latency_s": {"p50", "p95", "p99", "max"}, "modal_gpu_s", "modal_usd",
"mode_changes"}`. Latency is arrival to completion over the completed interactive jobs,
by nearest rank (null with none completed); a trace with batch jobs adds `"batch"` (how
many) and `"batch_latency_s"` (the same percentiles over them). `shed` counts arrivals
refused at the queue bound, `timed_out` jobs failed after the queue timeout, `spilled`
jobs sent to Modal. Floats are rounded to 3 decimals and keys sorted, so the same run
prints the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from scheduler.sim.engine import Outcome, Pool, RunResult

_PERCENTILES = (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))


def summarize(result: RunResult) -> dict[str, Any]:
    latencies = _latencies(result, batch=False)
    outcomes = [j.outcome for j in result.jobs]
    summary = {
        "policy": result.policy,
        "jobs": len(result.jobs),
        "completed": outcomes.count(Outcome.COMPLETED),
        "shed": outcomes.count(Outcome.SHED),
        "timed_out": outcomes.count(Outcome.TIMED_OUT),
        "spilled": sum(j.pool is Pool.MODAL for j in result.jobs),
        "latency_s": _percentiles(latencies),
        "modal_gpu_s": round(result.modal_gpu_ms / 1000, 3),
        "modal_usd": round(result.modal_usd, 3),
        "mode_changes": len(result.transitions),
    }
    if batch := sum(j.batch for j in result.jobs):
        summary["batch"] = batch
        summary["batch_latency_s"] = _percentiles(_latencies(result, batch=True))
    return summary


def _latencies(result: RunResult, *, batch: bool) -> list[int]:
    return sorted(
        j.latency_ms for j in result.jobs if j.latency_ms is not None and j.batch == batch
    )


def _percentiles(latencies: Sequence[int]) -> dict[str, float | None]:
    return {name: _seconds(nearest_rank(latencies, pct)) for name, pct in _PERCENTILES}


def nearest_rank(ordered: Sequence[int], percent: int) -> int | None:
    """The nearest-rank percentile of sorted values: the smallest value with at least
    `percent`% of them at or below it. Integer arithmetic, so no rounding surprises."""
    if not ordered:
        return None
    rank = max(1, -(-percent * len(ordered) // 100))
    return ordered[rank - 1]


def to_json_lines(summaries: Sequence[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(s, sort_keys=True) for s in summaries)


_COLUMNS = (
    ("policy", "<"),
    ("jobs", ">"),
    ("done", ">"),
    ("shed", ">"),
    ("t/o", ">"),
    ("spilled", ">"),
    ("p50 s", ">"),
    ("p95 s", ">"),
    ("p99 s", ">"),
    ("max s", ">"),
    ("modal gpu-s", ">"),
    ("modal $", ">"),
    ("modes", ">"),
)


def to_table(summaries: Sequence[dict[str, Any]]) -> str:
    """One row per policy; latencies are interactive jobs', and a trace with batch jobs
    adds their p99 as a last column."""
    batch = any("batch" in s for s in summaries)
    columns = (*_COLUMNS, ("batch p99 s", ">")) if batch else _COLUMNS
    rows = [[name for name, _ in columns]]
    for s in summaries:
        lat = s["latency_s"]
        extra = [_fixed(s["batch_latency_s"]["p99"], 1)] if batch else []
        rows.append(
            [
                s["policy"],
                str(s["jobs"]),
                str(s["completed"]),
                str(s["shed"]),
                str(s["timed_out"]),
                str(s["spilled"]),
                *(_fixed(lat[k], 1) for k in ("p50", "p95", "p99", "max")),
                _fixed(s["modal_gpu_s"], 1),
                _fixed(s["modal_usd"], 2),
                str(s["mode_changes"]),
                *extra,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = [
        "  ".join(
            f"{cell:{align}{width}}"
            for cell, (_, align), width in zip(row, columns, widths, strict=True)
        ).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else round(ms / 1000, 3)


def _fixed(value: float | None, places: int) -> str:
    return "-" if value is None else f"{value:.{places}f}"
