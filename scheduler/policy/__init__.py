"""The spillover policy: a pure function of (state, signal, config, now).

Nothing in this package does I/O or reads a clock; `scheduler.dispatch.dispatcher` feeds it.
"""

from scheduler.policy.config import PolicyConfig, PrewarmWindow
from scheduler.policy.decide import cost_usd, decide, poll_after_ms, retry_after_s
from scheduler.policy.estimates import quantile
from scheduler.policy.meter import Meter
from scheduler.policy.model import (
    Autoscale,
    Controls,
    Decision,
    Estimates,
    Mode,
    Plan,
    PolicyState,
    Reason,
    Signal,
    SpillControl,
    Target,
    Transition,
)

__all__ = [
    "Autoscale",
    "Controls",
    "Decision",
    "Estimates",
    "Meter",
    "Mode",
    "Plan",
    "PolicyConfig",
    "PolicyState",
    "PrewarmWindow",
    "Reason",
    "Signal",
    "SpillControl",
    "Target",
    "Transition",
    "cost_usd",
    "decide",
    "poll_after_ms",
    "quantile",
    "retry_after_s",
]
