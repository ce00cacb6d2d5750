"""A stand-in for the `modal` SDK, faked exactly where `scheduler.pools.modal` meets it:
`Cls.from_name(app, cls)()` with `.render.spawn.aio`, `.render.get_current_stats.aio`
and `.update_autoscaler.aio`; `FunctionCall.from_id(id)` with `.get.aio(timeout=)`,
`.cancel.aio()` and `.object_id`; and `exception`, the real `modal.exception` module.

"Remote" renders really run the project's CPU renderer in worker threads and return
`RemoteResult.to_dict()`, as the Modal app does. Calls live in the fake's own registry,
so a new pool (a restarted scheduler) resumes one by id; being thread-based, the fake
serves any event loop. Containers are simulated: the first input on a new one is cold
(it waits `boot_s + restore_s` and reports them), later ones are warm.

Faults are scripted, each for the next spawns or waits: `fail_spawns`, `fail_calls`
(a FunctionTimeoutError or a crash), `corrupt_calls`, `fail_gets`, `stall_gets` (a
hung connection), `fail_stats`, `expire`, `hold`/`release` (slow renders),
`hold_spawns`/`release_spawns` (a spawn in flight), `deployed = False` (NotFoundError).
What the pool did is recorded: `spawned`, `cancels`, `autoscaler_updates`, `gets`,
`stats_requests`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import modal.exception
from modal.types import FunctionCurrentStats
from spillway.v1 import renderer_pb2

from renderer.cpu import CpuFrameDecoder, CpuTokenEngine
from renderer.pipeline import render_to_file
from renderer.remote import RemoteMetadata, RemoteRequest, RemoteResult
from renderer.validation import render_spec

if TYPE_CHECKING:
    from scheduler.pools.modal import ModalSdk

Fault = Literal["timeout", "crash"]


@dataclass
class FakeCall:
    """One spawned input, as Modal's registry holds it."""

    call_id: str
    request: dict[str, Any]
    future: concurrent.futures.Future[dict[str, Any]]
    go: threading.Event
    """Set when the render may start: at once, unless renders are held."""
    cancel: threading.Event
    fault: Fault | None = None
    corrupt: bool = False
    cancelled: bool = False
    expired: bool = False
    container_id: str = ""


@dataclass
class _Container:
    id: str
    busy: int = 0


@dataclass
class FakeModal:
    """The fake SDK and the fake Modal behind it. Use as a context manager, or call
    `close`, to stop its worker threads."""

    app_name: str = "spillway-renderer"
    class_name: str = "Renderer"
    deployed: bool = True
    concurrency: int = 1
    """Inputs one container takes at once."""
    boot_s: float = 0.0
    restore_s: float = 0.0
    """What a cold input waits (and reports) before it renders."""
    default_fps: int = 8
    work_dir: Path | None = None
    workers: int = 8

    exception: ModuleType = field(default=modal.exception, init=False, repr=False)
    Cls: _ClsApi = field(init=False, repr=False)
    FunctionCall: _FunctionCallApi = field(init=False, repr=False)

    calls: dict[str, FakeCall] = field(default_factory=dict, init=False)
    spawned: list[FakeCall] = field(default_factory=list, init=False)
    cancels: list[str] = field(default_factory=list, init=False)
    """Ids of every call cancelled, in order, including repeats."""
    autoscaler_updates: list[dict[str, int | None]] = field(default_factory=list, init=False)
    stats_requests: int = field(default=0, init=False)
    gets: int = field(default=0, init=False)
    spawns_in_flight: int = field(default=0, init=False)
    """Spawns waiting in `hold_spawns`."""

    def __post_init__(self) -> None:
        self.Cls = _ClsApi(self)
        self.FunctionCall = _FunctionCallApi(self)
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="fake-modal"
        )
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-modal-", dir=self.work_dir)
        self._containers: list[_Container] = []
        self._held = False
        self._spawn_gate = threading.Event()
        self._spawn_gate.set()
        self._spawn_errors: deque[BaseException] = deque()
        self._get_errors: deque[BaseException] = deque()
        self._stats_errors: deque[BaseException] = deque()
        self._faults: deque[Fault] = deque()
        self._corrupt = 0
        self._stalls = 0

    # Scripting

    def fail_spawns(self, *errors: BaseException) -> None:
        """The next spawns raise these, one each, before any call exists."""
        self._spawn_errors.extend(errors)

    def fail_calls(self, count: int, fault: Fault) -> None:
        """The next `count` spawned calls fail remotely, without rendering: "timeout"
        raises FunctionTimeoutError from `get`, "crash" a RemoteError."""
        self._faults.extend([fault] * count)

    def corrupt_calls(self, count: int = 1) -> None:
        """The next `count` spawned calls return an MP4 whose bytes differ from its
        metadata."""
        self._corrupt += count

    def fail_gets(self, *errors: BaseException) -> None:
        """The next waits (any call) raise these, one each, as transport failures do."""
        self._get_errors.extend(errors)

    def stall_gets(self, count: int = 1) -> None:
        """The next `count` waits never answer, as over a connection that hangs."""
        self._stalls += count

    def fail_stats(self, *errors: BaseException) -> None:
        self._stats_errors.extend(errors)

    def expire(self, call_id: str) -> None:
        """The call's result is gone, as after Modal's retention period."""
        self.calls[call_id].expired = True

    def hold(self) -> None:
        """Renders spawned from now on wait until `release` (or their cancel)."""
        self._held = True

    def release(self) -> None:
        self._held = False
        for call in list(self.calls.values()):
            call.go.set()

    def hold_spawns(self) -> None:
        """Spawns from now on stay in flight (no call made yet) until `release_spawns`."""
        self._spawn_gate.clear()

    def release_spawns(self) -> None:
        self._spawn_gate.set()

    def scale_to_zero(self) -> None:
        """Idle containers go away, as after the scaledown window: the next input is cold."""
        with self._lock:
            self._containers = [c for c in self._containers if c.busy]

    def close(self) -> None:
        self._spawn_gate.set()
        for call in list(self.calls.values()):
            call.cancel.set()
            call.go.set()
        self._executor.shutdown(wait=True)
        self._tmp.cleanup()

    def __enter__(self) -> FakeModal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # What the SDK objects call

    def _check_deployed(self, app_name: str, name: str) -> None:
        if not self.deployed or (app_name, name) != (self.app_name, self.class_name):
            raise modal.exception.NotFoundError(
                f"Lookup failed for Cls '{name}' from the '{app_name}' app: "
                f"App '{app_name}' not found."
            )

    def _spawn(self, request: dict[str, Any]) -> FakeCall:
        if self._spawn_errors:
            raise self._spawn_errors.popleft()
        call = FakeCall(
            call_id=f"fc-{uuid.uuid4().hex[:26]}",
            request=request,
            future=concurrent.futures.Future(),
            go=threading.Event(),
            cancel=threading.Event(),
            fault=self._faults.popleft() if self._faults else None,
            corrupt=self._corrupt > 0,
        )
        if call.corrupt:
            self._corrupt -= 1
        if not self._held:
            call.go.set()
        with self._lock:
            self.calls[call.call_id] = call
            self.spawned.append(call)
        call.future = self._executor.submit(self._run, call)
        return call

    def _call(self, call_id: str) -> FakeCall:
        call = self.calls.get(call_id)
        if call is None:
            raise modal.exception.NotFoundError(f"Function call {call_id} not found")
        return call

    async def _get(self, call_id: str, window_s: float | None) -> dict[str, Any]:
        self.gets += 1
        if self._get_errors:
            raise self._get_errors.popleft()
        if self._stalls:
            self._stalls -= 1
            await asyncio.Event().wait()
        call = self._call(call_id)
        if not call.cancelled and not call.expired:
            await _wait_future(call.future, window_s)
        if call.expired:
            raise modal.exception.OutputExpiredError()
        if call.cancelled:
            raise modal.exception.InputCancellation("Input was cancelled")
        return call.future.result()

    def _cancel(self, call_id: str) -> None:
        call = self._call(call_id)
        with self._lock:
            self.cancels.append(call_id)
        call.cancelled = True
        call.cancel.set()
        call.go.set()

    def _stats(self) -> FunctionCurrentStats:
        self.stats_requests += 1
        if self._stats_errors:
            raise self._stats_errors.popleft()
        with self._lock:
            running = sum(c.busy for c in self._containers)
            waiting = sum(1 for c in self.calls.values() if not c.go.is_set())
            return FunctionCurrentStats(
                backlog=waiting,
                num_total_runners=len(self._containers),
                num_running_inputs=running,
                input_headroom=len(self._containers) * self.concurrency - running,
            )

    def _update_autoscaler(self, settings: dict[str, int | None]) -> None:
        with self._lock:
            self.autoscaler_updates.append(settings)
            # Pre-warm: containers up to the minimum, booted and warm.
            while len(self._containers) < (settings.get("min_containers") or 0):
                self._containers.append(_Container(id=_container_id()))

    # The remote side: what the Modal app's `Renderer.render` does

    def _run(self, call: FakeCall) -> dict[str, Any]:
        call.go.wait()
        if call.cancel.is_set():
            raise modal.exception.InputCancellation("Input was cancelled")
        container, cold = self._take_container()
        call.container_id = container.id
        try:
            if cold and self.boot_s + self.restore_s > 0:
                time.sleep(self.boot_s + self.restore_s)
            if call.fault == "timeout":
                raise modal.exception.FunctionTimeoutError("Function timed out after 600s")
            if call.fault == "crash":
                raise modal.exception.RemoteError("Container exited unexpectedly (code 139)")
            return self._render(call, container.id, cold)
        finally:
            with self._lock:
                container.busy -= 1

    def _take_container(self) -> tuple[_Container, bool]:
        with self._lock:
            for container in self._containers:
                if container.busy < self.concurrency:
                    container.busy += 1
                    return container, False
            container = _Container(id=_container_id(), busy=1)
            self._containers.append(container)
            return container, True

    def _render(self, call: FakeCall, container_id: str, cold: bool) -> dict[str, Any]:
        request = RemoteRequest.from_dict(call.request)
        spec = render_spec(
            renderer_pb2.RenderRequest(
                job_id=request.job_id,
                prompt=request.prompt,
                model=request.model,
                seconds=request.seconds,
                width=request.width,
                height=request.height,
                fps=request.fps,
            ),
            self.default_fps,
        )
        path = Path(self._tmp.name) / f"{call.call_id}.mp4"
        try:
            rendered = render_to_file(
                spec, path, engine=CpuTokenEngine(), decoder=CpuFrameDecoder(), cancel=call.cancel
            )
            mp4 = path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
        metadata = RemoteMetadata.of(
            rendered,
            container_id=container_id,
            cold_start=cold,
            boot_seconds=self.boot_s,
            restore_seconds=self.restore_s,
        )
        if call.corrupt:
            mp4 = mp4[:-1] + bytes([mp4[-1] ^ 0xFF])
        return RemoteResult(mp4=mp4, metadata=metadata).to_dict()


# The SDK's object surface


@dataclass(frozen=True)
class _ClsApi:
    fake: FakeModal

    def from_name(self, app_name: str, name: str) -> _Cls:
        return _Cls(self.fake, app_name, name)  # lazy, as Modal's: no lookup yet


@dataclass(frozen=True)
class _Cls:
    fake: FakeModal
    app_name: str
    name: str

    def __call__(self) -> _Obj:
        return _Obj(self)


@dataclass(frozen=True)
class _Obj:
    cls: _Cls

    @property
    def render(self) -> _Method:
        return _Method(self.cls)

    @property
    def update_autoscaler(self) -> _UpdateAutoscaler:
        return _UpdateAutoscaler(self.cls)


@dataclass(frozen=True)
class _Method:
    cls: _Cls

    @property
    def spawn(self) -> _Spawn:
        return _Spawn(self.cls)

    @property
    def get_current_stats(self) -> _GetCurrentStats:
        return _GetCurrentStats(self.cls)


@dataclass(frozen=True)
class _Spawn:
    cls: _Cls

    async def aio(self, request: dict[str, Any], /) -> FakeFunctionCall:
        fake = self.cls.fake
        fake._check_deployed(self.cls.app_name, self.cls.name)
        if not fake._spawn_gate.is_set():
            fake.spawns_in_flight += 1
            try:
                await asyncio.to_thread(fake._spawn_gate.wait)
            finally:
                fake.spawns_in_flight -= 1
        call = fake._spawn(request)
        return FakeFunctionCall(fake, call.call_id, hydrated=True)


@dataclass(frozen=True)
class _GetCurrentStats:
    cls: _Cls

    async def aio(self) -> FunctionCurrentStats:
        self.cls.fake._check_deployed(self.cls.app_name, self.cls.name)
        return self.cls.fake._stats()


@dataclass(frozen=True)
class _UpdateAutoscaler:
    cls: _Cls

    async def aio(
        self,
        *,
        min_containers: int | None = None,
        max_containers: int | None = None,
        scaledown_window: int | None = None,
        buffer_containers: int | None = None,
    ) -> None:
        self.cls.fake._check_deployed(self.cls.app_name, self.cls.name)
        self.cls.fake._update_autoscaler(
            {
                "min_containers": min_containers,
                "max_containers": max_containers,
                "buffer_containers": buffer_containers,
                "scaledown_window": scaledown_window,
            }
        )


@dataclass(frozen=True)
class _FunctionCallApi:
    fake: FakeModal

    def from_id(self, function_call_id: str) -> FakeFunctionCall:
        return FakeFunctionCall(self.fake, function_call_id, hydrated=False)


@dataclass
class FakeFunctionCall:
    """`modal.FunctionCall`: like Modal's, one made by `from_id` has no `object_id`
    until a call on it has hydrated it."""

    fake: FakeModal
    call_id: str
    hydrated: bool

    @property
    def object_id(self) -> str:
        if not self.hydrated:
            raise AttributeError(f"Attempting to get object_id of unhydrated {self!r}")
        return self.call_id

    @property
    def get(self) -> _CallGet:
        return _CallGet(self)

    @property
    def cancel(self) -> _CallCancel:
        return _CallCancel(self)

    def __repr__(self) -> str:
        return f"FunctionCall.from_id({self.call_id!r})"


@dataclass(frozen=True)
class _CallGet:
    call: FakeFunctionCall

    async def aio(self, timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109
        self.call.hydrated = True
        return await self.call.fake._get(self.call.call_id, timeout)


@dataclass(frozen=True)
class _CallCancel:
    call: FakeFunctionCall

    async def aio(self) -> None:
        self.call.hydrated = True
        self.call.fake._cancel(self.call.call_id)


async def _wait_future(future: concurrent.futures.Future[Any], window_s: float | None) -> None:
    """Waits for a thread's future from any event loop, without ever cancelling it;
    raises the builtin TimeoutError when `window_s` passes first, as Modal's `get` does."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def wake(_: concurrent.futures.Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
            loop.call_soon_threadsafe(done.set)

    future.add_done_callback(wake)
    try:
        async with asyncio.timeout(window_s):
            await done.wait()
    except TimeoutError:
        raise TimeoutError() from None


def _container_id() -> str:
    return f"ta-{uuid.uuid4().hex[:24]}"


if TYPE_CHECKING:

    def _conforms(fake: FakeModal) -> ModalSdk:
        """mypy checks here that the fake offers the surface the pool uses."""
        return fake
