"""Which spilled jobs to take back from the second fleet: pure, like `decide`.

Only a job whose render has not started may be recalled (the pool reports the start
before its input reaches a renderer, and the store refuses a recall once it has; or the
pool settles it with the renderer, as Modal's start gate does, after this choice). Such
a job, longest waiting first, is recalled when

1. `not_started_in_time`: it has waited longer than the p99 cold start plus
   `recall_margin_ms` since it was placed: its container is failing to boot or restore;
2. `inhouse_sooner`: an in-house slot is free that no queued job will take, before
   its predicted start on the second fleet (placed plus the mean observed cold start):
   it starts in-house now, sooner. Past that prediction its container is due any
   moment, and only rule 1 moves it.

Nothing is recalled while an operator paused dispatch: the job would only wait in line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from scheduler.policy.config import PolicyConfig
from scheduler.policy.model import Signal


class RecallReason(StrEnum):
    NOT_STARTED_IN_TIME = "not_started_in_time"
    INHOUSE_SOONER = "inhouse_sooner"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    RecallReason.NOT_STARTED_IN_TIME: (
        "its render did not start within the p99 cold start plus recall_margin_ms"
    ),
    RecallReason.INHOUSE_SOONER: (
        "an in-house slot that no queued job takes is free before its predicted start"
    ),
}


@dataclass(frozen=True)
class Waiting:
    """A job on the second fleet whose render has not started."""

    job_id: str
    placed_ms: int
    """When it was placed there (the claim's time, on the Redis clock)."""


@dataclass(frozen=True)
class Recall:
    job_id: str
    reason: RecallReason


def recalls(
    waiting: Sequence[Waiting], signal: Signal, config: PolicyConfig, now_ms: int
) -> tuple[Recall, ...]:
    """The jobs to recall now, and why (see the module docstring)."""
    if signal.controls.dispatch_paused:
        return ()
    # Queued jobs take free in-house slots first; a recall may not push one back.
    free = signal.inhouse_slots - signal.inhouse_busy - signal.queued - signal.batch_queued
    limit_ms = _limit_ms(signal, config)
    expected_ms = signal.estimates.expected_cold_ms
    found = []
    for job in sorted(waiting, key=lambda w: (w.placed_ms, w.job_id)):
        waited_ms = now_ms - job.placed_ms
        if waited_ms > limit_ms:
            found.append(Recall(job.job_id, RecallReason.NOT_STARTED_IN_TIME))
        elif free > 0 and waited_ms < expected_ms:
            found.append(Recall(job.job_id, RecallReason.INHOUSE_SOONER))
        else:
            continue
        free -= 1
    return tuple(found)


def next_recall_at_ms(
    waiting: Sequence[Waiting], signal: Signal, config: PolicyConfig
) -> int | None:
    """When the first of these jobs is due for `not_started_in_time`; None for none."""
    if not waiting:
        return None
    return min(w.placed_ms for w in waiting) + _limit_ms(signal, config) + 1


def _limit_ms(signal: Signal, config: PolicyConfig) -> int:
    return signal.estimates.worst_cold_ms + config.recall_margin_ms
