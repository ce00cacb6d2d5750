"""Redis killed -9 and started again from its AOF."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.harness import Fleet, Submitted, eventually, in_flight

pytestmark = pytest.mark.faults

DOWN_S = 3.0


@pytest.mark.timeout(180)
async def test_redis_killed_and_restarted_loses_nothing_and_dispatch_resumes(
    fleet: Fleet,
) -> None:
    """kill -9 Redis while jobs run, start it again on the same port from its AOF: every
    acknowledged job is still there and ends; the replicas dispatch again by themselves,
    for jobs submitted before the crash and after it."""
    began = time.monotonic()
    await fleet.start_renderers(3, slots=2, fps=2)
    await fleet.start_replicas(2)
    client = fleet.client()
    before = await client.submit(40)
    assert not before.errors, before.errors

    async def running() -> bool:
        return bool(await in_flight(fleet.redis.url, before.ids))

    await eventually(running, within=30, what="jobs in flight before the crash")
    fleet.redis.kill()
    await asyncio.sleep(DOWN_S)
    await fleet.redis.start()
    # A caller retries a refused submit; it is the acknowledged ones that must survive.
    after = Submitted()
    refused = 0
    deadline = time.monotonic() + 15
    while len(after.ids) < 20 and time.monotonic() < deadline:
        batch = await client.submit(20 - len(after.ids), prompt="after")
        after.ids += batch.ids
        refused += batch.errors.total()
        if batch.errors:
            await asyncio.sleep(0.5)
    waited = await client.wait_terminal(before.ids + after.ids, within=90)
    report = await client.report(before.ids)
    report_after = await client.report(after.ids)
    print(
        f"\n{report.line('redis-restart before')} (Redis down {DOWN_S:g} s, AOF fsync always)"
        f"\n{report_after.line('redis-restart after')} submits_refused_after_restart={refused}"
        f" drained_in={waited:.1f}s total={time.monotonic() - began:.1f}s"
    )
    assert report.lost == [], report.lost[:5]
    assert len(after.ids) == 20, f"only {len(after.ids)} of 20 submits accepted after restart"
    assert report_after.lost == [], report_after.lost[:5]
    assert report_after.failed == {}, report_after.examples()
    assert report.failed == {}, report.examples()
