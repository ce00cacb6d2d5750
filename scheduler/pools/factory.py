"""Builds the second fleet that the configuration names."""

from __future__ import annotations

from pathlib import Path

from scheduler.config import SchedulerConfig
from scheduler.pools.base import Pool
from scheduler.spill_config import SpillKind


def build_spill_pool(cfg: SchedulerConfig, tmp_dir: Path | None) -> Pool | None:
    kind = cfg.spill.kind
    if kind is SpillKind.NONE:
        return None
    raise NotImplementedError(kind)
