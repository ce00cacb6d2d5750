"""Operator controls: inputs to the pure policy (pause dispatch, the spill kill switch,
force spill), set over the Admin service and `spillway admin`, honoured by every
replica's next decision and shown in the status."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import grpc
import pytest
from spillway.v1 import admin_pb2 as apb
from spillway.v1 import admin_pb2_grpc, scheduler_pb2_grpc
from spillway.v1 import scheduler_pb2 as pb

from scheduler.policy import (
    Controls,
    Mode,
    PolicyState,
    Reason,
    Signal,
    SpillControl,
    Target,
    decide,
)
from tests.conftest import AUTH, OPERATOR_AUTH, OPERATOR_KEY, Stack, run_spillway
from tests.test_policy import SPILLING, T0, TIMEOUT_MS, config, sig
from tests.test_spillover_e2e import SPILL_ENV, final_jobs, submit_burst


def with_controls(
    signal: Signal, *, spill: SpillControl = SpillControl.AUTO, dispatch_paused: bool = False
) -> Signal:
    return dataclasses.replace(
        signal, controls=Controls(spill=spill, dispatch_paused=dispatch_paused)
    )


def test_paused_dispatch_holds_every_job_and_sheds_none() -> None:
    signal = with_controls(sig(9, busy=0, ages=[2 * TIMEOUT_MS] * 9), dispatch_paused=True)
    plan = decide(SPILLING, signal, config(), T0)
    assert [(d.target, d.count, d.reason) for d in plan.decisions] == [
        (Target.HOLD, 9, Reason.DISPATCH_PAUSED)
    ]
    assert plan.shed_waits_over_ms is None


def test_the_kill_switch_spills_nothing_and_drains_the_second_fleet() -> None:
    cfg = config(buffer_containers=2, prewarm_containers=3)
    signal = with_controls(sig(12, ages=[2 * TIMEOUT_MS]), spill=SpillControl.OFF)
    plan = decide(SPILLING, signal, cfg, T0)
    assert plan.count(Target.MODAL) == 0
    assert any(d.reason is Reason.SPILL_OFF for d in plan.decisions)
    assert (plan.autoscale.min_containers, plan.autoscale.buffer_containers) == (0, 0)
    auto = decide(SPILLING, sig(12), cfg, T0)
    assert auto.count(Target.MODAL) > 0, "without the switch the same queue spills"


def test_force_spills_in_normal_mode() -> None:
    normal = PolicyState(mode=Mode.NORMAL, mode_since_ms=T0 - 3_600_000)
    assert decide(normal, sig(3), config(), T0).count(Target.MODAL) == 0
    forced = with_controls(sig(3), spill=SpillControl.FORCE)
    assert decide(normal, forced, config(), T0).count(Target.MODAL) > 0


async def admin(address: str, *args: str) -> tuple[int, str, str]:
    code, out, err = await run_spillway(
        "admin", *args, "--addr", address, env={"SPILLWAY_API_KEY": OPERATOR_KEY}
    )
    assert "Traceback" not in err, err
    return code, out, err


@pytest.mark.timeout(240)
async def test_kill_switch_pause_and_cancel_on_a_real_stack(stack: Stack) -> None:
    await stack.start_renderer(slots=2, fps=8)
    scheduler = await stack.start_scheduler(**SPILL_ENV)
    address = scheduler.address
    code, _, _ = await admin(address, "spill", "off")
    assert code == 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        # A burst that would spill (see test_spillover_e2e) stays in-house.
        jobs = await final_jobs(stub, await submit_burst(stub, 8))
        assert {j.pool for j in jobs} == {"inhouse"}
        status = await stub.GetSpillover(pb.GetSpilloverRequest(), metadata=OPERATOR_AUTH)
        assert (status.spill_control, status.controls_set_by) == ("off", "operator of ops")

        code, out, _ = await admin(address, "status", "--json")
        assert json.loads(out)["spill"] == "off"

        # Paused: nothing is dispatched; resumed, everything runs.
        assert (await admin(address, "dispatch", "pause"))[0] == 0
        held = await submit_burst(stub, 3)
        await asyncio.sleep(1.5)
        for job_id in held:
            got = await stub.GetJob(pb.GetJobRequest(id=job_id), metadata=AUTH)
            assert got.job.status == pb.JOB_STATUS_QUEUED
        code, out, _ = await admin(address, "cancel-queued", "acme")
        assert (code, out.strip()) == (0, "cancelled 3 queued jobs of acme")
        assert (await admin(address, "dispatch", "resume"))[0] == 0
        assert (await admin(address, "spill", "auto"))[0] == 0
        after = await final_jobs(stub, await submit_burst(stub, 2))
        assert {j.status for j in after} == {pb.JOB_STATUS_COMPLETED}

        # Every switch is in the history, newest first, with who made it.
        code, out, _ = await admin(address, "status", "--json")
        changes = [
            {k: v for k, v in c.items() if k not in ("at", "by")}
            for c in json.loads(out)["changes"]
        ]
        assert changes == [
            {"spill": "auto"},
            {"dispatch": "running"},
            {"dispatch": "paused"},
            {"spill": "off"},
        ]
        assert {c["by"] for c in json.loads(out)["changes"]} == {"operator of ops"}
        code, out, _ = await admin(address, "status")
        assert "changes, newest first:" in out and "spill auto" in out

        denied = admin_pb2_grpc.AdminStub(channel).SetControls(
            apb.SetControlsRequest(spill=apb.SPILL_CONTROL_OFF), metadata=AUTH
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await denied
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
