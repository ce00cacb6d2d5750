"""The Redis job store: every state change of a job is one Lua script, one round trip.

A script changes the job hash, its queue or lease entry and appends its event together,
so a reader never sees one without the other. Scripts that act for a dispatched job
carry its lease number as a fencing token: a replica that lost the job cannot
overwrite what the next holder did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, cast

import redis.asyncio as redis
from redis.commands.core import AsyncScript

from scheduler.config import TenantQuota
from scheduler.policy.estimates import SAMPLES_KEPT
from scheduler.store import keys
from scheduler.store.jobs import Event, Job, JobSpec, Output, initial_fields, new_job_id

_LUA = Path(__file__).with_name("lua")
# Jobs one script call cancels: a tenant's 10,000 queued jobs must not block Redis.
_CANCEL_BATCH = 500


_KEY_CONSTANTS = {
    "K_QUEUE": keys.QUEUE,
    "K_JOB": keys.JOB_PREFIX,
    "K_TENANT_QUEUE": keys.TENANT_QUEUE_PREFIX,
    "K_FAIR": keys.FAIR,
    "K_FAIR_VT": keys.FAIR_VT,
    "K_BATCH_TENANT_QUEUE": keys.BATCH_TENANT_QUEUE_PREFIX,
    "K_BATCH_FAIR": keys.BATCH_FAIR,
    "K_BATCH_FAIR_VT": keys.BATCH_FAIR_VT,
    "K_BATCH_QUEUED_AT": keys.BATCH_QUEUED_AT,
    "K_TENANT_WEIGHTS": keys.TENANT_WEIGHTS,
    "K_SUBMIT_BUCKET": keys.SUBMIT_BUCKET_PREFIX,
    "K_QUEUED_AT": keys.QUEUED_AT,
    "K_LEASES": keys.LEASES,
    "K_WAKE": keys.WAKE,
    "K_SEQ": keys.SEQ,
    "K_RUNNING": keys.RUNNING_PREFIX,
    "K_DISPATCHED": keys.DISPATCHED,
    "K_FLEET_SLOTS": keys.FLEET_SLOTS,
    "K_FLEET_DRAINING": keys.FLEET_DRAINING,
    "K_FLEET_DOWN": keys.FLEET_DOWN,
    "K_FLEET_FAILS": keys.FLEET_FAILS,
    "K_FLEET_SEED": keys.FLEET_SEED,
    "K_ENDPOINT": keys.ENDPOINT_PREFIX,
    "K_OBJECT_EXPIRY": keys.OBJECT_EXPIRY,
    "K_DEADLINES": keys.DEADLINES,
    "K_WH_TENANT": keys.TENANT_WEBHOOKS_PREFIX,
    "K_WH_EP": keys.WEBHOOK_ENDPOINT_PREFIX,
    "K_WH_OUTBOX": keys.WEBHOOK_OUTBOX,
    "K_WH_EVT": keys.WEBHOOK_EVENT_PREFIX,
    "K_WH_DLV": keys.WEBHOOK_DELIVERY_PREFIX,
    "K_WH_SEQ": keys.WEBHOOK_SEQ,
    "K_WH_LOG": keys.WEBHOOK_LOG_PREFIX,
}


async def page_ids(
    client: redis.Redis, index: str, *, after: str, limit: int, order: Literal["asc", "desc"]
) -> tuple[list[str], bool]:
    """A page of the ids in a sorted set scored all 0 (so ordered by id, which is by
    creation time), after the id `after`; and whether more follow."""
    if order == "asc":
        start, end = (f"({after}" if after else "-"), "+"
    else:
        start, end = (f"({after}" if after else "+"), "-"
    found = cast(
        list[str],
        await client.zrange(
            index, start, end, desc=order == "desc", bylex=True, offset=0, num=limit + 1
        ),
    )
    return found[:limit], len(found) > limit


def load_script(name: str) -> str:
    header = "".join(f"local {k} = '{v}'\n" for k, v in _KEY_CONSTANTS.items())
    return header + (_LUA / "prelude.lua").read_text() + "\n" + (_LUA / f"{name}.lua").read_text()


class Finish(StrEnum):
    OK = "ok"
    GONE = "gone"
    """The job was deleted while it ran."""
    STALE = "stale"
    """The job was cancelled, or reclaimed and handed to another attempt."""


@dataclass(frozen=True)
class Observation:
    """What one successful render teaches the policy and costs (`Spillover.observe`)."""

    pool: str
    render_ms: int
    cold_ms: int | None
    """The boot or restore its input waited for; None when it found a container up."""
    usd: float
    """Its GPU time on the second fleet, the tenant's share of the bill; 0 in-house."""
    month: str
    """The calendar month (UTC, `YYYY-MM`) the tenant's share counts in."""
    container_id: str = ""
    """Its container on the second fleet, for the spend meter; "" in-house."""
    container_ms: int = 0
    """How long before the render's end that container began to boot (cold), or the
    render began (warm)."""
    cold: bool = False
    """The input waited for its container's boot."""


@dataclass(frozen=True)
class TenantBudgets:
    """The monthly spill budget split by tenant weight, as the spill claim checks it."""

    spend_key: str
    """`keys.tenant_spend` of this month."""
    budget_usd: float
    total_weight: float
    """The sum of the configured weights: a tenant's share is budget x weight / this."""


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool


class QueueFull(Exception):
    """The queue (or, with `tenant`, the tenant's share of it) is at its bound; nothing
    was written."""

    def __init__(self, queued: int, *, tenant: bool = False) -> None:
        super().__init__(f"{queued} jobs queued")
        self.queued = queued
        self.tenant = tenant


class RateLimited(Exception):
    """The tenant submits faster than its rate; nothing was written."""

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(f"retry in {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms


@dataclass(frozen=True)
class Reclaimed:
    requeued: list[str]
    """Jobs put back in line."""
    adopted: list[Job]
    """Jobs whose remote call goes on, now leased to the caller to resume."""
    failed: list[str]
    """Jobs that were out of attempts."""


class JobStore:
    def __init__(
        self,
        client: redis.Redis,
        *,
        retention_s: int,
        events_maxlen: int,
        max_attempts: int,
        max_queued: int,
        waiter: redis.Redis | None = None,
        quota: TenantQuota | None = None,
    ) -> None:
        self._r = client
        # Blocking waits hold a connection for their whole wait: they get their own
        # client, whose socket timeout outlasts the longest wait.
        self._waiter = waiter or client
        self._max_queued = max_queued
        self._quota = quota or TenantQuota()
        self._retention_ms = retention_s * 1000
        self._maxlen = events_maxlen
        self._max_attempts = max_attempts
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(load_script(name))
            for name in (
                "submit",
                "claim",
                "progress",
                "rendered",
                "finish",
                "requeue",
                "reclaim",
                "renew",
                "release",
                "set_call",
                "start",
                "recall",
                "expire",
                "deadline",
                "cancel",
                "cancel_queued",
                "retry",
                "delete",
            )
        }

    @property
    def retention_s(self) -> int:
        """How long a finished job is kept."""
        return self._retention_ms // 1000

    async def _run(self, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts[name](keys=list(keys_), args=list(args))

    async def submit(
        self,
        tenant: str,
        spec: JobSpec,
        *,
        idempotency_key: str = "",
        trace_id: str = "",
        trace_context: Mapping[str, str] | None = None,
        deadline_s: int = 0,
    ) -> Submitted:
        job_id = new_job_id()
        fields = initial_fields(
            job_id,
            tenant,
            spec,
            idempotency_key=idempotency_key,
            trace_id=trace_id,
            trace_context=trace_context or {},
            deadline_s=deadline_s,
        )
        created, stored = await self._run(
            "submit",
            [
                keys.job(job_id),
                keys.events(job_id),
                keys.idempotency(tenant, idempotency_key),
                keys.tenant_jobs(tenant),
            ],
            [
                job_id,
                "1" if idempotency_key else "0",
                self._retention_ms,
                spec.priority,
                keys.channel(job_id),
                self._maxlen,
                keys.JOB_PREFIX,
                self._max_queued,
                tenant,
                self._quota.max_queued,
                self._quota.submits_per_s,
                self._quota.burst,
                *_flatten(fields),
            ],
        )
        if created == -1:
            raise QueueFull(int(stored))
        if created == -2:
            raise QueueFull(int(stored), tenant=True)
        if created == -3:
            raise RateLimited(int(stored))
        return Submitted(job=Job.from_hash(_pairs(stored)), created=bool(created))

    async def get(self, job_id: str) -> Job | None:
        h = await self._r.hgetall(keys.job(job_id))
        return Job.from_hash(cast(dict[str, str], h)) if h else None

    async def get_with_ahead(self, job_id: str) -> tuple[Job | None, int | None]:
        """The job, and while it is queued how many queued jobs go before it: the
        interactive ones that have waited longer or, for a batch job, every interactive
        one and the batch ones that have waited longer. One round trip."""
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.job(job_id))
            pipe.zrank(keys.QUEUED_AT, job_id)
            pipe.zrank(keys.BATCH_QUEUED_AT, job_id)
            pipe.zcard(keys.QUEUED_AT)
            h, ahead, batch_ahead, interactive = await pipe.execute()
        job = Job.from_hash(cast(dict[str, str], h)) if h else None
        if ahead is not None:
            return job, int(ahead)
        return job, None if batch_ahead is None else int(interactive) + int(batch_ahead)

    async def list_page(
        self, tenant: str, *, after: str, limit: int, order: Literal["asc", "desc"]
    ) -> tuple[list[Job], bool]:
        """A page of the tenant's jobs after the id `after`, and whether more follow."""
        index = keys.tenant_jobs(tenant)
        ids, has_more = await page_ids(self._r, index, after=after, limit=limit, order=order)
        async with self._r.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(keys.job(job_id))
            hashes = await pipe.execute()
        jobs = [Job.from_hash(h) for h in hashes if h]
        if expired := [i for i, h in zip(ids, hashes, strict=True) if not h]:
            await self._r.zrem(index, *expired)
        return jobs, has_more

    async def claim(
        self,
        owner: str,
        pool: str,
        lease_s: float,
        *,
        cap: int,
        oldest: bool = False,
        finish_ms: int = 0,
        reason: str = "",
        batch: bool = False,
        budgets: TenantBudgets | None = None,
    ) -> Job | None:
        """Takes the next queued job for the pool (by priority, or the longest waiting;
        interactive before batch), unless the pool already runs `cap` jobs across all
        replicas. A spill (`cap` >= 0) takes no job kept in-house and, unless `batch`, no
        batch job; with `finish_ms`, it passes over a job whose deadline comes sooner
        than that; with `budgets`, it passes over the jobs of a tenant whose spend has
        reached its share. Jobs passed over stay in line."""
        h = await self._run(
            "claim",
            [],
            [
                keys.JOB_PREFIX,
                keys.EVENTS_PREFIX,
                keys.CHANNEL_PREFIX,
                owner,
                int(lease_s * 1000),
                pool,
                self._maxlen,
                cap,
                "oldest" if oldest else "head",
                finish_ms,
                reason,
                "1" if batch else "0",
                budgets.spend_key if budgets else "",
                budgets.budget_usd if budgets else 0,
                budgets.total_weight if budgets else 1,
            ],
        )
        return Job.from_hash(_pairs(h)) if h else None

    async def wait_for_work(self, timeout_s: float) -> bool:
        """Blocks until a submit (or a requeue) may have left work in the queue."""
        popped = await self._waiter.blpop([keys.WAKE], timeout=timeout_s)
        return popped is not None

    async def progress(self, job: Job, event_type: str, progress: int) -> bool:
        return bool(
            await self._run(
                "progress",
                [keys.job(job.id), keys.events(job.id)],
                [keys.channel(job.id), self._maxlen, job.lease, event_type, progress],
            )
        )

    async def rendered(self, job: Job, observed: Observation, progress: int) -> bool:
        """The attempt's render succeeded: records `observed` (samples, the container for
        the spend meter and the tenant's share, once per lease) and, if the lease still
        holds the job, marks it uploading at `progress`.
        One round trip; safe to retry. False when the job moved on."""
        return bool(
            await self._run(
                "rendered",
                [
                    keys.job(job.id),
                    keys.events(job.id),
                    keys.samples(observed.pool, "render"),
                    keys.samples(observed.pool, "cold"),
                    keys.METER_RENDERS,
                    keys.tenant_spend(observed.month),
                ],
                [
                    keys.channel(job.id),
                    self._maxlen,
                    job.lease,
                    progress,
                    observed.render_ms,
                    -1 if observed.cold_ms is None else observed.cold_ms,
                    SAMPLES_KEPT,
                    observed.usd,
                    job.tenant,
                    keys.SPEND_KEPT_S,
                    observed.container_id,
                    observed.container_ms,
                    keys.METER_RENDERS_KEPT,
                    int(observed.cold),
                ],
            )
        )

    async def complete(self, job: Job, output: Output) -> Finish:
        fields = {
            "bucket": output.bucket,
            "key": output.key,
            "bytes": str(output.bytes),
            "sha256": output.sha256,
            "duration_s": repr(output.duration_s),
        }
        return await self._finish(job, "completed", "", "", fields)

    async def fail(self, job: Job, code: str, message: str) -> Finish:
        return await self._finish(job, "failed", code, message, {})

    async def _finish(
        self, job: Job, status: str, code: str, message: str, fields: Mapping[str, str]
    ) -> Finish:
        result = await self._run(
            "finish",
            [keys.job(job.id), keys.events(job.id)],
            [
                job.id,
                keys.channel(job.id),
                self._maxlen,
                job.lease,
                status,
                self._retention_ms,
                code,
                message,
                *_flatten(fields),
            ],
        )
        return Finish(result)

    async def requeue(self, job: Job, code: str, message: str, *, counts: bool = True) -> str:
        """Hands a running job back to the queue; with `counts` false (a replica shutting
        down) the attempt is not charged against the job."""
        result: str = await self._run(
            "requeue",
            [keys.job(job.id), keys.events(job.id)],
            [
                job.id,
                keys.channel(job.id),
                self._maxlen,
                job.lease,
                self._max_attempts,
                self._retention_ms,
                code,
                message,
                "1" if counts else "0",
            ],
        )
        return result

    async def renew(self, leases: Mapping[str, int], lease_s: float) -> list[str]:
        """Extends the leases that the given lease numbers still hold; returns the ids of
        the jobs they no longer hold."""
        if not leases:
            return []
        pairs = [item for job_id, lease in leases.items() for item in (job_id, lease)]
        lost: list[str] = await self._run(
            "renew", [], [keys.JOB_PREFIX, int(lease_s * 1000), *pairs]
        )
        return lost

    async def reclaim(
        self, owner: str, lease_s: float, *, adopt_pool: str = "", batch: int = 100
    ) -> Reclaimed:
        """Takes back jobs whose lease expired; those with a remote call still running on
        `adopt_pool` are adopted by `owner` instead of requeued."""
        requeued, adopted, failed = await self._run(
            "reclaim",
            [],
            [
                keys.JOB_PREFIX,
                keys.EVENTS_PREFIX,
                keys.CHANNEL_PREFIX,
                self._maxlen,
                self._max_attempts,
                self._retention_ms,
                batch,
                owner,
                int(lease_s * 1000),
                adopt_pool,
            ],
        )
        return Reclaimed(
            requeued=list(requeued),
            adopted=[Job.from_hash(_pairs(h)) for h in adopted],
            failed=list(failed),
        )

    async def release(self, job: Job) -> bool:
        """Lets this replica's lease on a running job lapse now, for another to adopt."""
        return bool(await self._run("release", [keys.job(job.id)], [job.id, job.lease]))

    async def set_call(self, job: Job, call_id: str) -> bool:
        """Records the remote call rendering the job; False if the job moved on."""
        return bool(await self._run("set_call", [keys.job(job.id)], [job.lease, call_id]))

    async def mark_started(self, job: Job) -> bool:
        """Records that the job's render starts now (its input is about to reach a
        renderer), which rules out a recall; False if the job moved on (a recall
        included)."""
        return bool(await self._run("start", [keys.job(job.id)], [job.lease]))

    async def recall(self, job: Job, reason: str) -> bool:
        """Takes the job back from its fleet and puts it in line again, uncharged, with
        a `recalled` event carrying `reason`; False if it moved on or its render
        started."""
        return bool(
            await self._run(
                "recall",
                [keys.job(job.id), keys.events(job.id)],
                [job.id, keys.channel(job.id), self._maxlen, job.lease, reason],
            )
        )

    async def expire_deadlines(self, batch: int = 100) -> tuple[list[str], int | None]:
        """Fails queued jobs whose deadline has passed. Returns their ids and how many ms
        until the next deadline (None when no job has one)."""
        ids, next_in_ms = await self._run(
            "deadline",
            [],
            [
                keys.JOB_PREFIX,
                keys.EVENTS_PREFIX,
                keys.CHANNEL_PREFIX,
                self._maxlen,
                self._retention_ms,
                batch,
            ],
        )
        return list(ids), (None if int(next_in_ms) < 0 else int(next_in_ms))

    async def expire_queued(self, waited_ms: int, batch: int = 100) -> list[str]:
        """Fails queued jobs that have waited at least `waited_ms`."""
        ids: list[str] = await self._run(
            "expire",
            [],
            [
                keys.JOB_PREFIX,
                keys.EVENTS_PREFIX,
                keys.CHANNEL_PREFIX,
                self._maxlen,
                self._retention_ms,
                waited_ms,
                batch,
            ],
        )
        return ids

    async def cancel(self, tenant: str, job_id: str) -> tuple[Job, bool] | None:
        """The job after the cancel, and whether this call ended it (it was queued or
        running); None if the tenant has no such job."""
        found = await self._run(
            "cancel",
            [keys.job(job_id), keys.events(job_id)],
            [job_id, keys.channel(job_id), self._maxlen, self._retention_ms, tenant],
        )
        if not found:
            return None
        ended, h = found
        return Job.from_hash(_pairs(h)), bool(ended)

    async def retry(self, tenant: str, job_id: str) -> tuple[Job, bool] | None:
        """The job, and whether it went back in line (it had failed or was cancelled);
        None if the tenant has no such job."""
        found = await self._run(
            "retry",
            [keys.job(job_id), keys.events(job_id)],
            [job_id, keys.channel(job_id), self._maxlen, tenant, self._retention_ms],
        )
        if not found:
            return None
        retried, h = found
        return Job.from_hash(_pairs(h)), bool(retried)

    async def cancel_queued(self, tenant: str) -> int:
        """Cancels every job the tenant has queued; returns how many."""
        total = 0
        while True:
            cancelled, looked = await self._run(
                "cancel_queued",
                [],
                [
                    keys.JOB_PREFIX,
                    keys.EVENTS_PREFIX,
                    keys.CHANNEL_PREFIX,
                    self._maxlen,
                    self._retention_ms,
                    tenant,
                    _CANCEL_BATCH,
                ],
            )
            total += int(cancelled)
            if int(looked) < _CANCEL_BATCH:
                return total

    async def delete(self, tenant: str, job_id: str) -> tuple[Job, bool] | None:
        """The job as it was, and whether the delete cancelled it (it was queued or
        running); None if the tenant has no such job."""
        found = await self._run(
            "delete",
            [keys.job(job_id), keys.events(job_id), keys.tenant_jobs(tenant)],
            [job_id, keys.channel(job_id), self._maxlen, tenant, keys.idempotency_prefix(tenant)],
        )
        if not found:
            return None
        ended, h = found
        return Job.from_hash(_pairs(h)), bool(ended)

    async def events_after(self, job_id: str, after: str, count: int = 1000) -> list[Event]:
        start = f"({after}" if after else "-"
        entries = cast(
            list[tuple[str, dict[str, str]]],
            await self._r.xrange(keys.events(job_id), min=start, count=count),
        )
        return [Event.decode(job_id, eid, fields["d"]) for eid, fields in entries]

    async def queue_depth(self) -> int:
        depth: int = await self._r.zcard(keys.QUEUE)
        return depth


def _flatten(fields: Mapping[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))
