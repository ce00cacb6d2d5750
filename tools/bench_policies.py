"""Each policy's p99 latency and Modal cost on workload traces, and both as ratios to
`bound` (Modal warm whenever needed, billed only while rendering).

    .venv/bin/python tools/bench_policies.py [--config SIM.toml] [--set TABLE.KEY=VALUE ...]
                                             [--json] [TRACE ...]

By default: the four sample traces in tests/data/traces/ (steady, flash_crowd,
scheduled_peaks, slow_ramp) and the config shipped beside them (sim.toml there, which
says what it assumes). `--set` overrides one key of the config (a TOML value, e.g.
`--set policy.high_watermark=4` or `--set 'policy.prewarm_windows=["08:50-10:00=6"]'`),
to try a knob without writing a file.

Everything is simulated on a virtual clock (`scheduler.sim`), so the numbers are the
same every run: no timing, no assertions, only the table. p99 is over completed jobs;
`failed` counts the jobs a policy shed or timed out, whose latency the p99 leaves out.
Per trace, the last line compares `spillway` with `hysteresis`: it "beats" it when its
p99 is lower at no more Modal cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scheduler.sim import (
    POLICY_NAMES,
    SimConfig,
    SimConfigError,
    TraceError,
    load_trace,
    parse_config,
    simulate,
    summarize,
)

TRACES = Path(__file__).resolve().parent.parent / "tests" / "data" / "traces"
SAMPLE_TRACES = tuple(
    TRACES / f"{n}.csv" for n in ("steady", "flash_crowd", "scheduled_peaks", "slow_ramp")
)
SAMPLE_CONFIG = TRACES / "sim.toml"


def load(config_path: Path, overrides: Sequence[str]) -> SimConfig:
    """The config file with each `TABLE.KEY=VALUE` (or top-level `KEY=VALUE`) applied."""
    text = config_path.read_text(encoding="utf-8")
    if not overrides:
        return parse_config(text, name=str(config_path))
    data = tomllib.loads(text)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SimConfigError(f"--set {item!r}: expected TABLE.KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word: a string
        *tables, leaf = key.strip().split(".")
        node = data
        for table in tables:
            node = node.setdefault(table, {})
            if not isinstance(node, dict):
                raise SimConfigError(f"--set {item!r}: {table} is not a table")
        node[leaf] = value
    return parse_config(_to_toml(data), name=f"{config_path} with --set")


def _to_toml(data: dict[str, Any]) -> str:
    """Top-level keys, then one level of tables: all a simulator config has. Scalars and
    lists of scalars print as JSON, which TOML reads the same."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{name}]")
            lines.extend(f"{k} = {json.dumps(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def bench(trace_path: Path, config: SimConfig) -> list[dict[str, Any]]:
    """One row per policy: its summary with the ratios to `bound` added."""
    trace = load_trace(trace_path)
    summaries = [summarize(simulate(trace, config, name)) for name in POLICY_NAMES]
    bound = next(s for s in summaries if s["policy"] == "bound")
    return [
        {
            "trace": trace_path.stem,
            "policy": s["policy"],
            "jobs": s["jobs"],
            "completed": s["completed"],
            "failed": s["shed"] + s["timed_out"],
            "spilled": s["spilled"],
            "p99_s": s["latency_s"]["p99"],
            "modal_usd": s["modal_usd"],
            "p99_vs_bound": _ratio(s["latency_s"]["p99"], bound["latency_s"]["p99"]),
            "usd_vs_bound": _ratio(s["modal_usd"], bound["modal_usd"]),
        }
        for s in summaries
    ]


def _ratio(value: float | None, bound: float | None) -> float | None:
    if value is None or bound is None:
        return None
    if bound == 0:
        return 1.0 if value == 0 else None
    return round(value / bound, 3)


def verdict(rows: Sequence[dict[str, Any]]) -> tuple[bool, str]:
    ours = next(r for r in rows if r["policy"] == "spillway")
    theirs = next(r for r in rows if r["policy"] == "hysteresis")
    if ours["p99_s"] is None or theirs["p99_s"] is None:
        return False, "spillway vs hysteresis: no p99 to compare"
    beats = (
        ours["p99_s"] < theirs["p99_s"]
        and ours["modal_usd"] <= theirs["modal_usd"]
        and ours["failed"] <= theirs["failed"]
    )
    return beats, (
        f"spillway vs hysteresis: p99 {ours['p99_s'] - theirs['p99_s']:+.1f} s, "
        f"Modal {ours['modal_usd'] - theirs['modal_usd']:+.2f} $ -> "
        f"{'beats it' if beats else 'does not beat it'}"
    )


_HEADER = ("policy", "done", "failed", "spilled", "p99 s", "modal $", "p99/bound", "$/bound")


def table(rows: Sequence[dict[str, Any]]) -> str:
    cells = [list(_HEADER)]
    for r in rows:
        cells.append(
            [
                r["policy"],
                str(r["completed"]),
                str(r["failed"]),
                str(r["spilled"]),
                _fixed(r["p99_s"], 1),
                _fixed(r["modal_usd"], 2),
                _fixed(r["p99_vs_bound"], 3),
                _fixed(r["usd_vs_bound"], 3),
            ]
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(_HEADER))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    )


def _fixed(value: float | None, places: int) -> str:
    return "-" if value is None else f"{value:.{places}f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("traces", nargs="*", type=Path, metavar="TRACE")
    parser.add_argument("--config", type=Path, default=SAMPLE_CONFIG, help="(%(default)s)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per trace and policy")
    args = parser.parse_args(argv)
    traces = args.traces or list(SAMPLE_TRACES)
    try:
        config = load(args.config, args.overrides)
        runs = [(path, bench(path, config)) for path in traces]
    except (SimConfigError, TraceError, tomllib.TOMLDecodeError) as exc:
        print(f"bench_policies: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"bench_policies: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    wins = 0
    for i, (path, rows) in enumerate(runs):
        beats, line = verdict(rows)
        wins += beats
        if args.json:
            for row in rows:
                print(json.dumps(row, sort_keys=True))
            continue
        jobs = rows[0]["jobs"]
        print(("\n" if i else "") + f"== {path.stem} ({jobs} jobs)")
        print(table(rows))
        print(line)
    if not args.json:
        print(f"\nspillway beats hysteresis on {wins} of {len(traces)} traces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
