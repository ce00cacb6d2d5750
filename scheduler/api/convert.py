"""Jobs and events to their protobuf form."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from spillway.v1 import scheduler_pb2 as pb

from scheduler.dispatch.spillover import Status as SpilloverStatus
from scheduler.policy import Autoscale, Mode, PolicyConfig
from scheduler.store.jobs import Event, Job, PriorityClass, Status
from scheduler.store.storage import CONTENT_TYPE

STATUS = {
    Status.QUEUED: pb.JOB_STATUS_QUEUED,
    Status.IN_PROGRESS: pb.JOB_STATUS_IN_PROGRESS,
    Status.COMPLETED: pb.JOB_STATUS_COMPLETED,
    Status.FAILED: pb.JOB_STATUS_FAILED,
    Status.CANCELLED: pb.JOB_STATUS_CANCELLED,
}

PRIORITY_CLASS = {
    PriorityClass.INTERACTIVE: pb.PRIORITY_CLASS_INTERACTIVE,
    PriorityClass.BATCH: pb.PRIORITY_CLASS_BATCH,
}


def timestamp(ms: int) -> Timestamp | None:
    if not ms:
        return None
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def job_to_proto(job: Job) -> pb.Job:
    msg = pb.Job(
        id=job.id,
        status=STATUS[job.status],
        progress=job.progress,
        model=job.spec.model,
        prompt=job.spec.prompt,
        seconds=job.spec.seconds,
        size=job.spec.size,
        priority=job.spec.priority,
        priority_class=PRIORITY_CLASS[job.spec.priority_class],
        inhouse_only=job.spec.inhouse_only,
        created_at=timestamp(job.created_ms),
        started_at=timestamp(job.started_ms),
        completed_at=timestamp(job.completed_ms),
        expires_at=timestamp(job.expires_ms),
        pool=job.pool,
        placement_reason=job.placement,
        attempt=job.attempt,
        idempotency_key=job.idempotency_key,
        trace_id=job.trace_id,
        deadline=timestamp(job.deadline_ms),
    )
    if job.error_code:
        msg.error.code = job.error_code
        msg.error.message = job.error_message
    if job.output is not None:
        msg.output.CopyFrom(output_to_proto(job))
    return msg


def output_to_proto(job: Job) -> pb.JobOutput:
    assert job.output is not None
    out = job.output
    return pb.JobOutput(
        bucket=out.bucket,
        key=out.key,
        bytes=out.bytes,
        sha256=out.sha256,
        duration_seconds=out.duration_s,
        content_type=CONTENT_TYPE,
    )


def event_to_proto(event: Event) -> pb.JobEvent:
    msg = pb.JobEvent(
        id=event.id,
        job_id=event.job_id,
        type=event.type,
        status=STATUS[event.status],
        progress=event.progress,
        time=timestamp(event.time_ms),
        pool=event.pool,
        reason=event.reason,
        terminal=event.terminal,
    )
    if event.error_code:
        msg.error.code = event.error_code
        msg.error.message = event.error_message
    return msg


MODE = {Mode.NORMAL: pb.SPILLOVER_MODE_NORMAL, Mode.SPILL: pb.SPILLOVER_MODE_SPILL}


def spillover_to_proto(status: SpilloverStatus, config: PolicyConfig) -> pb.GetSpilloverResponse:
    plan, signal = status.plan, status.signal
    applied = status.autoscale_applied
    return pb.GetSpilloverResponse(
        mode=MODE[status.state.mode],
        mode_since=timestamp(status.state.mode_since_ms or 0),
        queued=signal.queued,
        high_watermark=config.high_watermark,
        low_watermark=config.low_watermark,
        pools=[
            pb.PoolStatus(
                name=p.name,
                inflight=p.inflight,
                cap=p.cap,
                dispatched=p.dispatched,
                containers=p.containers,
                ready_slots=p.ready_slots,
            )
            for p in status.pools
        ],
        decisions=[
            pb.SpilloverDecision(
                target=d.target.value,
                count=d.count,
                reason=d.reason.value,
                description=d.reason.description,
            )
            for d in plan.decisions
        ],
        spill_control=signal.controls.spill.value,
        dispatch_paused=signal.controls.dispatch_paused,
        batch_queued=signal.batch_queued,
        batch_control="spill" if signal.controls.batch_spill else "inhouse",
        controls_set_by=status.controls_set_by,
        controls_set_at=timestamp(status.controls_set_at_ms),
        spent_usd=signal.spent_usd,
        spent_usd_by_tenant=status.spent_by_tenant,
        metered_containers=status.metered_containers,
        bill_corrected_usd=status.bill_corrected_usd,
        control_changes=[
            pb.ControlChange(
                time=timestamp(int(c["at_ms"])),
                by=c["by"],
                spill=c.get("spill", ""),
                dispatch=c.get("dispatch", ""),
                batch=c.get("batch", ""),
            )
            for c in status.control_changes
        ],
        budget_usd=config.budget_usd_month,
        budget_left_usd=plan.budget_left_usd,
        estimated_inhouse_render_ms=signal.estimates.inhouse_render_ms,
        estimated_spill_render_ms=signal.estimates.modal_render_ms,
        estimated_cold_start_ms=signal.estimates.cold_start_ms,
        recent_changes=[
            pb.ModeChange(
                time=timestamp(t.at_ms),
                to=MODE[t.new],
                reason=t.reason.value,
                queued=t.queued,
                **{"from": MODE[t.old]},
            )
            for t in status.transitions
        ],
        autoscaler_wanted=_autoscale(plan.autoscale),
        autoscaler_applied=pb.AutoscalerSettings(
            min_containers=int(applied.get("min_containers", 0)),
            buffer_containers=int(applied.get("buffer_containers", 0)),
            max_containers=int(applied.get("max_containers", 0)),
            scaledown_window_seconds=int(applied.get("scaledown_window_s", 0)),
            applied_by=applied.get("by", ""),
            applied_at=timestamp(int(applied.get("at_ms", 0))),
        ),
        dispatched_since=timestamp(status.dispatched_since_ms),
        spill_available=signal.modal_available,
        endpoints=[
            pb.InhouseEndpoint(
                address=e.address,
                slots=e.slots,
                busy=e.busy,
                state=e.state,
                error=e.down,
                failures=e.failures,
            )
            for e in status.endpoints
        ],
    )


def _autoscale(a: Autoscale) -> pb.AutoscalerSettings:
    return pb.AutoscalerSettings(
        min_containers=a.min_containers,
        buffer_containers=a.buffer_containers,
        max_containers=a.max_containers,
        scaledown_window_seconds=a.scaledown_window_s,
    )
