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
from scheduler.policy.recall import Recall, RecallReason, Waiting, next_recall_at_ms, recalls

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
    "Recall",
    "RecallReason",
    "Signal",
    "SpillControl",
    "Target",
    "Transition",
    "Waiting",
    "cost_usd",
    "decide",
    "next_recall_at_ms",
    "poll_after_ms",
    "quantile",
    "recalls",
    "retry_after_s",
]
