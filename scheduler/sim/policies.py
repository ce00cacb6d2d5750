"""The policies the simulator compares. Each is a function with the signature of
`scheduler.policy.decide` (state, signal, config, now_ms) -> Plan, so the engine reads,
decides and carries out every one of them the same way:

- `spillway`: `scheduler.policy.decide` itself, the code the scheduler runs.
- `hysteresis`: the plain two-watermark rule on the in-house queue (queued jobs beyond
  the free in-house slots): spill from the moment it reaches the high watermark until it
  falls to the low one; no dwell, no minimum mode time, no cold-start awareness, no
  pre-warm, no budget check. While spilling, every job that free in-house slots do not
  take goes to Modal, up to its cap.
- `always-spill`: every job that free in-house slots do not take goes to Modal at once,
  up to its cap.
- `inhouse-only`: never spills.
- `bound`: routes as `always-spill`, on a Modal fleet that is warm whenever needed and
  bills only render time (`scheduler.sim.fleets.WarmFleet`): a lower bound on both
  latency and cost for a given in-house fleet.
- `oracle`: routes as `always-spill` on the real fleet, knowing the arrivals: it keeps
  warm (`min_containers`) as many containers as `bound` will run inputs on at any time
  over the next boot (its p99, plus a GPU wait's p99), and gives idle ones the drain
  window. What looking ahead could achieve; no policy that cannot see the future gets
  there on a sudden crowd.

The queue bound refuses arrivals for every policy alike (the engine's rule). So does the
queue timeout: `spillway` sheds with its own SHED decisions (after trying to rescue a
job on Modal); for the others the engine fails queued jobs that have waited
`queue_timeout_ms` once the plan has been carried out.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from scheduler.policy import (
    Autoscale,
    Decision,
    Mode,
    Plan,
    PolicyConfig,
    PolicyState,
    Reason,
    Signal,
    Target,
    Transition,
    decide,
)

DecideFn = Callable[[PolicyState, Signal, PolicyConfig, int], Plan]


@dataclass(frozen=True)
class SimPolicy:
    name: str
    decide: DecideFn
    warm_fleet: bool = False
    """Runs against `WarmFleet` (the lower bound) instead of `ContainerFleet`."""
    sheds_itself: bool = False
    """Fails timed-out jobs with its own SHED decisions; else the engine's rule does."""
    knows_arrivals: bool = False
    """Decides with `oracle(demand, lead_ms)`, given what `bound` runs on Modal when."""


@dataclass(frozen=True)
class Demand:
    """How many inputs the lower bound runs on the second fleet over time, on the
    policy's clock: from `at_ms[i]` on (until the next), `inputs[i]`."""

    at_ms: tuple[int, ...]
    inputs: tuple[int, ...]

    def peak(self, start_ms: int, end_ms: int) -> int:
        """The most inputs at any time in [start_ms, end_ms]."""
        first = max(0, bisect.bisect_right(self.at_ms, start_ms) - 1)
        last = bisect.bisect_right(self.at_ms, end_ms)
        return max(self.inputs[first:last], default=0)

    def next_change_after(self, t_ms: int) -> int | None:
        i = bisect.bisect_right(self.at_ms, t_ms)
        return self.at_ms[i] if i < len(self.at_ms) else None


def oracle(demand: Demand, lead_ms: int) -> DecideFn:
    """`always-spill`, with the containers the coming demand needs warm `lead_ms` ahead."""

    def decide(state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int) -> Plan:
        plan = always_spill(state, signal, config, now_ms)
        needed = math.ceil(demand.peak(now_ms, now_ms + lead_ms) / config.concurrency)
        autoscale = Autoscale(
            min_containers=min(config.max_containers, needed),
            buffer_containers=0,
            max_containers=config.max_containers,
            scaledown_window_s=config.drain_scaledown_window_s,
        )
        # The demand's next change, seen lead_ms ahead, changes the plan.
        change = demand.next_change_after(now_ms + lead_ms)
        recheck = None if change is None else max(now_ms + 1, change - lead_ms)
        return replace(plan, autoscale=autoscale, recheck_at_ms=recheck)

    return decide


def inhouse_only(state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int) -> Plan:
    return _route(state, signal, config, now_ms, spill=False)


def always_spill(state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int) -> Plan:
    return _route(state, signal, config, now_ms, spill=True)


def hysteresis(state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int) -> Plan:
    waiting = max(0, signal.queued - max(0, signal.inhouse_slots - signal.inhouse_busy))
    transition = None
    if state.mode is Mode.NORMAL and waiting >= config.high_watermark:
        transition = Transition(now_ms, Mode.NORMAL, Mode.SPILL, Reason.DEPTH_ABOVE_HIGH, waiting)
    elif state.mode is Mode.SPILL and waiting <= config.low_watermark:
        transition = Transition(now_ms, Mode.SPILL, Mode.NORMAL, Reason.DEPTH_BELOW_LOW, waiting)
    if transition is not None:
        state = replace(state, mode=transition.new, mode_since_ms=now_ms)
    plan = _route(state, signal, config, now_ms, spill=state.mode is Mode.SPILL)
    return replace(plan, transition=transition)


def _route(
    state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int, *, spill: bool
) -> Plan:
    free = max(0, signal.inhouse_slots - signal.inhouse_busy)
    home = min(signal.queued, free)
    waiting = signal.queued - home
    room = max(0, config.modal_cap - signal.modal_inflight)
    spilled = min(waiting, room) if spill else 0
    decisions = []
    # Batch jobs, as the scheduler treats them: in-house slots left free, never a spill.
    if home_all := home + min(signal.batch_queued, free - home):
        decisions.append(Decision(Target.INHOUSE, home_all, Reason.INHOUSE_SLOT_FREE))
    if spilled:
        decisions.append(Decision(Target.MODAL, spilled, Reason.MODAL_FASTER))
    if waiting > spilled:
        reason = Reason.MODAL_FULL if spill else Reason.NORMAL_MODE
        decisions.append(Decision(Target.HOLD, waiting - spilled, reason))
    return Plan(
        state=state,
        decisions=tuple(decisions),
        autoscale=Autoscale(
            min_containers=0,
            buffer_containers=config.buffer_containers,
            max_containers=config.max_containers,
            scaledown_window_s=config.scaledown_window_s,
        ),
        decided_at_ms=now_ms,
    )


POLICIES: tuple[SimPolicy, ...] = (
    SimPolicy("spillway", decide, sheds_itself=True),
    SimPolicy("hysteresis", hysteresis),
    SimPolicy("always-spill", always_spill),
    SimPolicy("inhouse-only", inhouse_only),
    SimPolicy("bound", always_spill, warm_fleet=True),
    SimPolicy("oracle", always_spill, knows_arrivals=True),
)
"""Every policy, in the order a run without `--policy` reports them."""

POLICY_NAMES: tuple[str, ...] = tuple(p.name for p in POLICIES)


def get_policy(name: str) -> SimPolicy:
    for policy in POLICIES:
        if policy.name == name:
            return policy
    raise ValueError(f"unknown policy {name!r}: expected one of {', '.join(POLICY_NAMES)}")
