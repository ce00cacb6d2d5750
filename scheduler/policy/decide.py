"""The spillover policy: `decide(state, signal, config, now_ms) -> Plan`.

Pure and deterministic: no I/O, no clock, no randomness, so the dispatcher and a
simulator run the very same code. A decision is composed of small named steps:

1. `_hysteresis`, on the in-house queue (queued jobs that free in-house slots will not
   take at once): NORMAL -> SPILL once it has stayed at or above the high
   watermark for `enter_dwell_ms`; SPILL -> NORMAL once it has stayed at or below the
   low watermark for `exit_dwell_ms`; never two changes within `min_mode_ms`. A break
   in the condition restarts its dwell.
2. `_sample_rise`: the queue's rise rate over `rate_window_ms`; rising at least
   `prewarm_rise_per_min` below the high watermark arms reactive pre-warm for
   `prewarm_hold_ms` (re-armed while it keeps rising).
3. `_route`, for the jobs queued now, in this order:
   - INHOUSE: as many as there are free in-house slots.
   - MODAL (timeout_rescue): jobs that have waited `queue_timeout_ms` go to Modal,
     in any mode, while it has room and budget.
   - MODAL (modal_faster), in SPILL mode only: one job at a time while Modal is
     expected to finish it sooner than the last job waiting in-house would finish
     (Modal: the cold-start quantile unless a ready container is idle, plus its render
     time; in-house: the rounds of renders ahead of that job). Each spill is a
     marginal decision: it shortens the in-house line by one.
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
   idle until the pre-warm ends plus one scaledown window; `buffer_containers` to what
   it pays to keep idle for one scaledown window. Drain-back needs no rule of its own:
   back in NORMAL mode nothing spills, pre-warm lapses, and Modal scales to zero.
"""

from __future__ import annotations

import math
from dataclasses import replace

from scheduler.policy.config import PolicyConfig, PrewarmWindow
from scheduler.policy.model import (
    Autoscale,
    Decision,
    Mode,
    Plan,
    PolicyState,
    Reason,
    Signal,
    Target,
    Transition,
)

_DAY_S = 86_400


def decide(state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int) -> Plan:
    state, transition = _hysteresis(state, signal, config, now_ms)
    state = _sample_rise(state, signal, config, now_ms)
    budget_left = _budget_left(signal, config)
    tokens = spawn_tokens(state, config, now_ms)
    decisions, shed_over = _route(state.mode, signal, config, budget_left, tokens)
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
        autoscale=_autoscale(state, config, now_ms, budget_left),
        transition=transition,
        shed_waits_over_ms=shed_over,
        recheck_at_ms=recheck,
        budget_left_usd=budget_left,
        decided_at_ms=now_ms,
        spill_finish_ms=spill_finish_ms(signal),
    )


def spill_finish_ms(signal: Signal) -> int:
    """How long a job spilled now is expected to take to finish: a Modal render, after
    a cold start unless a ready input slot is idle."""
    est = signal.estimates
    warm = signal.modal_ready_slots > signal.modal_inflight
    return est.modal_render_ms + (0 if warm else est.cold_start_ms)


def spawn_tokens(state: PolicyState, config: PolicyConfig, now_ms: int) -> float:
    """Spawns the bucket allows now: what the last spill left, refilled since."""
    if state.spawns_at_ms < 0:
        return float(config.spawn_burst)
    refilled = (now_ms - state.spawns_at_ms) * config.spawn_rate_per_s / 1000
    return min(float(config.spawn_burst), state.spawn_tokens + max(0.0, refilled))


def retry_after_s(signal: Signal, config: PolicyConfig) -> int:
    """What to tell a caller refused at the queue bound: about how long one queued job
    takes to leave the queue, between 1 and 60 seconds."""
    slots = max(1, signal.inhouse_slots + (config.modal_cap if signal.modal_available else 0))
    return min(60, max(1, math.ceil(signal.estimates.inhouse_render_ms / slots / 1000)))


def _hysteresis(
    state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int
) -> tuple[PolicyState, Transition | None]:
    # The in-house queue: jobs that free slots will not take at once.
    waiting = max(0, signal.queued - max(0, signal.inhouse_slots - signal.inhouse_busy))
    if state.mode is Mode.NORMAL:
        leaving = waiting >= config.high_watermark
        dwell_ms, new, reason = config.enter_dwell_ms, Mode.SPILL, Reason.DEPTH_ABOVE_HIGH
    else:
        leaving = waiting <= config.low_watermark
        dwell_ms, new, reason = config.exit_dwell_ms, Mode.NORMAL, Reason.DEPTH_BELOW_LOW
    if not leaving:
        return replace(state, pending_since_ms=None), None
    since = now_ms if state.pending_since_ms is None else state.pending_since_ms
    if now_ms - since >= dwell_ms and _may_change(state, config, now_ms):
        changed = replace(state, mode=new, mode_since_ms=now_ms, pending_since_ms=None)
        return changed, Transition(now_ms, state.mode, new, reason, waiting)
    return replace(state, pending_since_ms=since), None


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
    est = signal.estimates
    free_inhouse = max(0, signal.inhouse_slots - signal.inhouse_busy)
    home = min(signal.queued, free_inhouse)
    waiting = signal.queued - home
    room = max(0, config.modal_cap - signal.modal_inflight) if signal.modal_available else 0
    idle_ready = max(0, signal.modal_ready_slots - signal.modal_inflight)
    # In-house takes the head of the line, which is where the oldest jobs are.
    overdue = max(0, sum(age >= config.queue_timeout_ms for age in signal.queue_ages_ms) - home)
    overdue = min(overdue, waiting)

    spilled = 0
    cost = 0.0

    def limit() -> Reason | None:
        """What stops the next spill, if anything."""
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
        cold_ms = est.cold_start_ms if spilled >= idle_ready else 0
        return cost_usd(cold_ms + est.modal_render_ms, config)

    stop: Reason | None = None
    while spilled < overdue and (stop := limit()) is None:
        cost += _next_cost()
        spilled += 1
    rescued = spilled

    if mode is Mode.NORMAL:
        stop = stop or Reason.NORMAL_MODE
    while stop is None and spilled < waiting and (stop := limit()) is None:
        if not _modal_sooner(waiting - spilled - 1, spilled, idle_ready, signal, config):
            stop = Reason.INHOUSE_SOONER
            break
        cost += _next_cost()
        spilled += 1

    decisions = []
    if home:
        decisions.append(Decision(Target.INHOUSE, home, Reason.INHOUSE_SLOT_FREE))
    if rescued:
        decisions.append(Decision(Target.MODAL, rescued, Reason.TIMEOUT_RESCUE))
    if spilled > rescued:
        decisions.append(Decision(Target.MODAL, spilled - rescued, Reason.MODAL_FASTER))
    shed = 0
    # Caps that lift by themselves within moments never shed.
    if overdue > rescued and stop not in (None, Reason.SPILL_STEP_CAP, Reason.SPAWN_RATE):
        shed = overdue - rescued
        decisions.append(Decision(Target.SHED, shed, Reason.QUEUE_TIMEOUT))
    if (held := waiting - spilled - shed) > 0:
        decisions.append(Decision(Target.HOLD, held, stop or Reason.INHOUSE_SOONER))
    return tuple(decisions), (config.queue_timeout_ms if shed else None)


def _modal_sooner(
    position: int, spilled: int, idle_ready: int, signal: Signal, config: PolicyConfig
) -> bool:
    """Whether Modal finishes one more job sooner than the in-house fleet would finish
    the job at `position` in its line (0 is next)."""
    est = signal.estimates
    modal_ms = (0 if spilled < idle_ready else est.cold_start_ms) + est.modal_render_ms
    if signal.inhouse_slots == 0:
        return True
    # Every slot is busy; on average the current renders are half done.
    start_ms = (position // signal.inhouse_slots) * est.inhouse_render_ms
    inhouse_ms = start_ms + est.inhouse_render_ms // 2 + est.inhouse_render_ms
    return modal_ms < inhouse_ms


def _autoscale(
    state: PolicyState, config: PolicyConfig, now_ms: int, budget_left: float
) -> Autoscale:
    second = (now_ms // 1000) % _DAY_S
    open_windows = [w for w in config.prewarm_windows if w.covers(second)]
    scheduled = max((w.containers for w in open_windows), default=0)
    reactive = config.prewarm_containers if now_ms < state.prewarm_until_ms else 0
    wanted = min(max(scheduled, reactive), config.max_containers)
    # A warm container bills while it idles: until the pre-warm ends, then through its
    # scaledown window. Keep only as many as the budget left pays for that long.
    warm_s = max(
        [_seconds_left(w, second) for w in open_windows]
        + [max(0, state.prewarm_until_ms - now_ms) // 1000]
    )
    affordable = _affordable(budget_left, warm_s + config.scaledown_window_s, config)
    buffer = min(config.buffer_containers, config.max_containers)
    return Autoscale(
        min_containers=max(0, min(wanted, affordable)),
        buffer_containers=min(buffer, _affordable(budget_left, config.scaledown_window_s, config)),
        max_containers=config.max_containers,
        scaledown_window_s=config.scaledown_window_s,
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
