"""The second fleet's bill against container timelines worked out by hand: every
container-second from boot start to stop, whatever the container did meanwhile."""

from __future__ import annotations

import pytest

from scheduler.policy import Meter
from scheduler.policy.meter import billed_ms, scaledown_stop_ms, start, stop, usd

H100_USD_PER_S = 0.001097


def test_a_container_bills_its_boot_its_render_and_its_idle_tail() -> None:
    """Booted at 0 s (60 s full boot), rendering 60-150 s, idle for its 300 s scaledown
    window, stopped at 450 s: 450 container-seconds, $0.49365 at $0.001097/s."""
    meter = start(Meter(), "ta-1", 0)
    assert billed_ms(meter, 60_000) == 60_000  # the boot alone already costs
    assert billed_ms(meter, 150_000) == 150_000
    meter = stop(meter, "ta-1", scaledown_stop_ms(150_000, 300))
    assert billed_ms(meter, 10_000_000) == 450_000
    assert usd(billed_ms(meter, 10_000_000), H100_USD_PER_S) == pytest.approx(0.49365)


def test_prewarmed_buffer_and_failed_work_all_bill_from_boot_to_stop() -> None:
    """Three containers: a pre-warmed one up 0-200 s that never served (200 s), a buffer
    one up 50-130 s that served nothing (80 s), and one whose render failed at 95 s, up
    90-100 s (10 s): 290 s, of which the 40 s of the pre-warmed and buffer containers
    overlapping 90-130 s are billed twice, as Modal bills them."""
    meter = start(Meter(), "prewarm", 0)
    meter = start(meter, "buffer", 50_000)
    meter = start(meter, "failed", 90_000)
    assert billed_ms(meter, 100_000) == 100_000 + 50_000 + 10_000
    meter = stop(meter, "failed", 100_000)
    meter = stop(meter, "buffer", 130_000)
    assert billed_ms(meter, 130_000) == 130_000 + 80_000 + 10_000
    meter = stop(meter, "prewarm", 200_000)
    assert meter == Meter(stopped_ms=290_000)
    assert billed_ms(meter, 500_000) == 290_000


def test_a_container_waiting_for_its_gpu_bills_only_from_its_boot() -> None:
    """A container asked for at 10 s that is granted a GPU and starts booting at 40 s
    costs nothing before 40 s."""
    meter = start(Meter(), "scarce", 40_000)
    assert billed_ms(meter, 10_000) == 0
    assert billed_ms(meter, 40_000) == 0
    assert billed_ms(meter, 55_000) == 15_000


def test_repeated_and_late_observations_never_bill_twice() -> None:
    """Seeing a container again keeps its earliest boot start (a later render's
    metadata names the same container); a stop seen twice, or for a container never
    started, changes nothing."""
    meter = start(Meter(), "c", 20_000)
    assert start(meter, "c", 30_000) == meter
    meter = start(meter, "c", 5_000)
    assert meter.live == (("c", 5_000),)
    meter = stop(meter, "c", 65_000)
    assert stop(meter, "c", 90_000) == meter
    assert stop(meter, "never-seen", 90_000) == meter
    assert meter == Meter(stopped_ms=60_000)
