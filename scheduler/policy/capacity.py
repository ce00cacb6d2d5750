"""`spillway plan`: the capacity arithmetic behind `max_containers`.

The worst a month can cost is every container of the second fleet busy through every
burst, each burst also paying one boot per container (it starts cold) and one
scaledown window of idle time before the fleet goes back to zero. So

    cost of one container a month = usd_per_s x (burst_hours x 3600
                                    + bursts x (cold_start_s + scaledown_window_s))
    max_containers                = floor(budget / that)

and, at that size, the fleet renders `max_containers x concurrency / render_s` jobs a
second. Pure arithmetic on the inputs; the simulator answers the questions it cannot
(how long bursts really last, what the policy actually spills).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PlanInputs:
    budget_usd_month: float
    gpu_usd_per_s: float = 0.001097
    concurrency: int = 1
    render_s: float = 60.0
    """A render's GPU time on a warm container."""
    burst_hours_month: float = 60.0
    """Hours a month the second fleet may run flat out (e.g. 2 h a day)."""
    bursts_month: int = 30
    cold_start_s: float = 30.0
    scaledown_window_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("budget_usd_month", "gpu_usd_per_s", "render_s", "burst_hours_month"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value}")
        for name in ("cold_start_s", "scaledown_window_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be 0 or more, got {value}")
        if self.concurrency < 1 or self.bursts_month < 0:
            raise ValueError("concurrency must be at least 1 and bursts_month 0 or more")


@dataclass(frozen=True)
class PlanResult:
    max_containers: int
    container_usd_month: float
    """What one container costs in the worst month."""
    worst_month_usd: float
    """What `max_containers` cost in the worst month (at most the budget)."""
    usd_per_job: float
    """A warm render's share of its container's GPU time."""
    jobs_per_hour: float
    """Throughput of the fleet at `max_containers`, all busy."""
    overhead_share: float
    """Of the worst month's cost, the share spent booting and idling, not rendering."""


def plan_capacity(inputs: PlanInputs) -> PlanResult:
    busy_s = inputs.burst_hours_month * 3600
    overhead_s = inputs.bursts_month * (inputs.cold_start_s + inputs.scaledown_window_s)
    container_usd = (busy_s + overhead_s) * inputs.gpu_usd_per_s
    containers = int(inputs.budget_usd_month // container_usd)
    return PlanResult(
        max_containers=containers,
        container_usd_month=container_usd,
        worst_month_usd=containers * container_usd,
        usd_per_job=inputs.render_s * inputs.gpu_usd_per_s / inputs.concurrency,
        jobs_per_hour=containers * inputs.concurrency * 3600 / inputs.render_s,
        overhead_share=overhead_s / (busy_s + overhead_s),
    )
