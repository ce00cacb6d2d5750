"""`spillway jobs` against a real stack: each action, its output for people and for
scripts, and exit codes that say what happened."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from renderer.probe import probe_mp4
from tests.conftest import API_KEY, Stack, free_port, run_spillway
from tests.test_rest_e2e import UNKNOWN_ID, Gateway, create, start_gateway


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[Gateway]:
    gw = await start_gateway(stack)
    async with gw.http:
        yield gw


async def jobs(base: str, *args: str) -> tuple[int, str, str]:
    env = {"SPILLWAY_BASE_URL": f"{base}/v1", "SPILLWAY_API_KEY": API_KEY}
    return await run_spillway("jobs", *args, env=env)


async def test_watch_list_get_download_cancel(gateway: Gateway, tmp_path: Path) -> None:
    video = await create(gateway.http, prompt="a kite over dunes")
    code, _, err = await jobs(gateway.base, "watch", video["id"])
    assert (code, "Traceback" in err) == (0, False)

    code, out, _ = await jobs(gateway.base, "list", "--json")
    assert code == 0
    assert [v["id"] for v in json.loads(out)["data"]] == [video["id"]]
    code, out, _ = await jobs(gateway.base, "list")
    assert out.splitlines()[0].split()[:2] == ["id", "status"]
    assert out.splitlines()[1].split()[:4] == [video["id"], "completed", "100%", "interactive"]

    code, out, _ = await jobs(gateway.base, "get", video["id"])
    assert code == 0 and "status    completed" in out
    assert "placement inhouse (inhouse_slot_free)" in out

    target = tmp_path / "kite.mp4"
    code, out, _ = await jobs(gateway.base, "download", video["id"], "-o", str(target))
    assert code == 0 and out.startswith(f"saved {target}")
    assert probe_mp4(target).frames > 0

    code, out, _ = await jobs(gateway.base, "cancel", video["id"])
    assert (code, out.strip()) == (0, f"cancelled {video['id']}")
    code, _, err = await jobs(gateway.base, "get", video["id"])
    assert code == 3 and err.count("\n") == 1 and "HTTP 404" in err


async def test_expected_failures_print_one_line(gateway: Gateway) -> None:
    for args, expected in [
        (("get", UNKNOWN_ID), 3),
        (("get",), 2),
        (("list", "--limit", "1000"), 1),
    ]:
        code, out, err = await jobs(gateway.base, *args)
        assert (code, out) == (expected, ""), args
        assert err.count("\n") == 1 and "Traceback" not in err, err
    unreachable = f"http://127.0.0.1:{free_port()}"
    code, _, err = await jobs(unreachable, "list")
    assert code == 4 and f"cannot reach {unreachable}/v1" in err


async def test_retry_a_cancelled_job_and_submit_flags(gateway: Gateway) -> None:
    import grpc
    from spillway.v1 import scheduler_pb2 as pb
    from spillway.v1 import scheduler_pb2_grpc

    from tests.conftest import AUTH

    env = {**os.environ, "SPILLWAY_BASE_URL": f"{gateway.base}/v1", "SPILLWAY_API_KEY": API_KEY}
    # Nothing renders until the job has been cancelled.
    renderer = gateway.scheduler.config.inhouse[0].address
    await gateway.scheduler.fleet.edit("drain", renderer)
    args = ("submit", "a paper crane", "--json", "--idempotency-key", "crane-1")
    runs = []
    for _ in range(2):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scheduler", *args, stdout=asyncio.subprocess.PIPE, env=env
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        runs.append(json.loads(out))
    # The same key twice: one job.
    assert runs[0]["id"] == runs[1]["id"] and runs[0]["object"] == "video"
    video_id = runs[0]["id"]
    async with grpc.aio.insecure_channel(gateway.scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        await stub.CancelJob(pb.CancelJobRequest(id=video_id), metadata=AUTH)
    await gateway.scheduler.fleet.edit("add", renderer, 2)
    code, out, _ = await jobs(gateway.base, "retry", video_id)
    assert (code, out.strip()) == (0, f"retried {video_id}: queued")
    code, _, err = await jobs(gateway.base, "watch", video_id)
    assert code == 0, err
    code, out, _ = await jobs(gateway.base, "get", video_id, "--json")
    assert json.loads(out)["status"] == "completed"
    code, _, err = await jobs(gateway.base, "retry", video_id)
    assert code == 1 and "only a failed or cancelled video" in err and err.count("\n") == 1
