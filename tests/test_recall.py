"""Moving a spilled job that has not started: the pure rule (`scheduler.policy.recall`)
and the store's fenced recall against a real redis-server. The whole path, through a
scheduler and the local burst pool, is in tests/test_spillover_e2e.py; through the
Modal pool and its start gate, in tests/test_modal_e2e.py."""

from __future__ import annotations

import pytest
import redis.asyncio as aredis

from scheduler.policy import (
    Controls,
    Estimates,
    PolicyConfig,
    Recall,
    RecallReason,
    Signal,
    Waiting,
    next_recall_at_ms,
    recalls,
)
from scheduler.policy.estimates import estimate
from scheduler.store.jobs import JobSpec, Output, Status
from scheduler.store.jobstore import Finish, JobStore
from scheduler.telemetry.metrics import SchedulerMetrics

T0 = 1_000_000
CONFIG = PolicyConfig(recall_margin_ms=5_000)
ESTIMATES = Estimates(
    inhouse_render_ms=60_000,
    modal_render_ms=60_000,
    cold_start_ms=20_000,
    cold_start_mean_ms=10_000,
    cold_start_p99_ms=30_000,
)
NOT_STARTED_IN_TIME = RecallReason.NOT_STARTED_IN_TIME
INHOUSE_SOONER = RecallReason.INHOUSE_SOONER
SPEC = JobSpec(prompt="a red fox", model="sora-2", seconds=4, width=720, height=1280, priority=5)
OUTPUT = Output(bucket="b", key="k", bytes=1, sha256="0" * 64, duration_s=4.0)


def sig(
    *, slots: int = 2, busy: int = 2, queued: int = 0, batch: int = 0, paused: bool = False
) -> Signal:
    return Signal(
        queued=queued,
        queue_ages_ms=(),
        inhouse_busy=busy,
        inhouse_slots=slots,
        modal_inflight=1,
        modal_ready_slots=0,
        modal_available=True,
        spent_usd=0.0,
        estimates=ESTIMATES,
        controls=Controls(dispatch_paused=paused),
        batch_queued=batch,
    )


def test_recalled_only_past_the_p99_cold_start_plus_margin() -> None:
    """With in-house full, a job is recalled once it has waited more than the p99 cold
    start plus the margin since it was placed, not at that instant."""
    due = T0 + 30_000 + 5_000
    waiting = [Waiting("a", T0)]
    assert recalls(waiting, sig(), CONFIG, due) == ()
    assert recalls(waiting, sig(), CONFIG, due + 1) == (Recall("a", NOT_STARTED_IN_TIME),)
    assert next_recall_at_ms(waiting, sig(), CONFIG) == due + 1
    assert next_recall_at_ms([], sig(), CONFIG) is None


def test_free_inhouse_slots_recall_the_longest_waiting_first() -> None:
    """Each in-house slot that no queued job takes recalls one job, longest waiting
    first, while its predicted start (the mean cold start) is still ahead; a job past
    its limit is recalled for that, and takes a slot too."""
    waiting = [Waiting("new", T0 + 2_000), Waiting("old", T0), Waiting("mid", T0 + 1_000)]
    one_free = sig(busy=1)
    assert recalls(waiting, one_free, CONFIG, T0 + 3_000) == (Recall("old", INHOUSE_SOONER),)
    # "old" is due on its container now; "mid" is not yet.
    assert recalls(waiting, one_free, CONFIG, T0 + 10_000) == (Recall("mid", INHOUSE_SOONER),)
    assert recalls(waiting, one_free, CONFIG, T0 + 12_000) == ()
    late = T0 + 36_500
    assert recalls(waiting, one_free, CONFIG, late) == (
        Recall("old", NOT_STARTED_IN_TIME),
        Recall("mid", NOT_STARTED_IN_TIME),
    )


@pytest.mark.parametrize(
    ("signal", "why"),
    [
        (sig(busy=1, queued=1), "an interactive job queued takes the free slot"),
        (sig(busy=1, batch=1), "a batch job queued takes the free slot"),
        (sig(busy=0, paused=True), "dispatch is paused"),
    ],
)
def test_no_recall_for_a_slot_someone_else_takes(signal: Signal, why: str) -> None:
    """A free in-house slot recalls nothing when a queued job will take it, and nothing
    is recalled at all while dispatch is paused."""
    assert recalls([Waiting("a", T0)], signal, CONFIG, T0 + 1_000) == (), why


def test_estimates_carry_the_p99_of_cold_starts() -> None:
    """The recall limit is the 99th percentile of cold-start samples, and the configured
    cold start until there are any."""
    samples = [1_000] * 98 + [50_000] * 2
    assert estimate([], [], samples, CONFIG).worst_cold_ms == 50_000
    assert estimate([], [], [], CONFIG).worst_cold_ms == CONFIG.cold_start_ms


def test_recalls_are_counted_by_pool_and_reason() -> None:
    """Each recall adds one to `spillway_jobs_recalled_total{pool, reason}`."""
    metrics = SchedulerMetrics(CONFIG, pools=("inhouse", "burst"))
    metrics.recalled("burst", NOT_STARTED_IN_TIME)
    metrics.recalled("burst", NOT_STARTED_IN_TIME)
    labels = {"pool": "burst", "reason": "not_started_in_time"}
    assert metrics.registry.get_sample_value("spillway_jobs_recalled_total", labels) == 2


@pytest.fixture
def store(redis_client: aredis.Redis) -> JobStore:
    return JobStore(
        redis_client, retention_s=3600, events_maxlen=64, max_attempts=1, max_queued=100
    )


async def test_a_recall_puts_the_job_back_first_in_line_uncharged(store: JobStore) -> None:
    """A recalled job is queued again ahead of jobs submitted after it, its attempt not
    charged (one attempt allowed, yet it runs again), with a `recalled` event naming the
    pool and reason; its recalled attempt can neither start nor complete."""
    first = (await store.submit("t", SPEC)).job
    later = (await store.submit("t", SPEC)).job
    spilled = await store.claim("r1", "burst", 30, cap=4)
    assert spilled is not None and spilled.id == first.id

    assert await store.recall(spilled, INHOUSE_SOONER.value)
    assert not await store.mark_started(spilled)
    assert await store.complete(spilled, OUTPUT) is Finish.STALE
    again = await store.claim("r1", "burst", 30, cap=4)
    assert again is not None and again.id == first.id and again.attempt == 1
    assert again.lease > spilled.lease
    assert await store.complete(again, OUTPUT) is Finish.OK
    events = [(e.type, e.pool, e.reason) for e in await store.events_after(first.id, "")]
    assert events == [
        ("queued", "", ""),
        ("dispatched", "burst", ""),
        ("recalled", "burst", "inhouse_sooner"),
        ("dispatched", "burst", ""),
        ("completed", "", ""),
    ]
    assert (await store.get(later.id)).status is Status.QUEUED  # type: ignore[union-attr]


async def test_a_started_render_is_never_recalled(store: JobStore) -> None:
    """Once the pool recorded the render's start, a recall is refused and the job runs
    on to its one completion."""
    await store.submit("t", SPEC)
    job = await store.claim("r1", "burst", 30, cap=4)
    assert job is not None
    assert await store.mark_started(job)
    assert not await store.recall(job, NOT_STARTED_IN_TIME.value)
    assert (await store.get(job.id)).status is Status.IN_PROGRESS  # type: ignore[union-attr]
    assert await store.complete(job, OUTPUT) is Finish.OK
    types = [e.type for e in await store.events_after(job.id, "")]
    assert types == ["queued", "dispatched", "completed"]
