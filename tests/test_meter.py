"""The second fleet's bill against container timelines worked out by hand: every
container-second from boot start to stop, whatever the container did meanwhile; and
production's inference of those timelines (`Tracker`) from what it sees: renders naming
their container, and the pool's count of containers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy import Meter
from scheduler.policy.meter import (
    Tracker,
    billed_ms,
    counted,
    rendered,
    scaledown_stop_ms,
    start,
    stop,
    unseen,
    usd,
)

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


def test_two_prewarmed_containers_idling_bill_from_the_count_that_shows_them() -> None:
    """The issue's case: two pre-warmed containers idle 40 s and serve nothing, so no
    render ever names them. The count shows them at 0 s (the first count: metered from
    then) and 40 s, and none at 45 s: both stop in the middle of 40-45 s, 2 x 42.5 s."""
    t = counted(Tracker(), 2, 0, 300)
    assert billed_ms(t.meter, 40_000) == 80_000
    t = counted(t, 2, 40_000, 300)
    t = counted(t, 0, 45_000, 300)
    assert t.meter == Meter(stopped_ms=85_000)


def test_a_render_names_the_container_counted_while_it_booted() -> None:
    """Counts every 5 s. None at 0 s; one at 5 s (metered from 2.5 s). Its cold render
    ends at 100 s and says the container began to boot at 3 s (a 57 s boot, a 40 s
    render): the container's own account wins, as a count also shows a container still
    waiting for its GPU, unbilled. A warm render would keep the count's start. It idles
    through its 300 s window and the count drops at 405 s: it stopped at 400 s, the end
    of its tail. 397 s."""
    t = counted(Tracker(), 0, 0, 300)
    t = counted(t, 1, 5_000, 300)
    assert rendered(t, "ta-1", 60_000, 100_000, cold=False).meter.live == (("ta-1", 2_500),)
    t = rendered(t, "ta-1", 3_000, 100_000)
    assert t.meter.live == (("ta-1", 3_000),)
    for now in range(10_000, 401_000, 5_000):
        t = counted(t, 1, now, 300)
    t = counted(t, 0, 405_000, 300)
    assert t.meter == Meter(stopped_ms=397_000)
    assert t.gone == (("ta-1", 400_000),)


def test_a_container_booted_between_counts_bills_from_its_boot() -> None:
    """A container up 12-40 s renders 30-38 s; counts at 10 s (none) and 45 s (none)
    never see it, but its render names it and its boot: billed from 12 s to the end of
    its 2 s window after 38 s, as soon as the count says it is gone."""
    t = counted(Tracker(), 0, 10_000, 2)
    t = rendered(t, "quick", 12_000, 38_000)
    t = counted(t, 0, 45_000, 2)
    assert t.meter == Meter(stopped_ms=28_000)


def test_without_counts_each_named_container_stops_at_the_end_of_its_tail() -> None:
    """Modal unreachable: no count. A container whose render ended at 100 s is metered
    up to 100 s + its 60 s window, and not stopped before then."""
    t = rendered(Tracker(), "c", 0, 100_000)
    assert unseen(t, 159_000, 60) == t
    t = unseen(t, 200_000, 60)
    assert t.meter == Meter(stopped_ms=160_000)


def test_the_count_stops_the_container_whose_tail_ran_out_not_a_busy_one() -> None:
    """Two containers, a (rendered until 10 s) and b (rendered until 250 s), window 60 s.
    At 300 s the count drops to one: a, whose tail ended at 70 s, is the one that
    stopped, at the last count (295 s), since the counts showed two up until then."""
    t = rendered(Tracker(), "a", 0, 10_000)
    t = rendered(t, "b", 0, 250_000)
    t = counted(t, 2, 295_000, 60)
    t = counted(t, 1, 300_000, 60)
    assert [cid for cid, _ in t.meter.live] == ["b"]
    assert t.meter.stopped_ms == 295_000


def test_a_render_on_a_container_metered_as_stopped_trades_places_with_the_idle_one() -> None:
    """Two containers, window 60 s: a rendered until 10 s, b until 20 s. At 110 s the
    count drops to one and the meter stops a (its tail ran out first), at the last
    count, 100 s. But a's next render ends at 130 s: a was up, so b was the one that
    stopped. They trade places: b is metered as stopped at 100 s, a as up from then,
    and the count's 100-140 s of one container is billed once."""
    t = rendered(Tracker(), "a", 0, 10_000)
    t = rendered(t, "b", 0, 20_000)
    t = counted(t, 2, 100_000, 60)
    t = counted(t, 1, 110_000, 60)
    assert t.gone == (("a", 100_000),)
    t = rendered(t, "a", 0, 130_000)
    assert t.meter.live == (("a", 100_000),)
    assert t.gone == (("b", 100_000),)
    t = counted(t, 1, 140_000, 60)
    assert billed_ms(t.meter, 140_000) == 100_000 + 100_000 + 40_000


def test_a_container_the_count_already_paid_for_is_not_billed_twice() -> None:
    """The count shows one container all along, x (named by a render at 5 s). A render
    at 52 s names a container never seen, booted at 10 s, with no placeholder to take:
    the count has been paying for one container since, so "late" is metered from the
    latest count (50 s), not its boot, and the next count (55 s) stops the one too many,
    x, idle longest, in the middle of the span: 52.5 + 5 s, not 52.5 + 45 s."""
    t = rendered(Tracker(), "x", 0, 5_000)
    t = counted(t, 1, 10_000, 60)
    t = counted(t, 1, 50_000, 60)
    t = rendered(t, "late", 10_000, 52_000)
    assert dict(t.meter.live) == {"x": 0, "late": 50_000}
    t = counted(t, 1, 55_000, 60)
    assert t.meter.live == (("late", 50_000),)
    assert billed_ms(t.meter, 55_000) == 52_500 + 5_000


@settings(max_examples=200, deadline=None)
@given(
    spans=st.lists(st.tuples(st.integers(0, 600), st.integers(1, 600)), min_size=1, max_size=12),
    every_s=st.integers(1, 30),
)
def test_counts_alone_bill_within_one_count_interval_per_container(
    spans: list[tuple[int, int]], every_s: int
) -> None:
    """Containers come and go (start s, seconds up), unseen by any render; counting
    them every `every_s` seconds bills each within one interval of its true time."""
    truth = sum(up for _, up in spans) * 1000
    end_s = max(s + up for s, up in spans) + 2 * every_s
    t = Tracker()
    for now_s in range(0, end_s + 1, every_s):
        up = sum(1 for s, length in spans if s <= now_s < s + length)
        t = counted(t, up, now_s * 1000, 300)
    assert not t.meter.live
    assert abs(billed_ms(t.meter, end_s * 1000) - truth) <= len(spans) * every_s * 1000
