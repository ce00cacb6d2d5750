"""The local burst pool: renderer processes on this machine that behave like Modal
containers, so the whole spill path runs, and can be watched, without Modal. It is the
local stack's default second fleet.

A container is one `renderer serve` process that takes `concurrency` inputs at once.
Like Modal's autoscaler, the pool:

- scales from zero: an input that finds no room on a running container starts one (up
  to `max_containers`) and waits through its cold start (`cold_start_s`, which the
  renderer sleeps as `--boot-delay-s`);
- reports `cold_start` as Modal does, per input: an input that waited for its
  container to boot is cold (with the boot seconds, process start to ready), one that
  found it serving is warm, even as the first input of a pre-warmed container;
- packs inputs onto the busiest container with room, so that the others go idle;
- stops a container idle for `scaledown_window_s`, but keeps `min_containers` up and,
  while any input runs, `buffer_containers` idle ones beyond the busy ones;
- takes new settings at runtime (`set_autoscaler`) and converges to them at once.

One task per container owns its process (start, ready line, exit, stop), and one
autoscaler task starts and stops containers; both wake on events (a release, a boot, an
exit, new settings) or at the next idle deadline, never on a polling timer. Containers
run with `--exit-with-stdin` on a pipe the pool never writes, so they end with the
scheduler even when it is killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import math
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc
from spillway.v1 import renderer_pb2_grpc

from scheduler.policy.model import Autoscale
from scheduler.pools.base import (
    Pool,
    PoolStats,
    Rendered,
    RenderError,
    RenderHooks,
    Slot,
    Superseded,
)
from scheduler.pools.stream import CHANNEL_OPTIONS, stream_render
from scheduler.store.jobs import Job

log = logging.getLogger(__name__)

DEFAULT_COMMAND = (sys.executable, "-m", "renderer", "serve", "--port", "0", "--exit-with-stdin")
"""How a container starts; the pool appends `--slots`, `--boot-delay-s`,
`--grace-seconds` and, where set, `--fps`, `--preset` and `--work-dir`."""
READY_PREFIX = "renderer listening on "
"""The line a container prints on stdout once it serves, followed by its address."""
KILL_MARGIN_S = 2.0
"""A stopping container that outlives its drain grace by this much is killed."""
_RETRY_START_MIN_S = 1.0
_RETRY_START_MAX_S = 30.0

T = TypeVar("T")


class ContainerStartFailed(RenderError):
    """A container exited, or missed its start deadline, before it served; or starts
    keep failing and the pool waits before it tries again. Nothing was rendered, so the
    job may go elsewhere, uncharged."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True, charge_attempt=False)


@dataclass(frozen=True)
class BurstConfig:
    """The local burst fleet. Durations are seconds; the first four are the autoscaler
    settings that `set_autoscaler` later replaces."""

    max_containers: int = 2
    concurrency: int = 1
    """Inputs per container at once (the renderer's `--slots`)."""
    cold_start_s: float = 2.0
    """How long a container boots before it serves (the renderer's `--boot-delay-s`)."""
    scaledown_window_s: float = 60.0
    """How long a container stays up with no input."""
    min_containers: int = 0
    buffer_containers: int = 0
    """While any input runs, idle containers kept up beyond the busy ones."""
    fps: int | None = None
    """Frame rate for requests that leave it 0; None keeps the renderer's default."""
    preset: str | None = None
    """x264 preset; None keeps the renderer's default."""
    render_timeout_s: float = 900.0
    start_timeout_s: float = 60.0
    """A container that does not serve this long after it was started has failed."""
    stop_grace_s: float = 5.0
    """A stopping container may finish in-flight renders this long before it is killed."""
    tmp_dir: Path | None = None
    """Where rendered MP4s land, and the containers' work dir (default: system temp)."""
    log_path: Path | None = None
    """Containers append their stderr here; None shares the scheduler's stderr."""
    command: tuple[str, ...] = DEFAULT_COMMAND

    def __post_init__(self) -> None:
        _check_autoscale(
            self.min_containers,
            self.buffer_containers,
            self.max_containers,
            self.scaledown_window_s,
        )
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        for name in ("cold_start_s", "stop_grace_s"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be 0 or more seconds, got {getattr(self, name)}")
        for name in ("render_timeout_s", "start_timeout_s"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be positive seconds, got {getattr(self, name)}")
        if self.start_timeout_s <= self.cold_start_s:
            raise ValueError(
                f"start_timeout_s ({self.start_timeout_s}) must exceed cold_start_s "
                f"({self.cold_start_s})"
            )
        if self.fps is not None and self.fps < 1:
            raise ValueError(f"fps must be at least 1, got {self.fps}")
        if not self.command:
            raise ValueError("command must not be empty")

    def argv(self) -> tuple[str, ...]:
        """The command line that starts one container."""
        args = [
            *self.command,
            "--slots",
            str(self.concurrency),
            "--boot-delay-s",
            repr(self.cold_start_s),
            "--grace-seconds",
            repr(self.stop_grace_s),
        ]
        if self.fps is not None:
            args += ["--fps", str(self.fps)]
        if self.preset is not None:
            args += ["--preset", self.preset]
        if self.tmp_dir is not None:
            args += ["--work-dir", str(self.tmp_dir)]
        return tuple(args)


def _check_autoscale(minimum: int, buffer: int, maximum: int, scaledown_s: float) -> None:
    if maximum < 0 or minimum < 0 or buffer < 0:
        raise ValueError(
            "min_containers, buffer_containers and max_containers must be 0 or more, got "
            f"{minimum}, {buffer} and {maximum}"
        )
    if minimum > maximum:
        raise ValueError(f"min_containers ({minimum}) exceeds max_containers ({maximum})")
    if not 0 <= scaledown_s < math.inf:
        raise ValueError(f"scaledown_window_s must be 0 or more seconds, got {scaledown_s}")


@dataclass(frozen=True)
class BurstSnapshot:
    """The fleet at one instant, for live displays: `BurstPool.snapshot()` builds it
    from counters, without I/O or awaiting."""

    starting: int
    """Containers booting: started, not serving yet."""
    ready: int
    """Containers serving."""
    idle: int
    """Serving containers with no input (candidates for scale-down)."""
    stopping: int
    """Containers told to stop that have not exited yet."""
    inputs: int
    """Inputs held on containers: rendering, or waiting for their container to boot."""
    max_containers: int
    concurrency: int
    cold_starts: int
    """Containers started since the pool was created."""

    @property
    def containers(self) -> int:
        """Containers up or starting (what `stats()` counts)."""
        return self.starting + self.ready


class _Phase(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    GONE = "gone"


@dataclass(eq=False)
class _Container:
    id: str
    started_at: float
    phase: _Phase = _Phase.STARTING
    boot_s: float = 0.0
    """From start to serving, as the pool saw it."""
    inputs: int = 0
    streams: int = 0
    """Renders streaming from it now: its channel stays open until they end."""
    no_streams: asyncio.Event = field(default_factory=asyncio.Event)
    idle_since: float = 0.0
    address: str = ""
    channel: grpc.aio.Channel | None = None
    stub: renderer_pb2_grpc.RendererStub | None = None
    failure: str = ""
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once booting ended: the container serves, or it failed or was stopped."""
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def live(self) -> bool:
        return self.phase in (_Phase.STARTING, _Phase.READY)


@dataclass(eq=False)
class _BurstSlot(Slot):
    pool: BurstPool
    container: _Container
    cold: bool
    """The input waited for its container to boot."""
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool._release(self.container)


class BurstPool(Pool):
    """Renderer processes on this machine with Modal's scaling behaviour; see the module
    docstring. Create it inside a running event loop (it starts its autoscaler, and
    with `min_containers` its first containers, at once); `close()` stops everything."""

    name = "burst"
    resumable = False
    recallable = True

    def __init__(self, config: BurstConfig | None = None) -> None:
        self._config = config or BurstConfig()
        self._min = self._config.min_containers
        self._buffer = self._config.buffer_containers
        self._max = self._config.max_containers
        self._scaledown_s = self._config.scaledown_window_s
        self._argv = self._config.argv()
        self._tmp_dir = self._config.tmp_dir or Path(tempfile.gettempdir())
        self._containers: list[_Container] = []
        self._ids = itertools.count(1)
        self._started = 0
        self._start_failures = 0
        self._retry_start_at = 0.0
        self._last_failure = ""
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        """Replaced at each change: acquirers wait on the one they saw."""
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._autoscaler = asyncio.create_task(self._autoscale(), name="burst-autoscaler")

    @property
    def config(self) -> BurstConfig:
        return self._config

    @property
    def available(self) -> bool:
        """False while container starts back off after failures and no container
        serves: the policy then holds jobs instead of sending them here, where each
        would bounce straight back."""
        serving = any(c.phase is _Phase.READY for c in self._containers)
        return serving or self._loop.time() >= self._retry_start_at

    # --- the Pool interface ---------------------------------------------------------

    async def acquire(self) -> Slot:
        """Reserves an input on the busiest ready container with room; else on a booting
        one with room; else starts a container, if fewer than `max_containers` are up;
        else waits for a release. Returns once the slot's container serves; raises
        `ContainerStartFailed` if it fails to boot (or starts are backing off), and
        `RenderError` (retryable, uncharged) once the pool is closed."""
        while True:
            self._check_open()
            container = self._pick()
            if container is None and len(self._containers) < self._max:
                if self._loop.time() < self._retry_start_at:
                    raise ContainerStartFailed(
                        f"burst containers fail to start ({self._last_failure}); "
                        f"next try in {self._retry_start_at - self._loop.time():.1f} s"
                    )
                container = self._start_container()
            if container is None:
                await self._changed.wait()
                continue
            container.inputs += 1
            self._notify()
            slot = _BurstSlot(self, container, cold=container.phase is _Phase.STARTING)
            try:
                await container.settled.wait()
            except BaseException:
                slot.release()
                raise
            if container.phase is _Phase.READY:
                return slot
            slot.release()
            self._check_open()
            raise ContainerStartFailed(f"burst container {container.id}: {container.failure}")

    async def render(self, slot: Slot, job: Job, hooks: RenderHooks) -> Rendered:
        """Streams the render from the slot's container, once `hooks.started` has
        recorded the start (`Superseded` if the job was recalled first). A container that
        died before it began gives a retryable, uncharged `RenderError`; one that dies
        meanwhile, a retryable one. `cold_start` says whether this input waited for a
        boot."""
        assert isinstance(slot, _BurstSlot) and slot.pool is self
        container = slot.container
        if container.phase is not _Phase.READY or container.stub is None:
            raise RenderError(
                f"burst container {container.id} is gone ({container.failure or 'stopped'})",
                retryable=True,
                charge_attempt=False,
            )
        if not await hooks.started():
            raise Superseded(job.id)
        container.streams += 1
        container.no_streams.clear()
        try:
            rendered = await stream_render(
                container.stub,
                job,
                hooks,
                address=f"{container.id} at {container.address}",
                timeout_s=self._config.render_timeout_s,
                tmp_dir=self._tmp_dir,
            )
        finally:
            container.streams -= 1
            if not container.streams:
                container.no_streams.set()
        info = rendered.info
        if info.cold_start == slot.cold:
            return rendered
        # The renderer calls its first input cold; Modal calls cold the inputs that
        # waited for a boot: several may share one, and a pre-warmed container has none.
        boot_s = container.boot_s if slot.cold else 0.0
        return replace(rendered, info=replace(info, cold_start=slot.cold, boot_s=boot_s))

    async def stats(self) -> PoolStats:
        """Containers up or starting; ready slots are serving containers x concurrency,
        starting slots booting ones x concurrency."""
        snapshot = self.snapshot()
        return PoolStats(
            containers=snapshot.containers,
            ready_slots=snapshot.ready * snapshot.concurrency,
            starting_slots=snapshot.starting * snapshot.concurrency,
        )

    def snapshot(self) -> BurstSnapshot:
        """The fleet now, for a live display; cheap enough to call on every frame."""
        phases = [c.phase for c in self._containers]
        return BurstSnapshot(
            starting=phases.count(_Phase.STARTING),
            ready=phases.count(_Phase.READY),
            idle=sum(1 for c in self._containers if c.phase is _Phase.READY and not c.inputs),
            stopping=phases.count(_Phase.STOPPING),
            inputs=sum(c.inputs for c in self._containers if c.live),
            max_containers=self._max,
            concurrency=self._config.concurrency,
            cold_starts=self._started,
        )

    async def wait_until(self, predicate: Callable[[BurstSnapshot], bool]) -> BurstSnapshot:
        """Waits until `predicate` holds for the snapshot and returns that snapshot. Every
        change wakes it (no polling); bound it with `asyncio.timeout`."""
        while not predicate(snapshot := self.snapshot()):
            await self._changed.wait()
        return snapshot

    async def set_autoscaler(self, settings: Autoscale) -> None:
        """Takes Modal's autoscaler settings; the fleet converges at once (raising
        `min_containers` starts containers now; lowering `max_containers` stops idle
        ones beyond it). Raises ValueError on settings that make no sense."""
        _check_autoscale(
            settings.min_containers,
            settings.buffer_containers,
            settings.max_containers,
            settings.scaledown_window_s,
        )
        self._min = settings.min_containers
        self._buffer = settings.buffer_containers
        self._max = settings.max_containers
        self._scaledown_s = float(settings.scaledown_window_s)
        self._notify()

    async def close(self) -> None:
        """Stops taking inputs, stops every container (SIGTERM, then SIGKILL after the
        grace) and waits until they have exited. Idempotent; later calls wait for the
        first to finish."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(), name="burst-close")
        await asyncio.shield(self._closing)

    # --- reservations ----------------------------------------------------------------

    def _pick(self) -> _Container | None:
        """The container a new input goes to: the busiest serving one with room, else
        the busiest booting one with room."""
        room = [c for c in self._containers if c.live and c.inputs < self._config.concurrency]
        if not room:
            return None
        return max(room, key=lambda c: (c.phase is _Phase.READY, c.inputs))

    def _release(self, container: _Container) -> None:
        container.inputs -= 1
        if container.inputs == 0:
            container.idle_since = self._loop.time()
        self._notify()

    def _check_open(self) -> None:
        if self._closed:
            raise RenderError("the burst pool is closed", retryable=True, charge_attempt=False)

    def _notify(self) -> None:
        """Something changed: wake the autoscaler and every waiting acquirer."""
        self._wake.set()
        self._changed.set()
        self._changed = asyncio.Event()

    # --- autoscaling -----------------------------------------------------------------

    async def _autoscale(self) -> None:
        """Converges the fleet whenever something changes, and at the next deadline
        (an idle container's scale-down, the end of a start back-off)."""
        while True:
            self._wake.clear()
            deadline = self._converge(self._loop.time())
            if deadline is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await self._wake.wait()

    def _converge(self, now: float) -> float | None:
        """Starts and stops containers towards the target count; returns when it next
        needs to look again with no event, if ever. Containers still stopping count
        against `max_containers` until they have exited."""
        if self._closed:
            return None
        live = [c for c in self._containers if c.live]
        busy = sum(1 for c in live if c.inputs)
        wanted = max(self._min, busy + self._buffer if busy else 0)
        target = min(self._max, wanted)
        deadlines: list[float] = []
        if len(live) < target:
            if now < self._retry_start_at:
                deadlines.append(self._retry_start_at)
            else:
                room = self._max - len(self._containers)
                for _ in range(min(target - len(live), room)):
                    live.append(self._start_container())
        idle = sorted(
            (c for c in live if c.phase is _Phase.READY and not c.inputs),
            key=lambda c: c.idle_since,
        )
        count = len(live)
        for container in idle:
            if count <= target:
                break
            expires = container.idle_since + self._scaledown_s
            if count > self._max or expires <= now:
                self._stop(container)
                count -= 1
            else:
                deadlines.append(expires)
                break
        return min(deadlines, default=None)

    def _start_container(self) -> _Container:
        container = _Container(id=f"burst-{next(self._ids)}", started_at=self._loop.time())
        self._containers.append(container)
        self._started += 1
        container.task = asyncio.create_task(self._run(container), name=container.id)
        self._notify()
        return container

    def _stop(self, container: _Container) -> None:
        if container.live:
            log.info("stopping burst container %s", container.id)
            container.phase = _Phase.STOPPING
            container.stop.set()
            self._notify()

    # --- one container's life ---------------------------------------------------------

    async def _run(self, container: _Container) -> None:
        """Owns one container's process: starts it, waits for its ready line, then for
        its exit or a stop request; however that ends, it stops the process (SIGTERM,
        SIGKILL after the grace) and forgets the container."""
        process: asyncio.subprocess.Process | None = None
        exited: asyncio.Task[None] | None = None
        try:
            address: str | None = None
            try:
                async with asyncio.timeout(self._config.start_timeout_s):
                    process = await self._exec()
                    address = await _unless_set(container.stop, _read_address(process))
            except TimeoutError:
                container.failure = f"did not serve within {self._config.start_timeout_s:g} s"
            except (OSError, _NotReady) as exc:
                container.failure = str(exc)
            if process is None or address is None:
                self._boot_failed(container)
                return
            self._serving(container, address)
            exited = asyncio.create_task(_drain_until_exit(process))
            stopping = asyncio.create_task(container.stop.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if exited.done():
                container.failure = f"exited with status {process.returncode}"
                log.warning("burst container %s %s", container.id, container.failure)
        except Exception as exc:  # a bug of ours, or the OS refusing: never silent
            container.failure = f"{type(exc).__name__}: {exc}"
            log.exception("burst container %s failed", container.id)
        finally:
            if process is not None:
                await self._end(process, exited)
            await self._forget(container)

    def _serving(self, container: _Container, address: str) -> None:
        container.address = address
        container.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        container.stub = renderer_pb2_grpc.RendererStub(container.channel)
        if container.phase is _Phase.STARTING:
            container.phase = _Phase.READY
        container.idle_since = self._loop.time()
        container.boot_s = container.idle_since - container.started_at
        self._start_failures = 0
        log.info("burst container %s serves at %s", container.id, address)
        container.settled.set()
        self._notify()

    def _boot_failed(self, container: _Container) -> None:
        if not container.failure:
            container.failure = "stopped while starting"
        if container.phase is not _Phase.STARTING or self._closed:
            return  # stopped on purpose: not a failure to back off from
        self._start_failures += 1
        backoff = min(_RETRY_START_MIN_S * 2 ** (self._start_failures - 1), _RETRY_START_MAX_S)
        self._retry_start_at = self._loop.time() + backoff
        self._last_failure = f"{container.id} {container.failure}"
        log.warning(
            "burst container %s failed to start: %s; no new start for %.0f s",
            container.id,
            container.failure,
            backoff,
        )

    async def _end(
        self, process: asyncio.subprocess.Process, exited: asyncio.Task[None] | None
    ) -> None:
        """Stops the process: SIGTERM and its stdin closed, then SIGKILL if it outlives
        its drain grace. If this is cancelled, it is killed at once."""
        if exited is None:
            exited = asyncio.create_task(_drain_until_exit(process))
        try:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            if process.stdin is not None:
                process.stdin.close()
            kill_after_s = self._config.stop_grace_s + KILL_MARGIN_S
            done, _ = await asyncio.wait({exited}, timeout=kill_after_s)
            if not done:
                log.warning("burst container pid %d outlived its grace; killing it", process.pid)
                _kill(process)
                await asyncio.wait({exited})
        finally:
            if not exited.done():
                _kill(process)
                exited.cancel()

    async def _forget(self, container: _Container) -> None:
        container.phase = _Phase.GONE
        container.settled.set()
        self._containers.remove(container)
        self._notify()
        if container.channel is not None:
            # Closing a channel cancels its calls locally, which their callers would see
            # as their own cancellation; with the process gone, they end soon anyway
            # (as retryable errors), so wait for them.
            if container.streams:
                await container.no_streams.wait()
            await container.channel.close()
        log.info("burst container %s is gone", container.id)

    async def _exec(self) -> asyncio.subprocess.Process:
        stderr: IO[Any] | None = None
        if self._config.log_path is not None:
            stderr = await asyncio.to_thread(self._config.log_path.open, "ab")
        try:
            return await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                # Its own session: a Ctrl-C at the scheduler's terminal reaches the
                # scheduler, which stops containers in order, not the containers.
                start_new_session=True,
            )
        finally:
            if stderr is not None:
                stderr.close()

    async def _close(self) -> None:
        self._closed = True
        for container in list(self._containers):
            self._stop(container)
        self._notify()
        self._autoscaler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._autoscaler
        tasks = [c.task for c in self._containers if c.task is not None]
        if tasks:
            await asyncio.wait(tasks)


class _NotReady(Exception):
    """The process ended its stdout without a ready line."""


async def _read_address(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    while line := await process.stdout.readline():
        text = line.decode(errors="replace").strip()
        if text.startswith(READY_PREFIX):
            return text[len(READY_PREFIX) :].split()[0]
    await process.wait()
    raise _NotReady(f"exited with status {process.returncode} before it served")


async def _drain_until_exit(process: asyncio.subprocess.Process) -> None:
    """Reads (and drops) the rest of its stdout, so that it never blocks on a full
    pipe, then waits for it to exit."""
    assert process.stdout is not None
    while await process.stdout.read(65536):
        pass
    await process.wait()


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()


async def _unless_set(event: asyncio.Event, work: Coroutine[Any, Any, T]) -> T | None:
    """What `work` returns, or None if `event` is set first (`work` is then cancelled)."""
    task = asyncio.ensure_future(work)
    setting = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, setting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        setting.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    return None if task.cancelled() else task.result()
