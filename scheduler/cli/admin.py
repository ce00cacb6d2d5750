"""`spillway admin`: operator controls over the scheduler's `Admin` gRPC service, with an
operator key. They persist in Redis, so every replica's next decision follows them.

    spillway admin status                  the controls, the latest changes (who, when,
                                           what), the mode
    spillway admin spill off|auto|force    off: the kill switch (nothing new spills, the
                                           second fleet drains to zero); force: spill
                                           as in spill mode
    spillway admin dispatch pause|resume   pause: nothing is dispatched; jobs wait
    spillway admin batch inhouse|spill     spill: batch jobs count toward spilling and
                                           may spill (after interactive ones)
    spillway admin cancel-queued TENANT    cancel a tenant's queued jobs

Exit codes: 0 done; 1 refused (a tenant's key: PERMISSION_DENIED); 2 bad usage; 4 the
scheduler could not be reached.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

import grpc
from spillway.v1 import admin_pb2 as pb
from spillway.v1 import admin_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

from scheduler.cli.apikeys import add_connection_arguments
from scheduler.cli.jobs import FAILED, OK, UNREACHABLE, USAGE, fail, when

ACTIONS = ("status", "spill", "dispatch", "batch", "cancel-queued")
_SPILL = {
    "auto": pb.SPILL_CONTROL_AUTO,
    "off": pb.SPILL_CONTROL_OFF,
    "force": pb.SPILL_CONTROL_FORCE,
}
_DISPATCH = {"pause": pb.DISPATCH_CONTROL_PAUSED, "resume": pb.DISPATCH_CONTROL_RUNNING}
_BATCH = {"inhouse": pb.BATCH_CONTROL_INHOUSE, "spill": pb.BATCH_CONTROL_SPILL}
_CHOICES: dict[str, Mapping[str, object]] = {
    "spill": _SPILL,
    "dispatch": _DISPATCH,
    "batch": _BATCH,
}
_MODES = {
    scheduler_pb2.SPILLOVER_MODE_NORMAL: "normal",
    scheduler_pb2.SPILLOVER_MODE_SPILL: "spill",
}


async def run(args: argparse.Namespace) -> int:
    name = f"spillway admin {args.action}"
    if not args.api_key:
        return fail(name, "set SPILLWAY_API_KEY (an operator key) or pass --api-key", USAGE)
    choices = _CHOICES.get(args.action)
    if choices is not None and args.value not in choices:
        return fail(name, f"give one of {', '.join(choices)}", USAGE)
    if args.action == "cancel-queued" and not args.value:
        return fail(name, "give the tenant", USAGE)
    metadata = (("authorization", f"Bearer {args.api_key}"),)
    try:
        async with grpc.aio.insecure_channel(args.addr) as channel:
            return await _run(channel, args, metadata)
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.UNAVAILABLE:
            return fail(name, f"cannot reach {args.addr}: {exc.details()}", UNREACHABLE)
        return fail(name, f"{exc.code().name}: {exc.details()}", FAILED)


async def _run(channel: grpc.aio.Channel, args: argparse.Namespace, metadata: Any) -> int:
    admin = admin_pb2_grpc.AdminStub(channel)
    if args.action == "spill":
        await admin.SetControls(
            pb.SetControlsRequest(spill=_SPILL[args.value]), metadata=metadata, timeout=10
        )
    elif args.action == "dispatch":
        await admin.SetControls(
            pb.SetControlsRequest(dispatch=_DISPATCH[args.value]), metadata=metadata, timeout=10
        )
    elif args.action == "batch":
        await admin.SetControls(
            pb.SetControlsRequest(batch=_BATCH[args.value]), metadata=metadata, timeout=10
        )
    elif args.action == "cancel-queued":
        done = await admin.CancelQueuedJobs(
            pb.CancelQueuedJobsRequest(tenant=args.value), metadata=metadata, timeout=60
        )
        print(f"cancelled {done.cancelled} queued jobs of {args.value}")
        return OK
    status = await scheduler_pb2_grpc.SchedulerStub(channel).GetSpillover(
        scheduler_pb2.GetSpilloverRequest(), metadata=metadata, timeout=10
    )
    shown = {
        "spill": status.spill_control or "auto",
        "dispatch": "paused" if status.dispatch_paused else "running",
        "batch": status.batch_control or "inhouse",
        "mode": _MODES.get(status.mode, "unknown"),
        "queued": status.queued,
        "batch_queued": status.batch_queued,
        "set_by": status.controls_set_by or None,
        "set_at": status.controls_set_at.seconds if status.HasField("controls_set_at") else None,
    }
    changes = [
        {
            "at": c.time.seconds,
            "by": c.by,
            **{k: v for k in ("spill", "dispatch", "batch") if (v := getattr(c, k))},
        }
        for c in status.control_changes
    ]
    if args.json:
        print(json.dumps({**shown, "changes": changes}))
        return OK
    lines = [f"{k:<14}{when(v) if k == 'set_at' else v}" for k, v in shown.items() if v is not None]
    if changes:
        lines.append("changes, newest first:")
        lines += [
            f"  {when(c['at'])}  {c['by']}: "
            + ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("at", "by"))
            for c in changes
        ]
    print("\n".join(lines))
    return OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument(
        "value",
        nargs="?",
        help="spill: auto|off|force; dispatch: pause|resume; batch: inhouse|spill; "
        "cancel-queued: the tenant",
    )
    parser.add_argument("--json", action="store_true", help="JSON instead of text")
    add_connection_arguments(parser)
