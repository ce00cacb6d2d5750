"""The values the spillover policy reads and returns. Plain frozen data, no behaviour
beyond descriptions: see `scheduler.policy.decide` for the rules."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Mode(StrEnum):
    NORMAL = "normal"
    """Every job goes to the in-house fleet."""
    SPILL = "spill"
    """The in-house queue is past the high watermark: overflow may go to Modal."""


class Target(StrEnum):
    """Where a queued job goes now."""

    INHOUSE = "inhouse"
    MODAL = "modal"
    """The second fleet: Modal, or the local burst pool standing in for it."""
    HOLD = "hold"
    """Stays in the control-plane queue for a later decision."""
    SHED = "shed"
    """Fails (queue timeout) or is refused at submit (queue full)."""


class Reason(StrEnum):
    INHOUSE_SLOT_FREE = "inhouse_slot_free"
    MODAL_FASTER = "modal_faster"
    MODAL_WARM = "modal_warm"
    TIMEOUT_RESCUE = "timeout_rescue"
    NORMAL_MODE = "normal_mode"
    INHOUSE_SOONER = "inhouse_sooner"
    MODAL_FULL = "modal_full"
    MODAL_UNAVAILABLE = "modal_unavailable"
    BUDGET_EXHAUSTED = "budget_exhausted"
    SPILL_STEP_CAP = "spill_step_cap"
    SPAWN_RATE = "spawn_rate"
    SPILL_OFF = "spill_off"
    DISPATCH_PAUSED = "dispatch_paused"
    BATCH_INHOUSE = "batch_inhouse"
    QUEUE_TIMEOUT = "queue_timeout"
    QUEUE_FULL = "queue_full"
    DEPTH_ABOVE_HIGH = "depth_above_high"
    DEPTH_BELOW_LOW = "depth_below_low"
    WAIT_ABOVE_MAX = "wait_above_max"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Reason.INHOUSE_SLOT_FREE: "an in-house slot is free",
    Reason.MODAL_FASTER: "Modal is expected to finish it sooner than waiting in-house",
    Reason.MODAL_WARM: "a Modal container already up and paid for is idle and takes it sooner",
    Reason.TIMEOUT_RESCUE: "it has waited the queue timeout and Modal has room",
    Reason.NORMAL_MODE: "not spilling: the in-house queue is below the high watermark",
    Reason.INHOUSE_SOONER: "waiting in-house is expected to finish it sooner than Modal",
    Reason.MODAL_FULL: "Modal in-flight is at max_containers x concurrency",
    Reason.MODAL_UNAVAILABLE: "no second fleet is configured, or it is failing",
    Reason.BUDGET_EXHAUSTED: "the monthly GPU budget cannot pay for more Modal work",
    Reason.SPILL_STEP_CAP: "at most max_spill_per_decision jobs spill per decision",
    Reason.SPAWN_RATE: "spawns are limited to spawn_rate_per_s, in bursts of spawn_burst",
    Reason.SPILL_OFF: "an operator turned spilling off (spillway admin spill off)",
    Reason.DISPATCH_PAUSED: "an operator paused dispatch (spillway admin dispatch pause)",
    Reason.BATCH_INHOUSE: (
        "batch jobs wait for in-house slots interactive ones leave free; they spill only "
        "if an operator allows it (spillway admin batch spill)"
    ),
    Reason.QUEUE_TIMEOUT: "it waited longer than the queue timeout with both fleets full",
    Reason.QUEUE_FULL: "the control-plane queue is at its bound",
    Reason.DEPTH_ABOVE_HIGH: "in-house queue depth stayed at or above the high watermark",
    Reason.DEPTH_BELOW_LOW: "in-house queue depth stayed at or below the low watermark",
    Reason.WAIT_ABOVE_MAX: "the oldest job waiting for in-house stayed past spill_wait_s",
}


@dataclass(frozen=True)
class Estimates:
    """What the dispatcher has observed lately, in milliseconds."""

    inhouse_render_ms: int
    modal_render_ms: int
    cold_start_ms: int
    """A high quantile of observed cold starts: they are fat-tailed."""
    cold_start_mean_ms: int | None = None
    """Their mean: what a spill that boots a container expects to wait, over the whole
    distribution (failed restores included); None: `cold_start_ms`."""
    cold_start_p99_ms: int | None = None
    """Their 99th percentile: a spilled job that has waited longer than this (and a
    margin) for its container is recalled; None: `cold_start_ms`."""

    @property
    def expected_cold_ms(self) -> int:
        return self.cold_start_ms if self.cold_start_mean_ms is None else self.cold_start_mean_ms

    @property
    def worst_cold_ms(self) -> int:
        return self.cold_start_ms if self.cold_start_p99_ms is None else self.cold_start_p99_ms


class SpillControl(StrEnum):
    AUTO = "auto"
    """The policy decides."""
    OFF = "off"
    """The kill switch: nothing new spills and the second fleet scales to zero (no
    pre-warm, no spare); what runs there finishes."""
    FORCE = "force"
    """Spill as in SPILL mode, whatever the hysteresis says."""


@dataclass(frozen=True)
class Controls:
    """What an operator set (`spillway admin`), persisted in Redis: inputs to the
    policy like any other."""

    spill: SpillControl = SpillControl.AUTO
    dispatch_paused: bool = False
    """Nothing is dispatched anywhere; jobs wait (and none is shed for waiting)."""
    batch_spill: bool = False
    """Batch jobs count toward spilling and may spill, after interactive ones."""


@dataclass(frozen=True)
class Signal:
    """The world as the dispatcher read it, in one Redis round trip."""

    queued: int
    """Interactive jobs waiting in the control-plane queue."""
    queue_ages_ms: tuple[int, ...]
    """How long the oldest queued interactive jobs have waited, oldest first (a bounded
    sample)."""
    inhouse_busy: int
    inhouse_slots: int
    modal_inflight: int
    modal_ready_slots: int
    """Inputs Modal's running containers take without a cold start (busy or not)."""
    modal_available: bool
    spent_usd: float
    """Modal spend metered so far this month."""
    estimates: Estimates
    modal_starting_slots: int = 0
    """Inputs the containers still waiting for a GPU, booting or restoring will take once
    up (busy or not); not counted in `modal_ready_slots`."""
    controls: Controls = Controls()
    batch_queued: int = 0
    """Batch jobs waiting: served after every interactive one, and in-house only unless
    `controls.batch_spill`."""


@dataclass(frozen=True)
class PolicyState:
    """Everything the policy remembers between decisions. Stored in Redis as JSON, so
    every replica decides from the same state."""

    mode: Mode = Mode.NORMAL
    mode_since_ms: int | None = None
    """When the current mode began; None before the first change."""
    pending_since_ms: int | None = None
    """Since when the condition to leave the current mode has held without a break."""
    depth_ref: int = 0
    depth_ref_ms: int = 0
    """An earlier queue depth sample, for the rate at which the queue rises."""
    prewarm_until_ms: int = 0
    """Reactive pre-warm holds until then; refreshed while the queue keeps rising."""
    spawn_tokens: float = 0.0
    spawns_at_ms: int = -1
    """The spawn bucket as the last decision that spilled left it, and when; -1: no
    spill yet, a full bucket. Refilled lazily, so a decision that spills nothing leaves
    the state (and Redis) untouched."""
    cold_seen_ms: int = 0
    cold_seen_at_ms: int = 0
    """The expected cold start the estimates last gave, and when it last changed (a new
    sample): what tells stale cold-start samples apart."""


@dataclass(frozen=True)
class Decision:
    target: Target
    count: int
    reason: Reason


@dataclass(frozen=True)
class Transition:
    at_ms: int
    old: Mode
    new: Mode
    reason: Reason
    queued: int


@dataclass(frozen=True)
class Autoscale:
    """The settings the second fleet's autoscaler should have."""

    min_containers: int
    buffer_containers: int
    max_containers: int
    scaledown_window_s: int


@dataclass(frozen=True)
class Plan:
    """One decision: the new state and what to do now."""

    state: PolicyState
    decisions: tuple[Decision, ...]
    autoscale: Autoscale
    transition: Transition | None = None
    shed_waits_over_ms: int | None = None
    """With a SHED decision: fail queued jobs that have waited at least this long."""
    recheck_at_ms: int | None = None
    """When the plan may change with no new signal (a dwell ends, a job times out, a
    pre-warm window opens); the dispatcher asks again by then."""
    budget_left_usd: float = 0.0
    decided_at_ms: int = 0
    spill_finish_ms: int = 0
    """How long a job spilled now is expected to take to finish: a job whose deadline
    comes sooner is not spilled (it would cost GPU time for a video no longer wanted)."""

    def count(self, target: Target) -> int:
        return sum(d.count for d in self.decisions if d.target is target)

    def sent(self, target: Target, reason: Reason) -> int:
        return sum(d.count for d in self.decisions if d.target is target and d.reason is reason)
