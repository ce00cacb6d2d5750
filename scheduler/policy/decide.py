"""The spillover policy: `decide(state, signal, config, now_ms) -> Plan`.

Pure and deterministic: no I/O, no clock, no randomness, so the dispatcher and a
simulator run the very same code. A decision is composed of small named steps:

0. `_discount_stale_cold_starts`: the expected cold start (the mean of the samples)
   that has not changed for `cold_start_stale_ms` may claim no more than the configured
   `cold_start_ms`: a deploy's first full boots would otherwise keep the policy off the
   second fleet long after its snapshot restores became fast.
1. `_hysteresis`, on the in-house queue (queued jobs that free in-house slots will not
   take at once): NORMAL -> SPILL once it has stayed at or above the high watermark,
   or its oldest job has waited `spill_wait_ms` or more, for `enter_dwell_ms`;
   SPILL -> NORMAL once it has stayed at or below the low watermark with no job
   waiting that long for `exit_dwell_ms`; never two changes within `min_mode_ms`. A
   break in the condition restarts its dwell.
2. `_sample_rise`: the queue's rise rate over `rate_window_ms`; rising at least
   `prewarm_rise_per_min` below the high watermark arms reactive pre-warm for
   `prewarm_hold_ms` (re-armed while it keeps rising).
3. `_route`, for the jobs queued now, in this order:
   - INHOUSE: as many as there are free in-house slots.
   - MODAL (timeout_rescue): jobs that have waited `queue_timeout_ms` go to Modal,
     in any mode, while it has room and budget.
   - MODAL, one job at a time while Modal is expected to finish it sooner than the
     last job waiting in-house would finish. Modal: the idle slots of containers
     already up (ready ones at once, starting ones after half a cold start), then a
     new container after the mean cold start; plus its render time. In-house: the job
     at position p starts once p + 1 busy slots have freed, at slots / render a
     second, then renders. Each spill is a marginal decision: it shortens the in-house
     line by one. In SPILL mode any container may take it (modal_faster); in NORMAL
     mode only one already up and paid for (modal_warm): booting one is what the mode
     decides.
   - Caps on every spill: Modal in-flight never exceeds max_containers x concurrency,
     the month's spend plus what in-flight work will cost plus this job never exceeds
     the budget, at most `max_spill_per_decision` jobs spill per decision, and spawns
     over time stay within a token bucket (`spawn_rate_per_s`, `spawn_burst`) kept in
     the state, so that decisions in quick succession cannot stampede either.
   - SHED (queue_timeout): jobs past the timeout that Modal cannot take either; never
     while any capacity remains.
   - HOLD: the rest wait in the control-plane queue, with the reason that stopped them.
4. `_autoscale`: Modal's `min_containers` is the largest of the scheduled pre-warm
   window now open and reactive pre-warm, limited to what the budget left pays to keep
   idle until the pre-warm ends plus one scaledown window. While jobs wait for
   in-house (above the low watermark) the scaledown window is `scaledown_window_s`
   and, in SPILL mode, `buffer_containers` spares are kept (as many as the budget left
   pays to idle for a window); once the queue has drained, the window is
   `drain_scaledown_window_s` and no spare is kept: nothing waits for an idle
   container then, and Modal bills every second it idles. Drain-back needs no other
   rule: back in NORMAL mode nothing boots, pre-warm lapses, idle containers stop
   within the short window, and Modal scales to zero.

Operator controls (`Signal.controls`) are inputs like the rest: `dispatch_paused` holds
every job (none is shed for waiting); spill `off` stops every spill and drains the
second fleet (no pre-warm, no spare); spill `force` routes as in SPILL mode whatever
the hysteresis says.

Batch jobs (`Signal.batch_queued`) are not part of any rule above: they take the
in-house slots interactive jobs leave free (INHOUSE), and the rest wait (HOLD,
batch_inhouse), never shed for waiting. Only with `controls.batch_spill` do they join
the interactive line (behind it) for every rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from scheduler.policy.config import PolicyConfig, PrewarmWindow
from scheduler.policy.model import (
    Autoscale,
    Decision,
    Mode,
    Plan,
    PolicyState,
    Reason,
    Signal,
    SpillControl,
    Target,
    Transition,
)

_DAY_S = 86_400


def decide(state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int) -> Plan:
    if signal.controls.batch_spill and signal.batch_queued:
        signal = replace(signal, queued=signal.queued + signal.batch_queued, batch_queued=0)
    state, signal = _discount_stale_cold_starts(state, signal, config, now_ms)
    state, transition = _hysteresis(state, signal, config, now_ms)
    state = _sample_rise(state, signal, config, now_ms)
    budget_left = _budget_left(signal, config)
    tokens = spawn_tokens(state, config, now_ms)
    decisions, shed_over = _route(_routing_mode(state, signal), signal, config, budget_left, tokens)
    recheck = _recheck_at(state, signal, config, now_ms)
    spawned = sum(d.count for d in decisions if d.target is Target.MODAL)
    if spawned and config.spawn_rate_per_s > 0:
        tokens -= spawned
        state = replace(state, spawn_tokens=tokens, spawns_at_ms=now_ms)
    if any(d.reason is Reason.SPAWN_RATE for d in decisions):
        refill_ms = now_ms + math.ceil((1 - tokens) / config.spawn_rate_per_s * 1000)
        recheck = refill_ms if recheck is None else min(recheck, refill_ms)
    return Plan(
        state=state,
        decisions=decisions,
        autoscale=_autoscale(state, signal, config, now_ms, budget_left),
        transition=transition,
        shed_waits_over_ms=shed_over,
        recheck_at_ms=recheck,
        budget_left_usd=budget_left,
        decided_at_ms=now_ms,
        spill_finish_ms=spill_finish_ms(signal),
    )


def _routing_mode(state: PolicyState, signal: Signal) -> Mode:
    """The mode jobs are routed by: the hysteresis', unless an operator forces spill."""
    return Mode.SPILL if signal.controls.spill is SpillControl.FORCE else state.mode


def spill_finish_ms(signal: Signal) -> int:
    """How long a job spilled now is expected to take to finish: a Modal render, after
    a cold start unless a ready input slot is idle."""
    est = signal.estimates
    warm = signal.modal_ready_slots > signal.modal_inflight
    return est.modal_render_ms + (0 if warm else est.cold_start_ms)


def _discount_stale_cold_starts(
    state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int
) -> tuple[PolicyState, Signal]:
    """Cold starts that have not changed for `cold_start_stale_ms` say little about the
    next boot: the fleet moves on (a deploy's first boots are in full, later ones
    restore its snapshot), and a policy that spills no more because boots were slow
    never sees them get fast. So stale samples may no longer claim a boot slower than
    the configured estimate."""
    seen = signal.estimates.expected_cold_ms
    if seen != state.cold_seen_ms:
        return replace(state, cold_seen_ms=seen, cold_seen_at_ms=now_ms), signal
    if seen <= config.cold_start_ms or now_ms < _stale_at_ms(state, config):
        return state, signal
    estimates = replace(signal.estimates, cold_start_mean_ms=config.cold_start_ms)
    return state, replace(signal, estimates=estimates)


def _stale_at_ms(state: PolicyState, config: PolicyConfig) -> float:
    """When the cold starts last seen go stale (never, with the limit off)."""
    if not config.cold_start_stale_ms:
        return math.inf
    return state.cold_seen_at_ms + config.cold_start_stale_ms


def spawn_tokens(state: PolicyState, config: PolicyConfig, now_ms: int) -> float:
    """Spawns the bucket allows now: what the last spill left, refilled since."""
    if state.spawns_at_ms < 0:
        return float(config.spawn_burst)
    refilled = (now_ms - state.spawns_at_ms) * config.spawn_rate_per_s / 1000
    return min(float(config.spawn_burst), state.spawn_tokens + max(0.0, refilled))


def drain_per_s(signal: Signal, config: PolicyConfig) -> float:
    """Jobs a second the fleets take from the queue when busy: in-house rounds, plus what
    the second fleet takes while it may (a render and a cold start per container)."""
    est = signal.estimates
    rate = signal.inhouse_slots / max(1, est.inhouse_render_ms) * 1000
    spills = signal.modal_available and signal.controls.spill is not SpillControl.OFF
    if spills and not signal.controls.dispatch_paused:
        rate += config.modal_cap / max(1, est.modal_render_ms + est.cold_start_ms) * 1000
    return rate if not signal.controls.dispatch_paused else 0.0


def retry_after_s(signal: Signal, config: PolicyConfig) -> int:
    """What to tell a caller refused at the queue bound: about how long the queue takes
    to drain by one job, between 1 and 60 seconds."""
    rate = drain_per_s(signal, config)
    return 60 if rate <= 0 else min(60, max(1, math.ceil(1 / rate)))


def poll_after_ms(signal: Signal, config: PolicyConfig, ahead: int | None) -> int:
    """When a caller polling a pending job should ask again: for a queued job with `ahead`
    jobs before it, about when it is expected to start; for a running one (`ahead` None),
    about when its progress moves by a step. Between 1 and 60 seconds."""
    if ahead is None:
        wait_ms = signal.estimates.inhouse_render_ms / 20
    else:
        rate = drain_per_s(signal, config)
        wait_ms = 60_000 if rate <= 0 else (ahead + 1) / rate * 1000
    return int(min(60_000, max(1_000, wait_ms)))


def _hysteresis(
    state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int
) -> tuple[PolicyState, Transition | None]:
    waiting = _waiting(signal)
    if state.mode is Mode.NORMAL:
        leaving = waiting >= config.high_watermark
        dwell_ms, new, reason = config.enter_dwell_ms, Mode.SPILL, Reason.DEPTH_ABOVE_HIGH
        if not leaving and _waited_too_long(signal, config):
            leaving, reason = True, Reason.WAIT_ABOVE_MAX
    else:
        leaving = waiting <= config.low_watermark and not _waited_too_long(signal, config)
        dwell_ms, new, reason = config.exit_dwell_ms, Mode.NORMAL, Reason.DEPTH_BELOW_LOW
    if not leaving:
        return replace(state, pending_since_ms=None), None
    since = now_ms if state.pending_since_ms is None else state.pending_since_ms
    if now_ms - since >= dwell_ms and _may_change(state, config, now_ms):
        changed = replace(state, mode=new, mode_since_ms=now_ms, pending_since_ms=None)
        return changed, Transition(now_ms, state.mode, new, reason, waiting)
    return replace(state, pending_since_ms=since), None


def _waiting(signal: Signal) -> int:
    """The in-house queue: queued jobs that free in-house slots will not take at once."""
    return max(0, signal.queued - max(0, signal.inhouse_slots - signal.inhouse_busy))


def _oldest_waiting_ms(signal: Signal) -> int:
    """How long the oldest job of the in-house queue has waited (0 with none): free slots
    take the head of the line, where the oldest jobs are."""
    waiting = _waiting(signal)
    home = signal.queued - waiting
    ages = signal.queue_ages_ms
    return ages[home] if waiting and home < len(ages) else 0


def _waited_too_long(signal: Signal, config: PolicyConfig) -> bool:
    return config.spill_wait_ms > 0 and _oldest_waiting_ms(signal) >= config.spill_wait_ms


def _may_change(state: PolicyState, config: PolicyConfig, now_ms: int) -> bool:
    return state.mode_since_ms is None or now_ms - state.mode_since_ms >= config.min_mode_ms


def _sample_rise(
    state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int
) -> PolicyState:
    elapsed = now_ms - state.depth_ref_ms
    if elapsed < config.rate_window_ms:
        return state
    rise_per_min = (signal.queued - state.depth_ref) * 60_000 / elapsed
    sampled = replace(state, depth_ref=signal.queued, depth_ref_ms=now_ms)
    if (
        config.prewarm_rise_per_min > 0
        and rise_per_min >= config.prewarm_rise_per_min
        and signal.queued < config.high_watermark
    ):
        return replace(sampled, prewarm_until_ms=now_ms + config.prewarm_hold_ms)
    return sampled


def cost_usd(gpu_ms: int, config: PolicyConfig) -> float:
    """A render's share of its container's GPU time."""
    return gpu_ms / 1000 * config.gpu_usd_per_s / config.concurrency


def _budget_left(signal: Signal, config: PolicyConfig) -> float:
    reserved = signal.modal_inflight * cost_usd(signal.estimates.modal_render_ms, config)
    return config.budget_usd_month - signal.spent_usd - reserved


def _route(
    mode: Mode, signal: Signal, config: PolicyConfig, budget_left: float, tokens: float
) -> tuple[tuple[Decision, ...], int | None]:
    if signal.controls.dispatch_paused:
        # Nothing moves, and nothing is shed for waiting: the operator holds the line.
        held = signal.queued + signal.batch_queued
        return ((Decision(Target.HOLD, held, Reason.DISPATCH_PAUSED),) if held else ()), None
    est = signal.estimates
    free_inhouse = max(0, signal.inhouse_slots - signal.inhouse_busy)
    home = min(signal.queued, free_inhouse)
    waiting = signal.queued - home
    room = max(0, config.modal_cap - signal.modal_inflight) if signal.modal_available else 0
    idle = _IdleSlots.of(signal)
    # In-house takes the head of the line, which is where the oldest jobs are.
    overdue = max(0, sum(age >= config.queue_timeout_ms for age in signal.queue_ages_ms) - home)
    overdue = min(overdue, waiting)

    spilled = 0
    cost = 0.0

    def limit() -> Reason | None:
        """What stops the next spill, if anything."""
        if signal.controls.spill is SpillControl.OFF:
            return Reason.SPILL_OFF
        if not signal.modal_available:
            return Reason.MODAL_UNAVAILABLE
        if spilled >= room:
            return Reason.MODAL_FULL
        if cost + _next_cost() > budget_left:
            return Reason.BUDGET_EXHAUSTED
        if spilled >= config.max_spill_per_decision:
            return Reason.SPILL_STEP_CAP
        # A whole token per spawn; the epsilon keeps float refills from stalling a ms.
        if config.spawn_rate_per_s > 0 and spilled + 1 > tokens + 1e-9:
            return Reason.SPAWN_RATE
        return None

    def _next_cost() -> float:
        # A container already up or starting is paid for: only the next one boots.
        cold_ms = est.cold_start_ms if spilled >= idle.paid else 0
        return cost_usd(cold_ms + est.modal_render_ms, config)

    stop: Reason | None = None
    while spilled < overdue and (stop := limit()) is None:
        cost += _next_cost()
        spilled += 1
    rescued = spilled

    while stop is None and spilled < waiting:
        # Outside spill mode only containers already paid for take jobs: booting one is
        # what the mode decides.
        if mode is Mode.NORMAL and spilled >= idle.paid:
            stop = Reason.NORMAL_MODE
            break
        if (stop := limit()) is not None:
            break
        if not _modal_sooner(waiting - spilled - 1, spilled, idle, signal):
            stop = Reason.INHOUSE_SOONER
            break
        cost += _next_cost()
        spilled += 1

    decisions = []
    # Batch jobs take what interactive ones leave free in-house, and wait for the rest.
    batch_home = min(signal.batch_queued, free_inhouse - home)
    if home + batch_home:
        decisions.append(Decision(Target.INHOUSE, home + batch_home, Reason.INHOUSE_SLOT_FREE))
    if rescued:
        decisions.append(Decision(Target.MODAL, rescued, Reason.TIMEOUT_RESCUE))
    if spilled > rescued:
        faster = Reason.MODAL_FASTER if mode is Mode.SPILL else Reason.MODAL_WARM
        decisions.append(Decision(Target.MODAL, spilled - rescued, faster))
    shed = 0
    # Caps that lift by themselves within moments never shed.
    if overdue > rescued and stop not in (None, Reason.SPILL_STEP_CAP, Reason.SPAWN_RATE):
        shed = overdue - rescued
        decisions.append(Decision(Target.SHED, shed, Reason.QUEUE_TIMEOUT))
    if (held := waiting - spilled - shed) > 0:
        decisions.append(Decision(Target.HOLD, held, stop or Reason.INHOUSE_SOONER))
    if batch_held := signal.batch_queued - batch_home:
        decisions.append(Decision(Target.HOLD, batch_held, Reason.BATCH_INHOUSE))
    return tuple(decisions), (config.queue_timeout_ms if shed else None)


@dataclass(frozen=True)
class _IdleSlots:
    """Modal input slots nobody uses, on containers already up or on their way: the
    first spills take them (ready ones first, as Modal routes), at no boot's cost."""

    ready: int
    starting: int

    @classmethod
    def of(cls, signal: Signal) -> _IdleSlots:
        # Modal runs inputs on ready containers first, so in-flight work fills those.
        ready = max(0, signal.modal_ready_slots - signal.modal_inflight)
        total = signal.modal_ready_slots + signal.modal_starting_slots - signal.modal_inflight
        return cls(ready, max(0, total) - ready)

    @property
    def paid(self) -> int:
        return self.ready + self.starting


def _modal_sooner(position: int, spilled: int, idle: _IdleSlots, signal: Signal) -> bool:
    """Whether Modal finishes one more job sooner than the in-house fleet would finish
    the job at `position` in its line (0 is next), both in expectation."""
    est = signal.estimates
    if spilled < idle.ready:
        wait_ms = 0
    elif spilled < idle.paid:
        # A container on its way is, on average, halfway through its boot.
        wait_ms = est.expected_cold_ms // 2
    else:
        # The mean over the cold-start distribution, failed restores and all: the p90
        # would hold jobs in-house that Modal finishes sooner nine times in ten.
        wait_ms = est.expected_cold_ms
    if signal.inhouse_slots == 0:
        return True
    # Busy slots free at about slots / render a second: the job at `position` starts
    # once position + 1 of them have.
    start_ms = (position + 1) * est.inhouse_render_ms // signal.inhouse_slots
    return wait_ms + est.modal_render_ms < start_ms + est.inhouse_render_ms


def _autoscale(
    state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int, budget_left: float
) -> Autoscale:
    second = (now_ms // 1000) % _DAY_S
    open_windows = [w for w in config.prewarm_windows if w.covers(second)]
    scheduled = max((w.containers for w in open_windows), default=0)
    reactive = config.prewarm_containers if now_ms < state.prewarm_until_ms else 0
    wanted = min(max(scheduled, reactive), config.max_containers)
    # Once the in-house queue has drained nothing waits for an idle container, and it
    # bills every second it idles: short tails, and no spare.
    drained = _waiting(signal) <= config.low_watermark
    # Never longer than the deployed window: the drained tail only ever shortens it.
    window_s = (
        min(config.drain_scaledown_window_s, config.scaledown_window_s)
        if drained
        else config.scaledown_window_s
    )
    spare = _routing_mode(state, signal) is Mode.SPILL and not drained
    buffer = min(config.buffer_containers, config.max_containers) if spare else 0
    # A warm container bills while it idles: until the pre-warm ends, then through its
    # scaledown window. Keep only as many as the budget left pays for that long.
    warm_s = max(
        [_seconds_left(w, second) for w in open_windows]
        + [max(0, state.prewarm_until_ms - now_ms) // 1000]
    )
    affordable = _affordable(budget_left, warm_s + window_s, config)
    if signal.controls.spill is SpillControl.OFF:
        # The kill switch drains the second fleet: no pre-warm, no spare, short tails.
        wanted = buffer = 0
    return Autoscale(
        min_containers=max(0, min(wanted, affordable)),
        buffer_containers=min(buffer, _affordable(budget_left, window_s, config)),
        max_containers=config.max_containers,
        scaledown_window_s=window_s,
    )


def _affordable(budget_left: float, idle_s: int, config: PolicyConfig) -> int:
    """Containers the budget left pays to keep idle for `idle_s` (at least one second)."""
    cost = max(1, idle_s) * config.gpu_usd_per_s
    if budget_left <= 0:
        return 0
    if cost <= 0:
        return config.max_containers
    return max(0, min(config.max_containers, int(budget_left // cost)))


def _seconds_left(window: PrewarmWindow, second: int) -> int:
    return (window.end_s - second) % _DAY_S


def _recheck_at(
    state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int
) -> int | None:
    times = []
    if state.pending_since_ms is not None:
        dwell = config.enter_dwell_ms if state.mode is Mode.NORMAL else config.exit_dwell_ms
        earliest = state.pending_since_ms + dwell
        if state.mode_since_ms is not None:
            earliest = max(earliest, state.mode_since_ms + config.min_mode_ms)
        times.append(earliest)
    if state.prewarm_until_ms > now_ms:
        times.append(state.prewarm_until_ms)
    if state.mode is Mode.NORMAL and config.spill_wait_ms and _waiting(signal):
        # When the oldest job will have waited long enough to start spilling.
        times.append(now_ms + max(0, config.spill_wait_ms - _oldest_waiting_ms(signal)))
    stale_at = _stale_at_ms(state, config)
    slow = state.cold_seen_ms > config.cold_start_ms
    if _waiting(signal) and slow and now_ms < stale_at < math.inf:
        # Slow cold starts going stale may let the line spill.
        times.append(int(stale_at))
    if config.prewarm_rise_per_min > 0 and signal.queued:
        times.append(state.depth_ref_ms + config.rate_window_ms)
    waits = [a for a in signal.queue_ages_ms if a < config.queue_timeout_ms]
    if waits:
        times.append(now_ms + config.queue_timeout_ms - max(waits))
    if config.prewarm_windows:
        times.append(_next_window_edge(config, now_ms))
    return max(now_ms + 1, min(times)) if times else None


def _next_window_edge(config: PolicyConfig, now_ms: int) -> int:
    day_start_s = now_ms // 1000 // _DAY_S * _DAY_S
    second = now_ms // 1000 - day_start_s
    edges = [e for w in config.prewarm_windows for e in (w.start_s, w.end_s)]
    ahead = [e for e in edges if e > second] or [e + _DAY_S for e in edges]
    return (day_start_s + min(ahead)) * 1000
