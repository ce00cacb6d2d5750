"""The Modal pool against a fake Modal SDK (tests/fake_modal.py) that renders for real
with the CPU renderer, faked only at the SDK's boundary. Tests of the fake's own
behaviour name the modal 1.6.4 source they mirror; beside each, the pool's answer."""

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
from renderer.remote import RemoteRequest, RemoteResult
from scheduler.config import ConfigError, SchedulerConfig
from scheduler.policy.model import Autoscale
from scheduler.pools.base import PoolStats, Rendered, RenderError, Superseded
from scheduler.pools.modal import ModalPool, ModalPoolConfig
from scheduler.store.jobs import Job, JobSpec, Status, new_job_id
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

    async def started(self) -> bool:
        return True


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[FakeModal]:
    with FakeModal(boot_s=0.05, restore_s=0.02, concurrency=2) as fake:
        yield fake


def cancelled(fake: FakeModal) -> list[str]:
    """The ids of the calls cancelled, in order."""
    return [call_id for call_id, _ in fake.cancels]


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
        placement="modal_faster",
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
    assert cancelled(fake) == []

    fake.release()
    restarted = make_pool(fake, tmp_path)
    rendered = await render(restarted, make_job(call_id=hooks.recorded[0]), Hooks(fake))

    assert len(fake.spawned) == 1
    assert_valid_mp4(rendered)
    assert leftovers(tmp_path) == [rendered.path.name]


async def test_cancel_stops_the_remote_call(fake: FakeModal, tmp_path: Path) -> None:
    """`cancel` stops the job's call at Modal, so whoever still waits on it gets the
    RemoteError Modal reports for a cancelled input (a retryable failure, not a
    result)."""
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

    assert cancelled(fake) == hooks.recorded
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

    assert cancelled(fake) == []
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
    assert [c.call_id for c in fake.spawned] == cancelled(fake)


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
    """A call cancelled by someone else (a RemoteError to the waiter, like a crash) gives
    the job back, retryable."""
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
    """The renderer's own InvalidRenderRequest, raised remotely (a bad request, or a
    prompt SGLang refuses with a 4xx), fails the job without retry and without charging
    an attempt, and carries the renderer's message."""
    pool = make_pool(fake, tmp_path)

    error = await render_error(pool, make_job(prompt="   "), Hooks(fake))

    assert (error.retryable, error.charge_attempt) == (False, False)
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
    assert cancelled(fake) == hooks.recorded
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

    assert cancelled(fake) == [] and not fake.calls[hooks.recorded[0]].cancelled
    assert leftovers(tmp_path) == []


async def test_set_autoscaler_uses_the_current_api(fake: FakeModal, tmp_path: Path) -> None:
    """The policy's autoscaler settings reach Modal through `Function.autoscaler.update`
    (modal 1.6.4, `_functions.py`, `_FunctionAutoscalerManager.update`), every field
    given, so that none keeps what a deploy reset it to."""
    pool = make_pool(fake, tmp_path)

    await pool.set_autoscaler(
        Autoscale(min_containers=2, buffer_containers=1, max_containers=8, scaledown_window_s=300)
    )

    assert fake.autoscaler_updates == [
        {
            "api": "autoscaler.update",
            "min_containers": 2,
            "max_containers": 8,
            "buffer_containers": 1,
            "scaledown_window": 300,
        }
    ]


async def test_set_autoscaler_falls_back_to_the_deprecated_api(tmp_path: Path) -> None:
    """On an SDK without `Function.autoscaler`, the settings go through the deprecated
    `Obj.update_autoscaler`, which warns as modal 1.6.4's does (`_functions.py`,
    `_Function.update_autoscaler`, `deprecation_warning`)."""
    with FakeModal(autoscaler_api="deprecated") as fake:
        pool = make_pool(fake, tmp_path)

        with pytest.warns(modal.exception.DeprecationError, match="autoscaler.update"):
            await pool.set_autoscaler(
                Autoscale(
                    min_containers=1, buffer_containers=0, max_containers=4, scaledown_window_s=60
                )
            )

    assert [u["api"] for u in fake.autoscaler_updates] == ["update_autoscaler"]
    assert fake.max_containers == 4 and fake.min_containers == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"scaledown_window": 1}, "`scaledown_window` must be between 2 and 3600"),
        ({"scaledown_window": 3601}, "`scaledown_window` must be between 2 and 3600"),
        # -1 is the SDK's "leave as it is", so -2: a -1 would be silently ignored.
        ({"min_containers": -2}, "`min_containers` must be a nonnegative integer"),
        ({"buffer_containers": -2}, "`buffer_containers` must be a nonnegative integer"),
        ({"max_containers": 0}, "`max_containers` must be a postive integer"),
    ],
)
async def test_the_fake_validates_autoscaler_ranges_as_modal_does(
    fake: FakeModal, settings: dict[str, int], message: str
) -> None:
    """The fake refuses what `_FunctionAutoscalerManager.update` (modal 1.6.4,
    `_functions.py`) refuses, with its InvalidError messages, and applies nothing."""
    with pytest.raises(modal.exception.InvalidError, match=message):
        await renderer(fake).render.autoscaler.update.aio(**settings)

    assert fake.autoscaler_updates == []


@pytest.mark.parametrize(
    "settings",
    [
        Autoscale(min_containers=0, buffer_containers=0, max_containers=0, scaledown_window_s=60),
        Autoscale(min_containers=0, buffer_containers=0, max_containers=4, scaledown_window_s=1),
        Autoscale(min_containers=0, buffer_containers=0, max_containers=4, scaledown_window_s=0),
    ],
    ids=["uncapped", "scaledown-1", "scaledown-0"],
)
async def test_set_autoscaler_never_sends_what_modal_refuses(
    fake: FakeModal, tmp_path: Path, settings: Autoscale, caplog: pytest.LogCaptureFixture
) -> None:
    """Settings Modal would refuse (a scaledown window outside 2-3600 s) or read as "no
    limit" (max_containers 0) are logged as an error and not sent."""
    pool = make_pool(fake, tmp_path)

    await pool.set_autoscaler(settings)

    assert fake.autoscaler_updates == []
    assert "not sending Modal autoscaler settings" in caplog.text
    assert pool.available


@pytest.mark.parametrize("scaledown", ["0", "1", "3601"])
def test_a_scaledown_modal_refuses_stops_startup(scaledown: str) -> None:
    """With the Modal pool, a SPILLWAY_SPILL_SCALEDOWN_S outside what Modal accepts stops
    the scheduler at startup with the variable and value named, instead of failing every
    autoscaler update; the burst pool keeps its own range."""
    env = {"SPILLWAY_API_KEYS": "sk-test-key=acme", "SPILLWAY_SPILL_SCALEDOWN_S": scaledown}

    with pytest.raises(ConfigError, match=rf"SPILLWAY_SPILL_SCALEDOWN_S='{scaledown}'.*2 to 3600"):
        SchedulerConfig.from_env({**env, "SPILLWAY_SPILL_POOL": "modal"})
    assert SchedulerConfig.from_env({**env, "SPILLWAY_SPILL_POOL": "burst"}).spill.kind == "burst"


def test_the_modal_render_timeout_is_its_own_and_sized_for_a_first_boot() -> None:
    """The Modal pool waits SPILLWAY_MODAL_RENDER_TIMEOUT_S, by default an hour (a start
    and a render), not the in-house render timeout; it looks the class up in
    SPILLWAY_MODAL_ENVIRONMENT, `prod` by default."""
    env = {"SPILLWAY_API_KEYS": "sk-test-key=acme", "SPILLWAY_SPILL_POOL": "modal"}

    default = SchedulerConfig.from_env(env)
    chosen = SchedulerConfig.from_env(
        {
            **env,
            "SPILLWAY_MODAL_RENDER_TIMEOUT_S": "5400",
            "SPILLWAY_MODAL_ENVIRONMENT": "dev",
        }
    )

    assert (default.spill.modal_render_timeout_s, default.render_timeout_s) == (3600, 900)
    assert (chosen.spill.modal_render_timeout_s, chosen.spill.modal_environment) == (5400, "dev")
    assert default.spill.modal_environment == "prod"
    with pytest.raises(ConfigError, match="SPILLWAY_MODAL_ENVIRONMENT='a b'"):
        SchedulerConfig.from_env({**env, "SPILLWAY_MODAL_ENVIRONMENT": "a b"})


async def test_the_class_is_looked_up_in_the_configured_environment(tmp_path: Path) -> None:
    """The pool looks the class up in its Modal environment: the app deployed in `dev`
    renders for a pool configured for `dev`, and a pool configured for `prod` finds no
    app there and stops spilling for the backoff."""
    with FakeModal(environment="dev") as fake:
        dev = make_pool(fake, tmp_path, environment="dev")
        prod = make_pool(fake, tmp_path, environment="prod")

        assert_valid_mp4(await render(dev, make_job(), Hooks(fake)))
        error = await render_error(prod, make_job(), Hooks(fake))

    assert "'prod' environment" in str(error) and not prod.available
    assert dev.available


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

    async def booted() -> None:
        assert await pool.refresh_stats() == PoolStats(containers=3, ready_slots=6)

    await assert_eventually(booted)
    asked = fake.stats_requests
    clock.now += 4.9
    assert await pool.stats() == PoolStats(containers=3, ready_slots=6)
    assert fake.stats_requests == asked

    await pool.set_autoscaler(
        Autoscale(min_containers=0, buffer_containers=0, max_containers=8, scaledown_window_s=60)
    )
    fake.scale_to_zero()
    clock.now += 0.1
    assert await pool.stats() == PoolStats(containers=3, ready_slots=6)

    async def refreshed() -> None:
        assert await pool.stats() == PoolStats(containers=0, ready_slots=0)

    await assert_eventually(refreshed)
    assert fake.stats_requests == asked + 1

    fake.fail_stats(modal.exception.ServiceError("UNAVAILABLE"))
    clock.now += 5.0
    assert await pool.refresh_stats() == PoolStats(containers=0, ready_slots=0)
    assert fake.stats_requests == asked + 2
    await pool.close()


# The fake behaves as Modal does, and the pool copes


def spawn_request(prompt: str = "a lighthouse at dusk") -> dict[str, Any]:
    return RemoteRequest(
        job_id=new_job_id(), prompt=prompt, model="cpu", seconds=1, width=64, height=48
    ).to_dict()


def renderer(fake: FakeModal) -> Any:
    """What the pool gets from `modal.Cls.from_name(...)()`."""
    return fake.Cls.from_name("spillway-renderer", "Renderer")()


async def spawn(fake: FakeModal, prompt: str = "a lighthouse at dusk") -> Any:
    return await renderer(fake).render.spawn.aio(spawn_request(prompt))


async def test_get_on_a_cancelled_call_raises_remote_error(fake: FakeModal) -> None:
    """Waiting on a cancelled call raises modal.exception.RemoteError, not
    InputCancellation: the container reports a cancelled input as
    GENERIC_STATUS_TERMINATED without data (modal 1.6.4,
    `_runtime/container_io_manager.py`, `output_items_cancellation`), which
    `_utils/function_utils.py`, `_process_result`, raises as RemoteError."""
    fake.hold()
    call = await spawn(fake)
    await call.cancel.aio()

    with pytest.raises(modal.exception.RemoteError):
        await call.get.aio(timeout=5)


async def test_a_finished_call_keeps_its_result_after_cancel(
    fake: FakeModal, tmp_path: Path
) -> None:
    """Cancelling a call that has finished changes nothing: `get` still returns its
    result (modal 1.6.4, `_functions.py`, `_FunctionCall.cancel` cancels inputs, and a
    finished one has no input left to cancel). So a job cancelled just as its render
    finished can still be resumed by id by the pool."""
    call = await spawn(fake)
    first = RemoteResult.from_dict(await call.get.aio(timeout=30))
    pool = make_pool(fake, tmp_path)

    await pool.cancel(make_job(), call.object_id)
    rendered = await render(pool, make_job(call_id=call.object_id), Hooks(fake))

    assert rendered.info.sha256 == first.metadata.sha256
    assert cancelled(fake) == [call.object_id]


async def test_inputs_past_max_containers_wait_in_a_pending_queue(tmp_path: Path) -> None:
    """Past `max_containers`, inputs are not refused but wait for a slot, counted in
    `backlog`; they run as slots free, on the containers already up (modal 1.6.4
    `_functions.py`, `_Function.get_current_stats`; `max_containers` is the cap
    `_App.cls` documents). The pool reads no ready slot free while inputs wait."""
    with FakeModal(max_containers=1, concurrency=1) as fake:
        pool = make_pool(fake, tmp_path, concurrency=1)
        fake.hold()
        first, second = await spawn(fake, "first"), await spawn(fake, "second")

        async def one_runs_one_waits() -> None:
            stats = await renderer(fake).render.get_current_stats.aio()
            assert (stats.num_total_runners, stats.num_running_inputs) == (1, 1)
            assert stats.backlog == 1

        await assert_eventually(one_runs_one_waits)
        assert await pool.refresh_stats() == PoolStats(
            containers=1, ready_slots=1, starting_slots=0
        )
        fake.release()
        results = [RemoteResult.from_dict(await c.get.aio(timeout=30)) for c in (first, second)]

    assert {r.metadata.container_id for r in results} == set(fake.containers())
    assert [r.metadata.cold_start for r in results] == [True, False]


async def test_stats_count_booting_and_buffer_containers_but_not_as_ready(
    tmp_path: Path,
) -> None:
    """Modal counts booting and buffer containers in `num_total_runners` (modal 1.6.4,
    `_functions.py`, `_Function.get_current_stats`: `num_total_tasks`): while the first
    input waits for its container's boot beside a buffer container, the pool reports
    two containers, their slots starting and none ready; once both have booted, their
    slots are ready."""
    with FakeModal(buffer_containers=1, boot_s=0.3, concurrency=2) as fake:
        pool = make_pool(fake, tmp_path, concurrency=2)
        fake.hold()
        await spawn(fake)

        async def booting() -> None:
            assert await pool.refresh_stats() == PoolStats(
                containers=2, ready_slots=0, starting_slots=4
            )

        async def booted() -> None:
            assert await pool.refresh_stats() == PoolStats(
                containers=2, ready_slots=4, starting_slots=0
            )

        await assert_eventually(booting)
        await assert_eventually(booted)
        fake.release()


async def test_a_connection_failure_surfaces_late_and_the_pool_does_not_wait_for_it(
    tmp_path: Path,
) -> None:
    """Modal's client raises ConnectionError only after its retries (about a minute;
    modal 1.6.4 `_utils/grpc_utils.py`, `retry_transient_errors`), which the fake delays
    by `connection_delay_s`. The pool gives up on a spawn after `call_timeout_s`,
    uncharged, and stops spilling at once, while the spawn is still in flight."""
    with FakeModal(outage=True, connection_delay_s=0.5) as fake:
        pool = make_pool(fake, tmp_path, call_timeout_s=0.1)

        error = await render_error(pool, make_job(), Hooks(fake))

        assert (error.retryable, error.charge_attempt) == (True, False)
        assert "did not answer a spawn within 0.1 s" in str(error)
        assert not pool.available and fake.spawns_in_flight == 1
        await pool.close()


async def test_an_outage_seen_while_waiting_makes_the_pool_unavailable(
    fake: FakeModal, tmp_path: Path
) -> None:
    """When Modal stops answering while a render is waited on, the wait that hangs past
    its window makes the pool unavailable, so the policy stops spilling; once Modal is
    back, the MP4 arrives from the same, single call."""
    fake.hold()
    fake.connection_delay_s = 30.0
    pool = make_pool(fake, tmp_path, poll_interval_s=0.05, get_grace_s=0.05)
    hooks = Hooks(fake)
    waiting = asyncio.create_task(render(pool, make_job(), hooks))
    await hooks.call_recorded.wait()
    fake.outage = True

    async def unavailable() -> None:
        assert not pool.available

    await assert_eventually(unavailable)
    fake.outage = False
    fake.release()

    assert_valid_mp4(await waiting)
    assert len(fake.spawned) == 1


async def test_terminating_a_container_reschedules_its_other_inputs(fake: FakeModal) -> None:
    """`cancel(terminate_containers=True)` stops the container too, and Modal reruns the
    other inputs it was running elsewhere (modal 1.6.4, `_functions.py`,
    `_FunctionCall.cancel`): the other input is rendered twice."""
    fake.hold()
    doomed, other = await spawn(fake, "doomed"), await spawn(fake, "other")

    async def both_running() -> None:
        assert all(fake.calls[c.object_id].state == "running" for c in (doomed, other))

    await assert_eventually(both_running)
    first_container = fake.calls[other.object_id].container_id
    await doomed.cancel.aio(terminate_containers=True)
    fake.release()
    result = RemoteResult.from_dict(await other.get.aio(timeout=30))

    assert fake.calls[other.object_id].runs == 2
    assert result.metadata.container_id != first_container


@pytest.mark.parametrize(("concurrency", "terminates"), [(1, True), (2, False)])
async def test_cancel_terminates_a_container_only_when_it_runs_one_input(
    tmp_path: Path, concurrency: int, terminates: bool
) -> None:
    """With one input a container, a cancel also terminates the container, so that a
    render stuck in its engine stops holding the GPU; with more, it never does, and the
    container's other input finishes where it runs, rendered once."""
    with FakeModal(concurrency=concurrency) as fake:
        pool = make_pool(fake, tmp_path, concurrency=concurrency)
        fake.hold()
        hooks = Hooks(fake)
        job = make_job()
        waiting = asyncio.create_task(render(pool, job, hooks))
        await hooks.call_recorded.wait()
        neighbour = await spawn(fake, "neighbour")

        await pool.cancel(job, hooks.recorded[0])
        with pytest.raises(RenderError):
            await waiting
        fake.release()
        await neighbour.get.aio(timeout=30)

    assert fake.cancels == [(hooks.recorded[0], terminates)]
    assert fake.calls[neighbour.object_id].runs == 1


def test_config_rejects_bad_values_naming_the_field() -> None:
    """A bad setting stops construction with a message naming the field and value."""
    with pytest.raises(ValueError, match=r"render_timeout_s must be > 0, got 0"):
        ModalPoolConfig(render_timeout_s=0)
    with pytest.raises(ValueError, match=r"concurrency must be >= 1, got 0"):
        ModalPoolConfig(concurrency=0)


async def test_a_recall_that_closes_the_gate_first_means_the_input_does_no_work(
    tmp_path: Path,
) -> None:
    """While its container boots, `claim_recall` writes the job's start gate first: the
    booted container refuses the input at once, rendering nothing, and a pool still
    waiting on the call gives the job back uncharged."""
    with FakeModal(boot_s=0.5) as fake:
        pool = make_pool(fake, tmp_path)
        hooks = Hooks(fake)
        job = make_job()
        waiting = asyncio.create_task(render(pool, job, hooks))
        await hooks.call_recorded.wait()

        assert await pool.claim_recall(job)
        with pytest.raises(RenderError) as caught:
            await waiting

    assert caught.value.retryable and not caught.value.charge_attempt
    (call,) = fake.spawned
    assert (call.runs, call.renders) == (1, 0)
    assert fake.dicts["spillway-starts"].entries == {f"{job.id}:{job.lease}": "recalled"}


async def test_a_render_that_opened_the_gate_first_is_not_recalled(
    fake: FakeModal, tmp_path: Path
) -> None:
    """Once the container has written the start gate, `claim_recall` refuses, and the
    render goes on to a valid MP4."""
    fake.hold()
    pool = make_pool(fake, tmp_path)
    job = make_job()
    waiting = asyncio.create_task(render(pool, job, Hooks(fake)))
    key = f"{job.id}:{job.lease}"

    gates = fake.Dict.from_name("spillway-starts")

    async def started() -> None:
        assert gates.entries == {key: "started"}

    await assert_eventually(started, within=10, interval=0.01)
    assert not await pool.claim_recall(job)
    fake.release()

    assert_valid_mp4(await waiting)
    assert gates.puts[-1] == (key, "recalled", False)


@pytest.mark.parametrize("trouble", ["error", "hang"])
async def test_a_gate_that_fails_or_hangs_means_no_recall(tmp_path: Path, trouble: str) -> None:
    """A start gate write that raises, or that does not answer within `gate_timeout_s`,
    refuses the recall in bounded time, and counts as Modal unreachable: the input then
    opens the gate and renders."""
    with FakeModal(boot_s=0.3) as fake:
        pool = make_pool(fake, tmp_path, gate_timeout_s=0.2)
        hooks = Hooks(fake)
        job = make_job()
        waiting = asyncio.create_task(render(pool, job, hooks))
        await hooks.call_recorded.wait()
        if trouble == "error":
            fake.fail_gate(modal.exception.InternalError("Dict update failed"))
        else:
            fake.stall_gate()

        async with asyncio.timeout(1):
            assert not await pool.claim_recall(job)
        rendered = await waiting

    assert_valid_mp4(rendered)
    assert fake.dicts["spillway-starts"].entries == {f"{job.id}:{job.lease}": "started"}
    assert not pool.available  # as after any call Modal failed to answer


async def test_an_adopted_call_is_never_recalled(fake: FakeModal, tmp_path: Path) -> None:
    """A call resumed by id was spawned under an earlier lease, whose gate this pool
    does not hold: `claim_recall` refuses without asking Modal."""
    pool = make_pool(fake, tmp_path)

    assert not await pool.claim_recall(make_job(call_id="fc-adopted"))
    assert fake.dicts == {}


def test_a_request_without_a_gate_still_parses() -> None:
    """A request from a scheduler before the start gate parses, with no gate."""
    old = RemoteRequest(job_id="j", prompt="p", model="m", seconds=1, width=8, height=8).to_dict()
    del old["start_dict"], old["start_key"]
    parsed = RemoteRequest.from_dict(old)
    assert (parsed.start_dict, parsed.start_key) == ("", "")
