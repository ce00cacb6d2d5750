"""The I/O shell around the second fleet's meter (`scheduler.policy.meter`): one replica
at a time, the holder of `keys.METER_LEASE`, reads the renders the replicas recorded on
the second fleet (`keys.METER_RENDERS`: each names its container and boot) and the
pool's count of containers, lets the `Tracker` infer which containers were up when, and
charges the container time billed since its last look to the month's spend, which the
policy, the budget, the metrics and `spillway spillover` all read.

The state lives in Redis (`keys.METER`), so the lease's next holder goes on where the
last one stopped; saving it and charging the spend are one fenced step, so no
container-second is charged twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

import redis.asyncio as redis

from scheduler.dispatch.leader import LeaderLoop
from scheduler.policy import meter
from scheduler.policy.config import PolicyConfig
from scheduler.pools.base import Pool
from scheduler.store import keys
from scheduler.store.jobstore import load_script
from scheduler.telemetry.outage import Outage

log = logging.getLogger(__name__)

_RENDERS_READ = 1000
"""Renders read per look; a backlog longer than this is read over several looks."""


@dataclass(frozen=True)
class MeterState:
    tracker: meter.Tracker = field(default_factory=meter.Tracker)
    charged_ms: int = 0
    """Container-ms charged to the spend so far: the bill never goes down, so a stop
    inferred later than the fact is not refunded."""
    cursor: str = "0-0"
    """The last entry of `keys.METER_RENDERS` read."""
    month: str = ""
    """The month (UTC, `YYYY-MM`) the figures below are of."""
    month_usd: float = 0.0
    """What the meter charged this month, corrections apart."""
    hour_ms: int = 0
    hour_usd: float = 0.0
    """The start of the hour of the latest look, and `month_usd` at the first look in
    it: what the meter had charged for the month's whole hours, which is what the
    fleet's own bill covers."""
    corrected_usd: float = 0.0
    """What the fleet's own bill added to this month's spend beyond the meter."""
    checked_ms: int = 0
    """When the fleet's own bill was last read."""


class SpendMeter:
    """Owned, started and stopped by the scheduler server."""

    def __init__(
        self,
        client: redis.Redis,
        pool: Pool,
        config: PolicyConfig,
        *,
        owner: str,
        interval_s: float,
        bill_check_s: float = 0.0,
        clock: Callable[[], int] | None = None,
    ) -> None:
        """`bill_check_s`: how often to read the fleet's own bill (`Pool.billed_usd`);
        0 never. `clock`: ms since the epoch, instead of Redis's clock (tests)."""
        self._r = client
        self._pool = pool
        self._config = config
        self._owner = owner
        self._interval_ms = int(interval_s * 1000)
        self._bill_check_ms = int(bill_check_s * 1000)
        self._clock = clock
        self._save = client.register_script(load_script("meter_save"))
        self._loop = LeaderLoop(
            client,
            name="spend-meter",
            lease_key=keys.METER_LEASE,
            owner=owner,
            interval_s=interval_s,
            work=self.meter_once,
            outage=Outage("spend meter", log),
        )

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def meter_once(self) -> float:
        """One look: reads, infers, charges. Returns the USD charged."""
        # Asked before Redis's clock is read, so the count is no younger than `now`.
        count = (await self._pool.stats()).containers if self._pool.available else None
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.get(keys.METER)
            pipe.hget(keys.AUTOSCALE, "scaledown_window_s")
            (sec, usec), raw, window = await pipe.execute()
        now_ms = self._clock() if self._clock else int(sec) * 1000 + int(usec) // 1000
        state = decode(raw)
        renders = cast(
            list[tuple[str, dict[str, str]]],
            await self._r.xrange(keys.METER_RENDERS, min=f"({state.cursor}", count=_RENDERS_READ),
        )
        if renders:
            state = replace(state, cursor=renders[-1][0])
        window_s = int(window) if window else self._config.scaledown_window_s
        tracker = self._track(state.tracker, renders, count, now_ms, window_s)
        charge_ms = max(0, meter.billed_ms(tracker.meter, now_ms) - state.charged_ms)
        usd = meter.usd(charge_ms, self._config.gpu_usd_per_s)
        state = replace(state, tracker=tracker, charged_ms=state.charged_ms + charge_ms)
        state, correction = await self._reconcile(state, usd, now_ms)
        saved = await self._save(
            keys=[keys.METER_LEASE, keys.METER, keys.spend(state.month)],
            args=[self._owner, encode(state), repr(usd + correction), keys.SPEND_KEPT_S],
        )
        return usd + correction if saved else 0.0

    def _track(
        self,
        tracker: meter.Tracker,
        renders: list[tuple[str, dict[str, str]]],
        count: int | None,
        now_ms: int,
        window_s: int,
    ) -> meter.Tracker:
        for _, fields in renders:
            tracker = meter.rendered(
                tracker, fields["c"], int(fields["b"]), int(fields["e"]), cold=fields["k"] == "1"
            )
        blind_since = now_ms - 3 * self._interval_ms
        if tracker.counted_ms is not None and tracker.counted_ms < blind_since:
            # Nobody counted for a while (no replica held the lease): what came or went
            # meanwhile is put near now, not in the middle of the gap.
            tracker = replace(tracker, counted_ms=blind_since)
        if count is None:
            return meter.unseen(tracker, now_ms, window_s)
        return meter.counted(tracker, count, now_ms, window_s)

    async def _reconcile(
        self, state: MeterState, usd: float, now_ms: int
    ) -> tuple[MeterState, float]:
        """Books `usd` to the month of `now_ms` and, when due, reads the fleet's own bill
        for the month's whole hours: where it says more than the meter charged for
        them, the difference is added (once). A bill that says less changes nothing:
        the higher figure stands, so the budget errs towards spending less."""
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        month = now.strftime("%Y-%m")
        if state.month != month:
            state = replace(state, month=month, month_usd=0.0, corrected_usd=0.0, hour_ms=0)
        hour_ms = int(now.replace(minute=0, second=0, microsecond=0).timestamp() * 1000)
        if state.hour_ms != hour_ms:
            state = replace(state, hour_ms=hour_ms, hour_usd=state.month_usd)
        state = replace(state, month_usd=state.month_usd + usd)
        if not self._bill_check_ms or now_ms - state.checked_ms < self._bill_check_ms:
            return state, 0.0
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        hour_start = datetime.fromtimestamp(hour_ms / 1000, UTC)
        if hour_start <= month_start:
            return state, 0.0  # no whole hour of this month yet
        state = replace(state, checked_ms=now_ms)
        try:
            billed = await self._pool.billed_usd(month_start, hour_start)
        except Exception as exc:
            log.warning("could not read the second fleet's bill; the meter stands: %r", exc)
            return state, 0.0
        if billed is None:
            return state, 0.0
        correction = billed - state.hour_usd - state.corrected_usd
        if correction <= 0:
            return state, 0.0
        log.warning(
            "the second fleet's bill for %s up to %s is $%.2f, $%.2f more than metered: "
            "added to the month's spend",
            month,
            hour_start.strftime("%H:00"),
            billed,
            correction,
        )
        return replace(state, corrected_usd=state.corrected_usd + correction), correction


def encode(state: MeterState) -> str:
    t = state.tracker
    return json.dumps(
        {
            "stopped_ms": t.meter.stopped_ms,
            "live": t.meter.live,
            "busy": t.busy,
            "gone": t.gone,
            "placeholders": t.placeholders,
            "counted_ms": t.counted_ms,
            "charged_ms": state.charged_ms,
            "cursor": state.cursor,
            "month": state.month,
            "month_usd": state.month_usd,
            "hour_ms": state.hour_ms,
            "hour_usd": state.hour_usd,
            "corrected_usd": state.corrected_usd,
            "checked_ms": state.checked_ms,
        }
    )


def decode(raw: str | None) -> MeterState:
    if not raw:
        return MeterState()
    d: dict[str, Any] = json.loads(raw)

    def pairs(name: str) -> tuple[tuple[str, int], ...]:
        return tuple((str(cid), int(ms)) for cid, ms in d[name])

    tracker = meter.Tracker(
        meter=meter.Meter(stopped_ms=int(d["stopped_ms"]), live=pairs("live")),
        busy=pairs("busy"),
        gone=pairs("gone"),
        placeholders=int(d["placeholders"]),
        counted_ms=None if d["counted_ms"] is None else int(d["counted_ms"]),
    )
    return MeterState(
        tracker=tracker,
        charged_ms=int(d["charged_ms"]),
        cursor=str(d["cursor"]),
        month=str(d["month"]),
        month_usd=float(d["month_usd"]),
        hour_ms=int(d["hour_ms"]),
        hour_usd=float(d["hour_usd"]),
        corrected_usd=float(d["corrected_usd"]),
        checked_ms=int(d["checked_ms"]),
    )
