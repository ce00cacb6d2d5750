"""The spend meter in production (`scheduler.dispatch.meter`): real Redis, the real Modal
pool over the fake SDK (tests/fake_modal.py). What it charges is bracketed by Redis's
clock read around each look, so the checks hold however slow the machine is."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aredis

from scheduler.dispatch.meter import SpendMeter, decode
from scheduler.policy import Autoscale, PolicyConfig
from scheduler.pools.modal import ModalPool, ModalPoolConfig
from scheduler.store import keys
from tests.fake_modal import FakeModal

# $1 a container-second, so the spend reads as container-seconds.
CONFIG = dataclasses.replace(PolicyConfig(), gpu_usd_per_s=1.0)


@pytest.fixture
def modal(tmp_path: Path) -> Iterator[FakeModal]:
    with FakeModal(work_dir=tmp_path) as fake:
        yield fake


def spend_key() -> str:
    return keys.spend(time.strftime("%Y-%m", time.gmtime()))


async def redis_now_ms(client: aredis.Redis) -> int:
    sec, usec = await client.time()
    return int(sec) * 1000 + int(usec) // 1000


async def look(client: aredis.Redis, meter: SpendMeter, pool: ModalPool) -> tuple[int, int]:
    """One look of the meter on fresh stats; Redis's clock just before and after it."""
    await pool.refresh_stats()
    before = await redis_now_ms(client)
    await meter.meter_once()
    return before, await redis_now_ms(client)


async def spent(client: aredis.Redis) -> float:
    return float(await client.get(spend_key()) or 0.0)


def make_meter(client: aredis.Redis, pool: ModalPool, owner: str) -> SpendMeter:
    return SpendMeter(client, pool, CONFIG, owner=owner, interval_s=5.0)


async def billing_meter(
    client: aredis.Redis, modal: FakeModal, tmp_path: Path, clock: list[int] | None = None
) -> SpendMeter:
    """A meter holding the lease that reads Modal's bill whenever a minute has passed,
    on `clock[0]` (ms) if given, else Redis's clock."""
    pool = ModalPool(ModalPoolConfig(tmp_dir=tmp_path), sdk=modal)
    meter = SpendMeter(
        client,
        pool,
        CONFIG,
        owner="a",
        interval_s=5.0,
        bill_check_s=60,
        clock=None if clock is None else lambda: clock[0],
    )
    await client.set(keys.METER_LEASE, "a")
    return meter


async def test_prewarmed_containers_that_serve_nothing_are_charged_until_they_stop(
    redis_client: aredis.Redis, modal: FakeModal, tmp_path: Path
) -> None:
    """Two pre-warmed containers idle and never render: the month's spend grows with
    their time all the same, and stops growing once they are gone."""
    pool = ModalPool(ModalPoolConfig(tmp_dir=tmp_path), sdk=modal)
    meter = make_meter(redis_client, pool, "replica-a")
    await redis_client.set(keys.METER_LEASE, "replica-a")
    await pool.apply_autoscaler(Autoscale(2, 0, 4, 60))
    assert len(modal.containers()) == 2
    first = await look(redis_client, meter, pool)
    await asyncio.sleep(1.0)
    second = await look(redis_client, meter, pool)
    assert await spent(redis_client) > 0
    await pool.apply_autoscaler(Autoscale(0, 0, 4, 60))
    modal.scale_to_zero()
    third = await look(redis_client, meter, pool)
    # Both from the first look to the middle of the last two.
    low = 2 * ((second[0] + third[0]) / 2 - first[1])
    high = 2 * ((second[1] + third[1]) / 2 - first[0])
    charged = await spent(redis_client) * 1000
    assert low - 2 <= charged <= high + 2
    await look(redis_client, meter, pool)
    assert await spent(redis_client) * 1000 == pytest.approx(charged)
    state = decode(await redis_client.get(keys.METER))
    assert state.tracker.meter.live == ()


async def test_only_the_lease_holder_charges_and_its_successor_goes_on_from_its_state(
    redis_client: aredis.Redis, modal: FakeModal, tmp_path: Path
) -> None:
    """A replica that does not hold the meter's lease charges nothing. When the lease
    moves, the next holder charges from where the last one stopped: one container up
    the whole time is charged once, not once per replica."""
    pool = ModalPool(ModalPoolConfig(tmp_dir=tmp_path), sdk=modal)
    a = make_meter(redis_client, pool, "replica-a")
    b = make_meter(redis_client, pool, "replica-b")
    await pool.apply_autoscaler(Autoscale(1, 0, 4, 60))
    await redis_client.set(keys.METER_LEASE, "replica-a")
    first = await look(redis_client, a, pool)
    await asyncio.sleep(0.5)
    await look(redis_client, b, pool)
    assert await spent(redis_client) == 0.0
    await look(redis_client, a, pool)
    await redis_client.set(keys.METER_LEASE, "replica-b")
    await asyncio.sleep(0.5)
    last = await look(redis_client, b, pool)
    charged = await spent(redis_client) * 1000
    assert last[0] - first[1] - 2 <= charged <= last[1] - first[0] + 2


async def test_a_render_names_its_container_and_a_meter_without_counts_stops_it_after_its_tail(
    redis_client: aredis.Redis, modal: FakeModal, tmp_path: Path
) -> None:
    """Modal unreachable (stats fail): the meter still charges the container a render
    named, from its boot to the end of its scaledown window after the render."""
    pool = ModalPool(ModalPoolConfig(tmp_dir=tmp_path, unavailable_backoff_s=60), sdk=modal)
    meter = make_meter(redis_client, pool, "replica-a")
    await redis_client.set(keys.METER_LEASE, "replica-a")
    await redis_client.hset(keys.AUTOSCALE, "scaledown_window_s", "2")
    end = await redis_now_ms(redis_client)
    await redis_client.xadd(keys.METER_RENDERS, {"c": "ta-x", "b": end - 3000, "e": end, "k": 1})
    modal.fail_stats(modal.exception.ConnectionError("down"))
    await pool.refresh_stats()
    assert not pool.available
    await meter.meter_once()
    assert dict(decode(await redis_client.get(keys.METER)).tracker.meter.live) == {
        "ta-x": end - 3000
    }
    await asyncio.sleep(2.2)
    await meter.meter_once()
    state = decode(await redis_client.get(keys.METER))
    assert state.tracker.meter.live == () and state.tracker.gone == (("ta-x", end + 2000),)
    assert await spent(redis_client) == pytest.approx(5.0)


async def test_modals_own_bill_raises_the_spend_for_the_months_whole_hours(
    redis_client: aredis.Redis, modal: FakeModal, tmp_path: Path
) -> None:
    """Modal's billing report says the renderer's app cost $7.50 in the month's first
    two hours, which the meter (seeing no containers) charged nothing for: the spend
    rises by $7.50 once, and not again at the next check. Other apps' rows and a bill
    that says less than the meter change nothing."""
    clock = [int(datetime(2026, 12, 4, 10, 30, tzinfo=UTC).timestamp() * 1000)]
    meter = await billing_meter(redis_client, modal, tmp_path, clock)
    month = datetime(2026, 12, 1, tzinfo=UTC)
    modal.bill(month, "5.00", {"spillway": "spillway-renderer"})
    modal.bill(month + timedelta(hours=1), "2.50", {"spillway": "spillway-renderer"})
    modal.bill(month, "99.00", {"spillway": "some-other-app"})
    modal.bill(month, "42.00", {})
    # This hour's row is not whole yet: the report leaves it out.
    modal.bill(datetime(2026, 12, 4, 10, tzinfo=UTC), "1.00", {"spillway": "spillway-renderer"})
    assert await meter.meter_once() == pytest.approx(7.5)
    assert float(await redis_client.get(keys.spend("2026-12"))) == pytest.approx(7.5)
    clock[0] += 120_000
    assert await meter.meter_once() == 0.0
    assert float(await redis_client.get(keys.spend("2026-12"))) == pytest.approx(7.5)


async def test_a_failing_billing_report_leaves_the_meter_standing(
    redis_client: aredis.Redis, modal: FakeModal, tmp_path: Path
) -> None:
    """Modal unreachable when the bill is due: the meter charges what it metered, logs,
    and the spend is not touched by the bill."""
    meter = await billing_meter(redis_client, modal, tmp_path)
    modal.bill(datetime(2026, 12, 1, tzinfo=UTC), "5.00", {"spillway": "spillway-renderer"})
    modal.outage = True
    assert await meter.meter_once() == 0.0
    assert await redis_client.get(spend_key()) in (None, "0")


async def test_no_bill_is_asked_for_before_the_month_has_a_whole_hour(
    redis_client: aredis.Redis, modal: FakeModal, tmp_path: Path
) -> None:
    """At 00:40 on the 1st the report would cover nothing: it is not asked for, and the
    first check comes once the month's first hour is whole."""
    clock = [int(datetime(2027, 1, 1, 0, 40, tzinfo=UTC).timestamp() * 1000)]
    meter = await billing_meter(redis_client, modal, tmp_path, clock)
    modal.bill(datetime(2027, 1, 1, tzinfo=UTC), "3.00", {"spillway": "spillway-renderer"})
    modal.outage = True  # any request for the bill would fail, and be logged
    assert await meter.meter_once() == 0.0
    assert decode(await redis_client.get(keys.METER)).checked_ms == 0
    modal.outage = False
    clock[0] += 30 * 60_000
    assert await meter.meter_once() == pytest.approx(3.0)
