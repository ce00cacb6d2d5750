"""Writes the sample workload traces in tests/data/traces/ and the held-out ones in
tests/data/traces/holdout/ (re-run to regenerate them; fixed seeds make the files the
same every time).

    .venv/bin/python tools/make_traces.py

Each is a CSV `arrival_s,render_s` of jobs rendering 45-150 s (90 s mean), sized for an
in-house fleet of 8 slots (about 0.09 jobs a second of capacity) or, with `_16` in its
name, 16 slots (0.18). Loads are multiples of that capacity:

- steady: 2 hours at about 80%; nothing needs to spill.
- flash_crowd: 2 hours at 50%, with a 10-minute crowd at 5x after 40 minutes.
- scheduled_peaks: a day at 40%, with two one-hour peaks at 2.5x (09:00 and 18:00 UTC).
- slow_ramp: 3 hours rising from 30% to 200% of capacity and back down.
- flash_10x_8, flash_10x_16: 2 hours at 50%, with a 5-minute crowd at 10x after 40
  minutes.
- hover_8, hover_16: 2 hours at 85%, with 90-second bursts at 1.7x every 5-12 minutes
  (at random), so the in-house queue keeps crossing the high watermark and falling back.
- ramp_3x_8, ramp_3x_16: 3 hours rising from 30% to 300% and back down.
- known_peaks_8, known_peaks_16: 12 hours at 40%, with 45-minute peaks at 3x starting at
  02:00, 06:30 and 10:00 UTC.

The held-out traces are the same shapes drawn with other seeds and other numbers (a 8x
crowd of 4 minutes, bursts at 2x, a ramp to 2.5x, peaks elsewhere): the policy's
defaults are not tuned on them, so they show whether it holds on traffic it has not
seen (tools/bench_policies.py --holdout).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "traces"
MEAN_RENDER_S = 90
HOUR = 3600

Load = Callable[[float], float]
"""Load at second t as a multiple of the in-house capacity."""


def renders(rng: random.Random) -> float:
    """Render seconds: mostly 4-8 s clips (45-90 s), some 12 s ones (120-150 s)."""
    if rng.random() < 0.2:
        return rng.uniform(120, 150)
    return rng.uniform(45, 90)


def arrivals(rng: random.Random, duration_s: float, load: Load, slots: int) -> list[float]:
    """A Poisson process whose rate at time t is load(t) x capacity, by thinning."""
    capacity = slots / MEAN_RENDER_S
    peak = max(load(t) for t in range(0, int(duration_s), 10)) * capacity
    t, times = 0.0, []
    while True:
        t += rng.expovariate(peak)
        if t >= duration_s:
            return times
        if rng.random() < load(t) * capacity / peak:
            times.append(t)


def write(path: Path, duration_s: float, load: Load, seed: int, slots: int = 8) -> None:
    rng = random.Random(seed)
    rows = [f"{t:.1f},{renders(rng):.1f}" for t in arrivals(rng, duration_s, load, slots)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("arrival_s,render_s\n" + "\n".join(rows) + "\n")
    print(f"{path.relative_to(OUT)}: {len(rows)} jobs over {duration_s / HOUR:g} h")


def crowd(base: float, peak: float, start_s: float, length_s: float) -> Load:
    return lambda t: peak if start_s <= t < start_s + length_s else base


def hover(seed: int, base: float, burst: float, length_s: float, gaps_s: tuple[int, int]) -> Load:
    """`base`, with bursts of `length_s` at `burst` separated by random gaps."""
    rng = random.Random(seed)
    starts, t = [], 0.0
    while t < 2 * HOUR:
        t += rng.uniform(*gaps_s)
        starts.append(t)
    return lambda t: burst if any(s <= t < s + length_s for s in starts) else base


def ramp(low: float, high: float, duration_s: float) -> Load:
    return lambda t: low + (high - low) * math.sin(math.pi * t / duration_s)


def peaks(base: float, peak: float, starts_h: tuple[float, ...], length_s: float) -> Load:
    return lambda t: peak if any(s * HOUR <= t < s * HOUR + length_s for s in starts_h) else base


def main() -> None:
    # The first four keep the seeds (and so the bytes) they were first written with.
    write(OUT / "steady.csv", 2 * HOUR, lambda t: 0.8, seed=1)
    write(OUT / "flash_crowd.csv", 2 * HOUR, crowd(0.5, 5.0, 40 * 60, 10 * 60), seed=2)
    write(
        OUT / "scheduled_peaks.csv",
        24 * HOUR,
        lambda t: 2.5 if 9 * HOUR <= t < 10 * HOUR or 18 * HOUR <= t < 19 * HOUR else 0.4,
        seed=3,
    )
    write(OUT / "slow_ramp.csv", 3 * HOUR, ramp(0.3, 2.0, 3 * HOUR), seed=4)
    for slots in (8, 16):
        write(
            OUT / f"flash_10x_{slots}.csv",
            2 * HOUR,
            crowd(0.5, 10.0, 40 * 60, 5 * 60),
            seed=10 + slots,
            slots=slots,
        )
        write(
            OUT / f"hover_{slots}.csv",
            2 * HOUR,
            hover(20 + slots, 0.85, 1.7, 90, (300, 720)),
            seed=30 + slots,
            slots=slots,
        )
        write(
            OUT / f"ramp_3x_{slots}.csv",
            3 * HOUR,
            ramp(0.3, 3.0, 3 * HOUR),
            seed=40 + slots,
            slots=slots,
        )
        write(
            OUT / f"known_peaks_{slots}.csv",
            12 * HOUR,
            peaks(0.4, 3.0, (2.0, 6.5, 10.0), 45 * 60),
            seed=50 + slots,
            slots=slots,
        )

    held = OUT / "holdout"
    for slots in (8, 16):
        write(
            held / f"flash_8x_{slots}.csv",
            90 * 60,
            crowd(0.6, 8.0, 25 * 60, 4 * 60),
            seed=110 + slots,
            slots=slots,
        )
        write(
            held / f"hover_{slots}.csv",
            2 * HOUR,
            hover(120 + slots, 0.8, 2.0, 60, (240, 600)),
            seed=130 + slots,
            slots=slots,
        )
        write(
            held / f"ramp_2x5_{slots}.csv",
            150 * 60,
            ramp(0.4, 2.5, 150 * 60),
            seed=140 + slots,
            slots=slots,
        )
        write(
            held / f"peaks_{slots}.csv",
            10 * HOUR,
            peaks(0.5, 2.2, (1.5, 5.0, 8.25), 30 * 60),
            seed=150 + slots,
            slots=slots,
        )


if __name__ == "__main__":
    main()
