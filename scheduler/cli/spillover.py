"""`spillway spillover`: the policy's status from a scheduler's `GetSpillover` RPC, as a
table or (`--json`) one JSON object."""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

_MODES = {pb.SPILLOVER_MODE_NORMAL: "normal", pb.SPILLOVER_MODE_SPILL: "spill"}
_TENANTS_SHOWN = 5
"""The table names the biggest spenders; `--json` has them all."""


async def fetch(address: str, api_key: str, timeout_s: float = 5.0) -> pb.GetSpilloverResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        response: pb.GetSpilloverResponse = await stub.GetSpillover(
            pb.GetSpilloverRequest(),
            metadata=(("authorization", f"Bearer {api_key}"),),
            timeout=timeout_s,
        )
        return response


def to_dict(s: pb.GetSpilloverResponse) -> dict[str, Any]:
    return {
        "mode": _MODES.get(s.mode, "unknown"),
        "mode_since": _iso(s.mode_since) if s.HasField("mode_since") else None,
        "queued": s.queued,
        "watermarks": {"high": s.high_watermark, "low": s.low_watermark},
        "pools": {
            p.name: {
                "inflight": p.inflight,
                "cap": p.cap,
                "dispatched": p.dispatched,
                "containers": p.containers,
                "ready_slots": p.ready_slots,
            }
            for p in s.pools
        },
        "endpoints": [
            {
                "address": e.address,
                "slots": e.slots,
                "busy": e.busy,
                "state": e.state,
                "error": e.error,
                "failures": e.failures,
            }
            for e in s.endpoints
        ],
        "decisions": [
            {"target": d.target, "count": d.count, "reason": d.reason} for d in s.decisions
        ],
        "spill_available": s.spill_available,
        "spend": {
            "spent_usd": round(s.spent_usd, 6),
            "budget_usd": s.budget_usd,
            "budget_left_usd": round(s.budget_left_usd, 6),
            "by_tenant": {t: round(usd, 6) for t, usd in sorted(s.spent_usd_by_tenant.items())},
            "metered_containers": s.metered_containers,
            "bill_corrected_usd": round(s.bill_corrected_usd, 6),
        },
        "estimates_ms": {
            "inhouse_render": s.estimated_inhouse_render_ms,
            "spill_render": s.estimated_spill_render_ms,
            "cold_start": s.estimated_cold_start_ms,
        },
        "recent_changes": [
            {
                "time": _iso(c.time),
                "from": _MODES.get(getattr(c, "from"), "unknown"),
                "to": _MODES.get(c.to, "unknown"),
                "reason": c.reason,
                "queued": c.queued,
            }
            for c in s.recent_changes
        ],
        "autoscaler": {
            "wanted": _autoscaler(s.autoscaler_wanted),
            "applied": {
                **_autoscaler(s.autoscaler_applied),
                "by": s.autoscaler_applied.applied_by,
                "at": _iso(s.autoscaler_applied.applied_at)
                if s.autoscaler_applied.HasField("applied_at")
                else None,
            },
        },
    }


def to_json(s: pb.GetSpilloverResponse) -> str:
    return json.dumps(to_dict(s), sort_keys=True)


def to_table(s: pb.GetSpilloverResponse) -> str:
    d = to_dict(s)
    lines = [
        f"mode      {d['mode']}"
        + (f" since {d['mode_since']}" if d["mode_since"] else "")
        + f"   queued {d['queued']} (watermarks high {s.high_watermark}, low {s.low_watermark})",
        f"{'pool':<10}{'inflight':>9}{'cap':>6}{'dispatched':>12}{'containers':>12}{'ready':>7}",
    ]
    for name, p in d["pools"].items():
        lines.append(
            f"{name:<10}{p['inflight']:>9}{p['cap']:>6}{p['dispatched']:>12}"
            f"{p['containers']:>12}{p['ready_slots']:>7}"
        )
    for e in s.endpoints:
        lines.append(
            f"  renderer {e.address} {e.busy}/{e.slots} busy, {e.state}"
            + (f": {e.error}" if e.error else "")
        )
    for dec in s.decisions:
        lines.append(f"decision  {dec.count} -> {dec.target}: {dec.description}")
    spend = d["spend"]
    lines.append(
        f"spend     ${spend['spent_usd']:.4f} this month of ${spend['budget_usd']:.2f}"
        f" (left ${spend['budget_left_usd']:.2f}), {spend['metered_containers']} containers"
        " billing now"
        + (
            f", Modal's bill added ${spend['bill_corrected_usd']:.4f}"
            if spend["bill_corrected_usd"] > 0
            else ""
        )
        + ("" if s.spill_available else "   second fleet unavailable")
    )
    if spenders := sorted(spend["by_tenant"].items(), key=lambda t: -t[1]):
        shown = ", ".join(f"{tenant} ${usd:.4f}" for tenant, usd in spenders[:_TENANTS_SHOWN])
        more = len(spenders) - _TENANTS_SHOWN
        lines.append(
            f"  GPU time by tenant {shown}" + (f" and {more} more (--json)" if more > 0 else "")
        )
    est = d["estimates_ms"]
    lines.append(
        f"estimates in-house {est['inhouse_render'] / 1000:.1f} s, "
        f"spill {est['spill_render'] / 1000:.1f} s, cold start {est['cold_start'] / 1000:.1f} s"
    )
    wanted = d["autoscaler"]["wanted"]
    lines.append(
        f"autoscaler min {wanted['min_containers']} buffer {wanted['buffer_containers']} "
        f"max {wanted['max_containers']} scaledown {wanted['scaledown_window_s']} s"
    )
    for c in d["recent_changes"][-5:]:
        lines.append(
            f"change    {c['time']} {c['from']} -> {c['to']} ({c['reason']}, {c['queued']} queued)"
        )
    return "\n".join(lines)


def _autoscaler(a: pb.AutoscalerSettings) -> dict[str, int]:
    return {
        "min_containers": a.min_containers,
        "buffer_containers": a.buffer_containers,
        "max_containers": a.max_containers,
        "scaledown_window_s": a.scaledown_window_seconds,
    }


def _iso(ts: Timestamp) -> str:
    return ts.ToDatetime().isoformat(timespec="milliseconds") + "Z"
