"""`spillway simulate --plot OUT.png`: the runs over time, one panel each for queue
depth, spillover mode, Modal containers and job latency, policies overlaid.

matplotlib is an optional dependency (the `sim` extra); it is imported only when a plot
is drawn, and drawn on the non-interactive Agg canvas without pyplot, so no display or
global backend setting is involved.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from pathlib import Path

from scheduler.policy import Mode
from scheduler.sim.engine import RunResult
from scheduler.sim.report import nearest_rank

INSTALL_HINT = "pip install 'spillway[sim]'"
LATENCY_WINDOW_S = 300
"""The latency panel's rolling p95 covers the jobs finished in this many seconds."""
_MODE_OFFSET = 0.025
"""Each policy's mode line sits this much above the previous one's, so that lines on
the same 0/1 step stay visible."""


class PlotError(RuntimeError):
    """The plot cannot be drawn (matplotlib is missing)."""


def plot_runs(
    results: Sequence[RunResult],
    path: str | Path,
    *,
    start_ms: int = 0,
    title: str | None = None,
    latency_window_s: int = LATENCY_WINDOW_S,
) -> None:
    """Writes a PNG of the runs: four panels sharing a time axis in minutes (queue depth;
    mode, 0 normal and 1 spill; Modal containers up; and the rolling p95 latency of the
    jobs finished in the last `latency_window_s`, with each job's latency as a dot at
    its finish time), one line per run, overlaid, with a legend.

    The mode line is drawn from the runs' transitions, so that a spill that begins and
    ends within one instant (as the plain hysteresis rule's often does) still shows, as
    a spike; `start_ms` is the policy clock at the trace's start (`SimConfig.start_ms`),
    which the transitions are timed by.

    Raises `PlotError` if matplotlib is not installed, `OSError` if the file cannot be
    written."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotError(
            f"--plot needs matplotlib, which is not installed: {INSTALL_HINT} ({exc})"
        ) from None

    figure = Figure(figsize=(12, 10), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    queue_ax, mode_ax, containers_ax, latency_ax = figure.subplots(
        4, 1, sharex=True, height_ratios=(3, 1.5, 2, 3)
    )
    end_min = max((r.end_ms for r in results), default=0) / 60_000
    colors = [f"C{i % 10}" for i in range(len(results))]

    for i, (result, color) in enumerate(zip(results, colors, strict=True)):
        series = result.series
        # Each step line runs on to the end of the longest run.
        t = [s.t_ms / 60_000 for s in series] + [end_min]
        if series:
            queue_ax.plot(
                t,
                _extended([float(s.queued) for s in series]),
                drawstyle="steps-post",
                color=color,
                label=result.policy,
            )
            containers_ax.plot(
                t,
                _extended([float(s.containers) for s in series]),
                drawstyle="steps-post",
                color=color,
            )
        mode_t, mode_y = _mode_line(result, start_ms, end_min)
        mode_ax.plot(mode_t, [y + i * _MODE_OFFSET for y in mode_y], color=color)
        finished = sorted(
            (j.finish_ms, j.latency_ms)
            for j in result.jobs
            if j.latency_ms is not None and j.finish_ms is not None
        )
        if finished:
            latency_ax.scatter(
                [f / 60_000 for f, _ in finished],
                [lat / 1000 for _, lat in finished],
                s=3,
                color=color,
                alpha=0.25,
                linewidths=0,
            )
            times, p95 = _rolling_p95(finished, latency_window_s * 1000)
            latency_ax.plot(times, p95, color=color)

    queue_ax.set_ylabel("queued jobs")
    mode_ax.set_ylabel("mode")
    mode_ax.set_yticks([0, 1], ["normal", "spill"])
    containers_ax.set_ylabel("Modal containers")
    latency_ax.set_ylabel(f"latency s\n(p95 over {latency_window_s / 60:g} min)")
    latency_ax.set_xlabel("minutes from the start of the trace")
    for ax in (queue_ax, mode_ax, containers_ax, latency_ax):
        ax.grid(True, alpha=0.3)
        ax.set_xlim(0, max(end_min, 1 / 60))
    if results:
        queue_ax.legend(loc="upper right", fontsize="small", ncols=min(len(results), 5))
    if title:
        figure.suptitle(title)
    figure.savefig(Path(path), format="png")


def _mode_line(result: RunResult, start_ms: int, end_min: float) -> tuple[list[float], list[int]]:
    """Minutes and 0 (normal) or 1 (spill): a vertical segment at each transition."""
    times: list[float] = [0.0]
    values: list[int] = [0]
    for transition in result.transitions:
        at = (transition.at_ms - start_ms) / 60_000
        times += [at, at]
        values += [int(transition.old is Mode.SPILL), int(transition.new is Mode.SPILL)]
    times.append(end_min)
    values.append(values[-1])
    return times, values


def _extended(values: list[float]) -> list[float]:
    """The values with the last one repeated (for the end of a step line)."""
    return [*values, values[-1]]


def _rolling_p95(
    finished: Sequence[tuple[int, int]], window_ms: int
) -> tuple[list[float], list[float]]:
    """At each finish time, the p95 (nearest rank) of the latencies of the jobs finished
    in the trailing window; minutes and seconds."""
    times: list[float] = []
    values: list[float] = []
    window: deque[tuple[int, int]] = deque()
    for finish_ms, latency_ms in finished:
        window.append((finish_ms, latency_ms))
        while window[0][0] <= finish_ms - window_ms:
            window.popleft()
        p95 = nearest_rank(sorted(lat for _, lat in window), 95)
        assert p95 is not None
        times.append(finish_ms / 60_000)
        values.append(p95 / 1000)
    return times, values
