"""The Scheduler gRPC service end to end: real Redis, S3, renderer and scheduler."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import av
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

from scheduler.store.storage import S3ObjectStore, StorageError, Uploaded
from tests.conftest import AUTH, OTHER_AUTH, S3Server, Stack

VALID = {"prompt": "a lighthouse at dusk", "seconds": 4, "size": "720x1280"}


def stub(channel: grpc.aio.Channel) -> scheduler_pb2_grpc.SchedulerStub:
    return scheduler_pb2_grpc.SchedulerStub(channel)


async def submit(channel: grpc.aio.Channel) -> pb.SubmitRenderResponse:
    response: pb.SubmitRenderResponse = await stub(channel).SubmitRender(
        pb.SubmitRenderRequest(**VALID), metadata=AUTH
    )
    return response


async def wait_terminal(channel: grpc.aio.Channel, job_id: str) -> list[pb.JobEvent]:
    events = []
    async for response in stub(channel).WatchJob(pb.WatchJobRequest(id=job_id), metadata=AUTH):
        events.append(response.event)
    return events


def rich_details(error: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """The ErrorInfo reason and the BadRequest fields of a rich gRPC error."""
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    reason, fields = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return reason, fields


async def test_submit_renders_uploads_and_completes(
    scheduler_channel: grpc.aio.Channel, s3: S3Server
) -> None:
    """A submitted job is acknowledged queued, then completes with its MP4 in S3."""
    response = await stub(scheduler_channel).SubmitRender(
        pb.SubmitRenderRequest(**VALID), metadata=AUTH
    )
    assert response.created and response.job.status == pb.JOB_STATUS_QUEUED
    job_id = response.job.id
    events = await wait_terminal(scheduler_channel, job_id)
    assert events[-1].type == "completed" and events[-1].terminal
    job = (await stub(scheduler_channel).GetJob(pb.GetJobRequest(id=job_id), metadata=AUTH)).job
    assert job.status == pb.JOB_STATUS_COMPLETED and job.progress == 100
    assert job.pool == "inhouse" and job.attempt == 1
    assert job.output.key == f"videos/{job_id}/1.mp4" and job.output.bytes > 0
    body = s3.client().get_object(Bucket=s3.bucket, Key=job.output.key)["Body"].read()
    assert len(body) == job.output.bytes
    with av.open(io.BytesIO(body)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert (stream.width, stream.height) == (720, 1280)
    assert frames == 4 * 8


async def test_a_routine_job_logs_its_steps_only_at_debug(
    scheduler_channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """A job queued, dispatched in-house on its first attempt and completed writes no
    INFO line about itself; its three steps are DEBUG lines."""
    caplog.set_level(logging.DEBUG, logger="scheduler")
    job_id = (await submit(scheduler_channel)).job.id
    events = await wait_terminal(scheduler_channel, job_id)
    assert events[-1].type == "completed"
    about = [r for r in caplog.records if job_id in r.getMessage()]
    assert [r.levelno for r in about if r.levelno >= logging.INFO] == []
    steps = [r.getMessage().replace(job_id, "J") for r in about]
    assert steps[0] == "job J queued for tenant acme"
    assert "dispatched job J to inhouse (attempt 1)" in steps
    assert steps[-1].startswith("job J ok on inhouse (")


async def test_watch_streams_ordered_events_and_resumes(
    scheduler_channel: grpc.aio.Channel,
) -> None:
    """WatchJob gives every event in order ending in a terminal one, and resumes after an id."""
    job = (
        await stub(scheduler_channel).SubmitRender(pb.SubmitRenderRequest(**VALID), metadata=AUTH)
    ).job
    events = await wait_terminal(scheduler_channel, job.id)
    types = [e.type for e in events]
    assert types[0] == "queued" and types[1] == "dispatched" and types[-1] == "completed"
    assert "uploading" in types and "progress" in types
    assert [e.progress for e in events] == sorted(e.progress for e in events)
    assert [e.terminal for e in events] == [False] * (len(events) - 1) + [True]
    resumed = [
        r.event
        async for r in stub(scheduler_channel).WatchJob(
            pb.WatchJobRequest(id=job.id, after_event_id=events[2].id), metadata=AUTH
        )
    ]
    assert [e.id for e in resumed] == [e.id for e in events[3:]]
    after_end = [
        r.event
        async for r in stub(scheduler_channel).WatchJob(
            pb.WatchJobRequest(id=job.id, after_event_id=events[-1].id), metadata=AUTH
        )
    ]
    assert after_end == []


async def test_an_upload_that_fails_waits_on_disk_and_leaves_no_file(
    stack: Stack, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clip uploaded from memory that S3 refuses is written to disk, uploaded from
    there on the retry, and its file removed once the job completes."""
    from_disk: list[bytes] = []
    put_file = S3ObjectStore.put_file

    async def refuse(self: S3ObjectStore, data: bytes, key: str) -> Uploaded:
        raise StorageError("upload", self.bucket, key, ConnectionRefusedError())

    async def record(self: S3ObjectStore, path: Path, key: str) -> Uploaded:
        from_disk.append(await asyncio.to_thread(path.read_bytes))
        return await put_file(self, path, key)

    monkeypatch.setattr(S3ObjectStore, "put_bytes", refuse)
    monkeypatch.setattr(S3ObjectStore, "put_file", record)
    await stack.start_renderer()
    scheduler = await stack.start_scheduler()
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        job_id = (await submit(channel)).job.id
        assert (await wait_terminal(channel, job_id))[-1].type == "completed"
        job = (await stub(channel).GetJob(pb.GetJobRequest(id=job_id), metadata=AUTH)).job
    body = s3.client().get_object(Bucket=s3.bucket, Key=job.output.key)["Body"].read()
    assert from_disk == [body] and len(body) == job.output.bytes
    assert await asyncio.to_thread(lambda: list(stack.tmp.glob(f"{job_id}-*"))) == []


async def test_idempotency_key_returns_the_same_job(scheduler_channel: grpc.aio.Channel) -> None:
    """Submitting twice with one idempotency key creates one job."""
    request = pb.SubmitRenderRequest(**VALID, idempotency_key="order-42")
    first = await stub(scheduler_channel).SubmitRender(request, metadata=AUTH)
    second = await stub(scheduler_channel).SubmitRender(request, metadata=AUTH)
    assert first.created and not second.created
    assert second.job.id == first.job.id
    listed = await stub(scheduler_channel).ListJobs(pb.ListJobsRequest(), metadata=AUTH)
    assert [j.id for j in listed.jobs] == [first.job.id]


async def test_cancel_queued_and_running_jobs(stack: Stack, s3: S3Server) -> None:
    """A queued job cancelled never runs; a running one stops and uploads nothing."""
    await stack.start_renderer(slots=1)
    scheduler = await stack.start_scheduler(
        SPILLWAY_INHOUSE_RENDERERS=f"{stack.renderers[0].address}=1"
    )
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        long = pb.SubmitRenderRequest(prompt="long", seconds=12, size="1792x1024")
        running = (await stub(channel).SubmitRender(long, metadata=AUTH)).job
        async for r in stub(channel).WatchJob(pb.WatchJobRequest(id=running.id), metadata=AUTH):
            if r.event.type == "dispatched":
                break
        queued = (
            await stub(channel).SubmitRender(pb.SubmitRenderRequest(**VALID), metadata=AUTH)
        ).job
        cancelled = await stub(channel).CancelJob(pb.CancelJobRequest(id=queued.id), metadata=AUTH)
        assert cancelled.job.status == pb.JOB_STATUS_CANCELLED
        assert cancelled.job.error.code == "cancelled"
        stopped = await stub(channel).CancelJob(pb.CancelJobRequest(id=running.id), metadata=AUTH)
        assert stopped.job.status == pb.JOB_STATUS_CANCELLED
        # The renderer's only slot is free again once the cancelled render stops.
        follow = (
            await stub(channel).SubmitRender(pb.SubmitRenderRequest(**VALID), metadata=AUTH)
        ).job
        assert (await wait_terminal(channel, follow.id))[-1].type == "completed"
        for job_id in (queued.id, running.id):
            job = (await stub(channel).GetJob(pb.GetJobRequest(id=job_id), metadata=AUTH)).job
            assert job.status == pb.JOB_STATUS_CANCELLED
        done = (await stub(channel).GetJob(pb.GetJobRequest(id=follow.id), metadata=AUTH)).job
        keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket).get("Contents", [])]
        assert keys == [done.output.key] and done.output.key.startswith(f"videos/{follow.id}/")


async def test_tenants_cannot_see_each_other(scheduler_channel: grpc.aio.Channel) -> None:
    """Another tenant's job answers NOT_FOUND to every call and is absent from lists."""
    job = (
        await stub(scheduler_channel).SubmitRender(pb.SubmitRenderRequest(**VALID), metadata=AUTH)
    ).job
    s = stub(scheduler_channel)
    calls = [
        s.GetJob(pb.GetJobRequest(id=job.id), metadata=OTHER_AUTH),
        s.CancelJob(pb.CancelJobRequest(id=job.id), metadata=OTHER_AUTH),
        s.DeleteJob(pb.DeleteJobRequest(id=job.id), metadata=OTHER_AUTH),
        s.GetJobContent(pb.GetJobContentRequest(id=job.id), metadata=OTHER_AUTH),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in s.WatchJob(pb.WatchJobRequest(id=job.id), metadata=OTHER_AUTH):
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert list((await s.ListJobs(pb.ListJobsRequest(), metadata=OTHER_AUTH)).jobs) == []
    assert (await s.GetJob(pb.GetJobRequest(id=job.id), metadata=AUTH)).job.id == job.id


@pytest.mark.parametrize(
    ("request_fields", "field", "reason"),
    [
        ({"prompt": ""}, "prompt", "missing_prompt"),
        ({"prompt": "x" * 4001}, "prompt", "prompt_too_long"),
        ({"model": "dall-e-9"}, "model", "unknown_model"),
        ({"seconds": 5}, "seconds", "unsupported_seconds"),
        ({"size": "640x480"}, "size", "unsupported_size"),
        ({"priority": 10}, "priority", "invalid_value"),
        ({"idempotency_key": "k" * 256}, "idempotency_key", "invalid_value"),
    ],
)
async def test_bad_submit_is_rejected_with_field_violation_and_writes_nothing(
    scheduler_channel: grpc.aio.Channel,
    redis_client: object,
    request_fields: dict[str, object],
    field: str,
    reason: str,
) -> None:
    """Each invalid submit answers INVALID_ARGUMENT naming the field, and stores nothing."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub(scheduler_channel).SubmitRender(
            pb.SubmitRenderRequest(**{**VALID, **request_fields}), metadata=AUTH
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_details(info.value) == (reason, [field])
    assert await redis_client.keys("spw:job:*") == []  # type: ignore[attr-defined]


async def test_ids_not_ours_are_not_found(scheduler_channel: grpc.aio.Channel) -> None:
    """Any id the caller cannot see is NOT_FOUND, whatever its form, as OpenAI answers;
    only a malformed page token is INVALID_ARGUMENT."""
    s = stub(scheduler_channel)
    for job_id in ("../etc/passwd", "video_doesnotexist_123", "video_" + "0" * 32):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.GetJob(pb.GetJobRequest(id=job_id), metadata=AUTH)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, job_id
        assert rich_details(info.value)[0] == "not_found"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await s.ListJobs(pb.ListJobsRequest(page_token="../etc"), metadata=AUTH)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_details(info.value) == ("invalid_id", ["after"])


async def test_missing_or_wrong_key_is_unauthenticated(
    scheduler_channel: grpc.aio.Channel,
) -> None:
    """Calls without a known bearer key answer UNAUTHENTICATED."""
    for metadata in ((), (("authorization", "Bearer nope-nope-nope"),)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub(scheduler_channel).ListJobs(pb.ListJobsRequest(), metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_reports_serving(scheduler_channel: grpc.aio.Channel) -> None:
    """The standard health service reports the Scheduler as SERVING."""
    health = health_pb2_grpc.HealthStub(scheduler_channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service="spillway.v1.Scheduler"))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_content_url_only_once_completed(scheduler_channel: grpc.aio.Channel) -> None:
    """Content of an unfinished job is FAILED_PRECONDITION; once completed, a URL is given."""
    s = stub(scheduler_channel)
    job = (await s.SubmitRender(pb.SubmitRenderRequest(**VALID), metadata=AUTH)).job
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await s.GetJobContent(pb.GetJobContentRequest(id=job.id), metadata=AUTH)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_details(info.value)[0] == "video_not_ready"
    await wait_terminal(scheduler_channel, job.id)
    content = await s.GetJobContent(pb.GetJobContentRequest(id=job.id), metadata=AUTH)
    assert f"videos/{job.id}/1.mp4" in content.url and "Signature" in content.url
    assert content.output.content_type == "video/mp4"


async def test_reflection_lists_the_scheduler(scheduler_channel: grpc.aio.Channel) -> None:
    """Server reflection names the Scheduler service, so grpcurl can call it."""
    reflection = reflection_pb2_grpc.ServerReflectionStub(scheduler_channel)
    call = reflection.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    await call.done_writing()
    response = await call.read()
    assert await call.read() is grpc.aio.EOF
    names = {s.name for s in response.list_services_response.service}
    assert {"spillway.v1.Scheduler", "grpc.health.v1.Health"} <= names
