"""The Redis job store against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aredis

from scheduler.store import keys
from scheduler.store.jobs import JobSpec, Output, Status
from scheduler.store.jobstore import Finish, JobStore, QueueFull

SPEC = JobSpec(prompt="a red fox", model="sora-2", seconds=4, width=720, height=1280, priority=5)
OUTPUT = Output(bucket="b", key="k", bytes=1, sha256="0" * 64, duration_s=4.0)


@pytest.fixture
def store(redis_client: aredis.Redis) -> JobStore:
    return JobStore(
        redis_client, retention_s=3600, events_maxlen=64, max_attempts=2, max_queued=100
    )


async def test_submit_stores_job_queue_entry_and_event(store: JobStore) -> None:
    """A submitted job is queued, readable, and its first event says so."""
    submitted = await store.submit("acme", SPEC)
    assert submitted.created
    job = submitted.job
    assert job.status is Status.QUEUED and job.tenant == "acme" and job.spec == SPEC
    assert job.expires_ms - job.created_ms == 3600 * 1000
    assert await store.queue_depth() == 1
    events = await store.events_after(job.id, "")
    assert [(e.type, e.status) for e in events] == [("queued", Status.QUEUED)]


async def test_same_idempotency_key_returns_same_job(store: JobStore) -> None:
    """A repeated idempotency key returns the first job, per tenant only."""
    first = await store.submit("acme", SPEC, idempotency_key="k1")
    again = await store.submit("acme", SPEC, idempotency_key="k1")
    other_tenant = await store.submit("globex", SPEC, idempotency_key="k1")
    assert again.job.id == first.job.id and not again.created
    assert other_tenant.created and other_tenant.job.id != first.job.id
    assert await store.queue_depth() == 2


async def test_claim_takes_priority_then_fifo(store: JobStore) -> None:
    """Claims take the highest priority first, and equal priorities in submission order."""
    low = (await store.submit("t", SPEC)).job
    high = (await store.submit("t", JobSpec(**{**SPEC.__dict__, "priority": 9}))).job
    low2 = (await store.submit("t", SPEC)).job
    order = []
    while (job := await store.claim("r1", "inhouse", lease_s=30, cap=10)) is not None:
        order.append(job.id)
        assert job.status is Status.IN_PROGRESS and job.attempt == 1 and job.pool == "inhouse"
    assert order == [high.id, low.id, low2.id]


async def test_claim_on_empty_queue_clears_wake_token(
    store: JobStore, redis_client: aredis.Redis
) -> None:
    """An empty claim drops the wake token, so idle dispatchers block instead of spinning."""
    await store.submit("t", SPEC)
    assert await redis_client.llen(keys.WAKE) == 1  # type: ignore[misc]
    assert await store.claim("r1", "inhouse", 30, cap=10) is not None
    assert await store.claim("r1", "inhouse", 30, cap=10) is None
    assert await redis_client.llen(keys.WAKE) == 0  # type: ignore[misc]
    assert not await store.wait_for_work(timeout_s=0.05)


async def test_wait_for_work_wakes_on_submit(store: JobStore) -> None:
    """A dispatcher blocked on the wake list returns as soon as a job is submitted."""
    waiter = asyncio.create_task(store.wait_for_work(timeout_s=5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await store.submit("t", SPEC)
    assert await asyncio.wait_for(waiter, 2)


async def test_complete_sets_output_and_terminal_event(store: JobStore) -> None:
    """Completing a job records its output, progress 100 and a terminal event."""
    await store.submit("t", SPEC)
    job = await store.claim("r1", "inhouse", 30, cap=10)
    assert job is not None
    output = Output(bucket="b", key=f"videos/{job.id}.mp4", bytes=10, sha256="ab", duration_s=4.0)
    assert await store.complete(job, output) is Finish.OK
    done = await store.get(job.id)
    assert done is not None and done.status is Status.COMPLETED and done.output == output
    assert done.progress == 100 and done.completed_ms >= done.started_ms
    events = await store.events_after(job.id, "")
    assert events[-1].type == "completed" and events[-1].terminal


async def test_stale_attempt_cannot_finish(store: JobStore) -> None:
    """After a reclaim, the old attempt's completion is refused and the new one's accepted."""
    await store.submit("t", SPEC)
    old = await store.claim("r1", "inhouse", lease_s=0.01, cap=10)
    assert old is not None
    await asyncio.sleep(0.03)
    assert (await store.reclaim("r2", 30)).requeued == [old.id]
    new = await store.claim("r2", "inhouse", 30, cap=10)
    assert new is not None and new.id == old.id and new.attempt == 2
    assert await store.fail(old, "render_failed", "x") is Finish.STALE
    assert await store.progress(old, "progress", 50) is False
    assert await store.complete(new, Output("b", "k", 1, "s", 4.0)) is Finish.OK


async def test_reclaim_fails_job_after_max_attempts(store: JobStore) -> None:
    """A job whose lease expires on its last attempt fails with the reason."""
    await store.submit("t", SPEC)
    for _ in range(2):
        job = await store.claim("r1", "inhouse", lease_s=0.01, cap=10)
        assert job is not None
        await asyncio.sleep(0.03)
        await store.reclaim("r2", 30)
    final = await store.get(job.id)
    assert final is not None and final.status is Status.FAILED
    assert final.error_code == "lease_expired" and "2 attempts" in final.error_message
    assert await store.queue_depth() == 0


async def test_requeue_on_shutdown_does_not_use_an_attempt(store: JobStore) -> None:
    """A job handed back by a replica shutting down is queued again at its old attempt count."""
    await store.submit("t", SPEC)
    job = await store.claim("r1", "inhouse", 30, cap=10)
    assert job is not None
    assert await store.requeue(job, "shutdown", "replica stopping", counts=False) == "requeued"
    again = await store.claim("r2", "inhouse", 30, cap=10)
    assert again is not None and again.attempt == 1


async def test_cancel_queued_job_removes_it_from_queue(store: JobStore) -> None:
    """Cancelling a queued job takes it out of line; only its tenant may cancel it, and
    only the first cancel says it ended the job."""
    job = (await store.submit("acme", SPEC)).job
    assert await store.cancel("globex", job.id) is None
    found = await store.cancel("acme", job.id)
    assert found is not None
    cancelled, ended = found
    assert ended and cancelled.status is Status.CANCELLED
    assert cancelled.error_code == "cancelled"
    assert await store.cancel("acme", job.id) == (cancelled, False)
    assert await store.queue_depth() == 0
    assert await store.claim("r1", "inhouse", 30, cap=10) is None


async def test_delete_removes_job_events_and_idempotency_key(store: JobStore) -> None:
    """Deleting a job removes every key naming it; its idempotency key can be reused."""
    job = (await store.submit("acme", SPEC, idempotency_key="k")).job
    assert await store.delete("globex", job.id) is None
    found = await store.delete("acme", job.id)
    assert found is not None and found[0].id == job.id and found[1]
    assert await store.get(job.id) is None
    assert await store.events_after(job.id, "") == []
    assert await store.queue_depth() == 0
    again = await store.submit("acme", SPEC, idempotency_key="k")
    assert again.created and again.job.id != job.id


async def test_list_pages_by_id_in_both_orders(store: JobStore) -> None:
    """Listing pages through a tenant's jobs by cursor, newest or oldest first."""
    ids = [(await store.submit("acme", SPEC)).job.id for _ in range(5)]
    await store.submit("globex", SPEC)
    page, more = await store.list_page("acme", after="", limit=2, order="asc")
    assert [j.id for j in page] == ids[:2] and more
    page, more = await store.list_page("acme", after=ids[1], limit=10, order="asc")
    assert [j.id for j in page] == ids[2:] and not more
    page, more = await store.list_page("acme", after="", limit=3, order="desc")
    assert [j.id for j in page] == ids[::-1][:3] and more
    page, more = await store.list_page("acme", after=ids[1], limit=3, order="desc")
    assert [j.id for j in page] == [ids[0]] and not more


async def test_claim_respects_the_pools_cap_across_replicas(
    store: JobStore, redis_client: aredis.Redis
) -> None:
    """A pool never runs more than its cap, whichever replica claims; finishing a job
    frees its place and leaves a wake token for the waiting work."""
    for _ in range(3):
        await store.submit("t", SPEC)
    a = await store.claim("r1", "burst", 30, cap=2)
    b = await store.claim("r2", "burst", 30, cap=2)
    assert a is not None and b is not None
    assert await store.claim("r1", "burst", 30, cap=2) is None
    assert await redis_client.scard(keys.running("burst")) == 2
    await redis_client.delete(keys.WAKE)
    assert await store.fail(a, "x", "y") is Finish.OK
    assert await redis_client.llen(keys.WAKE) == 1
    c = await store.claim("r1", "burst", 30, cap=2)
    assert c is not None and await redis_client.smembers(keys.running("burst")) == {b.id, c.id}


async def test_oldest_claim_takes_the_longest_waiting_job(store: JobStore) -> None:
    """Claiming by age takes the job that has waited longest, whatever its priority."""
    low = (await store.submit("t", SPEC)).job
    await store.submit("t", JobSpec(**{**SPEC.__dict__, "priority": 9}))
    taken = await store.claim("r1", "modal", 30, cap=10, oldest=True)
    assert taken is not None and taken.id == low.id


async def test_submit_past_the_queue_bound_is_refused_and_writes_nothing(
    redis_client: aredis.Redis,
) -> None:
    """At the queue bound a submit raises QueueFull and stores no job; an idempotent
    replay of an existing job still answers."""
    store = JobStore(redis_client, retention_s=60, events_maxlen=16, max_attempts=2, max_queued=2)
    first = await store.submit("t", SPEC, idempotency_key="k")
    await store.submit("t", SPEC)
    with pytest.raises(QueueFull) as refused:
        await store.submit("t", SPEC)
    assert refused.value.queued == 2
    assert (await store.submit("t", SPEC, idempotency_key="k")).job.id == first.job.id
    assert await store.queue_depth() == 2
    assert len(await redis_client.keys(keys.JOB_PREFIX + "*")) == 2


async def test_expire_fails_only_jobs_past_the_wait(store: JobStore) -> None:
    """Expiring queued jobs fails those that waited long enough with `queue_timeout`."""
    old = (await store.submit("t", SPEC)).job
    await asyncio.sleep(0.05)
    young = (await store.submit("t", SPEC)).job
    assert await store.expire_queued(waited_ms=40) == [old.id]
    failed = await store.get(old.id)
    assert failed is not None and failed.status is Status.FAILED
    assert failed.error_code == "queue_timeout"
    assert await store.queue_depth() == 1
    still = await store.get(young.id)
    assert still is not None and still.status is Status.QUEUED


async def test_released_remote_job_is_adopted_not_requeued(store: JobStore) -> None:
    """A job whose remote call runs is adopted by the replica that reclaims it: same
    call, same attempt, a new lease that fences the old holder out."""
    await store.submit("t", SPEC)
    job = await store.claim("r1", "modal", 30, cap=10)
    assert job is not None
    assert await store.set_call(job, "fc-123")
    assert await store.release(job)
    reclaimed = await store.reclaim("r2", 30, adopt_pool="modal")
    assert reclaimed.requeued == []
    [adopted] = reclaimed.adopted
    assert adopted.id == job.id and adopted.call_id == "fc-123"
    assert adopted.attempt == job.attempt and adopted.lease == job.lease + 1
    assert not await store.set_call(job, "fc-stale")
    assert await store.progress(job, "progress", 50) is False
    assert await store.complete(adopted, OUTPUT) is Finish.OK


async def test_expired_job_without_a_call_is_requeued_and_forgets_nothing(
    store: JobStore,
) -> None:
    """A reclaimed job with no remote call goes back in line with its call id cleared."""
    await store.submit("t", SPEC)
    job = await store.claim("r1", "modal", lease_s=0.01, cap=10)
    assert job is not None
    await asyncio.sleep(0.03)
    reclaimed = await store.reclaim("r2", 30, adopt_pool="modal")
    assert reclaimed.requeued == [job.id] and reclaimed.adopted == []
    again = await store.claim("r2", "inhouse", 30, cap=10)
    assert again is not None and again.call_id == "" and again.attempt == 2
