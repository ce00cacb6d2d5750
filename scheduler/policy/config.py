"""The policy's knobs. Durations are integer milliseconds so no rule needs an epsilon;
`scheduler.config` reads them from the environment (in seconds) and names the variable
in any error."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PrewarmWindow:
    """A daily window (UTC) during which Modal keeps `containers` warm. `end_s` before
    `start_s` wraps past midnight."""

    start_s: int
    end_s: int
    containers: int

    def covers(self, second_of_day: int) -> bool:
        if self.start_s <= self.end_s:
            return self.start_s <= second_of_day < self.end_s
        return second_of_day >= self.start_s or second_of_day < self.end_s


@dataclass(frozen=True)
class PolicyConfig:
    high_watermark: int = 8
    """Queued jobs at or above which the policy starts spilling (after `enter_dwell_ms`)."""
    low_watermark: int = 0
    """Queued jobs at or below which it stops spilling (after `exit_dwell_ms`)."""
    enter_dwell_ms: int = 2_000
    exit_dwell_ms: int = 240_000
    """Long, on purpose: containers booted for a spill bill through their scaledown
    window anyway, so leaving spill mode early only makes jobs wait in-house beside
    warm, paid-for containers, and the next rise boot more (tools/bench_policies.py)."""
    min_mode_ms: int = 10_000
    """No mode change sooner than this after the last: no input can make it flap faster."""
    spill_wait_ms: int = 30_000
    """The oldest job waiting for in-house (beyond the free slots) having waited this long
    also starts spilling (after `enter_dwell_ms`), however short the queue: a queue of
    long renders on a small fleet keeps jobs waiting below any depth; 0 turns it off."""
    max_spill_per_decision: int = 8
    spawn_rate_per_s: float = 2.0
    """Spawns on the second fleet refill at this rate (a token bucket shared by every
    replica, in the policy's state); 0 turns the limit off. Above what a 10x crowd on 16
    slots sends (about 1.6 a second): the bucket bounds stampedes, not throughput."""
    spawn_burst: int = 16
    """The bucket's size: the most spawns at one instant after a quiet spell."""
    max_containers: int = 10
    concurrency: int = 1
    """Inputs one Modal container renders at once."""
    buffer_containers: int = 1
    """Idle spares the autoscaler keeps while jobs wait for in-house; none once drained."""
    scaledown_window_s: int = 300
    """How long an idle container stays up while jobs wait for in-house (the deployed
    value)."""
    drain_scaledown_window_s: int = 10
    """... and once the in-house queue has drained (at or below the low watermark): nothing
    waits for the idle containers then, and every second they idle is billed."""
    gpu_usd_per_s: float = 0.001097
    """What one Modal GPU-second costs (an H100 at about $3.95 an hour)."""
    budget_usd_month: float = 10_000.0
    queue_timeout_ms: int = 1_800_000
    """A job that waits this long while both fleets are full fails with `queue_timeout`."""
    max_queued: int = 10_000
    """Past this many queued jobs, submits are refused (RESOURCE_EXHAUSTED / HTTP 429)."""
    prewarm_windows: tuple[PrewarmWindow, ...] = ()
    prewarm_rise_per_min: float = 0.0
    """Reactive pre-warm: the queue rising at least this fast (jobs a minute) while below
    the high watermark warms `prewarm_containers`; 0 turns it off."""
    prewarm_containers: int = 1
    prewarm_hold_ms: int = 120_000
    rate_window_ms: int = 10_000
    """How far apart the two queue depth samples behind the rise rate are."""
    inhouse_render_ms: int = 60_000
    modal_render_ms: int = 60_000
    cold_start_ms: int = 30_000
    """Estimates used until renders and cold starts have been observed."""
    cold_start_stale_ms: int = 300_000
    """Cold-start samples that have not changed for this long may no longer claim a boot
    slower than `cold_start_ms` (a deploy's first full boots would otherwise keep the
    policy off the second fleet long after its snapshot restores became fast); 0 keeps
    them for good."""
    recall_margin_ms: int = 10_000
    """A job spilled to a fleet that reports when its renders start is recalled (and
    placed again) once it has waited longer than the p99 cold start plus this without
    starting: its container is failing to come up."""

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.low_watermark < self.high_watermark:
            problems.append(
                f"need 0 <= low_watermark < high_watermark, got {self.low_watermark} "
                f"and {self.high_watermark}"
            )
        for name in (
            "max_containers",
            "concurrency",
            "max_queued",
            "max_spill_per_decision",
            "spawn_burst",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in (
            "enter_dwell_ms",
            "exit_dwell_ms",
            "min_mode_ms",
            "spill_wait_ms",
            "buffer_containers",
            "scaledown_window_s",
            "drain_scaledown_window_s",
            "gpu_usd_per_s",
            "spawn_rate_per_s",
            "budget_usd_month",
            "prewarm_rise_per_min",
            "prewarm_containers",
            "prewarm_hold_ms",
            "inhouse_render_ms",
            "modal_render_ms",
            "cold_start_ms",
            "cold_start_stale_ms",
            "recall_margin_ms",
        ):
            value = getattr(self, name)
            if not math.isfinite(value):
                problems.append(f"{name} must be a finite number, got {value}")
            elif value < 0:
                problems.append(f"{name} must not be negative, got {value}")
        for name in ("queue_timeout_ms", "rate_window_ms"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        for window in self.prewarm_windows:
            if not (0 <= window.start_s < 86_400 and 0 <= window.end_s <= 86_400):
                problems.append(f"prewarm_windows: seconds of day out of range in {window}")
            if window.containers < 0:
                problems.append(f"prewarm_windows: containers must not be negative in {window}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def modal_cap(self) -> int:
        """The most inputs Modal may run at once."""
        return self.max_containers * self.concurrency
