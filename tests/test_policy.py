"""The pure spillover policy: hysteresis, routing, caps, queue timeout, pre-warm.

Example tests hold a condition for N ticks and expect the flip on tick N+1 (as Ray's
`test_autoscaling_policy.py` does); Hypothesis properties drive random signal sequences
through `decide` and check the invariants the docstring of `scheduler.policy.decide`
promises.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy import (
    Decision,
    Estimates,
    Mode,
    Plan,
    PolicyConfig,
    PolicyState,
    PrewarmWindow,
    Reason,
    Signal,
    Target,
    Transition,
    decide,
    quantile,
    retry_after_s,
)

DAY_S = 86_400
DAY_MS = DAY_S * 1000
HOUR_MS = 3_600_000
MIDNIGHT = 20_000 * DAY_MS
"""A UTC midnight, so the second of the day is easy to read."""
T0 = MIDNIGHT + 12 * HOUR_MS
TIMEOUT_MS = 600_000

NORMAL, SPILL = Mode.NORMAL, Mode.SPILL
INHOUSE, MODAL, HOLD, SHED = Target.INHOUSE, Target.MODAL, Target.HOLD, Target.SHED

BASE = PolicyConfig(
    high_watermark=8,
    low_watermark=2,
    enter_dwell_ms=2_000,
    exit_dwell_ms=30_000,
    min_mode_ms=10_000,
    max_spill_per_decision=100,
    max_containers=10,
    concurrency=1,
    buffer_containers=1,
    scaledown_window_s=300,
    gpu_usd_per_s=0.001,
    budget_usd_month=10_000.0,
    queue_timeout_ms=TIMEOUT_MS,
)
ESTIMATES = Estimates(inhouse_render_ms=60_000, modal_render_ms=60_000, cold_start_ms=30_000)
SPILLING = PolicyState(mode=SPILL, mode_since_ms=T0 - HOUR_MS)
"""Spilling for an hour: free to change mode at T0."""


def config(**overrides: Any) -> PolicyConfig:
    return dataclasses.replace(BASE, **overrides)


def sig(
    queued: int,
    *,
    ages: Sequence[int] = (),
    slots: int = 2,
    busy: int | None = None,
    inflight: int = 0,
    ready: int = 0,
    available: bool = True,
    spent: float = 0.0,
    estimates: Estimates = ESTIMATES,
) -> Signal:
    """A signal; by default both in-house slots are busy and Modal is empty."""
    return Signal(
        queued=queued,
        queue_ages_ms=tuple(ages),
        inhouse_busy=slots if busy is None else busy,
        inhouse_slots=slots,
        modal_inflight=inflight,
        modal_ready_slots=ready,
        modal_available=available,
        spent_usd=spent,
        estimates=estimates,
    )


def route(
    signal: Signal, cfg: PolicyConfig = BASE, state: PolicyState = SPILLING
) -> tuple[Decision, ...]:
    return decide(state, signal, cfg, T0).decisions


def run(
    cfg: PolicyConfig, ticks: Sequence[tuple[int, int]], state: PolicyState | None = None
) -> list[Plan]:
    """Feeds `(now_ms, queued)` ticks through `decide`, threading the state."""
    plans = []
    state = state or PolicyState()
    for now_ms, queued in ticks:
        plan = decide(state, sig(queued), cfg, now_ms)
        plans.append(plan)
        state = plan.state
    return plans


def at(hours: float, day: int = 0) -> int:
    return MIDNIGHT + day * DAY_MS + round(hours * HOUR_MS)


# --- hysteresis -------------------------------------------------------------------------


def test_enters_spill_after_enter_dwell_and_not_a_millisecond_earlier() -> None:
    """The queue at the high watermark flips the mode to SPILL on the tick where it has
    held for enter_dwell_ms, and on no earlier tick."""
    ticks = [(T0 + i * 500, 8) for i in range(4)] + [(T0 + 1_999, 9), (T0 + 2_000, 8)]
    plans = run(config(enter_dwell_ms=2_000), ticks)
    for plan in plans[:-1]:
        assert plan.state.mode is NORMAL and plan.transition is None
        assert plan.state.pending_since_ms == T0
    assert plans[-1].transition == Transition(T0 + 2_000, NORMAL, SPILL, Reason.DEPTH_ABOVE_HIGH, 8)
    assert plans[-1].state.mode is SPILL and plans[-1].state.mode_since_ms == T0 + 2_000
    assert plans[-1].state.pending_since_ms is None


def test_a_dip_below_high_restarts_the_enter_dwell() -> None:
    """One tick below the high watermark restarts the dwell, so SPILL comes a full
    enter_dwell_ms after the queue returned."""
    ticks = [(T0, 9), (T0 + 1_900, 9), (T0 + 1_950, 7), (T0 + 2_000, 9), (T0 + 3_999, 9)]
    plans = run(config(enter_dwell_ms=2_000), ticks)
    assert all(p.state.mode is NORMAL and p.transition is None for p in plans)
    assert plans[2].state.pending_since_ms is None
    assert plans[-1].state.pending_since_ms == T0 + 2_000
    flip = decide(plans[-1].state, sig(9), config(enter_dwell_ms=2_000), T0 + 4_000)
    assert flip.transition is not None and flip.state.mode is SPILL


def test_leaves_spill_after_exit_dwell_at_or_below_low() -> None:
    """In SPILL the queue at or below the low watermark returns to NORMAL only once it has
    held for exit_dwell_ms; a tick above low restarts that dwell."""
    cfg = config(exit_dwell_ms=30_000)
    held = run(cfg, [(T0, 2), (T0 + 10_000, 1), (T0 + 29_999, 0)], SPILLING)
    assert all(p.state.mode is SPILL and p.transition is None for p in held)
    flip = decide(held[-1].state, sig(2), cfg, T0 + 30_000)
    assert flip.transition == Transition(T0 + 30_000, SPILL, NORMAL, Reason.DEPTH_BELOW_LOW, 2)
    assert flip.state.mode is NORMAL

    interrupted = run(
        cfg, [(T0, 2), (T0 + 20_000, 3), (T0 + 30_000, 2), (T0 + 59_999, 2)], SPILLING
    )
    assert all(p.state.mode is SPILL for p in interrupted)
    assert decide(interrupted[-1].state, sig(2), cfg, T0 + 60_000).state.mode is NORMAL


def test_min_mode_ms_spaces_mode_changes_even_when_the_dwell_is_over() -> None:
    """A mode change whose dwell has ended still waits until min_mode_ms after the last
    change, in both directions."""
    cfg = config(enter_dwell_ms=0, exit_dwell_ms=1_000, min_mode_ms=10_000)
    plans = run(cfg, [(T0, 8), (T0 + 1, 0), (T0 + 5_000, 0), (T0 + 9_999, 0), (T0 + 10_000, 0)])
    assert [p.state.mode for p in plans] == [SPILL, SPILL, SPILL, SPILL, NORMAL]
    assert [p.transition is not None for p in plans] == [True, False, False, False, True]
    back = run(cfg, [(T0 + 10_001, 30), (T0 + 19_999, 30), (T0 + 20_000, 30)], plans[-1].state)
    assert [p.state.mode for p in back] == [NORMAL, NORMAL, SPILL]


def test_a_long_wait_enters_spill_below_the_high_watermark() -> None:
    """Three jobs beyond the busy slots (below the high watermark of 8) whose oldest has
    waited spill_wait_ms enter SPILL once that has held for enter_dwell_ms, with
    wait_above_max; a younger line does not."""
    cfg = config(spill_wait_ms=30_000, enter_dwell_ms=2_000)
    young = [decide(PolicyState(), sig(3, ages=(29_999, 5_000, 1_000)), cfg, T0)]
    assert young[0].state.pending_since_ms is None
    state = PolicyState()
    plans = []
    for dt in (0, 1_999, 2_000):
        plans.append(decide(state, sig(3, ages=(30_000 + dt, 5_000, 1_000)), cfg, T0 + dt))
        state = plans[-1].state
    assert [p.state.mode for p in plans] == [NORMAL, NORMAL, SPILL]
    assert plans[-1].transition == Transition(T0 + 2_000, NORMAL, SPILL, Reason.WAIT_ABOVE_MAX, 3)


def test_spill_lasts_while_a_job_waits_too_long_even_at_the_low_watermark() -> None:
    """One job beyond the busy slots is at the low watermark, but while it has waited
    spill_wait_ms the exit dwell does not start; once it has not, it does."""
    cfg = config(spill_wait_ms=30_000, exit_dwell_ms=1_000, low_watermark=1)
    held = decide(SPILLING, sig(1, ages=(45_000,)), cfg, T0)
    assert held.state.mode is SPILL and held.state.pending_since_ms is None
    leaving = decide(SPILLING, sig(1, ages=(10_000,)), cfg, T0)
    assert leaving.state.pending_since_ms == T0


@pytest.mark.parametrize("start", [PolicyState(), SPILLING])
def test_depth_between_the_watermarks_keeps_the_current_mode(start: PolicyState) -> None:
    """A queue strictly between the watermarks never changes the mode, however long it
    stays there."""
    ticks = [(T0 + i * 10_000, 3 + i % 5) for i in range(60)]
    plans = run(BASE, ticks, start)
    assert all(p.state.mode is start.mode and p.transition is None for p in plans)
    assert all(p.state.pending_since_ms is None for p in plans)


# --- routing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "hold_reason"),
    [(SPILLING, Reason.INHOUSE_SOONER), (PolicyState(), Reason.NORMAL_MODE)],
)
def test_free_inhouse_slots_take_jobs_first(state: PolicyState, hold_reason: Reason) -> None:
    """Free in-house slots take the head of the queue in either mode; the rest are held."""
    assert route(sig(5, slots=4, busy=1), state=state) == (
        Decision(INHOUSE, 3, Reason.INHOUSE_SLOT_FREE),
        Decision(HOLD, 2, hold_reason),
    )
    assert route(sig(2, slots=4, busy=1), state=state) == (
        Decision(INHOUSE, 2, Reason.INHOUSE_SLOT_FREE),
    )


def test_normal_mode_boots_nothing_but_uses_containers_already_paid_for() -> None:
    """In NORMAL mode a queue is held with normal_mode rather than boot a container; but
    idle containers already up (billed through their scaledown window anyway) take the
    jobs they finish sooner, with modal_warm."""
    plan = decide(PolicyState(), sig(7), BASE, T0)
    assert plan.decisions == (Decision(HOLD, 7, Reason.NORMAL_MODE),)
    assert route(sig(7, ready=3), state=PolicyState()) == (
        Decision(MODAL, 3, Reason.MODAL_WARM),
        Decision(HOLD, 4, Reason.NORMAL_MODE),
    )
    assert route(sig(7, ready=3, inflight=3), state=PolicyState()) == (
        Decision(HOLD, 7, Reason.NORMAL_MODE),
    )


def test_spill_sends_the_positions_modal_finishes_sooner() -> None:
    """With 2 busy slots, 60 s renders and a 30 s cold start, Modal takes 90 s, while the
    job at in-house position p starts once p + 1 slots have freed (one every 30 s) and
    takes 30 s x (p + 1) + 60 s: of 6 waiting jobs all but the head spill (the head ties
    at 90 s and stays); of 2, one."""
    assert route(sig(6)) == (
        Decision(MODAL, 5, Reason.MODAL_FASTER),
        Decision(HOLD, 1, Reason.INHOUSE_SOONER),
    )
    assert route(sig(2)) == (
        Decision(MODAL, 1, Reason.MODAL_FASTER),
        Decision(HOLD, 1, Reason.INHOUSE_SOONER),
    )


@pytest.mark.parametrize(
    ("ready", "starting", "inflight", "spilled"),
    [
        (0, 0, 0, 1),  # cold (120 s): only position 2 (150 s); position 1 ties at 120 s
        (2, 0, 0, 2),  # warm (60 s) beats positions 2 and 1; then cold ties position 0
        (2, 0, 2, 1),  # ready but busy: no idle warm slot
        (3, 0, 0, 3),  # warm beats even position 0 (60 s < 90 s)
        (0, 2, 0, 2),  # starting: half a cold start (90 s) beats positions 2 and 1
        (2, 1, 2, 1),  # in-flight fills the ready slots: the starting one takes position 2
    ],
)
def test_idle_modal_slots_already_paid_for_spill_jobs_a_cold_start_would_not(
    ready: int, starting: int, inflight: int, spilled: int
) -> None:
    """With a 60 s cold start, an idle ready Modal slot saves all of it and an idle slot
    of a container still booting (expected halfway through) half, so they beat in-house
    positions a new container would not."""
    slow = dataclasses.replace(ESTIMATES, cold_start_ms=60_000)
    held = (Decision(HOLD, 3 - spilled, Reason.INHOUSE_SOONER),) if spilled < 3 else ()
    signal = sig(3, ready=ready, inflight=inflight, estimates=slow)
    assert route(dataclasses.replace(signal, modal_starting_slots=starting)) == (
        Decision(MODAL, spilled, Reason.MODAL_FASTER),
        *held,
    )


def test_spills_plan_with_the_mean_cold_start_and_budget_with_the_high_quantile() -> None:
    """A fat tail (p90 120 s) with a 30 s mean: the mean decides where a job finishes
    sooner (position 1's 120 s beats 90 s), while the budget still reserves the p90."""
    tail = dataclasses.replace(ESTIMATES, cold_start_ms=120_000, cold_start_mean_ms=30_000)
    cfg = config(gpu_usd_per_s=0.01, budget_usd_month=3.6)
    assert route(sig(2, estimates=tail), cfg) == (
        Decision(MODAL, 1, Reason.MODAL_FASTER),
        Decision(HOLD, 1, Reason.INHOUSE_SOONER),
    )
    # One spill reserves (120 s + 60 s) x $0.01 = $1.80: two fit $3.60, not three.
    assert route(sig(6, estimates=tail), cfg) == (
        Decision(MODAL, 2, Reason.MODAL_FASTER),
        Decision(HOLD, 4, Reason.BUDGET_EXHAUSTED),
    )


def test_cold_starts_unchanged_for_cold_start_stale_ms_claim_no_more_than_the_default() -> None:
    """Samples saying a boot takes 140 s (a deploy's full boots) keep the line in-house;
    after they have not changed for cold_start_stale_ms they may claim no more than the
    configured 30 s, so the policy spills again and sees what boots take now. A new
    sample makes them fresh again."""
    cfg = config(cold_start_stale_ms=300_000, cold_start_ms=30_000)
    full_boots = dataclasses.replace(ESTIMATES, cold_start_ms=150_000, cold_start_mean_ms=140_000)
    first = decide(SPILLING, sig(3, estimates=full_boots), cfg, T0)
    assert first.decisions == (Decision(HOLD, 3, Reason.INHOUSE_SOONER),)
    assert (first.state.cold_seen_ms, first.state.cold_seen_at_ms) == (140_000, T0)
    assert first.recheck_at_ms == T0 + 300_000
    fresh = decide(first.state, sig(3, estimates=full_boots), cfg, T0 + 299_999)
    assert fresh.count(MODAL) == 0 and fresh.state.cold_seen_at_ms == T0
    stale = decide(first.state, sig(3, estimates=full_boots), cfg, T0 + 300_000)
    assert stale.decisions == (
        Decision(MODAL, 2, Reason.MODAL_FASTER),
        Decision(HOLD, 1, Reason.INHOUSE_SOONER),
    )
    new_sample = dataclasses.replace(full_boots, cold_start_mean_ms=125_000)
    again = decide(stale.state, sig(3, estimates=new_sample), cfg, T0 + 300_001)
    assert again.count(MODAL) == 0 and again.state.cold_seen_at_ms == T0 + 300_001


def test_inhouse_sooner_stops_spilling() -> None:
    """A 10-minute cold start loses to every in-house position of a short line, so nothing
    spills and the jobs are held with inhouse_sooner."""
    slow = dataclasses.replace(ESTIMATES, cold_start_ms=600_000)
    assert route(sig(6, estimates=slow)) == (Decision(HOLD, 6, Reason.INHOUSE_SOONER),)


def test_modal_cap_stops_spilling() -> None:
    """Spills stop at max_containers x concurrency minus in-flight, with modal_full."""
    cfg = config(max_containers=3, concurrency=2)
    assert route(sig(10, inflight=4), cfg) == (
        Decision(MODAL, 2, Reason.MODAL_FASTER),
        Decision(HOLD, 8, Reason.MODAL_FULL),
    )
    for inflight in (6, 7):
        assert route(sig(10, inflight=inflight), cfg) == (Decision(HOLD, 10, Reason.MODAL_FULL),)


def test_budget_stops_spilling() -> None:
    """At $0.01/GPU-s a cold job costs $0.90 and a warm one $0.60; with $100 budget, $97
    spent and one in-flight render reserving $0.60, $2.40 is left: two cold jobs fit, or
    two warm ones and a cold one."""
    cfg = config(gpu_usd_per_s=0.01, budget_usd_month=100.0)
    plan = decide(SPILLING, sig(10, inflight=1, spent=97.0), cfg, T0)
    assert plan.budget_left_usd == pytest.approx(2.40)
    assert plan.decisions == (
        Decision(MODAL, 2, Reason.MODAL_FASTER),
        Decision(HOLD, 8, Reason.BUDGET_EXHAUSTED),
    )
    assert route(sig(10, inflight=1, ready=3, spent=97.0), cfg) == (
        Decision(MODAL, 3, Reason.MODAL_FASTER),
        Decision(HOLD, 7, Reason.BUDGET_EXHAUSTED),
    )


def test_spill_step_cap_bounds_one_decision() -> None:
    """No more than max_spill_per_decision jobs spill at once; the rest wait with
    spill_step_cap."""
    assert route(sig(10), config(max_spill_per_decision=3)) == (
        Decision(MODAL, 3, Reason.MODAL_FASTER),
        Decision(HOLD, 7, Reason.SPILL_STEP_CAP),
    )


def test_unavailable_modal_takes_nothing() -> None:
    """An unavailable second fleet takes nothing, even with warm slots, and says why."""
    assert route(sig(10, ready=5, available=False)) == (
        Decision(HOLD, 10, Reason.MODAL_UNAVAILABLE),
    )


def test_no_inhouse_slots_spills_everything_the_caps_allow() -> None:
    """With no in-house fleet, SPILL sends every job Modal may take, however slow its cold
    start."""
    slow = dataclasses.replace(ESTIMATES, cold_start_ms=HOUR_MS)
    assert route(sig(5, slots=0, estimates=slow)) == (Decision(MODAL, 5, Reason.MODAL_FASTER),)
    assert route(sig(5, slots=0, estimates=slow), config(max_containers=3)) == (
        Decision(MODAL, 3, Reason.MODAL_FASTER),
        Decision(HOLD, 2, Reason.MODAL_FULL),
    )


# --- queue timeout ----------------------------------------------------------------------


def test_overdue_jobs_are_rescued_onto_modal_in_normal_mode() -> None:
    """Jobs that waited queue_timeout_ms (inclusive) go to Modal even in NORMAL mode."""
    plan = decide(PolicyState(), sig(4, ages=(TIMEOUT_MS + 5, TIMEOUT_MS, 1_000, 0)), BASE, T0)
    assert plan.decisions == (
        Decision(MODAL, 2, Reason.TIMEOUT_RESCUE),
        Decision(HOLD, 2, Reason.NORMAL_MODE),
    )
    assert plan.shed_waits_over_ms is None


def test_rescue_comes_before_modal_faster_spills_in_spill_mode() -> None:
    """In SPILL the overdue jobs are rescued first and the rest of the line is then
    judged by speed."""
    assert route(sig(6, ages=(TIMEOUT_MS, TIMEOUT_MS))) == (
        Decision(MODAL, 2, Reason.TIMEOUT_RESCUE),
        Decision(MODAL, 3, Reason.MODAL_FASTER),
        Decision(HOLD, 1, Reason.INHOUSE_SOONER),
    )


def test_a_free_inhouse_slot_takes_the_oldest_job_first() -> None:
    """An overdue job at the head goes to a free in-house slot; only the other one is
    rescued."""
    plan = decide(PolicyState(), sig(3, slots=2, busy=1, ages=(TIMEOUT_MS,) * 2), BASE, T0)
    assert plan.decisions == (
        Decision(INHOUSE, 1, Reason.INHOUSE_SLOT_FREE),
        Decision(MODAL, 1, Reason.TIMEOUT_RESCUE),
        Decision(HOLD, 1, Reason.NORMAL_MODE),
    )


@pytest.mark.parametrize(
    ("full", "reason"),
    [
        (sig(4, inflight=10), Reason.MODAL_FULL),
        (sig(4, available=False), Reason.MODAL_UNAVAILABLE),
        (sig(4, spent=10_000.0), Reason.BUDGET_EXHAUSTED),
    ],
)
@pytest.mark.parametrize("state", [PolicyState(), SPILLING])
def test_overdue_jobs_are_shed_only_when_both_fleets_are_full(
    full: Signal, reason: Reason, state: PolicyState
) -> None:
    """With in-house busy and Modal full, unavailable or out of budget, the overdue jobs
    fail with queue_timeout and the others wait."""
    signal = dataclasses.replace(full, queue_ages_ms=(TIMEOUT_MS + 1, TIMEOUT_MS, 10))
    plan = decide(state, signal, BASE, T0)
    assert plan.decisions == (Decision(SHED, 2, Reason.QUEUE_TIMEOUT), Decision(HOLD, 2, reason))
    assert plan.shed_waits_over_ms == TIMEOUT_MS


def test_overdue_jobs_are_rescued_while_modal_has_room_and_the_rest_shed() -> None:
    """One Modal slot left rescues one overdue job; the other two are shed."""
    plan = decide(PolicyState(), sig(4, inflight=9, ages=(TIMEOUT_MS,) * 3), BASE, T0)
    assert plan.decisions == (
        Decision(MODAL, 1, Reason.TIMEOUT_RESCUE),
        Decision(SHED, 2, Reason.QUEUE_TIMEOUT),
        Decision(HOLD, 1, Reason.MODAL_FULL),
    )


def test_step_cap_alone_never_sheds() -> None:
    """When only max_spill_per_decision stops rescues, overdue jobs wait for the next
    decision instead of failing."""
    plan = decide(
        PolicyState(), sig(4, ages=(TIMEOUT_MS,) * 3), config(max_spill_per_decision=1), T0
    )
    assert plan.decisions == (
        Decision(MODAL, 1, Reason.TIMEOUT_RESCUE),
        Decision(HOLD, 3, Reason.SPILL_STEP_CAP),
    )
    assert plan.shed_waits_over_ms is None


def test_free_inhouse_slots_prevent_shedding() -> None:
    """Overdue jobs go home when in-house has free slots, even with Modal full."""
    plan = decide(
        PolicyState(), sig(2, slots=3, busy=1, inflight=10, ages=(TIMEOUT_MS,) * 2), BASE, T0
    )
    assert plan.decisions == (Decision(INHOUSE, 2, Reason.INHOUSE_SLOT_FREE),)
    assert plan.shed_waits_over_ms is None


# --- pre-warm ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "now_ms", "warm"),
    [
        (PrewarmWindow(8 * 3600, 10 * 3600, 3), at(8) - 1, 0),
        (PrewarmWindow(8 * 3600, 10 * 3600, 3), at(8), 3),
        (PrewarmWindow(8 * 3600, 10 * 3600, 3), at(10) - 1, 3),
        (PrewarmWindow(8 * 3600, 10 * 3600, 3), at(10), 0),
        (PrewarmWindow(8 * 3600, 10 * 3600, 30), at(9), 10),  # capped at max_containers
        (PrewarmWindow(22 * 3600, 2 * 3600, 2), at(22) - 1, 0),
        (PrewarmWindow(22 * 3600, 2 * 3600, 2), at(22), 2),
        (PrewarmWindow(22 * 3600, 2 * 3600, 2), at(0, day=1), 2),
        (PrewarmWindow(22 * 3600, 2 * 3600, 2), at(2, day=1) - 1, 2),
        (PrewarmWindow(22 * 3600, 2 * 3600, 2), at(2, day=1), 0),
        (PrewarmWindow(22 * 3600, 2 * 3600, 2), at(12, day=1), 0),
    ],
)
def test_scheduled_window_sets_min_containers_only_inside_it(
    window: PrewarmWindow, now_ms: int, warm: int
) -> None:
    """A pre-warm window (one wrapping midnight too) keeps its containers warm from its
    start second up to, not including, its end second, never above max_containers."""
    plan = decide(PolicyState(), sig(0), config(prewarm_windows=(window,)), now_ms)
    assert plan.autoscale.min_containers == warm
    assert plan.autoscale.max_containers == 10


@pytest.mark.parametrize(
    ("state", "queued", "buffer", "window_s"),
    [
        (SPILLING, 5, 1, 300),  # 5 wait for in-house: the deployed window and the spare
        (PolicyState(), 5, 0, 300),  # waiting, but nothing boots in NORMAL mode: no spare
        (SPILLING, 2, 0, 10),  # 2 wait: at the low watermark, drained
        (PolicyState(), 0, 0, 10),
    ],
)
def test_short_tails_and_no_spare_once_the_queue_has_drained(
    state: PolicyState, queued: int, buffer: int, window_s: int
) -> None:
    """While jobs wait for in-house above the low watermark, idle containers keep the
    deployed scaledown window (and, spilling, a buffer container); once it has drained
    they get the drain window and no spare, since nothing waits for them."""
    cfg = config(drain_scaledown_window_s=10)
    autoscale = decide(state, sig(queued), cfg, T0).autoscale
    assert (autoscale.buffer_containers, autoscale.scaledown_window_s) == (buffer, window_s)


REACTIVE = config(
    prewarm_rise_per_min=6.0, rate_window_ms=10_000, prewarm_hold_ms=120_000, prewarm_containers=2
)


def test_reactive_prewarm_arms_on_a_fast_rise_holds_then_relaxes() -> None:
    """A queue rising 12 jobs a minute below the high watermark warms prewarm_containers
    for prewarm_hold_ms from the sample that saw it, then lets them go."""
    plans = run(REACTIVE, [(T0, 0), (T0 + 5_000, 1), (T0 + 10_000, 2), (T0 + 20_000, 2)])
    assert [p.autoscale.min_containers for p in plans] == [0, 0, 2, 2]
    assert plans[-1].state.prewarm_until_ms == T0 + 130_000
    held = run(REACTIVE, [(T0 + 129_999, 2), (T0 + 130_000, 2)], plans[-1].state)
    assert [p.autoscale.min_containers for p in held] == [2, 0]


def test_reactive_prewarm_rearms_while_the_queue_keeps_rising() -> None:
    """Each sample that still sees the rise extends the hold from that sample."""
    plans = run(REACTIVE, [(T0, 0), (T0 + 10_000, 2), (T0 + 20_000, 4), (T0 + 135_000, 4)])
    assert [p.autoscale.min_containers for p in plans] == [0, 2, 2, 2]
    assert plans[-1].state.prewarm_until_ms == T0 + 140_000


@pytest.mark.parametrize(
    ("cfg", "ticks"),
    [
        (REACTIVE, [(T0, 0), (T0 + 10_000, 9)]),  # at/above high: spilling will handle it
        (dataclasses.replace(REACTIVE, prewarm_rise_per_min=7.0), [(T0, 0), (T0 + 10_000, 1)]),
        (dataclasses.replace(REACTIVE, prewarm_rise_per_min=0.0), [(T0, 0), (T0 + 10_000, 7)]),
    ],
)
def test_reactive_prewarm_stays_off_without_a_fast_rise_below_high(
    cfg: PolicyConfig, ticks: list[tuple[int, int]]
) -> None:
    """A rise at or above the high watermark, slower than prewarm_rise_per_min, or with
    reactive pre-warm off warms nothing."""
    assert [p.autoscale.min_containers for p in run(cfg, ticks)] == [0, 0]


def test_reactive_prewarm_arms_exactly_at_the_threshold_rate() -> None:
    """One job in ten seconds is 6 a minute, which meets prewarm_rise_per_min=6."""
    plans = run(REACTIVE, [(T0, 0), (T0 + 10_000, 1)])
    assert [p.autoscale.min_containers for p in plans] == [0, 2]


@pytest.mark.parametrize(
    ("spent", "inflight", "warm", "buffer"),
    [
        (0.0, 0, 5, 1),
        (5.5, 0, 2, 1),  # $4.50 left keeps two containers idle for $2 each
        (5.5, 1, 1, 1),  # one in-flight render reserves $0.60: $3.90 left
        (8.5, 0, 0, 1),  # $1.50: no pre-warm, but one buffer container for its window
        (10.0, 0, 0, 0),  # budget exhausted: no buffer either
        (12.0, 0, 0, 0),
    ],
)
def test_budget_limits_prewarm_to_what_it_pays_to_keep_idle(
    spent: float, inflight: int, warm: int, buffer: int
) -> None:
    """Spilling with jobs waiting for in-house, pre-warm keeps no more containers than
    the budget left pays to idle until the window closes plus one scaledown window
    ($0.01/s x (100 s + 100 s) = $2 each), the buffer no more than one scaledown window
    pays for ($1 each)."""
    noon = (T0 // 1000) % DAY_S
    cfg = config(
        gpu_usd_per_s=0.01,
        scaledown_window_s=100,
        budget_usd_month=10.0,
        prewarm_windows=(PrewarmWindow(noon - 60, noon + 100, 5),),
    )
    waiting = sig(5, spent=spent, inflight=inflight)
    autoscale = decide(SPILLING, waiting, cfg, T0).autoscale
    assert (autoscale.min_containers, autoscale.buffer_containers) == (warm, buffer)


# --- recheck_at_ms ----------------------------------------------------------------------


def test_recheck_points_at_the_end_of_a_pending_enter_dwell() -> None:
    """A queue at the high watermark asks to be decided again when the dwell ends."""
    plans = run(BASE, [(T0, 8), (T0 + 500, 9)])
    assert [p.recheck_at_ms for p in plans] == [T0 + 2_000, T0 + 2_000]


def test_recheck_waits_for_min_mode_when_it_ends_after_the_exit_dwell() -> None:
    """A pending exit whose dwell ends inside min_mode_ms is rechecked when min_mode_ms
    ends."""
    cfg = config(enter_dwell_ms=0, exit_dwell_ms=1_000, min_mode_ms=10_000)
    plans = run(cfg, [(T0, 8), (T0 + 100, 0)])
    assert plans[0].recheck_at_ms is None
    assert plans[1].recheck_at_ms == T0 + 10_000


def test_recheck_points_at_the_oldest_waiting_jobs_timeout() -> None:
    """The oldest job not yet overdue sets the recheck to when it will be, and the
    earliest of several reasons wins."""
    cfg = config(spill_wait_ms=0)
    plan = decide(PolicyState(), sig(3, ages=(TIMEOUT_MS + 1, 100_000, 5_000)), cfg, T0)
    assert plan.recheck_at_ms == T0 + TIMEOUT_MS - 100_000
    dwell = decide(PolicyState(), sig(8, ages=(100_000,)), cfg, T0)
    assert dwell.recheck_at_ms == T0 + 2_000


def test_recheck_points_at_when_the_oldest_waiting_job_will_have_waited_spill_wait() -> None:
    """In NORMAL mode, the oldest job beyond the free slots sets the recheck to when it
    will have waited spill_wait_ms (here 30 s); a free slot takes the oldest first."""
    cfg = config(spill_wait_ms=30_000)
    plan = decide(PolicyState(), sig(3, ages=(12_000, 5_000, 1_000)), cfg, T0)
    assert plan.recheck_at_ms == T0 + 18_000
    one_free = sig(3, busy=1, ages=(25_000, 12_000, 1_000))
    assert decide(PolicyState(), one_free, cfg, T0).recheck_at_ms == T0 + 18_000


@pytest.mark.parametrize(
    ("window", "now_ms", "edge"),
    [
        (PrewarmWindow(8 * 3600, 10 * 3600, 3), at(7), at(8)),
        (PrewarmWindow(8 * 3600, 10 * 3600, 3), at(9), at(10)),
        (PrewarmWindow(8 * 3600, 10 * 3600, 3), at(23), at(8, day=1)),
        (PrewarmWindow(22 * 3600, 2 * 3600, 2), at(23), at(2, day=1)),
        (PrewarmWindow(22 * 3600, 2 * 3600, 2), at(1), at(2)),
    ],
)
def test_recheck_points_at_the_next_window_edge(
    window: PrewarmWindow, now_ms: int, edge: int
) -> None:
    """With a pre-warm window configured, the next start or end (next day's if none is
    left today) is when to decide again."""
    plan = decide(PolicyState(), sig(0), config(prewarm_windows=(window,)), now_ms)
    assert plan.recheck_at_ms == edge


def test_nothing_pending_needs_no_recheck() -> None:
    """An empty queue with no dwell, window or pre-warm pending asks for no recheck."""
    assert decide(PolicyState(), sig(0), BASE, T0).recheck_at_ms is None


# --- helpers: retry_after_s, quantile, config validation ---------------------------------


@pytest.mark.parametrize(
    ("signal", "expected"),
    [
        # 2 slots at 60 s renders, and 10 on Modal at a 60 s render after a 30 s boot.
        (sig(0, slots=2), 7),
        (sig(0, slots=2, available=False), 30),
        (sig(0, slots=0, available=False), 60),
        (sig(0, slots=1, available=False, estimates=Estimates(3_600_000, 1, 1)), 60),
        (sig(0, slots=100, estimates=Estimates(1, 1, 1)), 1),
    ],
)
def test_retry_after_is_one_job_leaving_the_queue_within_1_to_60_s(
    signal: Signal, expected: int
) -> None:
    """Retry-After is how long the fleets take to drain one job (in-house renders, and
    Modal's renders after their cold starts), rounded up, between 1 and 60 s."""
    assert retry_after_s(signal, BASE) == expected


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.0, 1), (0.2, 1), (0.21, 2), (0.5, 3), (0.9, 5), (0.99, 5), (1.0, 5)],
)
def test_quantile_is_nearest_rank(q: float, expected: int) -> None:
    """The q-quantile is the ceil(q x n)-th smallest sample, clamped to the samples."""
    assert quantile([5, 1, 4, 2, 3], q, default=-1) == expected


def test_quantile_of_no_samples_is_the_default_and_ignores_order() -> None:
    """No samples give the default; ten samples give the 9th and 10th for q=0.9, 0.95."""
    assert quantile([], 0.95, default=30_000) == 30_000
    samples = list(range(10, 0, -1))
    assert (quantile(samples, 0.9, 0), quantile(samples, 0.95, 0)) == (9, 10)


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"low_watermark": 8, "high_watermark": 8}, "low_watermark"),
        ({"low_watermark": -1}, "low_watermark"),
        ({"max_containers": 0}, "max_containers must be at least 1, got 0"),
        ({"concurrency": 0}, "concurrency must be at least 1, got 0"),
        ({"max_queued": 0}, "max_queued must be at least 1, got 0"),
        ({"max_spill_per_decision": 0}, "max_spill_per_decision must be at least 1, got 0"),
        ({"exit_dwell_ms": -1}, "exit_dwell_ms must not be negative, got -1"),
        ({"gpu_usd_per_s": -0.5}, "gpu_usd_per_s must not be negative, got -0.5"),
        ({"budget_usd_month": math.nan}, "budget_usd_month"),
        ({"queue_timeout_ms": 0}, "queue_timeout_ms must be positive, got 0"),
        ({"rate_window_ms": 0}, "rate_window_ms must be positive, got 0"),
        ({"prewarm_windows": (PrewarmWindow(25 * 3600, 0, 1),)}, "prewarm_windows"),
        ({"prewarm_windows": (PrewarmWindow(0, 3600, -1),)}, "prewarm_windows"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(overrides: dict[str, Any], names: str) -> None:
    """A bad knob fails construction with a message naming the field and its value."""
    with pytest.raises(ValueError, match=re.escape(names)):
        config(**overrides)


def test_config_reports_every_bad_field_at_once() -> None:
    """Several bad knobs are reported together, so one restart fixes them all."""
    with pytest.raises(ValueError, match="max_containers") as raised:
        config(max_containers=0, concurrency=0, min_mode_ms=-5)
    assert "concurrency" in str(raised.value) and "min_mode_ms" in str(raised.value)


# --- purity -----------------------------------------------------------------------------


def test_decide_is_deterministic_and_leaves_its_inputs_alone() -> None:
    """The same inputs give equal plans, and the frozen inputs are left as they were."""
    state = dataclasses.replace(SPILLING, pending_since_ms=T0 - 1_000, prewarm_until_ms=T0 + 5)
    signal = sig(12, ages=(TIMEOUT_MS, 30_000), slots=3, busy=1, inflight=2, ready=4, spent=5.0)
    cfg = config(prewarm_windows=(PrewarmWindow(0, 3600, 2),), prewarm_rise_per_min=1.0)
    before = copy.deepcopy((state, signal, cfg))
    first = decide(state, signal, cfg, T0)
    assert decide(state, signal, cfg, T0) == first
    assert (state, signal, cfg) == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.mode = NORMAL  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.state.mode = NORMAL  # type: ignore[misc]


# --- properties -------------------------------------------------------------------------

PROPERTY = settings(max_examples=200, deadline=None)


@st.composite
def configs(draw: st.DrawFn) -> PolicyConfig:
    low = draw(st.integers(0, 5))
    return PolicyConfig(
        high_watermark=draw(st.integers(low + 1, 12)),
        low_watermark=low,
        enter_dwell_ms=draw(st.integers(0, 20).map(lambda n: n * 250)),
        exit_dwell_ms=draw(st.integers(0, 40).map(lambda n: n * 250)),
        min_mode_ms=draw(st.integers(0, 40).map(lambda n: n * 250)),
        spill_wait_ms=draw(st.sampled_from([0, 1_000, 30_000])),
        max_spill_per_decision=draw(st.sampled_from([1, 2, 3, 6])),
        max_containers=draw(st.integers(1, 6)),
        concurrency=draw(st.integers(1, 3)),
        buffer_containers=1,
        scaledown_window_s=draw(st.integers(0, 600)),
        drain_scaledown_window_s=draw(st.integers(0, 60)),
        gpu_usd_per_s=draw(st.sampled_from([0.0, 0.001, 0.01, 0.05])),
        budget_usd_month=10.0,
        queue_timeout_ms=60_000,
        prewarm_windows=tuple(
            draw(
                st.lists(
                    st.builds(
                        PrewarmWindow,
                        st.integers(0, DAY_S - 1),
                        st.integers(0, DAY_S),
                        st.integers(0, 20),
                    ),
                    max_size=2,
                )
            )
        ),
        prewarm_rise_per_min=draw(st.sampled_from([0.0, 6.0, 30.0])),
        prewarm_containers=draw(st.integers(0, 8)),
        prewarm_hold_ms=draw(st.integers(0, 30_000)),
        rate_window_ms=draw(st.integers(1, 10_000)),
    )


@st.composite
def signals(draw: st.DrawFn, cfg: PolicyConfig) -> Signal:
    """A signal whose spend often leaves the budget a few jobs' worth, so it binds."""
    watermarks = [0, cfg.low_watermark, cfg.high_watermark, cfg.high_watermark + 3]
    queued = draw(st.one_of(st.sampled_from(watermarks), st.integers(0, 12), st.integers(0, 60)))
    slots = draw(st.integers(0, 6))
    timeout = cfg.queue_timeout_ms
    age = st.one_of(
        st.sampled_from([0, timeout - 1, timeout, 2 * timeout]), st.integers(0, 120_000)
    )
    ages = draw(st.lists(age, max_size=min(queued, 12)))
    estimates = Estimates(
        inhouse_render_ms=draw(st.integers(1, 120_000)),
        modal_render_ms=draw(st.integers(1, 120_000)),
        cold_start_ms=draw(st.integers(0, 120_000)),
        cold_start_mean_ms=draw(st.none() | st.integers(0, 120_000)),
    )
    inflight = draw(st.integers(0, 8))
    signal = Signal(
        queued=queued,
        queue_ages_ms=tuple(sorted(ages, reverse=True)),
        inhouse_busy=draw(st.integers(0, slots)),
        inhouse_slots=slots,
        modal_inflight=inflight,
        modal_ready_slots=draw(st.integers(0, 12)),
        modal_available=draw(st.sampled_from([True, True, True, False])),
        spent_usd=0.0,
        estimates=estimates,
        modal_starting_slots=draw(st.integers(0, 6)),
    )
    cold = dataclasses.replace(signal, modal_ready_slots=0, modal_starting_slots=0)
    cold_job_usd = sum(job_costs(cold, cfg, 1))
    if draw(st.booleans()):
        left_usd = draw(st.integers(-2, 16)) * cold_job_usd / 2
        spent = max(0.0, budget_left(signal, cfg) - left_usd)
    else:
        spent = draw(st.integers(0, 48)) / 4
    return dataclasses.replace(signal, spent_usd=spent)


Step = tuple[int, Signal]
delays = st.one_of(
    st.sampled_from([0, 1, 249, 250, 1_000, 2_499, 2_500, 5_000]), st.integers(0, 10_000)
)
"""Round delays meet the round dwells above exactly, so boundaries get hit."""


@st.composite
def steps(draw: st.DrawFn, cfg: PolicyConfig) -> list[Step]:
    """Runs of identical signals a random delay apart, so conditions hold for a while
    as well as flicker."""
    runs = draw(
        st.lists(st.tuples(delays, signals(cfg), st.integers(1, 8)), min_size=1, max_size=10)
    )
    return [(delay_ms, signal) for delay_ms, signal, n in runs for _ in range(n)]


Scenario = tuple[PolicyConfig, int, list[Step]]
scenarios = configs().flatmap(
    lambda cfg: st.tuples(st.just(cfg), st.integers(0, 2 * DAY_MS), steps(cfg))
)


def simulate(cfg: PolicyConfig, t0: int, seq: Sequence[Step]) -> list[tuple[int, Signal, Plan]]:
    """Runs `(delay_ms, signal)` steps from `t0`, threading the state."""
    out = []
    state, now_ms = PolicyState(), t0
    for delay_ms, signal in seq:
        now_ms += delay_ms
        plan = decide(state, signal, cfg, now_ms)
        out.append((now_ms, signal, plan))
        state = plan.state
    return out


def waiting(signal: Signal) -> int:
    """The in-house queue the hysteresis watches: queued jobs free slots will not take."""
    return max(0, signal.queued - max(0, signal.inhouse_slots - signal.inhouse_busy))


def oldest_waiting(signal: Signal) -> int:
    """How long the oldest job free slots will not take has waited (0 with none)."""
    home = signal.queued - waiting(signal)
    ages = signal.queue_ages_ms
    return ages[home] if waiting(signal) and home < len(ages) else 0


def too_long(cfg: PolicyConfig) -> Any:
    return lambda s: cfg.spill_wait_ms > 0 and oldest_waiting(s) >= cfg.spill_wait_ms


def entering(cfg: PolicyConfig) -> Any:
    """The documented condition to start spilling: depth or the oldest wait."""
    return lambda s: waiting(s) >= cfg.high_watermark or too_long(cfg)(s)


def leaving(cfg: PolicyConfig) -> Any:
    """... and to stop: the queue drained, and nobody waiting too long."""
    return lambda s: waiting(s) <= cfg.low_watermark and not too_long(cfg)(s)


def run_start(ticks: Sequence[tuple[int, Signal, Plan]], i: int, holds: Any) -> int:
    """The time of the first tick of the unbroken run of `holds(signal)` ending at i."""
    j = i
    while j > 0 and holds(ticks[j - 1][1]):
        j -= 1
    return ticks[j][0]


def job_costs(signal: Signal, cfg: PolicyConfig, n: int) -> list[float]:
    """The documented cost rule, restated: each job pays its share (1/concurrency) of a
    container's GPU-seconds for the render, plus the cold start unless an idle slot of a
    container already up or starting takes it."""
    up = signal.modal_ready_slots + signal.modal_starting_slots
    idle = max(0, up - signal.modal_inflight)
    est = signal.estimates
    return [
        ((0 if k < idle else est.cold_start_ms) + est.modal_render_ms)
        / 1000
        * cfg.gpu_usd_per_s
        / cfg.concurrency
        for k in range(n)
    ]


def budget_left(signal: Signal, cfg: PolicyConfig) -> float:
    per_render = signal.estimates.modal_render_ms / 1000 * cfg.gpu_usd_per_s / cfg.concurrency
    return cfg.budget_usd_month - signal.spent_usd - signal.modal_inflight * per_render


@PROPERTY
@given(scenarios)
def test_mode_never_flaps_and_every_change_served_its_dwell(scenario: Scenario) -> None:
    """Mode changes are at least min_mode_ms apart, and each follows an unbroken dwell:
    enter_dwell_ms at or above high for SPILL, exit_dwell_ms at or below low for NORMAL."""
    cfg, t0, seq = scenario
    ticks = simulate(cfg, t0, seq)
    mode, last_change = NORMAL, None
    for i, (now_ms, signal, plan) in enumerate(ticks):
        change = plan.transition
        if change is None:
            assert plan.state.mode is mode
            continue
        assert (change.at_ms, change.old, change.queued) == (now_ms, mode, waiting(signal))
        assert change.new is plan.state.mode is not mode
        if last_change is not None:
            assert now_ms - last_change >= cfg.min_mode_ms
        if change.new is SPILL:
            deep = waiting(signal) >= cfg.high_watermark
            assert change.reason is (Reason.DEPTH_ABOVE_HIGH if deep else Reason.WAIT_ABOVE_MAX)
            assert now_ms - run_start(ticks, i, entering(cfg)) >= cfg.enter_dwell_ms
        else:
            assert change.reason is Reason.DEPTH_BELOW_LOW
            assert now_ms - run_start(ticks, i, leaving(cfg)) >= cfg.exit_dwell_ms
        mode, last_change = change.new, now_ms


@PROPERTY
@given(scenarios)
def test_routing_respects_every_cap_and_accounts_for_every_job(scenario: Scenario) -> None:
    """Each plan places every queued job exactly once, sends no more home than there are
    free slots, spills no more than Modal's room, the step cap and the budget allow, and
    warms no more than max_containers (nothing once the budget is gone)."""
    cfg, t0, seq = scenario
    for now_ms, signal, plan in simulate(cfg, t0, seq):
        assert plan.recheck_at_ms is None or plan.recheck_at_ms > now_ms
        assert all(d.count > 0 for d in plan.decisions)
        assert sum(d.count for d in plan.decisions) == signal.queued
        assert plan.count(INHOUSE) <= max(0, signal.inhouse_slots - signal.inhouse_busy)
        modal = plan.count(MODAL)
        room = max(0, cfg.modal_cap - signal.modal_inflight) if signal.modal_available else 0
        assert modal <= room and modal <= cfg.max_spill_per_decision
        assert plan.budget_left_usd == pytest.approx(budget_left(signal, cfg))
        if modal:
            assert sum(job_costs(signal, cfg, modal)) <= plan.budget_left_usd + 1e-9
        overdue = sum(a >= cfg.queue_timeout_ms for a in signal.queue_ages_ms)
        assert plan.sent(MODAL, Reason.TIMEOUT_RESCUE) <= max(0, overdue - plan.count(INHOUSE))
        if plan.state.mode is NORMAL:
            # Outside spill mode nothing boots: only idle slots already up take jobs.
            assert plan.sent(MODAL, Reason.MODAL_FASTER) == 0
            up = signal.modal_ready_slots + signal.modal_starting_slots
            assert plan.count(MODAL) <= max(overdue, up - signal.modal_inflight)
        assert 0 <= plan.autoscale.min_containers <= cfg.max_containers
        if plan.budget_left_usd <= 0:
            assert plan.autoscale.buffer_containers == 0
            if cfg.scaledown_window_s * cfg.gpu_usd_per_s > 0:  # else idling is "free"
                assert plan.autoscale.min_containers == 0


@PROPERTY
@given(scenarios)
def test_nothing_is_shed_while_capacity_remains(scenario: Scenario) -> None:
    """A SHED decision comes only for overdue jobs, with in-house left without a free
    slot and Modal full, unavailable or unable to pay for one more job."""
    cfg, t0, seq = scenario
    for _, signal, plan in simulate(cfg, t0, seq):
        shed = plan.count(SHED)
        assert (shed > 0) == (plan.shed_waits_over_ms is not None)
        if not shed:
            continue
        assert plan.shed_waits_over_ms == cfg.queue_timeout_ms
        overdue = sum(a >= cfg.queue_timeout_ms for a in signal.queue_ages_ms)
        # In-house takes the head of the line, where the oldest jobs are.
        assert shed + plan.sent(MODAL, Reason.TIMEOUT_RESCUE) <= overdue - plan.count(INHOUSE)
        free_after = signal.inhouse_slots - signal.inhouse_busy - plan.count(INHOUSE)
        assert free_after <= 0
        modal = plan.count(MODAL)
        costs = job_costs(signal, cfg, modal + 1)
        assert (
            not signal.modal_available
            or signal.modal_inflight + modal >= cfg.modal_cap
            or sum(costs) > plan.budget_left_usd
        )


@PROPERTY
@given(scenarios, st.data())
def test_a_drained_queue_brings_the_mode_home_and_prewarm_lapses(
    scenario: Scenario, data: st.DataObject
) -> None:
    """Once the queue has stayed at or below the low watermark, with no job waiting
    spill_wait_ms, for exit_dwell_ms plus min_mode_ms the mode is NORMAL and nothing
    spills for speed; reactive pre-warm warms only within prewarm_hold_ms of a tick where
    the queue rose below the high watermark."""
    cfg, t0, seq = scenario
    tail = data.draw(st.lists(signals(cfg), min_size=2, max_size=12))
    gap = (cfg.exit_dwell_ms + cfg.min_mode_ms) // (len(tail) - 1) + 1
    drained = []
    for s in tail:
        queued = min(s.queued, cfg.low_watermark)
        ages = s.queue_ages_ms[:queued]
        if cfg.spill_wait_ms:
            ages = tuple(min(age, cfg.spill_wait_ms - 1) for age in ages)
        drained.append((gap, dataclasses.replace(s, queued=queued, queue_ages_ms=ages)))
    no_windows = dataclasses.replace(cfg, prewarm_windows=())
    ticks = simulate(no_windows, t0, [*seq, *drained])
    for i, (now_ms, signal, plan) in enumerate(ticks):
        if leaving(cfg)(signal):
            start = run_start(ticks, i, leaving(cfg))
            if now_ms - start >= cfg.exit_dwell_ms + cfg.min_mode_ms:
                assert plan.state.mode is NORMAL
                assert plan.sent(MODAL, Reason.MODAL_FASTER) == 0
        if plan.autoscale.min_containers > 0:
            depths = [(0, 0)] + [(t, s.queued) for t, s, _ in ticks[: i + 1]]
            assert any(
                now_ms - t < no_windows.prewarm_hold_ms
                and q < cfg.high_watermark
                and any(q > earlier for _, earlier in depths[:k])
                for k, (t, q) in enumerate(depths)
            )
    assert ticks[-1][2].state.mode is NORMAL


def test_poll_hints_follow_the_drain_estimate() -> None:
    from scheduler.policy import Controls, poll_after_ms

    cfg = config()
    # Two slots, 60 s renders, Modal available: the line drains at more than 2 a minute.
    head = poll_after_ms(sig(10), cfg, 0)
    back = poll_after_ms(sig(10), cfg, 3)
    assert 1000 <= head < back < 60_000
    without_modal = poll_after_ms(sig(10, available=False), cfg, 3)
    assert without_modal > back
    paused = dataclasses.replace(sig(10), controls=Controls(dispatch_paused=True))
    assert poll_after_ms(paused, cfg, 0) == 60_000
    # A running job: about a progress step of its render (1/20), at least a second.
    assert poll_after_ms(sig(10), cfg, None) == 3_000
