"""Builds the second fleet that the configuration names."""

from __future__ import annotations

from pathlib import Path

from scheduler.config import SchedulerConfig
from scheduler.pools.base import Pool
from scheduler.spill_config import SpillKind


def build_spill_pool(cfg: SchedulerConfig, tmp_dir: Path | None) -> Pool | None:
    policy, spill = cfg.policy, cfg.spill
    if spill.kind is SpillKind.MODAL:
        from scheduler.pools.modal import ModalPool, ModalPoolConfig

        return ModalPool(
            ModalPoolConfig(
                app_name=spill.modal_app,
                class_name=spill.modal_class,
                environment=spill.modal_environment,
                concurrency=policy.concurrency,
                render_timeout_s=spill.modal_render_timeout_s,
                start_dict=spill.modal_start_dict,
                tmp_dir=tmp_dir,
                expected_render_s=policy.modal_render_ms / 1000,
            )
        )
    if spill.kind is SpillKind.BURST:
        from scheduler.pools.burst import BurstConfig, BurstPool

        return BurstPool(
            BurstConfig(
                max_containers=policy.max_containers,
                concurrency=policy.concurrency,
                cold_start_s=spill.burst_cold_start_s,
                scaledown_window_s=policy.scaledown_window_s,
                buffer_containers=policy.buffer_containers,
                fps=spill.burst_fps,
                render_timeout_s=cfg.render_timeout_s,
                tmp_dir=tmp_dir,
                log_path=tmp_dir / "burst-containers.log" if tmp_dir else None,
            )
        )
    return None
