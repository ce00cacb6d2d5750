"""Turning observed samples into the estimates the policy plans with."""

from __future__ import annotations

from collections.abc import Sequence


def quantile(samples: Sequence[int], q: float, default: int) -> int:
    """The q-quantile (nearest rank) of the samples, or `default` when there are none.
    Cold starts are fat-tailed, so the policy plans with a high quantile of them
    rather than a mean that one slow snapshot restore would drag around."""
    if not samples:
        return default
    ordered = sorted(samples)
    rank = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))
    return ordered[rank]
