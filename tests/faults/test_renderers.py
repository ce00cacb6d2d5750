"""In-house renderers that die mid-render, or were never there."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import free_port
from tests.faults.harness import Fleet, Submitted, eventually

pytestmark = pytest.mark.faults

BACK_WITHIN_S = 20.0
"""How soon a renderer that is back must get work again."""


@pytest.mark.timeout(180)
async def test_renderer_killed_mid_render_then_back_fails_nothing(fleet: Fleet) -> None:
    """kill -9 one of three renderers while it renders: its jobs finish on the others and
    none fails. Started again on the same port, it gets work again."""
    began = time.monotonic()
    victim, *others = await fleet.start_renderers(3, slots=2, fps=2)
    await fleet.start_replicas(2)
    client = fleet.client()
    before = await client.submit(60)
    assert not before.errors, before.errors
    # Once it has finished two renders with 50-odd jobs still queued, its slots are
    # busy: the kill lands mid-render.
    await eventually(
        lambda: len(victim.renders_served()) >= 2, within=30, what=f"{victim.name} rendering"
    )
    victim.kill()
    waited = await client.wait_terminal(before.ids, within=90)
    report = await client.report(before.ids)
    print(
        f"\n{report.line('kill-renderer')} (1 of 3 renderers killed mid-render)"
        f" drained_in={waited:.1f}s"
    )
    await victim.start()
    # Work arrives in waves, as traffic would, until it reaches the renderer again: the
    # fleet may take a health probe or two to re-admit it.
    restarted = time.monotonic()
    after = Submitted()
    while time.monotonic() - restarted < BACK_WITHIN_S:
        wave = await client.submit(6, prompt="after")
        after.ids += wave.ids
        after.errors += wave.errors
        await asyncio.sleep(0.5)
        if set(victim.renders_served()) & set(after.ids):
            break
    back_in = time.monotonic() - restarted
    assert not after.errors, after.errors
    waited = await client.wait_terminal(after.ids, within=90)
    report_after = await client.report(after.ids)
    served = {r.name: len(r.renders_served()) for r in fleet.renderers}
    back = set(victim.renders_served()) & set(after.ids)
    print(
        f"{report_after.line('renderer-back')} renders_since_start={served}"
        f" work_again_after={back_in:.1f}s drained_in={waited:.1f}s"
        f" total={time.monotonic() - began:.1f}s"
    )
    assert report.lost == [], report.lost[:5]
    assert report.failed == {}, report.examples()
    assert report_after.lost == [], report_after.lost[:5]
    assert report_after.failed == {}, report_after.examples()
    assert back, f"{victim.name} rendered none of {len(after.ids)} jobs in {BACK_WITHIN_S:g} s back"
    assert all(len(r.renders_served()) > 0 for r in others)


@pytest.mark.timeout(120)
async def test_dead_endpoint_from_the_start_fails_nothing(fleet: Fleet) -> None:
    """One configured endpoint never answers (nothing listens on its port): the live ones
    render every job and none fails."""
    began = time.monotonic()
    live = await fleet.start_renderers(2, slots=2, fps=2)
    dead = f"127.0.0.1:{free_port()}=2"
    await fleet.start_replicas(2, endpoints=[live[0].endpoint, dead, live[1].endpoint])
    client = fleet.client()
    submitted = await client.submit(40)
    assert not submitted.errors, submitted.errors
    waited = await client.wait_terminal(submitted.ids, within=90)
    report = await client.report(submitted.ids)
    print(
        f"\n{report.line('dead-endpoint')} (1 of 3 endpoints dead) drained_in={waited:.1f}s"
        f" total={time.monotonic() - began:.1f}s"
    )
    assert report.lost == [], report.lost[:5]
    assert report.failed == {}, report.examples()
