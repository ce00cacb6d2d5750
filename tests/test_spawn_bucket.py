"""The spawn token bucket in the pure policy: spawns over any window of time stay
within burst + rate x window, however often replicas decide."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy import PolicyState, Reason, Target, decide
from tests.test_policy import BASE, SPILLING, T0, sig

# Every other cap out of the way: in-house has no slots, so Modal is always sooner.
ROOMY = dataclasses.replace(
    BASE,
    max_containers=10_000,
    max_spill_per_decision=10_000,
    spawn_rate_per_s=2.0,
    spawn_burst=5,
)


def spawns(plan_decisions: tuple[object, ...]) -> int:
    return sum(d.count for d in plan_decisions if d.target is Target.MODAL)  # type: ignore[attr-defined]


def test_a_burst_then_the_refill_rate() -> None:
    first = decide(SPILLING, sig(100, slots=0), ROOMY, T0)
    assert spawns(first.decisions) == 5
    held = [d for d in first.decisions if d.target is Target.HOLD]
    assert [d.reason for d in held] == [Reason.SPAWN_RATE]
    # The next token is due in 1 / 2 per second: the dispatcher is told to look then.
    assert first.recheck_at_ms == T0 + 500
    assert spawns(decide(first.state, sig(95, slots=0), ROOMY, T0 + 1).decisions) == 0
    assert spawns(decide(first.state, sig(95, slots=0), ROOMY, T0 + 500).decisions) == 1
    assert spawns(decide(first.state, sig(95, slots=0), ROOMY, T0 + 60_000).decisions) == 5


def test_a_decision_that_spawns_nothing_leaves_the_state_alone() -> None:
    # So an idle replica does not write the policy's state to Redis at every decision.
    after = decide(SPILLING, sig(100, slots=0), ROOMY, T0).state
    idle = decide(after, sig(100, slots=0, available=False), ROOMY, T0 + 5_000)
    assert spawns(idle.decisions) == 0
    assert idle.state == after


def test_zero_rate_turns_it_off() -> None:
    off = dataclasses.replace(ROOMY, spawn_rate_per_s=0.0)
    assert spawns(decide(SPILLING, sig(100, slots=0), off, T0).decisions) == 100


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 3_000), st.integers(0, 40)), min_size=1, max_size=40),
    rate=st.sampled_from([0.5, 1.0, 3.0]),
    burst=st.integers(1, 10),
)
def test_spawns_in_any_window_stay_within_burst_plus_rate(
    steps: list[tuple[int, int]], rate: float, burst: int
) -> None:
    config = dataclasses.replace(ROOMY, spawn_rate_per_s=rate, spawn_burst=burst)
    state: PolicyState = SPILLING
    now = T0
    log: list[tuple[int, int]] = []
    for gap_ms, queued in steps:
        now += gap_ms
        plan = decide(state, sig(queued, slots=0), config, now)
        state = plan.state
        log.append((now, spawns(plan.decisions)))
    for i, (start, _) in enumerate(log):
        for end, _ in log[i:]:
            total = sum(n for t, n in log if start <= t <= end)
            assert total <= burst + rate * (end - start) / 1000 + 1e-6
