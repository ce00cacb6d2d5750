"""Each job's trace, as an operator opens it: the span tree the scheduler (and the
renderer) record, against real Redis, S3 and renderers, collected in memory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

from scheduler.telemetry import tracing
from tests.conftest import AUTH, S3Server, Stack, assert_eventually
from tests.test_spillover_e2e import REQUEST, SPILL_ENV, final_jobs

tracer = trace.get_tracer("tests")


class Tree:
    """The finished spans of one trace, navigable by name and parent."""

    def __init__(self, spans: Sequence[ReadableSpan], trace_id: int) -> None:
        self.spans = [s for s in spans if s.context.trace_id == trace_id]

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        [span] = self.named(name)
        return span

    def children(self, parent: ReadableSpan, name: str | None = None) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans
            if s.parent is not None
            and s.parent.span_id == parent.context.span_id
            and (name is None or s.name == name)
        ]


async def submit_traced(stub: scheduler_pb2_grpc.SchedulerStub) -> tuple[pb.Job, int]:
    """Submits as a traced caller would: the caller's span context in the metadata."""
    with tracer.start_as_current_span("caller") as caller:
        response = await stub.SubmitRender(
            pb.SubmitRenderRequest(**REQUEST), metadata=AUTH + tracing.metadata()
        )
    return response.job, caller.get_span_context().trace_id


async def finished_tree(spans: InMemorySpanExporter, trace_id: int, *, dispatches: int = 1) -> Tree:
    """The trace once its dispatch spans have ended (they end after the job does)."""

    async def ended() -> Tree:
        tree = Tree(spans.get_finished_spans(), trace_id)
        assert len(tree.named("dispatch")) >= dispatches
        return tree

    return await assert_eventually(ended, within=30)


async def test_inhouse_job_trace_reads_like_its_life(
    stack: Stack, s3: S3Server, spans: InMemorySpanExporter
) -> None:
    """An in-house job's trace: the caller's span, then submit, then queue_wait and
    dispatch, with render (and the renderer's own span) and upload under dispatch;
    the job carries the trace id."""
    await stack.start_renderer(slots=2)
    scheduler = await stack.start_scheduler()
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        job, trace_id = await submit_traced(stub)
        assert job.trace_id == f"{trace_id:032x}"
        [done] = await final_jobs(stub, [job.id])
    tree = await finished_tree(spans, trace_id)

    caller = tree.one("caller")
    [submit] = tree.children(caller, "submit")
    assert submit.attributes is not None and submit.attributes["spillway.job_id"] == job.id
    [wait] = tree.children(submit, "queue_wait")
    [dispatch] = tree.children(submit, "dispatch")
    assert wait.end_time is not None and dispatch.start_time is not None
    assert wait.end_time <= dispatch.start_time + 1_000_000
    attrs = dict(dispatch.attributes or {})
    assert attrs["spillway.pool"] == "inhouse" and attrs["spillway.spilled"] is False
    assert attrs["spillway.mode"] == "normal" and attrs["spillway.outcome"] == "completed"
    [render] = tree.children(dispatch, "render")
    render_attrs = dict(render.attributes or {})
    assert render_attrs["spillway.frames"] > 0 and render_attrs["spillway.engine"]
    assert tree.children(render, "renderer.render"), "the renderer's span joins the trace"
    [upload] = tree.children(dispatch, "upload")
    upload_attrs = dict(upload.attributes or {})
    assert upload_attrs["spillway.bytes"] == done.output.bytes
    assert upload_attrs["spillway.key"] == done.output.key
    assert upload_attrs["spillway.bucket"] == s3.bucket and upload_attrs["spillway.parts"] == 1
    assert not tree.children(dispatch, "cold_start")
    assert all(s.status.status_code is not StatusCode.ERROR for s in tree.spans)


async def test_spilled_job_trace_shows_the_cold_start(
    stack: Stack, s3: S3Server, spans: InMemorySpanExporter
) -> None:
    """A job spilled to a cold burst container has a dispatch on the burst pool, in
    spill mode, with a cold_start span carrying the boot seconds and container."""
    await stack.start_renderer(slots=1)
    scheduler = await stack.start_scheduler(
        **{**SPILL_ENV, "SPILLWAY_HIGH_WATERMARK": "1", "SPILLWAY_LOW_WATERMARK": "0"}
    )
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        submitted = [await submit_traced(stub) for _ in range(4)]
        jobs = await final_jobs(stub, [j.id for j, _ in submitted])
    spilled = [(j, t) for (j, t), done in zip(submitted, jobs, strict=True) if done.pool == "burst"]
    assert spilled, "some job spilled"
    _, trace_id = spilled[0]
    tree = await finished_tree(spans, trace_id)
    dispatch = next(
        d for d in tree.named("dispatch") if (d.attributes or {})["spillway.pool"] == "burst"
    )
    attrs = dict(dispatch.attributes or {})
    assert attrs["spillway.spilled"] is True and attrs["spillway.mode"] == "spill"
    assert attrs["spillway.reason"] == "modal_faster"
    [cold] = tree.children(dispatch, "cold_start")
    cold_attrs = dict(cold.attributes or {})
    assert cold_attrs["spillway.boot_seconds"] >= 0.3
    assert cold_attrs["spillway.container_id"]
    assert tree.children(dispatch, "render") and tree.children(dispatch, "upload")


async def test_upload_retried_through_an_s3_outage_records_each_failure(
    stack: Stack, s3: S3Server, spans: InMemorySpanExporter
) -> None:
    """An upload that fails (the bucket is gone) is retried by the same attempt, with
    the render kept: its upload span records each failure as an exception event and
    ends OK once the bucket is back. The job is rendered once, on its first attempt."""
    await stack.start_renderer(slots=1)
    scheduler = await stack.start_scheduler()
    client = s3.client()
    client.delete_bucket(Bucket=s3.bucket)
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        job, trace_id = await submit_traced(stub)

        async def uploading() -> None:
            got = await stub.GetJob(pb.GetJobRequest(id=job.id), metadata=AUTH)
            assert got.job.progress == 95

        await assert_eventually(uploading, within=30)
        await asyncio.sleep(0.5)
        client.create_bucket(Bucket=s3.bucket)
        [done] = await final_jobs(stub, [job.id])
    assert done.status == pb.JOB_STATUS_COMPLETED and done.attempt == 1
    tree = await finished_tree(spans, trace_id, dispatches=1)
    [dispatch] = tree.named("dispatch")
    assert dict(dispatch.attributes or {})["spillway.outcome"] == "completed"
    assert len(tree.children(dispatch, "render")) == 1
    [upload] = tree.children(dispatch, "upload")
    assert upload.status.status_code is not StatusCode.ERROR
    failures = [e for e in upload.events if e.name == "exception"]
    tries = dict(upload.attributes or {})["spillway.upload_tries"]
    assert failures and tries == len(failures) + 1


async def test_cancelled_job_trace_ends_with_the_cancel(
    stack: Stack, s3: S3Server, spans: InMemorySpanExporter
) -> None:
    """Cancelling a job mid-render ends its dispatch with outcome `cancelled` and its
    render span with a `cancelled` event, not an error; nothing is uploaded."""
    await stack.start_renderer(slots=1, fps=24)
    scheduler = await stack.start_scheduler()
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        with tracer.start_as_current_span("caller") as caller:
            response = await stub.SubmitRender(
                pb.SubmitRenderRequest(**{**REQUEST, "seconds": 12}),
                metadata=AUTH + tracing.metadata(),
            )
        trace_id = caller.get_span_context().trace_id

        async def rendering() -> None:
            got = await stub.GetJob(pb.GetJobRequest(id=response.job.id), metadata=AUTH)
            assert got.job.progress > 1

        await assert_eventually(rendering, within=30)
        await stub.CancelJob(pb.CancelJobRequest(id=response.job.id), metadata=AUTH)
    tree = await finished_tree(spans, trace_id)
    dispatch = tree.one("dispatch")
    assert dict(dispatch.attributes or {})["spillway.outcome"] == "cancelled"
    [render] = tree.children(dispatch, "render")
    assert "cancelled" in [e.name for e in render.events]
    assert render.status.status_code is not StatusCode.ERROR
    assert not tree.children(dispatch, "upload")
