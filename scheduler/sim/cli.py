"""`spillway simulate`: replays a trace through each policy and prints one summary per
policy, as a table or (`--json`) one JSON object a line, and with `--plot OUT.png` also
draws the runs over time (`scheduler.sim.plot`).

The runs come back whole (`simulate_all`), time series and per-job records included,
so an output that needs more than the summary (a plot) takes the same list.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from scheduler.sim.config import SimConfig, SimConfigError, load_config
from scheduler.sim.engine import RunResult, simulate
from scheduler.sim.policies import POLICY_NAMES
from scheduler.sim.report import summarize, to_json_lines, to_table
from scheduler.sim.trace import TraceError, TraceJob, load_trace


def simulate_all(
    trace: Sequence[TraceJob], config: SimConfig, policies: Sequence[str] = POLICY_NAMES
) -> list[RunResult]:
    """One run per policy, in the order given."""
    return [simulate(trace, config, name) for name in policies]


def run(
    trace_path: Path,
    config_path: Path | None,
    policies: Sequence[str] | None,
    *,
    as_json: bool,
    plot: Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """The command: 0; 2 (with the file, line or key named) if an input is bad; 1 if the
    plot cannot be drawn or written (the summaries are printed first all the same)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        trace = load_trace(trace_path)
        config = load_config(config_path)
    except (TraceError, SimConfigError) as exc:
        print(f"spillway simulate: {exc}", file=err)
        return 2
    except OSError as exc:
        print(f"spillway simulate: {exc.filename}: {exc.strerror}", file=err)
        return 2
    # Each policy once, in the order first named.
    names = list(dict.fromkeys(policies)) if policies else list(POLICY_NAMES)
    results = simulate_all(trace, config, names)
    summaries = [summarize(r) for r in results]
    print(to_json_lines(summaries) if as_json else to_table(summaries), file=out)
    if plot is not None:
        from scheduler.sim.plot import PlotError, plot_runs

        try:
            plot_runs(
                results,
                plot,
                start_ms=config.start_ms,
                title=f"spillway simulate: {trace_path.name}",
            )
        except PlotError as exc:
            print(f"spillway simulate: {exc}", file=err)
            return 1
        except OSError as exc:
            print(f"spillway simulate: {exc.filename or plot}: {exc.strerror}", file=err)
            return 1
    return 0
