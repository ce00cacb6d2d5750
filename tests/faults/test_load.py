"""One replica under a burst: thousands of callers submit and watch at once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import grpc
import pytest
from spillway.v1 import scheduler_pb2 as pb
from spillway.v1 import scheduler_pb2_grpc

from tests.faults.harness import AUTH, Fleet

pytestmark = pytest.mark.faults

CALLERS = 2000
CHANNELS = 8


@pytest.mark.timeout(240)
async def test_2000_submits_and_watches_at_once_are_all_served(fleet: Fleet) -> None:
    """2,000 callers at once against one replica, each submitting a job and then watching
    it: every submit is accepted and every WatchJob stream delivers events, none refused
    or cut for lack of connections (Redis pool, gRPC pending streams)."""
    began = time.monotonic()
    # A slow fleet: the jobs stay queued, so their watchers stay connected together.
    await fleet.start_renderers(1, slots=1, fps=2)
    (replica,) = await fleet.start_replicas(1, SPILLWAY_MAX_QUEUED=str(CALLERS * 2))
    # Separate connections, as separate callers would have.
    channels = [
        grpc.aio.insecure_channel(replica.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CHANNELS)
    ]
    submit_errors: Counter[str] = Counter()
    watch_errors: Counter[str] = Counter()
    # One message per kind of error, to say why in the assertion.
    said: dict[str, str] = {}
    streaming = peak = watched = 0
    unanswered = CALLERS
    all_answered = asyncio.Event()

    async def caller(i: int) -> None:
        nonlocal streaming, peak, watched, unanswered
        stub = scheduler_pb2_grpc.SchedulerStub(channels[i % CHANNELS])
        request = pb.SubmitRenderRequest(prompt=f"burst {i}", seconds=12)
        try:
            job = (await stub.SubmitRender(request, metadata=AUTH, timeout=120)).job
        except grpc.aio.AioRpcError as exc:
            submit_errors[exc.code().name] += 1
            said.setdefault(f"submit {exc.code().name}", str(exc.details()))
            return
        finally:
            unanswered -= 1
            if unanswered == 0:
                all_answered.set()
        opened = False
        try:
            async for reply in stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=AUTH):
                if not opened:
                    opened = True
                    watched += 1
                    streaming += 1
                    peak = max(peak, streaming)
                if reply.event.terminal:
                    return
        except grpc.aio.AioRpcError as exc:
            watch_errors[exc.code().name] += 1
            said.setdefault(f"watch {exc.code().name}", str(exc.details()))
        finally:
            streaming -= opened

    tasks = [asyncio.create_task(caller(i)) for i in range(CALLERS)]
    await asyncio.wait_for(all_answered.wait(), timeout=150)
    # The streams stay open (their jobs mostly queued) a while longer, under load.
    await asyncio.sleep(3)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    print(
        f"\nload: {CALLERS} submits + {CALLERS} WatchJob streams on 1 replica:"
        f" submits_refused={dict(submit_errors)} watch_errors={dict(watch_errors)}"
        f" streams_with_events={watched} peak_concurrent_streams={peak}"
        f" total={time.monotonic() - began:.1f}s"
    )
    assert submit_errors == Counter(), said
    assert watch_errors == Counter(), said
    assert watched == CALLERS, f"{CALLERS - watched} streams delivered no event"
