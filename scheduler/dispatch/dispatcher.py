"""The dispatcher: asks the spillover policy where queued jobs go, claims them for the
in-house or the spill pool, and runs each claim as an `Attempt` (render, upload,
complete: `scheduler.dispatch.attempt`).

It blocks on Redis for work (a wake token that every submit, and every job that frees
capacity, leaves), never on a timer, except where the policy names a time at which its
answer may change (a dwell ending, a job timing out, a spilled job not started by its
recall limit). Each decision first recalls this replica's spilled jobs that have not
started where `scheduler.policy.recall` says so and the pool agrees
(`Pool.claim_recall`: Modal's start gate). Two more timers: lease upkeep
(renewing the leases of the jobs it runs, reclaiming or adopting jobs whose replica
stopped renewing theirs), and the autoscaler reconcile loop, which only the replica
holding the autoscaler lease runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.dispatch.attempt import Attempt, AttemptRunner, RunnerConfig
from scheduler.dispatch.fleet import Fleet
from scheduler.dispatch.spillover import Spillover
from scheduler.dispatch.spillover import Status as SpilloverStatus
from scheduler.policy import (
    Autoscale,
    Plan,
    Reason,
    Signal,
    Target,
    Waiting,
    next_recall_at_ms,
    recalls,
)
from scheduler.pools.base import Pool
from scheduler.store.events import EventHub
from scheduler.store.jobs import Job
from scheduler.store.jobstore import JobStore, TenantBudgets
from scheduler.store.storage import ObjectStore
from scheduler.tasks import cancel_and_wait, cancel_requested
from scheduler.telemetry.metrics import SchedulerMetrics
from scheduler.telemetry.outage import Outage

log = logging.getLogger(__name__)

_MIN_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 5.0


@dataclass(frozen=True)
class DispatcherConfig:
    replica_id: str
    lease_s: float
    shutdown_grace_s: float
    autoscale_interval_s: float
    upload_retry_s: float
    budget_weights: Mapping[str, float] | None = None
    """The tenant weights the spill budget is split by; None: one budget for all."""


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        hub: EventHub,
        spillover: Spillover,
        fleet: Fleet,
        metrics: SchedulerMetrics,
        inhouse: Pool,
        spill: Pool | None,
        objects: ObjectStore,
        config: DispatcherConfig,
    ) -> None:
        self._store = store
        self._hub = hub
        self._spillover = spillover
        self._metrics = metrics
        self._inhouse = inhouse
        self._spill = spill
        self._objects = objects
        self._config = config
        self._running: dict[str, Attempt] = {}
        """The attempt that holds each job's current lease on this replica. An older
        attempt of the same job may still be winding down; it is not in here."""
        self._next_deadline_ms: int | None = None
        """How long until the next job deadline, as of the last decision."""
        self._next_recall_ms: int | None = None
        """How long until a spilled job here is due for recall if it has not started,
        as of the last decision."""
        self._runner = AttemptRunner(
            store,
            hub,
            spillover,
            fleet,
            objects,
            metrics,
            RunnerConfig(
                replica_id=config.replica_id,
                upload_retry_s=config.upload_retry_s,
                redis_retry_s=max(10.0, 3 * config.lease_s),
            ),
        )
        self._dispatch_outage = Outage("dispatching (Redis)", log)
        self._upkeep_outage = Outage("lease upkeep (Redis)", log)
        self._mode = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._autoscale_wanted: Autoscale | None = None
        self._autoscale_changed = asyncio.Event()

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def pools(self) -> tuple[Pool, ...]:
        return (self._inhouse, self._spill) if self._spill else (self._inhouse,)

    def cap(self, pool: Pool) -> int:
        """How many jobs the pool may run at once, across all replicas; -1 for the
        in-house fleet, whose usable endpoints' free slots the claim script counts."""
        if pool is self._spill:
            return self._spillover.config.modal_cap
        return -1

    async def spillover_status(self) -> SpilloverStatus:
        spill = self._spill
        stats = await spill.stats() if spill else None
        return await self._spillover.status(stats, spill.available if spill else False)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._take_jobs(), name="dispatch"),
            asyncio.create_task(self._upkeep(), name="lease-upkeep"),
        ]
        if self._spill is not None:
            self._tasks.append(asyncio.create_task(self._autoscaler(), name="autoscaler"))

    async def stop(self) -> None:
        """Stops taking jobs and gives running ones the grace period. Then jobs whose
        remote call goes on are left for another replica to adopt, and the rest are
        handed back to the queue. Idempotent."""
        self._stopping = True
        if self._tasks:
            await cancel_and_wait(self._tasks[0])
        tasks = [a.task for a in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self._config.shutdown_grace_s)
        for attempt in list(self._running.values()):
            await cancel_and_wait(attempt.task)
            try:
                if attempt.pool.resumable and attempt.call_id:
                    await self._store.release(attempt.job)
                else:
                    await self._store.requeue(
                        attempt.job, "shutdown", "the scheduler replica shut down", counts=False
                    )
            except Exception:
                log.exception("could not hand job %s back; its lease will expire", attempt.job.id)
        for task in self._tasks[1:]:
            await cancel_and_wait(task)
        self._tasks = []

    async def _take_jobs(self) -> None:
        backoff = _MIN_BACKOFF_S
        while not self._stopping:
            try:
                plan = await self._dispatch_once()
                backoff = _MIN_BACKOFF_S
                await self._store.wait_for_work(timeout_s=self._wait_s(plan))
                self._dispatch_outage.ok()
            except Exception as exc:
                if self._stopping or cancel_requested():
                    raise asyncio.CancelledError from exc
                # Redis went away or a script failed: the replica must keep dispatching
                # once it is back, so log and retry rather than let the loop die.
                self._dispatch_outage.failed(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _dispatch_once(self) -> Plan:
        """One decision, carried out. The loop then waits for work: no time while the
        queue holds any (a claim leaves the wake token then), else until a submit, a
        finished job or the plan's recheck."""
        spill = self._spill
        stats = await spill.stats() if spill else None
        plan, signal = await self._spillover.decide(stats, spill.available if spill else False)
        # The decision's read saw the earliest deadline: the deadline script runs only
        # when one is due, and before any claim, so no job is dispatched past it.
        self._next_deadline_ms = self._spillover.next_deadline_in_ms
        if self._next_deadline_ms is not None and self._next_deadline_ms <= 0:
            expired, self._next_deadline_ms = await self._store.expire_deadlines()
            if expired:
                log.warning("%d jobs expired in the queue: %s", len(expired), ", ".join(expired))
                self._metrics.shed("expired", len(expired))
                for _ in expired:
                    self._metrics.job_finished("", "failed", None)
        self._mode = plan.state.mode.value
        self._metrics.decision(plan, signal, spill.name if spill else None)
        self._metrics.fleet(self._spillover.endpoints)
        if plan.transition:
            self._metrics.transition(plan.transition.old, plan.transition.new)
        if plan.autoscale != self._autoscale_wanted:
            self._autoscale_wanted = plan.autoscale
            self._autoscale_changed.set()
        # A recalled job is back in line (its enqueue leaves the wake token), so the next
        # decision places it at once.
        await self._recall(signal, plan.decided_at_ms)
        await self._claim(self._inhouse, plan.count(Target.INHOUSE), Reason.INHOUSE_SLOT_FREE)
        if spill is not None:
            # A job that could not finish on the second fleet before its deadline is not
            # spilled: it waits for an in-house slot, or expires.
            finish_ms = plan.spill_finish_ms
            batch = signal.controls.batch_spill
            weights = self._config.budget_weights
            budgets = self._spillover.tenant_budgets(weights) if weights else None
            rescue = plan.sent(Target.MODAL, Reason.TIMEOUT_RESCUE)
            await self._claim(
                spill,
                rescue,
                Reason.TIMEOUT_RESCUE,
                oldest=True,
                finish_ms=finish_ms,
                batch=batch,
                budgets=budgets,
            )
            for decision in plan.decisions:
                if decision.target is Target.MODAL and decision.reason is not Reason.TIMEOUT_RESCUE:
                    await self._claim(
                        spill,
                        decision.count,
                        decision.reason,
                        finish_ms=finish_ms,
                        batch=batch,
                        budgets=budgets,
                    )
        if plan.shed_waits_over_ms is not None and (
            shed := await self._store.expire_queued(plan.shed_waits_over_ms)
        ):
            log.warning("shed %d jobs past the queue timeout: %s", len(shed), ", ".join(shed))
            self._metrics.shed("queue_timeout", len(shed))
            for _ in shed:
                self._metrics.job_finished("", "failed", None)
        return plan

    async def _recall(self, signal: Signal, now_ms: int) -> None:
        """Takes back this replica's spilled jobs whose render has not started, where
        the policy says so (`scheduler.policy.recall`) and the pool agrees: each goes
        back in line with a `recalled` event, and its attempt stops."""
        spill = self._spill
        self._next_recall_ms = None
        if spill is None or not spill.recallable:
            return
        waiting = {
            job_id: a
            for job_id, a in self._running.items()
            if a.pool is spill and not a.started and not a.task.done()
        }
        config = self._spillover.config
        chosen = recalls(
            [Waiting(job_id, a.job.started_ms) for job_id, a in waiting.items()],
            signal,
            config,
            now_ms,
        )
        # The pool has its say first (Modal's start gate), each bounded by the pool, all
        # at once so that the decision waits for one of them at most.
        claimed = await asyncio.gather(*(spill.claim_recall(waiting[r.job_id].job) for r in chosen))
        for recall, ok in zip(chosen, claimed, strict=True):
            attempt = waiting.pop(recall.job_id)
            if not ok:
                # The render started, or the pool could not tell: asking again would only
                # cost every later decision a call.
                attempt.started = True
                continue
            # Refused once the render's start is recorded: the start and the recall are
            # each one fenced script, so exactly one of them wins.
            if not await self._store.recall(attempt.job, recall.reason.value):
                continue
            log.warning(
                "recalled job %s from %s: %s", attempt.job.id, spill.name, recall.reason.value
            )
            self._metrics.recalled(spill.name, recall.reason)
            del self._running[recall.job_id]
            attempt.outcome = "recalled"
            attempt.task.cancel()
            if attempt.call_id:
                await spill.cancel(attempt.job, attempt.call_id)
        due = next_recall_at_ms(
            [Waiting(job_id, a.job.started_ms) for job_id, a in waiting.items()], signal, config
        )
        if due is not None:
            self._next_recall_ms = due - now_ms

    def _wait_s(self, plan: Plan) -> float:
        wait_s = self._config.lease_s
        if plan.recheck_at_ms is not None:
            # recheck_at is on the Redis clock; the wait only needs its distance.
            wait_s = min(wait_s, max(0.01, (plan.recheck_at_ms - plan.decided_at_ms) / 1000))
        for due_ms in (self._next_deadline_ms, self._next_recall_ms):
            if due_ms is not None:
                wait_s = min(wait_s, max(0.01, due_ms / 1000))
        return wait_s

    async def _claim(
        self,
        pool: Pool,
        count: int,
        reason: Reason,
        *,
        oldest: bool = False,
        finish_ms: int = 0,
        batch: bool = False,
        budgets: TenantBudgets | None = None,
    ) -> None:
        for _ in range(count):
            job = await self._store.claim(
                self._config.replica_id,
                pool.name,
                self._config.lease_s,
                cap=self.cap(pool),
                oldest=oldest,
                finish_ms=finish_ms,
                reason=reason.value,
                batch=batch,
                budgets=budgets,
            )
            if job is None:
                break
            # A spill or a retry is what an operator follows at INFO; a first attempt
            # in-house is every job's routine, and a line per job costs about as much
            # CPU as one of its Redis calls.
            routine = pool is not self._spill and job.attempt == 1
            log.log(
                logging.DEBUG if routine else logging.INFO,
                "dispatched job %s to %s (attempt %d)",
                job.id,
                pool.name,
                job.attempt,
            )
            # Both times are Redis's: no clock skew between replicas.
            waited_s = (job.started_ms - job.queued_ms) / 1000 if job.queued_ms else 0.0
            self._metrics.dispatched(
                pool.name,
                reason.value,
                waited_s,
                tenant=job.tenant,
                priority=job.spec.priority_class.value,
            )
            self._start(job, pool, reason.value)

    def _start(self, job: Job, pool: Pool, reason: str) -> None:
        attempt = Attempt(
            job=job,
            pool=pool,
            spilled=pool is self._spill,
            mode=self._mode,
            reason=reason,
            call_id=job.call_id,
            started=job.render_started_ms > 0,
        )
        attempt.task = asyncio.create_task(self._runner.run(attempt), name=f"job-{job.id}")
        self._running[job.id] = attempt
        attempt.task.add_done_callback(functools.partial(self._forget, attempt))

    def _forget(self, attempt: Attempt, task: asyncio.Task[None]) -> None:
        # Only this attempt's own entry: the job may have been requeued and claimed
        # again by this replica meanwhile, and the newer attempt's lease must be renewed.
        if self._running.get(attempt.job.id) is attempt:
            del self._running[attempt.job.id]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("attempt of job %s ended with an error", attempt.job.id, exc_info=exc)

    def _drop_lost(self, job_ids: list[str]) -> None:
        """Stops the attempts whose jobs moved on (cancelled, or reclaimed by another
        replica while this one could not renew): their work would be thrown away, and a
        stale attempt must not keep a renderer or a Modal input busy."""
        for job_id in job_ids:
            attempt = self._running.pop(job_id, None)
            if attempt is not None and not attempt.task.done():
                log.warning("job %s is no longer this replica's; stopping its attempt", job_id)
                if attempt.outcome == "interrupted":
                    attempt.outcome = "superseded"
                attempt.task.cancel()

    async def _upkeep(self) -> None:
        period = self._config.lease_s / 3
        spill = self._spill
        resumable = spill.name if spill is not None and spill.resumable else ""
        while True:
            try:
                leases = {job_id: a.job.lease for job_id, a in self._running.items()}
                self._drop_lost(await self._store.renew(leases, self._config.lease_s))
                # A replica on its way out adopts nothing: it would only hand it back.
                reclaimed = await self._store.reclaim(
                    self._config.replica_id,
                    self._config.lease_s,
                    adopt_pool="" if self._stopping else resumable,
                )
                for _ in reclaimed.failed:
                    self._metrics.job_finished("", "failed", None)
                if reclaimed.requeued or reclaimed.failed:
                    log.warning(
                        "reclaimed %d jobs with expired leases: %s",
                        len(reclaimed.requeued) + len(reclaimed.failed),
                        ", ".join(reclaimed.requeued + reclaimed.failed),
                    )
                for job in reclaimed.adopted:
                    assert spill is not None
                    log.warning("adopted job %s: resuming its call %s", job.id, job.call_id)
                    self._start(job, spill, "adopted")
                self._upkeep_outage.ok()
            except Exception as exc:
                if cancel_requested():
                    raise asyncio.CancelledError from exc
                self._upkeep_outage.failed(exc)
            await asyncio.sleep(period)

    async def _autoscaler(self) -> None:
        """Applies the policy's autoscaler settings while this replica holds the lease:
        at once when they change, and again every interval, because a `modal deploy`
        resets what `update_autoscaler` set."""
        assert self._spill is not None
        interval = self._config.autoscale_interval_s
        owner = self._config.replica_id
        while True:
            try:
                wanted = self._autoscale_wanted
                leader = await self._spillover.hold_autoscaler_lease(owner, interval * 3)
                if leader and wanted is not None:
                    await self._spill.set_autoscaler(wanted)
                    await self._spillover.record_autoscale(wanted, owner)
            except Exception as exc:
                if cancel_requested():
                    raise asyncio.CancelledError from exc
                log.exception("applying autoscaler settings failed; retrying")
            self._autoscale_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._autoscale_changed.wait(), timeout=interval)
