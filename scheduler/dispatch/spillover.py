"""The I/O shell around the spillover policy: reads its signal and state from Redis in
one round trip, runs `policy.decide`, saves the state back (compare-and-set, so replicas
deciding at once cannot lose a mode change), turns each finished render into samples,
its container for the spend meter and its tenant's GPU time (which the job store writes
with the job's next step), and holds the autoscaler lease. Every decision is the
policy's; this module only moves data."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as redis
from redis.exceptions import NoScriptError

from scheduler.dispatch.fleet import Endpoint, Fleet, capacity, decode_view
from scheduler.dispatch.meter import decode as decode_meter
from scheduler.policy import (
    Autoscale,
    Controls,
    Mode,
    Plan,
    PolicyConfig,
    PolicyState,
    Reason,
    Signal,
    SpillControl,
    Transition,
    cost_usd,
    decide,
    poll_after_ms,
    retry_after_s,
)
from scheduler.policy.estimates import AGES_SAMPLED, estimate
from scheduler.pools.base import PoolStats, RenderInfo
from scheduler.store import keys
from scheduler.store.jobstore import Observation, TenantBudgets, load_script

log = logging.getLogger(__name__)

_TRANSITIONS_KEPT = 1000
_CONTROL_CHANGES_KEPT = 1000
_CONTROL_CHANGES_SHOWN = 10
_CAS_TRIES = 8


@dataclass(frozen=True)
class PoolView:
    """A pool as the status RPC reports it."""

    name: str
    inflight: int
    cap: int
    dispatched: int
    containers: int
    ready_slots: int


@dataclass(frozen=True)
class Status:
    endpoints: tuple[Endpoint, ...]
    """The in-house fleet, endpoint by endpoint."""
    state: PolicyState
    """As saved: the mode the replicas act on."""
    plan: Plan
    """What the policy would decide now (not saved)."""
    signal: Signal
    now_ms: int
    pools: tuple[PoolView, ...]
    transitions: tuple[Transition, ...]
    autoscale_applied: dict[str, str]
    dispatched_since_ms: int
    controls_set_by: str = ""
    controls_set_at_ms: int = 0
    spent_by_tenant: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """This month's metered spend by tenant."""
    control_changes: tuple[Mapping[str, str], ...] = ()
    """The latest operator control changes, newest first: `by`, `at_ms` and the
    controls each set."""
    metered_containers: int = 0
    """Containers of the second fleet the spend meter bills now."""
    bill_corrected_usd: float = 0.0
    """What the fleet's own bill added to this month's spend beyond the meter."""


class Spillover:
    def __init__(
        self,
        client: redis.Redis,
        config: PolicyConfig,
        *,
        inhouse_pool: str,
        spill_pool: str | None,
        fleet: Fleet,
    ) -> None:
        self._r = client
        self.config = config
        self._inhouse = inhouse_pool
        self._spill = spill_pool
        self._fleet = fleet
        self._save = client.register_script(load_script("policy_save"))
        self._lease = client.register_script(load_script("lease"))
        self.endpoints: tuple[Endpoint, ...] = ()
        """The in-house fleet as the latest read found it."""
        self.next_deadline_in_ms: int | None = None
        # Who set the operator controls last, and when (ms); from the latest read.
        self.controls_set: tuple[str, int] = ("", 0)
        # The signal of the latest read (this replica's latest decision): polling hints
        # come from it without a read of their own.
        self.last_signal: Signal | None = None
        """How long until the earliest job deadline as the latest read found it (0 or
        less: one is due); None when no job has one."""

    async def read(
        self, spill_stats: PoolStats | None, spill_available: bool
    ) -> tuple[PolicyState, str, Signal, int]:
        """State, its version, the signal and Redis server time, in one round trip. The
        in-house capacity is what usable endpoints offer (ejected and draining ones
        offer none), so the policy spills or holds when the fleet is down."""
        try:
            return await self._read(spill_stats, spill_available)
        except NoScriptError:
            # Redis lost its script cache (a restart): load the view script, read again.
            await self._r.script_load(self._fleet.view_script.script)
            return await self._read(spill_stats, spill_available)

    async def _read(
        self, spill_stats: PoolStats | None, spill_available: bool
    ) -> tuple[PolicyState, str, Signal, int]:
        spill = self._spill or ""
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.hmget(keys.POLICY, ["state", "version"])
            pipe.zcard(keys.QUEUED_AT)
            pipe.zcard(keys.BATCH_QUEUED_AT)
            pipe.zrange(keys.QUEUED_AT, 0, AGES_SAMPLED - 1, withscores=True)
            # By sha, not as a Script: a pipeline with a Script asks SCRIPT EXISTS first,
            # a round trip of its own on every read.
            pipe.evalsha(self._fleet.view_script.sha, 0)
            pipe.scard(keys.running(spill))
            pipe.lrange(keys.samples(self._inhouse, "render"), 0, -1)
            pipe.lrange(keys.samples(spill, "render"), 0, -1)
            pipe.lrange(keys.samples(spill, "cold"), 0, -1)
            pipe.get(keys.spend(_month()))
            pipe.zrange(keys.DEADLINES, 0, 0, withscores=True)
            pipe.hmget(keys.CONTROLS, ["spill", "dispatch", "batch", "by", "at_ms"])
            (
                (sec, usec),
                (state_json, version),
                queued,
                batch_queued,
                oldest,
                fleet_rows,
                spill_inflight,
                inhouse_renders,
                spill_renders,
                colds,
                spent,
                earliest_deadline,
                (spill_control, dispatch_control, batch_control, controls_by, controls_at),
            ) = await pipe.execute()
        now_ms = int(sec) * 1000 + int(usec) // 1000
        self.next_deadline_in_ms = (
            int(earliest_deadline[0][1]) - now_ms if earliest_deadline else None
        )
        cfg = self.config
        self.controls_set = (controls_by or "", int(controls_at or 0))
        self.endpoints = tuple(decode_view(fleet_rows))
        inhouse = capacity(self.endpoints)
        signal = Signal(
            queued=int(queued),
            queue_ages_ms=tuple(max(0, now_ms - int(score)) for _, score in oldest),
            inhouse_busy=inhouse.busy,
            inhouse_slots=inhouse.slots,
            modal_inflight=int(spill_inflight),
            modal_ready_slots=spill_stats.ready_slots if spill_stats else 0,
            modal_starting_slots=spill_stats.starting_slots if spill_stats else 0,
            modal_available=self._spill is not None and spill_available,
            spent_usd=float(spent or 0.0),
            estimates=estimate(_ints(inhouse_renders), _ints(spill_renders), _ints(colds), cfg),
            controls=Controls(
                spill=SpillControl(spill_control or SpillControl.AUTO),
                dispatch_paused=dispatch_control == "paused",
                batch_spill=batch_control == "spill",
            ),
            batch_queued=int(batch_queued),
        )
        self.last_signal = signal
        return decode_state(state_json), version or "0", signal, now_ms

    async def decide(
        self, spill_stats: PoolStats | None, spill_available: bool
    ) -> tuple[Plan, Signal]:
        """Reads, decides and saves; a replica that lost the compare-and-set re-reads and
        decides again, so each saved state follows from the one before it. Only the
        replica whose save recorded a mode change gets it in `plan.transition`."""
        for _ in range(_CAS_TRIES):
            state, version, signal, now_ms = await self.read(spill_stats, spill_available)
            plan = decide(state, signal, self.config, now_ms)
            if plan.state == state:
                return plan, signal
            transition = encode_transition(plan.transition) if plan.transition else ""
            saved = await self._save(
                keys=[keys.POLICY, keys.TRANSITIONS],
                args=[version, encode_state(plan.state), transition, _TRANSITIONS_KEPT],
            )
            if saved:
                if plan.transition:
                    t = plan.transition
                    log.warning(
                        "spillover mode %s -> %s (%s; %d queued)",
                        t.old.value,
                        t.new.value,
                        t.reason.value,
                        t.queued,
                    )
                return plan, signal
        raise RuntimeError("spillover state kept changing under this replica")

    async def set_controls(
        self,
        *,
        spill: SpillControl | None,
        dispatch_paused: bool | None,
        by: str,
        batch_spill: bool | None = None,
    ) -> Controls:
        """Sets the controls given (None leaves one as it is); returns them all."""
        fields: dict[str, str] = {"by": by, "at_ms": str(int(time.time() * 1000))}
        if spill is not None:
            fields["spill"] = spill.value
        if dispatch_paused is not None:
            fields["dispatch"] = "paused" if dispatch_paused else "running"
        if batch_spill is not None:
            fields["batch"] = "spill" if batch_spill else "inhouse"
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(keys.CONTROLS, mapping=fields)  # type: ignore[arg-type]
            pipe.hmget(keys.CONTROLS, ["spill", "dispatch", "batch"])
            # The history, beside the current values: an incident's review asks who
            # switched what, and when.
            pipe.xadd(
                keys.CONTROL_CHANGES,
                {"d": json.dumps(fields, sort_keys=True)},
                maxlen=_CONTROL_CHANGES_KEPT,
                approximate=True,
            )
            _, (now_spill, now_dispatch, now_batch), _ = await pipe.execute()
        controls = Controls(
            spill=SpillControl(now_spill or SpillControl.AUTO),
            dispatch_paused=now_dispatch == "paused",
            batch_spill=now_batch == "spill",
        )
        log.warning(
            "operator controls set by %s: spill %s, dispatch %s, batch %s",
            by,
            controls.spill.value,
            "paused" if controls.dispatch_paused else "running",
            "spill" if controls.batch_spill else "inhouse",
        )
        return controls

    def poll_after_ms(self, ahead: int | None) -> int:
        """When to poll a pending job again (see `scheduler.policy.poll_after_ms`); 0
        before this replica has read a signal."""
        if self.last_signal is None:
            return 0
        return poll_after_ms(self.last_signal, self.config, ahead)

    async def retry_after_s(self) -> int:
        """What to tell a caller refused at the queue bound."""
        _, _, signal, _ = await self.read(None, self._spill is not None)
        return retry_after_s(signal, self.config)

    def tenant_budgets(self, weights: Mapping[str, float]) -> TenantBudgets:
        """This month's split of the spill budget over `weights`, for the spill claim."""
        return TenantBudgets(
            spend_key=keys.tenant_spend(_month()),
            budget_usd=self.config.budget_usd_month,
            total_weight=sum(weights.values()),
        )

    def observe(self, pool: str, info: RenderInfo, wall_s: float) -> Observation:
        """What a successful render feeds the estimates (its render time as the
        scheduler saw it, its cold start) and, on the second fleet, the spend meter (its
        container, which the meter bills from boot to stop) and the tenant's share of
        the bill (its GPU time); `JobStore.rendered` stores it."""
        cold_s = info.boot_s + info.restore_s if info.cold_start else 0.0
        spilled = pool == self._spill
        used_ms = int((info.render_s + cold_s) * 1000)
        return Observation(
            pool=pool,
            # An input that joined a container partway through its boot waited less than
            # the whole boot: the render itself is the floor.
            render_ms=int(max(info.render_s, wall_s - cold_s) * 1000),
            cold_ms=int(cold_s * 1000) if info.cold_start else None,
            usd=cost_usd(used_ms, self.config) if spilled else 0.0,
            month=_month(),
            container_id=info.container_id if spilled else "",
            container_ms=used_ms,
            cold=info.cold_start,
        )

    async def hold_autoscaler_lease(self, owner: str, ttl_s: float) -> bool:
        return bool(
            await self._lease(keys=[keys.AUTOSCALER_LEASE], args=[owner, int(ttl_s * 1000)])
        )

    async def record_autoscale(self, settings: Autoscale, owner: str) -> None:
        fields = {k: str(v) for k, v in dataclasses.asdict(settings).items()}
        fields.update(by=owner, at_ms=str(int(time.time() * 1000)))
        await self._r.hset(keys.AUTOSCALE, mapping=fields)  # type: ignore[arg-type]

    async def status(self, spill_stats: PoolStats | None, spill_available: bool) -> Status:
        state, _, signal, now_ms = await self.read(spill_stats, spill_available)
        endpoints = self.endpoints
        plan = decide(state, signal, self.config, now_ms)
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.DISPATCHED)
            pipe.xrevrange(keys.TRANSITIONS, count=20)
            pipe.hgetall(keys.AUTOSCALE)
            pipe.hgetall(keys.tenant_spend(_month()))
            pipe.xrevrange(keys.CONTROL_CHANGES, count=_CONTROL_CHANGES_SHOWN)
            pipe.get(keys.METER)
            (
                dispatched,
                recent,
                applied,
                by_tenant,
                control_changes,
                metered,
            ) = await pipe.execute()
        meter_state = decode_meter(metered)
        pools = [
            PoolView(
                name=self._inhouse,
                inflight=signal.inhouse_busy,
                cap=signal.inhouse_slots,
                dispatched=int(dispatched.get(self._inhouse, 0)),
                containers=sum(1 for e in endpoints if e.usable),
                ready_slots=signal.inhouse_slots,
            )
        ]
        if self._spill:
            stats = spill_stats or PoolStats(containers=0, ready_slots=0)
            pools.append(
                PoolView(
                    name=self._spill,
                    inflight=signal.modal_inflight,
                    cap=self.config.modal_cap,
                    dispatched=int(dispatched.get(self._spill, 0)),
                    containers=stats.containers,
                    ready_slots=stats.ready_slots,
                )
            )
        return Status(
            endpoints=endpoints,
            state=state,
            plan=plan,
            signal=signal,
            now_ms=now_ms,
            pools=tuple(pools),
            transitions=tuple(decode_transition(f["d"]) for _, f in reversed(recent)),
            autoscale_applied=cast(dict[str, str], applied),
            dispatched_since_ms=int(dispatched.get("since", 0)),
            controls_set_by=self.controls_set[0],
            controls_set_at_ms=self.controls_set[1],
            spent_by_tenant={tenant: float(usd) for tenant, usd in by_tenant.items()},
            control_changes=tuple(json.loads(f["d"]) for _, f in control_changes),
            metered_containers=len(meter_state.tracker.meter.live),
            bill_corrected_usd=meter_state.corrected_usd if meter_state.month == _month() else 0.0,
        )


def encode_state(state: PolicyState) -> str:
    return json.dumps(dataclasses.asdict(state), sort_keys=True)


def decode_state(data: str | None) -> PolicyState:
    if not data:
        return PolicyState()
    d: dict[str, Any] = json.loads(data)
    return PolicyState(**{**d, "mode": Mode(d["mode"])})


def encode_transition(t: Transition) -> str:
    return json.dumps(dataclasses.asdict(t), sort_keys=True)


def decode_transition(data: str) -> Transition:
    d = json.loads(data)
    return Transition(
        at_ms=int(d["at_ms"]),
        old=Mode(d["old"]),
        new=Mode(d["new"]),
        reason=Reason(d["reason"]),
        queued=int(d["queued"]),
    )


def _ints(values: Sequence[str]) -> list[int]:
    return [int(v) for v in values]


def _month() -> str:
    return time.strftime("%Y-%m", time.gmtime())
