"""S3 that refuses connections for a while, as in a regional outage or a broken proxy."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.faults.harness import Fleet, eventually

pytestmark = pytest.mark.faults

OUTAGE_S = float(os.environ.get("SPILLWAY_FAULT_S3_OUTAGE_S", "30"))
"""How long S3 refuses connections (the issue's figure); shorten it for a quick run."""


@pytest.mark.timeout(OUTAGE_S + 120)
async def test_s3_refusing_connections_fails_nothing_and_renders_once(fleet: Fleet) -> None:
    """S3 refuses every connection for OUTAGE_S while jobs finish rendering: none fails,
    and none is rendered twice (a render is kept until it is stored)."""
    began = time.monotonic()
    await fleet.start_renderers(3, slots=2, fps=1)
    await fleet.start_replicas(2)
    client = fleet.client()
    # Some jobs complete first, so the outage hits a working system mid-stride.
    first = await client.submit(6)
    assert not first.errors, first.errors

    async def one_completed() -> bool:
        return "completed" in await client.statuses(first.ids)

    await eventually(one_completed, within=30, what="a job completed before the outage")
    await fleet.s3_proxy.refuse()
    during = await client.submit(24)
    assert not during.errors, during.errors
    await asyncio.sleep(OUTAGE_S)
    await fleet.s3_proxy.accept()
    ids = first.ids + during.ids
    waited = await client.wait_terminal(ids, within=90)
    report = await client.report(ids)
    rendered_more = {j: n for j, n in report.dispatches.items() if n != 1}
    print(
        f"\n{report.line('s3-outage')} outage={OUTAGE_S:g}s"
        f" jobs_dispatched_more_than_once={len(rendered_more)}"
        f" drained_after_outage={waited:.1f}s total={time.monotonic() - began:.1f}s"
    )
    assert report.lost == [], report.lost[:5]
    assert report.failed == {}, report.examples()
    assert rendered_more == {}, f"dispatched more than once: {rendered_more}"
    assert report.mismatched == {}, report.examples()
