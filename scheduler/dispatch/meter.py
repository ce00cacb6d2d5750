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
import time
from dataclasses import dataclass, field, replace
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
    ) -> None:
        self._r = client
        self._pool = pool
        self._config = config
        self._owner = owner
        self._interval_ms = int(interval_s * 1000)
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

    async def meter_once(self) -> int:
        """One look: reads, infers, charges. Returns the container-ms charged."""
        # Asked before Redis's clock is read, so the count is no younger than `now`.
        count = (await self._pool.stats()).containers if self._pool.available else None
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.get(keys.METER)
            pipe.hget(keys.AUTOSCALE, "scaledown_window_s")
            (sec, usec), raw, window = await pipe.execute()
        now_ms = int(sec) * 1000 + int(usec) // 1000
        state = decode(raw)
        renders = cast(
            list[tuple[str, dict[str, str]]],
            await self._r.xrange(keys.METER_RENDERS, min=f"({state.cursor}", count=_RENDERS_READ),
        )
        tracker = state.tracker
        for entry_id, fields in renders:
            tracker = meter.rendered(tracker, fields["c"], int(fields["b"]), int(fields["e"]))
            state = replace(state, cursor=entry_id)
        window_s = int(window) if window else self._config.scaledown_window_s
        blind_since = now_ms - 3 * self._interval_ms
        if tracker.counted_ms is not None and tracker.counted_ms < blind_since:
            # Nobody counted for a while (no replica held the lease): what came or went
            # meanwhile is put near now, not in the middle of the gap.
            tracker = replace(tracker, counted_ms=blind_since)
        if count is None:
            tracker = meter.unseen(tracker, now_ms, window_s)
        else:
            tracker = meter.counted(tracker, count, now_ms, window_s)
        billed = meter.billed_ms(tracker.meter, now_ms)
        charge_ms = max(0, billed - state.charged_ms)
        state = replace(state, tracker=tracker, charged_ms=state.charged_ms + charge_ms)
        usd = meter.usd(charge_ms, self._config.gpu_usd_per_s)
        month = time.strftime("%Y-%m", time.gmtime(now_ms / 1000))
        saved = await self._save(
            keys=[keys.METER_LEASE, keys.METER, keys.spend(month)],
            args=[self._owner, encode(state), repr(usd), keys.SPEND_KEPT_S],
        )
        if not saved:
            return 0
        return charge_ms


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
    return MeterState(tracker=tracker, charged_ms=int(d["charged_ms"]), cursor=str(d["cursor"]))
