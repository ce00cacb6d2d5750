"""Workload traces: a CSV with one job a row.

    arrival_s,render_s[,priority]

- `arrival_s`: seconds from the start of the run (0 or more; rows need not be sorted:
  they are sorted by arrival, stably, so equal arrivals keep their order in the file);
- `render_s`: the render's seconds on a warm GPU (more than 0);
- `priority`: the class, `interactive` or `batch` (as a submit's `priority_class`), or
  a number 0 to 9, higher first, for an interactive job of that rank (as a submit's
  `priority`). Optional; empty is interactive, 0. Batch jobs follow the scheduler's
  rules: served after every interactive job, in-house only, not shed for waiting.

Times become integer milliseconds. Any bad row, value or header is a `TraceError` that
names the file, the line and the field.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

_REQUIRED = ("arrival_s", "render_s")
_OPTIONAL = ("priority",)
MAX_PRIORITY = 9
"""As `scheduler.api.validation.MAX_PRIORITY` (not imported: that module pulls in gRPC)."""
_CLASSES = ("interactive", "batch")


class TraceError(ValueError):
    """The trace cannot be read; the message names the line and field."""


@dataclass(frozen=True)
class TraceJob:
    index: int
    """Place in arrival order (stable), which is also the job's submission order."""
    arrival_ms: int
    render_ms: int
    """Render time on a warm GPU, in-house or (before `render_speedup`) on Modal."""
    priority: int = 0
    batch: bool = False


def load_trace(path: str | Path) -> tuple[TraceJob, ...]:
    """Reads and checks a trace file; raises `TraceError` (or `OSError` if unreadable)."""
    path = Path(path)
    return parse_trace(path.read_text(encoding="utf-8"), name=str(path))


def parse_trace(text: str, name: str = "<trace>") -> tuple[TraceJob, ...]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    rows: list[tuple[int, int, int, bool]] = []
    for fields in reader:
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        if header is None:
            header = [f.strip() for f in fields]
            _check_header(header, name, line)
            continue
        if len(fields) != len(header):
            raise TraceError(
                f"{name}: line {line}: expected {len(header)} fields ({','.join(header)}), "
                f"got {len(fields)}"
            )
        row = dict(zip(header, (f.strip() for f in fields), strict=True))
        arrival_ms = _ms(row["arrival_s"], name, line, "arrival_s", allow_zero=True)
        render_ms = _ms(row["render_s"], name, line, "render_s", allow_zero=False)
        raw_priority = row.get("priority", "")
        if raw_priority in _CLASSES:
            rows.append((arrival_ms, render_ms, 0, raw_priority == "batch"))
        else:
            rows.append((arrival_ms, render_ms, _priority(raw_priority, name, line), False))
    if header is None:
        raise TraceError(f"{name}: empty: expected a header {','.join(_REQUIRED)}")
    if not rows:
        raise TraceError(f"{name}: no jobs after the header")
    ordered = sorted(rows, key=lambda r: r[0])  # sorted() is stable
    return tuple(TraceJob(i, a, r, p, b) for i, (a, r, p, b) in enumerate(ordered))


def _check_header(header: list[str], name: str, line: int) -> None:
    missing = [c for c in _REQUIRED if c not in header]
    unknown = [c for c in header if c not in _REQUIRED + _OPTIONAL]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}")
    if duplicated:
        problems.append(f"repeated column(s) {', '.join(duplicated)}")
    if problems:
        raise TraceError(
            f"{name}: line {line}: header {'; '.join(problems)} "
            f"(expected {','.join(_REQUIRED)}[,priority])"
        )


def _ms(raw: str, name: str, line: int, field: str, *, allow_zero: bool) -> int:
    try:
        seconds = float(raw)
    except ValueError:
        raise TraceError(f"{name}: line {line}: {field}={raw!r}: not a number") from None
    if not math.isfinite(seconds):
        raise TraceError(f"{name}: line {line}: {field}={raw!r}: must be a finite number")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "more than 0"
        raise TraceError(f"{name}: line {line}: {field}={raw!r}: must be {bound}")
    ms = round(seconds * 1000)
    if ms == 0 and not allow_zero:
        raise TraceError(f"{name}: line {line}: {field}={raw!r}: shorter than 1 ms")
    return ms


def _priority(raw: str, name: str, line: int) -> int:
    if raw == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise TraceError(
            f"{name}: line {line}: priority={raw!r}: not interactive, batch or 0 to {MAX_PRIORITY}"
        ) from None
    if not 0 <= value <= MAX_PRIORITY:
        raise TraceError(f"{name}: line {line}: priority={raw!r}: must be 0 to {MAX_PRIORITY}")
    return value
