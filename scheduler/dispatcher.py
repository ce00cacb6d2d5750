"""The dispatcher: asks the spillover policy where queued jobs go, claims them for the
in-house or the spill pool, renders, uploads, completes.

It blocks on Redis for work (a wake token that every submit, and every job that frees
capacity, leaves), never on a timer, except where the policy names a time at which its
answer may change (a dwell ending, a job timing out). Two more timers: lease upkeep
(renewing the leases of the jobs it runs, reclaiming or adopting jobs whose replica
stopped renewing theirs), and the autoscaler reconcile loop, which only the replica
holding the autoscaler lease runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field

from scheduler.events import EventHub, LiveQueue
from scheduler.jobs import Job, Output
from scheduler.policy import Autoscale, Plan, Reason, Target
from scheduler.pools.base import Pool, Rendered, RenderError, Superseded
from scheduler.spillover import Spillover
from scheduler.spillover import Status as SpilloverStatus
from scheduler.storage import ObjectStore, StorageError
from scheduler.store import Finish, JobStore
from scheduler.tasks import cancel_and_wait, cancel_requested

log = logging.getLogger(__name__)

# Job progress while rendering spans 1-90; uploading is 95; completed is 100.
_RENDER_SPAN = 89
_UPLOADING = 95
_PROGRESS_STEP = 5
_MIN_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 5.0
# A fleet that turned a job away keeps its slot reserved this long, so the requeued
# job is not sent straight back to it.
_FULL_FLEET_HOLD_S = 0.5


@dataclass(frozen=True)
class DispatcherConfig:
    replica_id: str
    lease_s: float
    shutdown_grace_s: float
    autoscale_interval_s: float


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        hub: EventHub,
        spillover: Spillover,
        inhouse: Pool,
        spill: Pool | None,
        objects: ObjectStore,
        config: DispatcherConfig,
    ) -> None:
        self._store = store
        self._hub = hub
        self._spillover = spillover
        self._inhouse = inhouse
        self._spill = spill
        self._objects = objects
        self._config = config
        self._running: dict[str, _Running] = {}
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
        """How many jobs the pool may run at once, across all replicas."""
        if pool is self._spill:
            return self._spillover.config.modal_cap
        return self._spillover.inhouse_slots

    async def spillover_status(self) -> SpilloverStatus:
        stats = {p.name: await p.stats() for p in self.pools}
        caps = {p.name: self.cap(p) for p in self.pools}
        available = self._spill.available if self._spill else False
        return await self._spillover.status(stats, available, caps)

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
        tasks = [r.task for r in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self._config.shutdown_grace_s)
        for running in list(self._running.values()):
            await cancel_and_wait(running.task)
            try:
                if running.pool.resumable and running.call_id:
                    await self._store.release(running.job)
                else:
                    await self._store.requeue(
                        running.job, "shutdown", "the scheduler replica shut down", counts=False
                    )
            except Exception:
                log.exception("could not hand job %s back; its lease will expire", running.job.id)
        for task in self._tasks[1:]:
            await cancel_and_wait(task)
        self._tasks = []

    async def _take_jobs(self) -> None:
        backoff = _MIN_BACKOFF_S
        while not self._stopping:
            try:
                plan = await self._dispatch_once()
                backoff = _MIN_BACKOFF_S
                if plan is not None:
                    await self._store.wait_for_work(timeout_s=self._wait_s(plan))
            except Exception as exc:
                if self._stopping or cancel_requested():
                    raise asyncio.CancelledError from exc
                # Redis went away or a script failed: the replica must keep dispatching
                # once it is back, so log and retry rather than let the loop die.
                log.exception("dispatch loop failed; retrying in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _dispatch_once(self) -> Plan | None:
        """One decision, carried out. Returns the plan if it started nothing (the loop
        then waits for work), or None to decide again at once."""
        spill = self._spill
        stats = await spill.stats() if spill else None
        plan = await self._spillover.decide(stats, spill.available if spill else False)
        if plan.autoscale != self._autoscale_wanted:
            self._autoscale_wanted = plan.autoscale
            self._autoscale_changed.set()
        started = await self._claim(self._inhouse, plan.count(Target.INHOUSE))
        if spill is not None:
            rescue = plan.sent(Target.MODAL, Reason.TIMEOUT_RESCUE)
            started += await self._claim(spill, rescue, oldest=True)
            started += await self._claim(spill, plan.count(Target.MODAL) - rescue)
        if plan.shed_waits_over_ms is not None and (
            shed := await self._store.expire_queued(plan.shed_waits_over_ms)
        ):
            log.warning("shed %d jobs past the queue timeout: %s", len(shed), ", ".join(shed))
        return None if started else plan

    def _wait_s(self, plan: Plan) -> float:
        wait_s = self._config.lease_s
        if plan.recheck_at_ms is not None:
            # recheck_at is on the Redis clock; the wait only needs its distance.
            wait_s = min(wait_s, max(0.01, (plan.recheck_at_ms - plan.decided_at_ms) / 1000))
        return wait_s

    async def _claim(self, pool: Pool, count: int, *, oldest: bool = False) -> int:
        started = 0
        for _ in range(count):
            job = await self._store.claim(
                self._config.replica_id,
                pool.name,
                self._config.lease_s,
                cap=self.cap(pool),
                oldest=oldest,
            )
            if job is None:
                break
            log.info("dispatched job %s to %s (attempt %d)", job.id, pool.name, job.attempt)
            self._start(job, pool)
            started += 1
        return started

    def _start(self, job: Job, pool: Pool) -> None:
        running = _Running(job=job, pool=pool, call_id=job.call_id)
        running.task = asyncio.create_task(self._run(running), name=f"job-{job.id}")
        self._running[job.id] = running
        running.task.add_done_callback(functools.partial(self._forget, job.id))

    def _forget(self, job_id: str, _: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)

    async def _run(self, running: _Running) -> None:
        """Runs the job until it ends or a terminal event (a cancel, a delete) ends it."""
        job = running.job
        async with self._hub.subscribe(job.id) as live:
            work = asyncio.create_task(self._execute(running), name=f"render-{job.id}")
            ended = asyncio.create_task(_until_terminal(live))
            try:
                await asyncio.wait({work, ended}, return_when=asyncio.FIRST_COMPLETED)
                if ended.done() and not work.done():
                    log.info("job %s ended elsewhere (cancelled or deleted); stopping", job.id)
                    await cancel_and_wait(work)
                    if running.call_id:
                        await running.pool.cancel(job, running.call_id)
            finally:
                await cancel_and_wait(ended)
                await cancel_and_wait(work)

    async def _execute(self, running: _Running) -> None:
        job, pool = running.job, running.pool
        rendered: Rendered | None = None
        try:
            slot = await pool.acquire()
            try:
                began = time.monotonic()
                rendered = await pool.render(slot, job, _Hooks(self._store, running))
                wall_s = time.monotonic() - began
            except RenderError as exc:
                if not exc.charge_attempt:
                    await self._retry_or_fail(job, "render_failed", str(exc), True, charge=False)
                    await asyncio.sleep(_FULL_FLEET_HOLD_S)
                    return
                raise
            finally:
                slot.release()
            await self._spillover.record(pool.name, rendered.info, wall_s)
            if not await self._store.progress(job, "uploading", _UPLOADING):
                raise Superseded(job.id)
            key = self._objects.key_for(job.id)
            uploaded = await self._objects.put_file(rendered.path, key)
            output = Output(
                bucket=uploaded.bucket,
                key=key,
                bytes=uploaded.bytes,
                sha256=rendered.info.sha256,
                duration_s=rendered.info.duration_s,
            )
            result = await self._store.complete(job, output)
            if result is Finish.GONE:
                # Deleted while we rendered: nobody will read this object.
                await self._objects.delete(key)
            log.info("job %s %s on %s (%d bytes)", job.id, result.value, pool.name, uploaded.bytes)
        except Superseded:
            log.info("job %s was cancelled or taken over; dropped its render", job.id)
        except RenderError as exc:
            await self._retry_or_fail(
                job, "render_failed", str(exc), exc.retryable, charge=exc.charge_attempt
            )
        except StorageError as exc:
            await self._retry_or_fail(job, "upload_failed", str(exc), retryable=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job.id)
            await self._retry_or_fail(job, "internal", f"{type(exc).__name__}: {exc}", True)
        finally:
            if rendered is not None:
                await asyncio.to_thread(rendered.path.unlink, missing_ok=True)

    async def _retry_or_fail(
        self, job: Job, code: str, message: str, retryable: bool, *, charge: bool = True
    ) -> None:
        log.warning("job %s attempt %d: %s: %s", job.id, job.attempt, code, message)
        if retryable:
            await self._store.requeue(job, code, message, counts=charge)
        else:
            await self._store.fail(job, code, message)

    async def _upkeep(self) -> None:
        period = self._config.lease_s / 3
        spill = self._spill
        resumable = spill.name if spill is not None and spill.resumable else ""
        while True:
            try:
                await self._store.renew(list(self._running), self._config.lease_s)
                # A replica on its way out adopts nothing: it would only hand it back.
                reclaimed = await self._store.reclaim(
                    self._config.replica_id,
                    self._config.lease_s,
                    adopt_pool="" if self._stopping else resumable,
                )
                if reclaimed.requeued:
                    log.warning(
                        "reclaimed %d jobs with expired leases: %s",
                        len(reclaimed.requeued),
                        ", ".join(reclaimed.requeued),
                    )
                for job in reclaimed.adopted:
                    assert spill is not None
                    log.warning("adopted job %s: resuming its call %s", job.id, job.call_id)
                    self._start(job, spill)
            except Exception as exc:
                if cancel_requested():
                    raise asyncio.CancelledError from exc
                log.exception("lease upkeep failed; retrying")
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


@dataclass(eq=False)
class _Running:
    job: Job
    pool: Pool
    call_id: str
    task: asyncio.Task[None] = field(init=False)


class _Hooks:
    """What a render reports, applied to the job under its lease."""

    def __init__(self, store: JobStore, running: _Running) -> None:
        self._store = store
        self._running = running
        self._reported = 1

    async def progress(self, percent: int) -> bool:
        progress = 1 + _RENDER_SPAN * min(max(percent, 0), 100) // 100
        if progress - self._reported < _PROGRESS_STEP and percent < 100:
            return True
        self._reported = progress
        return await self._store.progress(self._running.job, "progress", progress)

    async def remote_call(self, call_id: str) -> bool:
        self._running.call_id = call_id
        return await self._store.set_call(self._running.job, call_id)


async def _until_terminal(live: LiveQueue) -> None:
    while (event := await live.get()) is None or not event.terminal:
        pass
