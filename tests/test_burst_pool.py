"""The local burst pool against real renderer processes on this machine."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from renderer.probe import probe_mp4
from scheduler.policy.model import Autoscale
from scheduler.pools.base import PoolStats, Rendered, RenderError
from scheduler.pools.burst import (
    DEFAULT_COMMAND,
    READY_PREFIX,
    BurstConfig,
    BurstPool,
    BurstSnapshot,
    ContainerStartFailed,
)
from scheduler.store.jobs import Job, JobSpec, Status, new_job_id

COLD_START_S = 0.2
SCALEDOWN_S = 0.5
FPS = 8
DEADLINE_S = 20.0
"""How long a test waits for the fleet to reach a state before it fails."""


class Hooks:
    """Render hooks that record progress and keep the job alive; `on_progress` lets a
    test act mid-render."""

    def __init__(self, on_progress: Callable[[int], None] | None = None) -> None:
        self.percents: list[int] = []
        self._on_progress = on_progress

    async def progress(self, percent: int) -> bool:
        self.percents.append(percent)
        if self._on_progress is not None:
            self._on_progress(percent)
        return True

    async def remote_call(self, call_id: str) -> bool:
        return True

    async def started(self) -> bool:
        return True


def make_job(seconds: int = 1, side: int = 64) -> Job:
    return Job(
        id=new_job_id(),
        tenant="t",
        status=Status.IN_PROGRESS,
        progress=0,
        spec=JobSpec(
            prompt="a paper boat on a puddle",
            model="stand-in",
            seconds=seconds,
            width=side,
            height=side,
            priority=5,
        ),
        created_ms=0,
        started_ms=0,
        completed_ms=0,
        expires_ms=0,
        pool="burst",
        placement="modal_faster",
        attempt=1,
        lease=1,
        call_id="",
        error_code="",
        error_message="",
        idempotency_key="",
        trace_id="",
        output=None,
    )


def container_processes() -> list[int]:
    """Pids of live processes that this test process started as burst containers (the
    pool passes --boot-delay-s to every one)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat_file:
                stat = stat_file.read()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline_file:
                cmdline = cmdline_file.read()
        except OSError:
            continue  # it exited meanwhile
        state, ppid = stat[stat.rindex(b")") + 2 :].split()[:2]
        if int(ppid) == os.getpid() and state != b"Z" and b"--boot-delay-s" in cmdline:
            pids.append(int(entry))
    return pids


async def until(pool: BurstPool, predicate: Callable[[BurstSnapshot], bool]) -> BurstSnapshot:
    async with asyncio.timeout(DEADLINE_S):
        return await pool.wait_until(predicate)


async def render_once(pool: BurstPool, job: Job | None = None) -> Rendered:
    slot = await pool.acquire()
    try:
        return await pool.render(slot, job or make_job(), Hooks())
    finally:
        slot.release()


@pytest.fixture
async def make_pool(tmp_path: Path) -> AsyncIterator[Callable[..., BurstPool]]:
    pools: list[BurstPool] = []

    def make(**overrides: Any) -> BurstPool:
        settings: dict[str, Any] = {
            "max_containers": 2,
            "concurrency": 1,
            "cold_start_s": COLD_START_S,
            "scaledown_window_s": SCALEDOWN_S,
            "fps": FPS,
            "stop_grace_s": 1.0,
            "tmp_dir": tmp_path,
        }
        pool = BurstPool(BurstConfig(**(settings | overrides)))
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


async def test_first_render_from_zero_is_cold_and_the_next_is_warm(
    make_pool: Callable[..., BurstPool],
) -> None:
    """From zero containers, the first render starts one, reports a cold start that
    covers the boot delay, and yields a decodable MP4; the next reuses it warm."""
    pool = make_pool()
    assert pool.snapshot().containers == 0

    first = await render_once(pool)
    second = await render_once(pool)

    assert first.info.cold_start and first.info.boot_s >= COLD_START_S
    assert first.data is not None
    mp4 = probe_mp4(first.data)
    assert (mp4.codec, mp4.width, mp4.height, mp4.frames) == ("h264", 64, 64, FPS)
    assert first.info.bytes == len(first.data)
    assert not second.info.cold_start and second.info.boot_s == 0
    assert second.info.container_id == first.info.container_id
    assert pool.snapshot().cold_starts == 1


async def test_a_burst_never_exceeds_max_containers_or_concurrency(
    make_pool: Callable[..., BurstPool],
) -> None:
    """Four inputs fill two containers of two; a fifth waits until one is released;
    all four render at once, each reported cold since each waited for a boot."""
    pool = make_pool(max_containers=2, concurrency=2)

    slots = await asyncio.gather(*(pool.acquire() for _ in range(4)))
    snapshot = pool.snapshot()
    assert (snapshot.containers, snapshot.inputs) == (2, 4)
    assert len(container_processes()) == 2

    fifth = asyncio.create_task(pool.acquire())
    done, _ = await asyncio.wait({fifth}, timeout=0.3)
    assert not done, "a fifth input must wait for room"

    rendered = await asyncio.gather(*(pool.render(s, make_job(), Hooks()) for s in slots))
    assert len({r.info.container_id for r in rendered}) == 2
    assert all(r.info.cold_start and r.info.boot_s >= COLD_START_S for r in rendered)
    assert pool.snapshot().containers == 2
    slots[0].release()
    async with asyncio.timeout(DEADLINE_S):
        extra = await fifth
    assert pool.snapshot() == snapshot
    for slot in [*slots, extra]:
        slot.release()


async def test_idle_containers_stop_after_the_scaledown_window(
    make_pool: Callable[..., BurstPool],
) -> None:
    """A container idle for the scaledown window stops, and the pool is back at zero
    with no renderer process left."""
    pool = make_pool()
    await asyncio.gather(render_once(pool), render_once(pool))
    assert pool.snapshot().containers >= 1

    started = asyncio.get_running_loop().time()
    await until(pool, lambda s: s.containers == 0 and s.stopping == 0)

    assert asyncio.get_running_loop().time() - started >= SCALEDOWN_S * 0.9
    assert container_processes() == []


async def test_stats_report_starting_and_ready_slots_apart(
    make_pool: Callable[..., BurstPool],
) -> None:
    """A booting container's slots are starting, not ready, as Modal's stats read by
    the Modal pool report them; once it serves, they are ready."""
    pool = make_pool(concurrency=2, cold_start_s=1.0, scaledown_window_s=60)
    await pool.set_autoscaler(Autoscale(1, 0, 2, scaledown_window_s=60))
    await until(pool, lambda s: s.starting == 1)
    assert await pool.stats() == PoolStats(containers=1, ready_slots=0, starting_slots=2)
    await until(pool, lambda s: s.ready == 1)
    assert await pool.stats() == PoolStats(containers=1, ready_slots=2, starting_slots=0)


async def test_min_containers_prewarms_and_lowering_it_scales_to_zero(
    make_pool: Callable[..., BurstPool],
) -> None:
    """Raising min_containers starts a container with no input, so the next render is
    warm; lowering it lets the fleet scale back to zero."""
    pool = make_pool(scaledown_window_s=60)

    await pool.set_autoscaler(Autoscale(1, 0, 2, scaledown_window_s=60))
    warm = await until(pool, lambda s: s.ready == 1)
    assert (warm.inputs, warm.cold_starts) == (0, 1)
    assert (await pool.stats()).ready_slots == 1

    rendered = await render_once(pool)
    assert not rendered.info.cold_start

    await pool.set_autoscaler(Autoscale(0, 0, 2, scaledown_window_s=0))
    await until(pool, lambda s: s.containers == 0 and s.stopping == 0)
    assert pool.snapshot().cold_starts == 1


async def test_buffer_containers_keep_an_idle_container_while_inputs_run(
    make_pool: Callable[..., BurstPool],
) -> None:
    """With buffer_containers=1, an input that runs brings up a second, idle container."""
    pool = make_pool(buffer_containers=1)

    slot = await pool.acquire()
    buffered = await until(pool, lambda s: s.ready == 2)
    assert (buffered.inputs, buffered.idle) == (1, 1)
    slot.release()


async def test_container_killed_mid_render_is_retryable_and_replaced(
    make_pool: Callable[..., BurstPool], tmp_path: Path
) -> None:
    """A container killed mid-render fails that render as retryable and leaves the
    pool; the next render gets a fresh container and works."""
    pool = make_pool(max_containers=1)
    slot = await pool.acquire()
    (victim,) = container_processes()

    def kill_once(percent: int) -> None:
        if percent == 0:
            os.kill(victim, signal.SIGKILL)

    job = make_job(seconds=60)
    try:
        with pytest.raises(RenderError) as failed:
            await pool.render(slot, job, Hooks(kill_once))
    finally:
        slot.release()

    assert failed.value.retryable
    await until(pool, lambda s: s.containers == 0 and s.stopping == 0)
    assert not await asyncio.to_thread(lambda: list(tmp_path.glob(f"{job.id}-*")))
    again = await render_once(pool)
    assert again.info.cold_start
    assert victim not in container_processes()


@pytest.mark.parametrize(
    ("program", "failure"),
    [
        ("import sys; sys.exit(3)", "exited with status 3 before it served"),
        ("import time; time.sleep(60)", "did not serve within 1 s"),
    ],
    ids=["exits", "hangs"],
)
async def test_a_container_that_cannot_start_fails_acquire_without_hanging(
    make_pool: Callable[..., BurstPool], program: str, failure: str
) -> None:
    """A container that exits, or never serves within the start deadline, fails the
    acquire (retryable, uncharged) and leaves no process; further acquires fail fast
    while starts back off, and meanwhile the pool says it is unavailable, so the policy
    holds jobs instead of bouncing them off it."""
    pool = make_pool(command=(sys.executable, "-c", program), start_timeout_s=1.0)
    assert pool.available

    async with asyncio.timeout(DEADLINE_S):
        with pytest.raises(ContainerStartFailed, match=failure) as first:
            await pool.acquire()
        assert not pool.available
        with pytest.raises(ContainerStartFailed, match="next try in"):
            await pool.acquire()
        await until(pool, lambda s: s.containers == 0 and s.stopping == 0)

    assert first.value.retryable and not first.value.charge_attempt
    assert container_processes() == []


async def test_close_stops_every_container_and_is_idempotent(
    make_pool: Callable[..., BurstPool],
) -> None:
    """Closing the pool stops every renderer process, even busy ones; a second close is
    harmless and acquiring afterwards fails."""
    pool = make_pool(max_containers=2)
    slots = await asyncio.gather(pool.acquire(), pool.acquire())
    assert len(container_processes()) == 2

    await pool.close()
    await pool.close()

    assert container_processes() == []
    assert pool.snapshot().containers == 0
    with pytest.raises(RenderError, match="closed"):
        await pool.acquire()
    for slot in slots:
        slot.release()


async def test_renderer_exits_when_its_stdin_closes(tmp_path: Path) -> None:
    """A renderer run with --exit-with-stdin serves, then exits 0 once its stdin reaches
    end of file, as it would when the process that started it dies."""
    process = await asyncio.create_subprocess_exec(
        *DEFAULT_COMMAND,
        "--slots",
        "1",
        "--work-dir",
        str(tmp_path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        async with asyncio.timeout(DEADLINE_S):
            ready = (await process.stdout.readline()).decode()
        assert ready.startswith(READY_PREFIX)

        process.stdin.close()
        async with asyncio.timeout(DEADLINE_S):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
