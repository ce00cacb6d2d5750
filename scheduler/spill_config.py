"""Configuration of the spillover policy and the second fleet, read with the rest of
`scheduler.config`. Durations are given in seconds and held in the policy as ms."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from scheduler.config import ConfigError, float_at_least, get, int_at_least
from scheduler.policy import PolicyConfig, PrewarmWindow

HIGH_WATERMARK = "SPILLWAY_HIGH_WATERMARK"
"""Queued jobs at or above which spilling starts. Default 8."""
LOW_WATERMARK = "SPILLWAY_LOW_WATERMARK"
"""Queued jobs at or below which spilling stops. Default 0."""
ENTER_DWELL_S = "SPILLWAY_ENTER_DWELL_S"
"""How long the queue must stay at or above the high watermark before spilling. Default 2."""
EXIT_DWELL_S = "SPILLWAY_EXIT_DWELL_S"
"""How long it must stay at or below the low watermark before spilling stops. Default 240."""
MIN_MODE_S = "SPILLWAY_MIN_MODE_S"
"""Least time between two mode changes. Default 10."""
SPILL_WAIT_S = "SPILLWAY_SPILL_WAIT_S"
"""The oldest job waiting for an in-house slot having waited this long also starts
spilling (after the enter dwell), however short the queue; 0 turns it off. Default 30."""
MAX_SPILL_PER_DECISION = "SPILLWAY_MAX_SPILL_PER_DECISION"
"""Most jobs sent to the second fleet by one decision. Default 8."""
SPAWN_RATE_PER_S = "SPILLWAY_SPAWN_RATE_PER_S"
"""Spawns on the second fleet, over time, across every replica: a token bucket refilled
at this rate (0 turns it off). Default 2."""
SPAWN_BURST = "SPILLWAY_SPAWN_BURST"
"""The spawn bucket's size: the most spawns at one instant. Default 16."""
QUEUE_TIMEOUT_S = "SPILLWAY_QUEUE_TIMEOUT_S"
"""A job waiting this long with both fleets full fails with `queue_timeout`. Default 1800."""
MAX_QUEUED = "SPILLWAY_MAX_QUEUED"
"""Queue bound: past it submits get RESOURCE_EXHAUSTED / HTTP 429. Default 10000."""
GPU_USD_PER_S = "SPILLWAY_GPU_USD_PER_S"
"""Price of one GPU-second on the second fleet. Default 0.001097 (H100, ~$3.95/h)."""
BUDGET_USD_MONTH = "SPILLWAY_BUDGET_USD_MONTH"
"""Monthly spend limit on the second fleet (UTC calendar month). Default 10000."""
PREWARM_WINDOWS = "SPILLWAY_PREWARM_WINDOWS"
"""Daily UTC windows with containers kept warm: `HH:MM-HH:MM=N,...`. Default none."""
PREWARM_RISE_PER_MIN = "SPILLWAY_PREWARM_RISE_PER_MIN"
"""Reactive pre-warm when the queue rises this fast (jobs/min); 0 turns it off. Default 0."""
PREWARM_CONTAINERS = "SPILLWAY_PREWARM_CONTAINERS"
"""Containers reactive pre-warm keeps warm. Default 1."""
PREWARM_HOLD_S = "SPILLWAY_PREWARM_HOLD_S"
"""How long reactive pre-warm lasts after the queue stops rising. Default 120."""
RATE_WINDOW_S = "SPILLWAY_RATE_WINDOW_S"
"""Span over which the queue's rise rate is measured. Default 10."""
EST_INHOUSE_RENDER_S = "SPILLWAY_EST_INHOUSE_RENDER_S"
"""In-house render time assumed until renders are observed. Default 60."""
EST_SPILL_RENDER_S = "SPILLWAY_EST_SPILL_RENDER_S"
"""Second-fleet render time assumed until renders are observed. Default 60."""
EST_COLD_START_S = "SPILLWAY_EST_COLD_START_S"
"""Cold start assumed until cold starts are observed. Default 30."""
COLD_START_STALE_S = "SPILLWAY_COLD_START_STALE_S"
"""Observed cold starts that have not changed for this long may no longer claim a boot
slower than SPILLWAY_EST_COLD_START_S (a deploy's first full boots would keep spills off
long after snapshot restores became fast); 0 keeps them for good. Default 300."""
RECALL_MARGIN_S = "SPILLWAY_RECALL_MARGIN_S"
"""A job spilled to a fleet that reports its renders' start (the burst pool) is recalled
and placed again once it has waited the p99 cold start plus this without starting; it
is also recalled, sooner, for an in-house slot no queued job takes before its predicted
start. Default 10."""

SPILL_POOL = "SPILLWAY_SPILL_POOL"
"""The second fleet: `none`, `burst` (local worker processes) or `modal`. Default none."""
SPILL_MAX_CONTAINERS = "SPILLWAY_SPILL_MAX_CONTAINERS"
"""Most containers the second fleet runs. Default 10."""
SPILL_CONCURRENCY = "SPILLWAY_SPILL_CONCURRENCY"
"""Inputs each container renders at once. Default 1."""
SPILL_BUFFER_CONTAINERS = "SPILLWAY_SPILL_BUFFER_CONTAINERS"
"""Idle containers kept ready beyond demand while spilling with jobs waiting for in-house;
none otherwise. Default 1."""
SPILL_SCALEDOWN_S = "SPILLWAY_SPILL_SCALEDOWN_S"
"""A container idle this long is stopped, while jobs wait for in-house. Default 300."""
SPILL_DRAIN_SCALEDOWN_S = "SPILLWAY_SPILL_DRAIN_SCALEDOWN_S"
"""... and once the in-house queue has drained (at or below the low watermark): every second
an idle container waits then is billed for nothing. Default 10."""
BURST_COLD_START_S = "SPILLWAY_BURST_COLD_START_S"
"""Boot delay of a local burst container, standing in for a snapshot restore. Default 2."""
BURST_FPS = "SPILLWAY_BURST_FPS"
"""Frame rate of local burst renders. Default 24."""
MODAL_APP = "SPILLWAY_MODAL_APP"
"""Deployed Modal app holding the renderer. Default spillway-renderer."""
MODAL_CLASS = "SPILLWAY_MODAL_CLASS"
"""Renderer class in that app. Default Renderer."""
MODAL_ENVIRONMENT = "SPILLWAY_MODAL_ENVIRONMENT"
"""Modal environment the renderer is deployed in (`tools/modal_deploy.py --env`):
`dev` or `prod` by the runbook. Default prod."""
MODAL_RENDER_TIMEOUT_S = "SPILLWAY_MODAL_RENDER_TIMEOUT_S"
"""How long the scheduler waits for one Modal call before it cancels it and retries the
job (charged): a container's start and a render, so at least the app's
SPILLWAY_MODAL_STARTUP_TIMEOUT_S plus SPILLWAY_MODAL_TIMEOUT_S. Default 3600."""
MODAL_START_DICT = "SPILLWAY_MODAL_START_DICT"
"""Modal Dict, in the renderer's environment, that holds each spilled input's start
gate: the container and a recall each write it once, and whichever writes first wins,
so a job recalled from Modal never renders there. Created on first use; its entries
expire after 7 days unused. Default spillway-starts."""
AUTOSCALE_INTERVAL_S = "SPILLWAY_AUTOSCALE_INTERVAL_S"
"""How often the autoscaler-lease holder re-applies the fleet's settings. Default 15."""
METER_INTERVAL_S = "SPILLWAY_METER_INTERVAL_S"
"""How often the meter-lease holder counts the second fleet's containers and charges
their time to the month's spend; a container that starts or stops between two looks is
metered from or to the middle of the span. Default 5."""
MODAL_BILL_CHECK_S = "SPILLWAY_MODAL_BILL_CHECK_S"
"""How often the meter-lease holder reads Modal's billing report for the month's whole
hours, adding to the month's spend what it says beyond the meter; 0 never. Default
3600."""

_WINDOW = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})=(\d+)$")
_MODAL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class SpillKind(StrEnum):
    NONE = "none"
    BURST = "burst"
    MODAL = "modal"


@dataclass(frozen=True)
class SpillConfig:
    kind: SpillKind
    burst_cold_start_s: float
    burst_fps: int
    modal_app: str
    modal_class: str
    modal_environment: str
    modal_render_timeout_s: float
    modal_start_dict: str
    autoscale_interval_s: float
    meter_interval_s: float
    modal_bill_check_s: float


def spill_from_env(env: Mapping[str, str]) -> SpillConfig:
    kind = get(env, SPILL_POOL, "none", SpillKind)
    if kind is SpillKind.MODAL:
        get(env, SPILL_SCALEDOWN_S, "300", _modal_scaledown)
        get(env, SPILL_DRAIN_SCALEDOWN_S, "10", _modal_scaledown)
    return SpillConfig(
        kind=kind,
        burst_cold_start_s=get(env, BURST_COLD_START_S, "2", float_at_least(0)),
        burst_fps=get(env, BURST_FPS, "24", int_at_least(1)),
        modal_app=get(env, MODAL_APP, "spillway-renderer", _nonempty),
        modal_class=get(env, MODAL_CLASS, "Renderer", _nonempty),
        modal_environment=get(env, MODAL_ENVIRONMENT, "prod", _modal_name),
        modal_render_timeout_s=get(env, MODAL_RENDER_TIMEOUT_S, "3600", float_at_least(1)),
        modal_start_dict=get(env, MODAL_START_DICT, "spillway-starts", _modal_name),
        autoscale_interval_s=get(env, AUTOSCALE_INTERVAL_S, "15", float_at_least(0.1)),
        meter_interval_s=get(env, METER_INTERVAL_S, "5", float_at_least(0.1)),
        modal_bill_check_s=get(env, MODAL_BILL_CHECK_S, "3600", float_at_least(0)),
    )


def policy_from_env(env: Mapping[str, str]) -> PolicyConfig:
    def ms(key: str, default: str) -> int:
        return int(get(env, key, default, float_at_least(0)) * 1000)

    try:
        return PolicyConfig(
            high_watermark=get(env, HIGH_WATERMARK, "8", int_at_least(1)),
            low_watermark=get(env, LOW_WATERMARK, "0", int_at_least(0)),
            enter_dwell_ms=ms(ENTER_DWELL_S, "2"),
            exit_dwell_ms=ms(EXIT_DWELL_S, "240"),
            min_mode_ms=ms(MIN_MODE_S, "10"),
            spill_wait_ms=ms(SPILL_WAIT_S, "30"),
            max_spill_per_decision=get(env, MAX_SPILL_PER_DECISION, "8", int_at_least(1)),
            spawn_rate_per_s=get(env, SPAWN_RATE_PER_S, "2", float_at_least(0)),
            spawn_burst=get(env, SPAWN_BURST, "16", int_at_least(1)),
            max_containers=get(env, SPILL_MAX_CONTAINERS, "10", int_at_least(1)),
            concurrency=get(env, SPILL_CONCURRENCY, "1", int_at_least(1)),
            buffer_containers=get(env, SPILL_BUFFER_CONTAINERS, "1", int_at_least(0)),
            scaledown_window_s=get(env, SPILL_SCALEDOWN_S, "300", int_at_least(0)),
            drain_scaledown_window_s=get(env, SPILL_DRAIN_SCALEDOWN_S, "10", int_at_least(0)),
            gpu_usd_per_s=get(env, GPU_USD_PER_S, "0.001097", float_at_least(0)),
            budget_usd_month=get(env, BUDGET_USD_MONTH, "10000", float_at_least(0)),
            queue_timeout_ms=max(1, ms(QUEUE_TIMEOUT_S, "1800")),
            max_queued=get(env, MAX_QUEUED, "10000", int_at_least(1)),
            prewarm_windows=get(env, PREWARM_WINDOWS, "-", _windows),
            prewarm_rise_per_min=get(env, PREWARM_RISE_PER_MIN, "0", float_at_least(0)),
            prewarm_containers=get(env, PREWARM_CONTAINERS, "1", int_at_least(0)),
            prewarm_hold_ms=ms(PREWARM_HOLD_S, "120"),
            rate_window_ms=max(1, ms(RATE_WINDOW_S, "10")),
            inhouse_render_ms=ms(EST_INHOUSE_RENDER_S, "60"),
            modal_render_ms=ms(EST_SPILL_RENDER_S, "60"),
            cold_start_ms=ms(EST_COLD_START_S, "30"),
            cold_start_stale_ms=ms(COLD_START_STALE_S, "300"),
            recall_margin_ms=ms(RECALL_MARGIN_S, "10"),
        )
    except ConfigError:
        raise
    except ValueError as exc:
        # Rules that span variables (low below high watermark); the message names the
        # fields, which are the variables' names without the prefix.
        raise ConfigError(f"spillover policy: {exc}") from None


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _modal_scaledown(raw: str) -> int:
    """Modal refuses any other scaledown window: every autoscaler update would fail."""
    from scheduler.pools.modal import SCALEDOWN_WINDOW_S

    low, high = SCALEDOWN_WINDOW_S
    value = int(raw)
    if not low <= value <= high:
        raise ValueError(f"the Modal pool takes a scaledown window of {low} to {high} s")
    return value


def _modal_name(raw: str) -> str:
    if not _MODAL_NAME.fullmatch(raw):
        raise ValueError("must be 1-64 letters, digits, '.', '-' or '_'")
    return raw


def _windows(raw: str) -> tuple[PrewarmWindow, ...]:
    if raw == "-":
        return ()
    windows = []
    for item in raw.split(","):
        match = _WINDOW.match(item.strip())
        if not match:
            raise ValueError(f"expected HH:MM-HH:MM=N, got {item.strip()!r}")
        h1, m1, h2, m2, n = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
            raise ValueError(f"no such time of day in {item.strip()!r}")
        windows.append(PrewarmWindow(h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60, n))
    return tuple(windows)
