"""Writes the sample workload traces in tests/data/traces/ (re-run to regenerate them;
a fixed seed makes the files the same every time).

    .venv/bin/python tools/make_traces.py

Each is a CSV `arrival_s,render_s`, sized for an in-house fleet of 8 slots rendering
jobs of 45-150 s (about 0.09 jobs a second of capacity):

- steady: 2 hours at about 80% of in-house capacity; nothing needs to spill.
- flash_crowd: 2 hours at 50%, with a 10-minute crowd at 5x capacity after 40 minutes.
- scheduled_peaks: a day at 40%, with two one-hour peaks at 2.5x (09:00 and 18:00 UTC).
- slow_ramp: 3 hours rising from 30% to 200% of capacity and back down.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "traces"
CAPACITY_PER_S = 8 / 90  # 8 slots, 90 s mean render
HOUR = 3600


def renders(rng: random.Random) -> float:
    """Render seconds: mostly 4-8 s clips (45-90 s), some 12 s ones (120-150 s)."""
    if rng.random() < 0.2:
        return rng.uniform(120, 150)
    return rng.uniform(45, 90)


def arrivals(rng: random.Random, duration_s: float, load: Callable[[float], float]) -> list[float]:
    """A Poisson process whose rate at time t is load(t) x capacity, by thinning."""
    peak = max(load(t) for t in range(0, int(duration_s), 10)) * CAPACITY_PER_S
    t, times = 0.0, []
    while True:
        t += rng.expovariate(peak)
        if t >= duration_s:
            return times
        if rng.random() < load(t) * CAPACITY_PER_S / peak:
            times.append(t)


def write(name: str, duration_s: float, load: Callable[[float], float], seed: int) -> None:
    rng = random.Random(seed)
    rows = [f"{t:.1f},{renders(rng):.1f}" for t in arrivals(rng, duration_s, load)]
    (OUT / f"{name}.csv").write_text("arrival_s,render_s\n" + "\n".join(rows) + "\n")
    print(f"{name}: {len(rows)} jobs over {duration_s / HOUR:g} h")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    write("steady", 2 * HOUR, lambda t: 0.8, seed=1)
    write(
        "flash_crowd",
        2 * HOUR,
        lambda t: 5.0 if 40 * 60 <= t < 50 * 60 else 0.5,
        seed=2,
    )
    write(
        "scheduled_peaks",
        24 * HOUR,
        lambda t: 2.5 if 9 * HOUR <= t < 10 * HOUR or 18 * HOUR <= t < 19 * HOUR else 0.4,
        seed=3,
    )
    write(
        "slow_ramp",
        3 * HOUR,
        lambda t: 0.3 + 1.7 * math.sin(math.pi * t / (3 * HOUR)),
        seed=4,
    )


if __name__ == "__main__":
    main()
