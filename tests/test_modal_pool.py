"""The Modal pool against a fake Modal SDK (tests/fake_modal.py) that renders for real
with the CPU renderer, faked only at the SDK's boundary."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import modal.exception
import pytest

from renderer.probe import probe_mp4
from scheduler.jobs import Job, JobSpec, Status, new_job_id
from scheduler.policy.model import Autoscale
from scheduler.pools.base import PoolStats, Rendered, RenderError, Superseded
from scheduler.pools.modal import ModalPool, ModalPoolConfig
from tests.conftest import assert_eventually
from tests.fake_modal import FakeModal

BACKOFF_S = 30.0


@dataclass
class Hooks:
    """RenderHooks that record what the pool reported, and answer as told."""

    fake: FakeModal
    accept_call: bool = True
    accept_progress: bool = True
    recorded: list[str] = field(default_factory=list)
    gets_when_recorded: list[int] = field(default_factory=list)
    percents: list[int] = field(default_factory=list)
    call_recorded: asyncio.Event = field(default_factory=asyncio.Event)

    async def progress(self, percent: int) -> bool:
        self.percents.append(percent)
        return self.accept_progress

    async def remote_call(self, call_id: str) -> bool:
        self.recorded.append(call_id)
        self.gets_when_recorded.append(self.fake.gets)
        self.call_recorded.set()
        return self.accept_call


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[FakeModal]:
    with FakeModal(boot_s=0.05, restore_s=0.02) as fake:
        yield fake


def make_pool(
    fake: FakeModal, tmp_dir: Path, clock: Clock | None = None, **config: Any
) -> ModalPool:
    settings: dict[str, Any] = {
        "tmp_dir": tmp_dir,
        "render_timeout_s": 60.0,
        "poll_interval_s": 0.05,
        "get_retry_min_s": 0.01,
        "get_retry_max_s": 0.05,
        "unavailable_backoff_s": BACKOFF_S,
        "concurrency": 2,
        **config,
    }
    if clock is None:
        return ModalPool(ModalPoolConfig(**settings), sdk=fake)
    return ModalPool(ModalPoolConfig(**settings), sdk=fake, clock=clock)


def make_job(*, call_id: str = "", prompt: str = "a lighthouse at dusk") -> Job:
    return Job(
        id=new_job_id(),
        tenant="tenant-a",
        status=Status.IN_PROGRESS,
        progress=0,
        spec=JobSpec(prompt=prompt, model="cpu", seconds=1, width=64, height=48, priority=0),
        created_ms=0,
        started_ms=0,
        completed_ms=0,
        expires_ms=0,
        pool="modal",
        attempt=1,
        lease=1,
        call_id=call_id,
        error_code="",
        error_message="",
        idempotency_key="",
        trace_id="",
        output=None,
    )


async def render(pool: ModalPool, job: Job, hooks: Hooks) -> Rendered:
    return await pool.render(await pool.acquire(), job, hooks)


async def render_error(pool: ModalPool, job: Job, hooks: Hooks) -> RenderError:
    with pytest.raises(RenderError) as caught:
        await render(pool, job, hooks)
    return caught.value


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def assert_valid_mp4(rendered: Rendered) -> None:
    data = rendered.path.read_bytes()
    assert len(data) == rendered.info.bytes
    assert hashlib.sha256(data).hexdigest() == rendered.info.sha256
    probed = probe_mp4(rendered.path)
    assert (probed.codec, probed.width, probed.height) == ("h264", 64, 48)
    assert probed.frames == rendered.info.frames == 8


async def test_spawn_records_the_call_before_waiting_and_returns_a_valid_mp4(
    fake: FakeModal, tmp_path: Path
) -> None:
    """A new job spawns one call, records its id before any wait, and comes back as a
    decodable MP4 whose metadata describes the cold container that rendered it."""
    pool = make_pool(fake, tmp_path)
    hooks = Hooks(fake)

    rendered = await render(pool, make_job(), hooks)

    assert [c.call_id for c in fake.spawned] == hooks.recorded
    assert hooks.gets_when_recorded == [0]
    assert_valid_mp4(rendered)
    info = rendered.info
    assert info.container_id == fake.spawned[0].container_id
    assert (info.cold_start, info.boot_s, info.restore_s) == (True, 0.05, 0.02)
    assert info.engine == "cpu" and info.duration_s == 1.0 and info.render_s > 0


async def test_a_second_input_on_the_same_container_is_warm(
    fake: FakeModal, tmp_path: Path
) -> None:
    """After a first render has booted a container, the next input reuses it and reports
    no cold start."""
    pool = make_pool(fake, tmp_path)

    first = await render(pool, make_job(), Hooks(fake))
    second = await render(pool, make_job(), Hooks(fake))

    assert second.info.container_id == first.info.container_id
    assert (second.info.cold_start, second.info.boot_s) == (False, 0.0)


async def test_a_new_pool_resumes_a_call_by_id_without_spawning_again(
    fake: FakeModal, tmp_path: Path
) -> None:
    """When the scheduler holding a call stops, a fresh pool given the job's call id
    collects that call's MP4, and Modal never sees a second spawn."""
    fake.hold()
    first = make_pool(fake, tmp_path)
    hooks = Hooks(fake)
    job = make_job()
    running = asyncio.create_task(render(first, job, hooks))
    await hooks.call_recorded.wait()
    running.cancel()  # the replica shuts down mid-wait
    with pytest.raises(asyncio.CancelledError):
        await running
    await first.close()
    assert fake.cancels == []

    fake.release()
    restarted = make_pool(fake, tmp_path)
    rendered = await render(restarted, make_job(call_id=hooks.recorded[0]), Hooks(fake))

    assert len(fake.spawned) == 1
    assert_valid_mp4(rendered)
    assert leftovers(tmp_path) == [rendered.path.name]


async def test_cancel_stops_the_remote_call(fake: FakeModal, tmp_path: Path) -> None:
    """`cancel` stops the job's call at Modal, so whoever still waits on it is told it
    was cancelled (a retryable failure, not a result)."""
    fake.hold()
    pool = make_pool(fake, tmp_path)
    hooks = Hooks(fake)
    job = make_job()
    waiting = asyncio.create_task(render(pool, job, hooks))
    await hooks.call_recorded.wait()

    await pool.cancel(job, hooks.recorded[0])

    with pytest.raises(RenderError) as caught:
        await waiting
    assert fake.calls[hooks.recorded[0]].cancelled
    assert (caught.value.retryable, caught.value.charge_attempt) == (True, True)
    assert leftovers(tmp_path) == []


async def test_cancel_of_an_unknown_call_is_logged_not_raised(
    fake: FakeModal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelling a call Modal does not know ends quietly, with a warning in the log."""
    pool = make_pool(fake, tmp_path)

    await pool.cancel(make_job(), "fc-unknown")

    assert "could not cancel Modal call fc-unknown" in caplog.text


async def test_a_call_whose_job_moved_on_is_cancelled(fake: FakeModal, tmp_path: Path) -> None:
    """When recording the call id says the job moved on, the fresh call is cancelled
    (nobody could adopt it) and the render stops as superseded."""
    fake.hold()
    pool = make_pool(fake, tmp_path)
    hooks = Hooks(fake, accept_call=False)

    with pytest.raises(Superseded):
        await render(pool, make_job(), hooks)
    await pool.close()  # the cancel goes on in the background

    assert fake.cancels == hooks.recorded
    assert fake.calls[hooks.recorded[0]].cancelled


async def test_progress_refused_stops_the_wait_but_not_the_call(
    fake: FakeModal, tmp_path: Path
) -> None:
    """When a progress report says the job moved on (taken over, say), the render stops
    as superseded and leaves the call running for whoever owns the job now."""
    fake.hold()
    pool = make_pool(fake, tmp_path)
    hooks = Hooks(fake, accept_progress=False)

    with pytest.raises(Superseded):
        await render(pool, make_job(), hooks)

    assert fake.cancels == []
    assert not fake.calls[hooks.recorded[0]].future.done()


async def test_a_cancel_during_the_spawn_cancels_the_unrecorded_call(
    fake: FakeModal, tmp_path: Path
) -> None:
    """A render cancelled while its spawn is in flight cancels the call that spawn
    makes, since its id was never recorded for anyone to adopt."""
    fake.hold_spawns()
    pool = make_pool(fake, tmp_path)
    hooks = Hooks(fake)
    running = asyncio.create_task(render(pool, make_job(), hooks))

    async def spawn_in_flight() -> None:
        assert fake.spawns_in_flight == 1

    await assert_eventually(spawn_in_flight)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    fake.release_spawns()
    await pool.close()

    assert hooks.recorded == []
    assert [c.call_id for c in fake.spawned] == fake.cancels


async def test_modal_full_holds_the_job_without_charging(fake: FakeModal, tmp_path: Path) -> None:
    """ResourceExhaustedError at spawn means Modal is full: retry later, uncharged, and
    the pool says it is unavailable for the short full backoff only."""
    fake.fail_spawns(modal.exception.ResourceExhaustedError("pending input limit"))
    clock = Clock()
    pool = make_pool(fake, tmp_path, clock, full_backoff_s=5.0)

    error = await render_error(pool, make_job(), Hooks(fake))

    assert (error.retryable, error.charge_attempt, pool.available) == (True, False, False)
    clock.now += 5.0
    assert pool.available


@pytest.mark.parametrize(
    "failure",
    [
        modal.exception.AuthError("token invalid"),
        modal.exception.ConnectionError("Could not connect to the Modal server."),
        None,  # the app is not deployed: NotFoundError
    ],
    ids=["auth", "connection", "not-deployed"],
)
async def test_an_unreachable_modal_makes_the_pool_unavailable_for_the_backoff(
    fake: FakeModal, tmp_path: Path, failure: Exception | None
) -> None:
    """Auth, connection and not-deployed failures at spawn give the job back uncharged
    and mark the pool unavailable for the backoff period, after which it spawns again."""
    clock = Clock()
    if failure is None:
        fake.deployed = False
    else:
        fake.fail_spawns(failure)
    pool = make_pool(fake, tmp_path, clock)

    error = await render_error(pool, make_job(), Hooks(fake))

    assert (error.retryable, error.charge_attempt, pool.available) == (True, False, False)
    clock.now += BACKOFF_S - 1
    assert not pool.available
    clock.now += 1
    assert pool.available
    fake.deployed = True
    assert_valid_mp4(await render(pool, make_job(), Hooks(fake)))


async def test_another_spawn_refusal_is_charged(fake: FakeModal, tmp_path: Path) -> None:
    """A spawn Modal rejects for another reason (an invalid request) is retryable and
    charged, so a job that can never spawn runs out of attempts."""
    fake.fail_spawns(modal.exception.InvalidError("bad input"))
    pool = make_pool(fake, tmp_path)

    error = await render_error(pool, make_job(), Hooks(fake))

    assert (error.retryable, error.charge_attempt, pool.available) == (True, True, True)


@pytest.mark.parametrize("fault", ["timeout", "crash"])
async def test_a_timed_out_or_crashed_input_is_retried_and_charged(
    fake: FakeModal, tmp_path: Path, fault: Any
) -> None:
    """FunctionTimeoutError or a container crash fails the attempt, retryable on a fresh
    container and charged, with no file left behind."""
    fake.fail_calls(1, fault)
    pool = make_pool(fake, tmp_path)

    error = await render_error(pool, make_job(), Hooks(fake))

    assert (error.retryable, error.charge_attempt) == (True, True)
    assert leftovers(tmp_path) == []


async def test_an_expired_result_is_retried(fake: FakeModal, tmp_path: Path) -> None:
    """A call whose result Modal no longer keeps gives the job back, retryable."""
    fake.hold()
    pool = make_pool(fake, tmp_path)
    hooks = Hooks(fake)
    waiting = asyncio.create_task(render(pool, make_job(), hooks))
    await hooks.call_recorded.wait()
    fake.expire(hooks.recorded[0])
    fake.release()

    with pytest.raises(RenderError) as caught:
        await waiting

    assert (caught.value.retryable, caught.value.charge_attempt) == (True, True)
    assert "expired" in str(caught.value)


async def test_resuming_an_unknown_call_is_retried(fake: FakeModal, tmp_path: Path) -> None:
    """Resuming a call id Modal does not know fails the attempt, retryable, without
    spawning in its place."""
    pool = make_pool(fake, tmp_path)

    error = await render_error(pool, make_job(call_id="fc-gone"), Hooks(fake))

    assert (error.retryable, error.charge_attempt, fake.spawned) == (True, True, [])


async def test_a_call_cancelled_elsewhere_is_retried(fake: FakeModal, tmp_path: Path) -> None:
    """A call cancelled by someone else (InputCancellation) gives the job back,
    retryable."""
    fake.hold()
    pool = make_pool(fake, tmp_path)
    hooks = Hooks(fake)
    waiting = asyncio.create_task(render(pool, make_job(), hooks))
    await hooks.call_recorded.wait()
    await fake.FunctionCall.from_id(hooks.recorded[0]).cancel.aio()

    with pytest.raises(RenderError) as caught:
        await waiting

    assert (caught.value.retryable, caught.value.charge_attempt) == (True, True)


async def test_invalid_input_fails_for_good_with_the_renderers_message(
    fake: FakeModal, tmp_path: Path
) -> None:
    """The renderer's own InvalidRenderRequest, raised remotely, fails the job without
    retry and carries the renderer's message."""
    pool = make_pool(fake, tmp_path)

    error = await render_error(pool, make_job(prompt="   "), Hooks(fake))

    assert not error.retryable
    assert str(error) == "invalid render request: prompt must not be empty"


async def test_transport_trouble_while_waiting_keeps_waiting_on_the_same_call(
    fake: FakeModal, tmp_path: Path
) -> None:
    """Connection, service and client-timeout errors while waiting are waited out on
    the same call: the MP4 still arrives, from the one and only spawn."""
    fake.fail_gets(
        modal.exception.ConnectionError("Could not connect to the Modal server."),
        modal.exception.ServiceError("UNAVAILABLE"),
        modal.exception.TimeoutError("deadline exceeded"),
    )
    pool = make_pool(fake, tmp_path)

    rendered = await render(pool, make_job(), Hooks(fake))

    assert_valid_mp4(rendered)
    assert len(fake.spawned) == 1 and fake.gets >= 4


async def test_a_wait_that_hangs_is_abandoned_and_the_same_call_waited_on_again(
    fake: FakeModal, tmp_path: Path
) -> None:
    """A wait that never answers (a hung connection) is given up after its window plus
    the grace, and the MP4 then arrives from the same, single call."""
    fake.stall_gets(1)
    pool = make_pool(fake, tmp_path, get_grace_s=0.05)

    rendered = await render(pool, make_job(), Hooks(fake))

    assert_valid_mp4(rendered)
    assert (len(fake.spawned), fake.gets) == (1, 2)


async def test_a_render_past_the_timeout_is_cancelled_and_retried(
    fake: FakeModal, tmp_path: Path
) -> None:
    """A call with no result within the render timeout is cancelled at Modal and the
    attempt given back, retryable, after coarse progress reports along the way."""
    fake.hold()
    pool = make_pool(fake, tmp_path, render_timeout_s=0.3, expected_render_s=0.2)
    hooks = Hooks(fake)

    error = await render_error(pool, make_job(), hooks)
    await pool.close()  # the cancel goes on in the background

    assert (error.retryable, error.charge_attempt) == (True, True)
    assert fake.cancels == hooks.recorded
    assert fake.calls[hooks.recorded[0]].cancelled
    assert hooks.percents and hooks.percents == sorted(hooks.percents)
    assert max(hooks.percents) <= 90


async def test_corrupted_bytes_are_detected(fake: FakeModal, tmp_path: Path) -> None:
    """An MP4 whose bytes differ from its metadata's sha256 is refused, retryable, and
    leaves no file."""
    fake.corrupt_calls(1)
    pool = make_pool(fake, tmp_path)

    error = await render_error(pool, make_job(), Hooks(fake))

    assert (error.retryable, "corrupted" in str(error)) == (True, True)
    assert leftovers(tmp_path) == []


async def test_a_render_cancelled_while_waiting_leaves_the_call_and_no_file(
    fake: FakeModal, tmp_path: Path
) -> None:
    """Cancelling a render mid-wait propagates the cancel, leaves the call running for
    another replica, and writes no file."""
    fake.hold()
    pool = make_pool(fake, tmp_path)
    hooks = Hooks(fake)
    waiting = asyncio.create_task(render(pool, make_job(), hooks))
    await hooks.call_recorded.wait()

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    assert fake.cancels == [] and not fake.calls[hooks.recorded[0]].cancelled
    assert leftovers(tmp_path) == []


async def test_set_autoscaler_sends_the_settings(fake: FakeModal, tmp_path: Path) -> None:
    """The policy's autoscaler settings reach Modal's update_autoscaler as they are."""
    pool = make_pool(fake, tmp_path)

    await pool.set_autoscaler(
        Autoscale(min_containers=2, buffer_containers=1, max_containers=8, scaledown_window_s=300)
    )

    assert fake.autoscaler_updates == [
        {"min_containers": 2, "max_containers": 8, "buffer_containers": 1, "scaledown_window": 300}
    ]


async def test_set_autoscaler_never_sends_an_uncapped_fleet(
    fake: FakeModal, tmp_path: Path
) -> None:
    """Settings with max_containers 0 (which Modal reads as no limit) are not sent."""
    pool = make_pool(fake, tmp_path)

    await pool.set_autoscaler(
        Autoscale(min_containers=0, buffer_containers=0, max_containers=0, scaledown_window_s=60)
    )

    assert fake.autoscaler_updates == []


async def test_set_autoscaler_on_an_undeployed_app_is_logged(
    fake: FakeModal, tmp_path: Path
) -> None:
    """An autoscaler update that finds no app does not raise, and marks the pool
    unavailable."""
    fake.deployed = False
    pool = make_pool(fake, tmp_path)

    await pool.set_autoscaler(
        Autoscale(min_containers=1, buffer_containers=0, max_containers=4, scaledown_window_s=60)
    )

    assert not pool.available


async def test_stats_are_cached_for_the_ttl(fake: FakeModal, tmp_path: Path) -> None:
    """Stats answer from cache within the TTL; past it they answer the last known at
    once and refresh in the background, keeping the last known when Modal fails."""
    clock = Clock()
    pool = make_pool(fake, tmp_path, clock, stats_ttl_s=5.0, concurrency=2)
    await pool.set_autoscaler(
        Autoscale(min_containers=3, buffer_containers=0, max_containers=8, scaledown_window_s=60)
    )

    assert await pool.refresh_stats() == PoolStats(containers=3, ready_slots=6)
    clock.now += 4.9
    assert await pool.stats() == PoolStats(containers=3, ready_slots=6)
    assert fake.stats_requests == 1

    fake.scale_to_zero()
    clock.now += 0.1
    assert await pool.stats() == PoolStats(containers=3, ready_slots=6)

    async def refreshed() -> None:
        assert await pool.stats() == PoolStats(containers=0, ready_slots=0)

    await assert_eventually(refreshed)
    assert fake.stats_requests == 2

    fake.fail_stats(modal.exception.ServiceError("UNAVAILABLE"))
    clock.now += 5.0
    assert await pool.refresh_stats() == PoolStats(containers=0, ready_slots=0)
    assert fake.stats_requests == 3
    await pool.close()


def test_config_rejects_bad_values_naming_the_field() -> None:
    """A bad setting stops construction with a message naming the field and value."""
    with pytest.raises(ValueError, match=r"render_timeout_s must be > 0, got 0"):
        ModalPoolConfig(render_timeout_s=0)
    with pytest.raises(ValueError, match=r"concurrency must be >= 1, got 0"):
        ModalPoolConfig(concurrency=0)
