"""Each policy's p99 latency and Modal cost on workload traces, averaged over seeds, and
both as ratios to `bound` (Modal warm whenever needed, billed only while rendering).

    .venv/bin/python tools/bench_policies.py [--config SIM.toml] [--set TABLE.KEY=VALUE ...]
                                             [--seeds N] [--holdout] [--json | --markdown]
                                             [TRACE ...]

By default: every sample trace in tests/data/traces/ (SAMPLE_TRACES), each against the config
it is sized for (a name ending in `_16`: sim16.toml, 16 in-house slots; any other:
sim.toml, 8 slots; both say what they assume), on the harder simulator (boots, restores,
GPU waits and render noise drawn at random). `--holdout` runs the held-out traces in
tests/data/traces/holdout/ instead, which the policy's defaults were not tuned on.
`--config` runs every trace against one file; `--set` overrides one key of the config
(a TOML value, e.g. `--set policy.high_watermark=4` or
`--set 'policy.prewarm_windows=["08:50-10:00=6"]'`), to try a knob without writing one.

Each trace runs under seeds 0 to N-1 (`--seeds`, default 3, in place of the config's
`seed`) for every policy; a seed draws the same boots and render noise for every policy
(common random numbers). The numbers are the same every run: no timing, no assertions,
only the tables. p99 is over completed jobs, averaged over the seeds; `failed` counts
the jobs a policy shed or timed out, over all seeds. Per trace, the last line checks
`spillway` against the targets of issue 11: p99 at most 1.1x `bound`'s, Modal cost at
most 1.3x, p99 and cost each no worse than `hysteresis`'s, nothing failed. The summary
at the end (`--markdown`: only it, as the README's table) has one line per trace.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import replace
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
    TRACES / f"{n}.csv"
    for n in (
        "steady",
        "flash_crowd",
        "scheduled_peaks",
        "slow_ramp",
        "flash_10x_8",
        "hover_8",
        "ramp_3x_8",
        "known_peaks_8",
        "flash_10x_16",
        "hover_16",
        "ramp_3x_16",
        "known_peaks_16",
    )
)
HOLDOUT_TRACES = tuple(
    TRACES / "holdout" / f"{n}_{slots}.csv"
    for slots in (8, 16)
    for n in ("flash_8x", "hover", "ramp_2x5", "peaks")
)
SAMPLE_CONFIG = TRACES / "sim.toml"
SAMPLE_CONFIG_16 = TRACES / "sim16.toml"
SEEDS = 3
P99_VS_BOUND = 1.1
USD_VS_BOUND = 1.3
"""The targets of issue 11 for `spillway`, besides doing no worse than `hysteresis`."""


def config_for(trace: Path) -> Path:
    """The sample config a trace is sized for: its name says 16 slots, or it is 8."""
    return SAMPLE_CONFIG_16 if trace.stem.endswith("_16") else SAMPLE_CONFIG


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


def bench(trace_path: Path, config: SimConfig, seeds: int = SEEDS) -> list[dict[str, Any]]:
    """One row per policy: its summaries over the seeds, with the ratios to `bound`."""
    trace = load_trace(trace_path)
    runs = {
        name: [
            summarize(simulate(trace, replace(config, seed=seed), name)) for seed in range(seeds)
        ]
        for name in POLICY_NAMES
    }
    rows = [_row(trace_path.stem, name, summaries) for name, summaries in runs.items()]
    bound = next(r for r in rows if r["policy"] == "bound")
    for row in rows:
        row["p99_vs_bound"] = _ratio(row["p99_s"], bound["p99_s"])
        row["usd_vs_bound"] = _ratio(row["modal_usd"], bound["modal_usd"])
    return rows


def _row(trace: str, policy: str, summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    p99s = [s["latency_s"]["p99"] for s in summaries]
    return {
        "trace": trace,
        "policy": policy,
        "seeds": len(summaries),
        "jobs": summaries[0]["jobs"],
        "completed": sum(s["completed"] for s in summaries),
        "failed": sum(s["shed"] + s["timed_out"] for s in summaries),
        "spilled": _mean([s["spilled"] for s in summaries], 1),
        "p99_s": None if None in p99s else _mean(p99s, 3),
        "p99_s_worst": None if None in p99s else max(p99s),
        "modal_usd": _mean([s["modal_usd"] for s in summaries], 3),
    }


def _mean(values: Sequence[float], places: int) -> float:
    return round(sum(values) / len(values), places)


def _ratio(value: float | None, bound: float | None) -> float | None:
    if value is None or bound is None:
        return None
    if bound == 0:
        return 1.0 if value == 0 else None
    return round(value / bound, 3)


def targets(rows: Sequence[dict[str, Any]]) -> tuple[bool, str]:
    """Whether `spillway` meets every target on this trace, and a line saying which."""
    ours = next(r for r in rows if r["policy"] == "spillway")
    theirs = next(r for r in rows if r["policy"] == "hysteresis")
    if ours["p99_s"] is None or theirs["p99_s"] is None:
        return False, "targets: no p99 to compare"
    checks = [
        (f"p99<={P99_VS_BOUND}x", _within(ours["p99_vs_bound"], P99_VS_BOUND)),
        (f"$<={USD_VS_BOUND}x", _within(ours["usd_vs_bound"], USD_VS_BOUND)),
        ("p99<=hyst", ours["p99_s"] <= theirs["p99_s"]),
        ("$<=hyst", ours["modal_usd"] <= theirs["modal_usd"]),
        ("none failed", ours["failed"] == 0),
    ]
    missed = [name for name, ok in checks if not ok]
    return not missed, "targets: " + ("all met" if not missed else "missed " + ", ".join(missed))


def _within(ratio: float | None, limit: float) -> bool:
    return ratio is not None and ratio <= limit


_HEADER = (
    "policy",
    "done",
    "failed",
    "spilled",
    "p99 s",
    "worst p99",
    "modal $",
    "p99/bound",
    "$/bound",
)


def table(rows: Sequence[dict[str, Any]]) -> str:
    cells = [list(_HEADER)]
    for r in rows:
        cells.append(
            [
                r["policy"],
                str(r["completed"]),
                str(r["failed"]),
                _fixed(r["spilled"], 1),
                _fixed(r["p99_s"], 1),
                _fixed(r["p99_s_worst"], 1),
                _fixed(r["modal_usd"], 2),
                _fixed(r["p99_vs_bound"], 3),
                _fixed(r["usd_vs_bound"], 3),
            ]
        )
    return _aligned(cells)


def summary(runs: Sequence[tuple[str, list[dict[str, Any]]]], *, markdown: bool) -> str:
    """One line per trace: p99 s and Modal $ of bound, spillway and hysteresis (with
    their ratios to bound), and which targets spillway misses."""
    cells = [["trace", "bound p99 s / $", "spillway p99 s / $", "hysteresis p99 s / $", "targets"]]
    for trace, rows in runs:
        by = {r["policy"]: r for r in rows}
        bound = by["bound"]
        cells.append(
            [
                trace,
                f"{_fixed(bound['p99_s'], 1)} / {_fixed(bound['modal_usd'], 2)}",
                _versus(by["spillway"]),
                _versus(by["hysteresis"]),
                targets(rows)[1].removeprefix("targets: "),
            ]
        )
    if not markdown:
        return _aligned(cells)
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "---|" * len(cells[0]))
    return "\n".join(lines)


def _versus(row: dict[str, Any]) -> str:
    return (
        f"{_fixed(row['p99_s'], 1)} / {_fixed(row['modal_usd'], 2)} "
        f"({_fixed(row['p99_vs_bound'], 2)}x / {_fixed(row['usd_vs_bound'], 2)}x)"
    )


def _aligned(cells: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
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
    parser.add_argument(
        "--config", type=Path, help="one config for every trace (default: the one it is sized for)"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE"
    )
    parser.add_argument("--seeds", type=int, default=SEEDS, help="seeds 0 to N-1 (%(default)s)")
    parser.add_argument("--holdout", action="store_true", help="the held-out traces")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per trace and policy")
    output.add_argument("--markdown", action="store_true", help="only the summary, in Markdown")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    traces = args.traces or list(HOLDOUT_TRACES if args.holdout else SAMPLE_TRACES)
    try:
        runs = [
            (path, bench(path, load(args.config or config_for(path), args.overrides), args.seeds))
            for path in traces
        ]
    except (SimConfigError, TraceError, tomllib.TOMLDecodeError) as exc:
        print(f"bench_policies: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"bench_policies: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    met = sum(targets(rows)[0] for _, rows in runs)
    if args.json:
        for _, rows in runs:
            for row in rows:
                print(json.dumps(row, sort_keys=True))
        return 0
    named = [(path.stem, rows) for path, rows in runs]
    if args.markdown:
        print(summary(named, markdown=True))
        return 0
    for i, (path, rows) in enumerate(runs):
        jobs = rows[0]["jobs"]
        print(("\n" if i else "") + f"== {path.stem} ({jobs} jobs, {args.seeds} seeds)")
        print(table(rows))
        print(targets(rows)[1])
    print(f"\n{summary(named, markdown=False)}")
    print(f"\nspillway meets every target on {met} of {len(traces)} traces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
