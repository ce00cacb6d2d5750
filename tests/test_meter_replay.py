"""The production meter replays the simulator's bill: fed only what production sees of
the simulated second fleet (each render's container, boot and end; the container count
every 5 s and the scaledown window in force), `Tracker` bills what the simulator's own
meter bills, to within a few percent. So the spend `decide()` reads in production is the
one it is tuned on in the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scheduler.policy.meter import Tracker, billed_ms, counted, rendered
from scheduler.sim import engine, load_config, load_trace, simulate
from scheduler.sim.fleets import ContainerFleet

TRACES = Path(__file__).parent / "data" / "traces"
COUNT_EVERY_MS = 5_000


class _Seen:
    """What a scheduler would see: renders (end, container, boot start, cold), and after every
    change the container count and the scaledown window in force."""

    def __init__(self) -> None:
        self.renders: list[tuple[int, str, int, bool]] = []
        self.counts: list[tuple[int, int, int]] = []


def recording_fleet(seen: _Seen) -> type[ContainerFleet]:
    class Recording(ContainerFleet):
        _began: dict[int, tuple[int, bool]]

        def _run(self, job: int, container: Any, now_ms: int, *, cold: bool) -> None:
            super()._run(job, container, now_ms, cold=cold)
            # A render reports its cold start (the whole boot) only when it waited for it:
            # the scheduler dates the container's boot from the render's start less it.
            self.__dict__.setdefault("_began", {})[job] = (
                container.boot_start_ms if cold else now_ms,
                cold,
            )

        def release(self, job: int, now_ms: int) -> None:
            container = self._on[job]
            boot_ms, cold = self._began.pop(job)
            seen.renders.append((now_ms, str(container.id), boot_ms, cold))
            super().release(job, now_ms)

        def converge(self, now_ms: int) -> None:
            super().converge(now_ms)
            seen.counts.append((now_ms, self.containers, self._window_s))

    return Recording


def replay(seen: _Seen, end_ms: int) -> int:
    """The production meter over what was seen, counting every `COUNT_EVERY_MS`."""
    t = Tracker()
    renders = iter(sorted(seen.renders))
    pending = next(renders, None)
    counts = seen.counts
    i, current, window_s = 0, 0, 300
    for now in range(0, end_ms + 2 * COUNT_EVERY_MS, COUNT_EVERY_MS):
        while pending is not None and pending[0] <= now:
            end, cid, boot, cold = pending
            t = rendered(t, cid, boot, end, cold=cold)
            pending = next(renders, None)
        while i < len(counts) and counts[i][0] <= now:
            _, current, window_s = counts[i]
            i += 1
        t = counted(t, current, now, window_s)
    return billed_ms(t.meter, end_ms + 2 * COUNT_EVERY_MS)


SAMPLES = sorted(
    (p.name, "sim16.toml" if p.stem.endswith("_16") else "sim.toml")
    for p in TRACES.glob("*.csv")
    if p.stem in ("steady", "flash_crowd", "scheduled_peaks", "slow_ramp")
    or p.stem.endswith(("_8", "_16"))
)


@pytest.mark.parametrize(("trace", "config"), SAMPLES)
def test_the_production_meter_bills_what_the_simulator_bills(
    trace: str, config: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within 3 % on every sample trace, or one count interval per container started."""
    seen = _Seen()
    monkeypatch.setattr(engine, "ContainerFleet", recording_fleet(seen))
    result = simulate(load_trace(TRACES / trace), load_config(TRACES / config), "spillway")
    assert result.modal_gpu_ms > 0 and seen.renders
    metered = replay(seen, result.end_ms)
    slack = max(0.03 * result.modal_gpu_ms, result.cold_starts * COUNT_EVERY_MS)
    assert abs(metered - result.modal_gpu_ms) <= slack, (metered, result.modal_gpu_ms)
