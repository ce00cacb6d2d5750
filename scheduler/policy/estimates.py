"""Turning observed samples into the estimates the policy plans with."""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.policy.config import PolicyConfig
from scheduler.policy.model import Estimates

AGES_SAMPLED = 32
"""How many of the longest waits the signal carries."""
SAMPLES_KEPT = 64
"""How many recent renders (and cold starts) per pool the estimates draw on."""
RENDER_QUANTILE = 0.5
COLD_QUANTILE = 0.9
COLD_RECALL_QUANTILE = 0.99


def quantile(samples: Sequence[int], q: float, default: int) -> int:
    """The q-quantile (nearest rank) of the samples, or `default` when there are none.
    Cold starts are fat-tailed, so the policy plans with a high quantile of them
    rather than a mean that one slow snapshot restore would drag around."""
    if not samples:
        return default
    ordered = sorted(samples)
    rank = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))
    return ordered[rank]


def estimate(
    inhouse_renders: Sequence[int],
    spill_renders: Sequence[int],
    cold_starts: Sequence[int],
    config: PolicyConfig,
) -> Estimates:
    """The estimates from recent samples (ms): median renders, a p90, a p99 and the mean
    of cold starts; the config's until there are samples. The scheduler and the simulator both
    use it."""
    return Estimates(
        inhouse_render_ms=quantile(inhouse_renders, RENDER_QUANTILE, config.inhouse_render_ms),
        modal_render_ms=quantile(spill_renders, RENDER_QUANTILE, config.modal_render_ms),
        cold_start_ms=quantile(cold_starts, COLD_QUANTILE, config.cold_start_ms),
        cold_start_p99_ms=quantile(cold_starts, COLD_RECALL_QUANTILE, config.cold_start_ms),
        cold_start_mean_ms=(
            sum(cold_starts) // len(cold_starts) if cold_starts else config.cold_start_ms
        ),
    )
