"""A stand-in for the `modal` SDK, faked exactly where `scheduler.pools.modal` meets it,
and behaving as modal 1.6.4 and its servers do, as far as their source says:

- `Cls.from_name(app, cls, environment_name=)()` is lazy; a lookup that finds no app in
  that environment raises NotFoundError on the first call (`cls.py`, `_Cls.from_name`).
- `.render.spawn.aio(request)` queues an input. Containers start (booting for
  `boot_s + restore_s`) up to `max_containers`; inputs past the cap wait in a pending
  queue until a slot frees. Each container takes `concurrency` inputs; the app's
  `buffer_containers` start beside busy ones while the function is active.
- `.render.get_current_stats.aio()` counts every container in `num_total_runners`,
  booting and buffer ones too, inputs waiting for a slot or a boot in `backlog`, and the
  free slots of started containers in `input_headroom` (`_functions.py`,
  `_Function.get_current_stats`).
- `FunctionCall.from_id(id).get.aio(timeout=)` raises the builtin TimeoutError when the
  window passes, OutputExpiredError for a result Modal no longer keeps, RemoteError for
  a cancelled call (`_functions.py`, `_Invocation.poll_function`, and
  `_utils/function_utils.py`, `_process_result`, on the GENERIC_STATUS_TERMINATED that
  `_runtime/container_io_manager.py`, `output_items_cancellation`, reports), and still
  returns the result of a call that had finished before it was cancelled.
- `.cancel.aio(terminate_containers=)` stops the input; with True it also stops its
  container, whose other inputs are rescheduled on another (`_FunctionCall.cancel`).
- `.render.autoscaler.update.aio(...)` checks its ranges and raises InvalidError as the
  SDK does (`_functions.py`, `_FunctionAutoscalerManager.update`); the deprecated
  `update_autoscaler.aio(...)` warns DeprecationError (`_Function.update_autoscaler`).
  `autoscaler_api = "deprecated"` makes an SDK without the new one.
- A connection that fails surfaces late: ConnectionError and the client's TimeoutError
  are raised after `connection_delay_s` (about a minute for the real client; small
  here so that tests stay fast); `outage = True` makes every call fail so.

- `Environment.from_name(name)` / `.from_context()` `.billing.report.aio(start=, end=,
  resolution=, tag_names=)` lists the costs scripted with `bill`, one row per object
  and interval, for whole intervals from `start` (rounded down to its hour) up to
  `end`, with the tags asked for (`_environments.py`,
  `_EnvironmentBillingManager.report`).
- `Dict.from_name(name, environment_name=, create_if_missing=)` is the start gates'
  Dict: `put.aio(key, value, skip_if_exists=True)` writes only a missing key and says
  whether it wrote, as `_Dict.put` returns `DictUpdateResponse.created` (`dict.py`).
  Every spawned input passes its request's gate (`renderer.start_gate.may_start`) once
  placed on a ready container, before it renders, as the Modal app's `render` does.

"Remote" renders really run the project's CPU renderer in worker threads and return
`RemoteResult.to_dict()`, as the Modal app does. Calls live in the fake's own registry,
so a new pool (a restarted scheduler) resumes one by id; being thread-based, the fake
serves any event loop. The first input to wait for a container's boot is cold.

Faults are scripted, each for the next spawns or waits: `fail_spawns`, `fail_calls`
(a FunctionTimeoutError or a crash), `corrupt_calls`, `fail_gets`, `stall_gets` (a
hung connection), `fail_stats`, `expire`, `hold`/`release` (slow renders),
`hold_spawns`/`release_spawns` (a spawn in flight), `deployed = False` (NotFoundError),
and on the start gates `fail_gate`, `stall_gate` (whoever writes next).
What the pool did is recorded: `spawned`, `cancels`, `autoscaler_updates`, `gets`,
`stats_requests`, and each Dict's `puts`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import tempfile
import threading
import uuid
import warnings
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import modal.exception
from modal.types import BillingReportItem, FunctionCurrentStats
from spillway.v1 import renderer_pb2

from renderer.cpu import CpuFrameDecoder, CpuTokenEngine
from renderer.errors import RenderCancelled, RenderRecalled
from renderer.pipeline import render_to_file
from renderer.remote import RemoteMetadata, RemoteRequest, RemoteResult
from renderer.start_gate import may_start
from renderer.validation import render_spec

if TYPE_CHECKING:
    from scheduler.pools.modal import ModalSdk

Fault = Literal["timeout", "crash"]
UNSET = -1
"""`_FunctionAutoscalerManager.update`'s marker for a setting left as it is."""
SLOW_ERRORS = (modal.exception.ConnectionError, modal.exception.TimeoutError)
"""What the real client raises only once its retries are spent."""


@dataclass
class FakeCall:
    """One spawned input, as Modal's registry holds it."""

    call_id: str
    request: dict[str, Any]
    future: concurrent.futures.Future[dict[str, Any]]
    go: threading.Event
    """Set when a started render may go on: at once, unless renders are held."""
    stop: threading.Event
    """Set to stop the render: a cancel, or its container's termination."""
    fault: Fault | None = None
    corrupt: bool = False
    state: Literal["pending", "running", "done"] = "pending"
    cancelled: bool = False
    expired: bool = False
    container_id: str = ""
    runs: int = 0
    """How many times it started: more than once when Modal rescheduled it."""
    renders: int = 0
    """How many times it passed its start gate and rendered."""


@dataclass
class _Container:
    id: str
    ready: bool = False
    busy: int = 0
    """Inputs placed on it, running or waiting for its boot."""
    terminated: bool = False


@dataclass
class FakeModal:
    """The fake SDK and the fake Modal behind it. Use as a context manager, or call
    `close`, to stop its worker threads."""

    app_name: str = "spillway-renderer"
    class_name: str = "Renderer"
    environment: str | None = None
    """The environment the app is deployed in; None matches any lookup."""
    deployed: bool = True
    concurrency: int = 1
    """Inputs one container takes at once."""
    max_containers: int = 10
    buffer_containers: int = 0
    min_containers: int = 0
    """The deployed autoscaler settings, until `autoscaler.update` changes them."""
    boot_s: float = 0.0
    restore_s: float = 0.0
    """What a container takes to start, and what a cold input reports."""
    connection_delay_s: float = 0.2
    outage: bool = False
    autoscaler_api: Literal["current", "deprecated"] = "current"
    default_fps: int = 8
    work_dir: Path | None = None
    workers: int = 32

    exception: ModuleType = field(default=modal.exception, init=False, repr=False)
    Cls: _ClsApi = field(init=False, repr=False)
    FunctionCall: _FunctionCallApi = field(init=False, repr=False)
    Dict: _DictApi = field(init=False, repr=False)
    Environment: _EnvironmentApi = field(init=False, repr=False)

    calls: dict[str, FakeCall] = field(default_factory=dict, init=False)
    spawned: list[FakeCall] = field(default_factory=list, init=False)
    cancels: list[tuple[str, bool]] = field(default_factory=list, init=False)
    """(call id, terminate_containers) of every cancel, in order, including repeats."""
    autoscaler_updates: list[dict[str, Any]] = field(default_factory=list, init=False)
    stats_requests: int = field(default=0, init=False)
    gets: int = field(default=0, init=False)
    spawns_in_flight: int = field(default=0, init=False)
    """Spawns not answered yet: held by `hold_spawns`, or failing slowly."""
    scaledown_window: int = field(default=300, init=False)
    dicts: dict[str, FakeDict] = field(default_factory=dict, init=False)
    """The Dicts looked up by name, created on first lookup."""

    def __post_init__(self) -> None:
        self.Cls = _ClsApi(self)
        self.FunctionCall = _FunctionCallApi(self)
        self.Dict = _DictApi(self)
        self.Environment = _EnvironmentApi(self)
        self._bills: list[BillingReportItem] = []
        self._gate_errors: deque[BaseException] = deque()
        self._gate_stalls = 0
        self._cond = threading.Condition()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="fake-modal"
        )
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-modal-", dir=self.work_dir)
        self._containers: list[_Container] = []
        self._held = False
        self._closed = False
        self._stopped = threading.Event()
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

    def fail_gate(self, *errors: BaseException) -> None:
        """The next Dict writes (scheduler or container) raise these, one each."""
        self._gate_errors.extend(errors)

    def stall_gate(self, count: int = 1) -> None:
        """The next `count` Dict writes never answer."""
        self._gate_stalls += count

    def bill(
        self, interval_start: datetime, cost: str, tags: dict[str, str], environment: str = "main"
    ) -> None:
        """Modal's bill has a row: an object with these tags cost `cost` (USD) in the
        hour from `interval_start` (UTC)."""
        self._bills.append(
            BillingReportItem(
                object_id=f"ap-{uuid.uuid4().hex[:22]}",
                description=tags.get("spillway", "other app"),
                environment_name=environment,
                interval_start=interval_start,
                cost=Decimal(cost),
                cost_by_resource={"gpu": Decimal(cost)},
                tags=tags,
            )
        )

    def fail_stats(self, *errors: BaseException) -> None:
        self._stats_errors.extend(errors)

    def expire(self, call_id: str) -> None:
        """The call's result is gone, as after Modal's retention period."""
        self.calls[call_id].expired = True

    def hold(self) -> None:
        """Renders started from now on (past their start gate) wait until `release`."""
        self._held = True

    def release(self) -> None:
        with self._cond:
            self._held = False
            for call in self.calls.values():
                call.go.set()
            self._cond.notify_all()

    def hold_spawns(self) -> None:
        """Spawns from now on stay in flight (no call made yet) until `release_spawns`."""
        self._spawn_gate.clear()

    def release_spawns(self) -> None:
        self._spawn_gate.set()

    def scale_to_zero(self) -> None:
        """Idle containers go away, as after the scaledown window: the next input is cold."""
        with self._cond:
            self._containers = [c for c in self._containers if c.busy]

    def containers(self) -> list[str]:
        """Ids of the containers up or starting."""
        with self._cond:
            return [c.id for c in self._containers]

    def close(self) -> None:
        self._stopped.set()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._spawn_gate.set()
        for call in list(self.calls.values()):
            call.stop.set()
            call.go.set()
        self._executor.shutdown(wait=True)
        self._tmp.cleanup()

    def __enter__(self) -> FakeModal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # What the SDK objects call

    async def _raise(self, error: BaseException) -> NoReturn:
        """Raises `error` as the client would: a connection failure only once its
        retries are spent."""
        if type(error) in SLOW_ERRORS:
            await asyncio.sleep(self.connection_delay_s)
        raise error

    async def _reach(self) -> None:
        if self.outage:
            error = modal.exception.ConnectionError("Could not connect to the Modal server.")
            await self._raise(error)

    async def _check_deployed(self, app_name: str, name: str, environment: str | None) -> None:
        await self._reach()
        wrong_environment = self.environment is not None and environment != self.environment
        if (
            not self.deployed
            or wrong_environment
            or (app_name, name)
            != (
                self.app_name,
                self.class_name,
            )
        ):
            where = f" (in the '{environment}' environment)" if environment else ""
            raise modal.exception.NotFoundError(
                f"Lookup failed for Cls '{name}' from the '{app_name}' app{where}: "
                f"App '{app_name}' not found."
            )

    def _spawn(self, request: dict[str, Any]) -> FakeCall:
        call = FakeCall(
            call_id=f"fc-{uuid.uuid4().hex[:26]}",
            request=request,
            future=concurrent.futures.Future(),
            go=threading.Event(),
            stop=threading.Event(),
            fault=self._faults.popleft() if self._faults else None,
            corrupt=self._corrupt > 0,
        )
        if call.corrupt:
            self._corrupt -= 1
        if not self._held:
            call.go.set()
        with self._cond:
            self.calls[call.call_id] = call
            self.spawned.append(call)
            self._scale()
        call.future = self._executor.submit(self._run, call)
        return call

    def _call(self, call_id: str) -> FakeCall:
        call = self.calls.get(call_id)
        if call is None:
            raise modal.exception.NotFoundError(f"Function call {call_id} not found")
        return call

    async def _get(self, call_id: str, window_s: float | None) -> dict[str, Any]:
        self.gets += 1
        await self._reach()
        if self._get_errors:
            await self._raise(self._get_errors.popleft())
        if self._stalls:
            self._stalls -= 1
            await asyncio.Event().wait()
        call = self._call(call_id)
        if not call.expired:
            await _wait_future(call.future, window_s)
        if call.expired:
            raise modal.exception.OutputExpiredError()
        return call.future.result()

    async def _cancel(self, call_id: str, terminate_containers: bool) -> None:
        await self._reach()
        call = self._call(call_id)
        with self._cond:
            self.cancels.append((call_id, terminate_containers))
            if call.future.done():
                return
            call.cancelled = True
            call.stop.set()
            call.go.set()
            if terminate_containers and call.state == "running":
                self._terminate(call.container_id)
            self._cond.notify_all()

    def _terminate(self, container_id: str) -> None:
        """Stops a container: its other inputs stop too, and start again elsewhere."""
        container = next(c for c in self._containers if c.id == container_id)
        container.terminated = True
        self._containers.remove(container)
        for other in self.calls.values():
            if other.container_id == container_id and other.state == "running":
                other.stop.set()

    def _stats(self) -> FunctionCurrentStats:
        self.stats_requests += 1
        if self._stats_errors:
            raise self._stats_errors.popleft()
        with self._cond:
            running = sum(1 for c in self.calls.values() if c.state == "running")
            waiting = sum(1 for c in self.calls.values() if c.state == "pending")
            return FunctionCurrentStats(
                backlog=waiting,
                num_total_runners=len(self._containers),
                num_running_inputs=running,
                input_headroom=sum(self.concurrency - c.busy for c in self._containers if c.ready),
            )

    def _update_autoscaler(self, api: str, settings: dict[str, Any]) -> None:
        """Applies what is set (not UNSET): None means 0 for the minimum and the buffer
        and no limit for the cap, as `_FunctionAutoscalerManager.update` sends them."""
        with self._cond:
            self.autoscaler_updates.append({"api": api, **settings})
            if settings["min_containers"] != UNSET:
                self.min_containers = settings["min_containers"] or 0
            if settings["buffer_containers"] != UNSET:
                self.buffer_containers = settings["buffer_containers"] or 0
            if settings["max_containers"] != UNSET:
                self.max_containers = settings["max_containers"] or 10_000
            if settings["scaledown_window"] != UNSET:
                self.scaledown_window = settings["scaledown_window"]
            self._scale()
            self._cond.notify_all()

    # Modal's scheduler: containers and the pending queue

    def _scale(self) -> None:
        """Starts containers up to the minimum and, while inputs are pending or running,
        up to the buffer of idle ones, within the cap. Called holding the lock."""
        active = any(c.state != "done" for c in self.calls.values())
        while len(self._containers) < self.max_containers:
            idle = sum(1 for c in self._containers if not c.busy)
            if len(self._containers) < self.min_containers or (
                active and idle < self.buffer_containers
            ):
                self._start_container()
            else:
                return

    def _start_container(self) -> _Container:
        container = _Container(id=f"ta-{uuid.uuid4().hex[:24]}")
        self._containers.append(container)
        threading.Thread(target=self._boot, args=(container,), daemon=True).start()
        return container

    def _boot(self, container: _Container) -> None:
        self._stopped.wait(self.boot_s + self.restore_s)
        with self._cond:
            container.ready = True
            self._cond.notify_all()

    def _place(self, call: FakeCall) -> tuple[_Container | None, bool]:
        """Waits for a slot (starting a container when under the cap) and for that
        container's boot; None when the call was stopped first. Cold: it waited for a
        boot."""
        with self._cond:
            container = self._slot(call)
            if container is None:
                return None, False
            cold = not container.ready
            self._cond.wait_for(lambda: container.ready or call.stop.is_set() or self._closed)
            if container.ready and not call.stop.is_set():
                call.state = "running"
                call.runs += 1
                return container, cold
            container.busy -= 1
            self._cond.notify_all()
            return None, False

    def _slot(self, call: FakeCall) -> _Container | None:
        """A container with room for the call, booted ones first, or a new one if the
        cap allows; waits in the pending queue otherwise. Called holding the lock."""
        while not (call.stop.is_set() or self._closed):
            free = sorted(
                (c for c in self._containers if c.busy < self.concurrency),
                key=lambda c: not c.ready,
            )
            if free or len(self._containers) < self.max_containers:
                container = free[0] if free else self._start_container()
                container.busy += 1
                call.container_id = container.id
                self._scale()
                return container
            self._cond.wait()
        return None

    # The remote side: what the Modal app's `Renderer.render` does

    def _run(self, call: FakeCall) -> dict[str, Any]:
        while True:
            container, cold = self._place(call)
            if container is None:
                self._finish(call)
                raise modal.exception.RemoteError("")
            try:
                # The gate comes first, as in the app: a held render has started.
                if not self._may_start(call):
                    raise RenderRecalled(f"job {call.request.get('job_id')} was recalled")
                with self._cond:
                    self._cond.wait_for(
                        lambda: call.go.is_set() or call.stop.is_set() or self._closed
                    )
                if call.stop.is_set():
                    raise RenderCancelled(call.call_id)
                if call.fault == "timeout":
                    raise modal.exception.FunctionTimeoutError("Function timed out after 600s")
                if call.fault == "crash":
                    raise modal.exception.RemoteError("Container exited unexpectedly (code 139)")
                result = self._render(call, container.id, cold)
            except RenderCancelled:
                with self._cond:
                    container.busy -= 1
                    self._cond.notify_all()
                    if call.cancelled or not container.terminated:
                        call.state = "done"
                        raise modal.exception.RemoteError("") from None
                    # Its container was terminated under it: Modal runs it again.
                    call.stop.clear()
                    call.state = "pending"
                continue
            except BaseException:
                self._release(container)
                self._finish(call)
                raise
            self._release(container)
            self._finish(call)
            return result

    def _may_start(self, call: FakeCall) -> bool:
        """The app's start gate, run in this worker thread on a loop of its own."""
        request = RemoteRequest.from_dict(call.request)
        if not request.start_dict or not request.start_key:
            return True
        gate = self._dict(request.start_dict)
        return asyncio.run(may_start(gate, request.start_key))

    def _dict(self, name: str) -> FakeDict:
        with self._cond:
            return self.dicts.setdefault(name, FakeDict(self))

    def _release(self, container: _Container) -> None:
        with self._cond:
            container.busy -= 1
            self._cond.notify_all()

    def _finish(self, call: FakeCall) -> None:
        with self._cond:
            call.state = "done"
            self._cond.notify_all()

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
        call.renders += 1
        path = Path(self._tmp.name) / f"{call.call_id}-{call.runs}.mp4"
        try:
            rendered = render_to_file(
                spec, path, engine=CpuTokenEngine(), decoder=CpuFrameDecoder(), cancel=call.stop
            )
            mp4 = path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
        metadata = RemoteMetadata.of(
            rendered,
            container_id=container_id,
            cold_start=cold,
            boot_seconds=self.boot_s if cold else 0.0,
            restore_seconds=self.restore_s if cold else 0.0,
        )
        if call.corrupt:
            mp4 = mp4[:-1] + bytes([mp4[-1] ^ 0xFF])
        return RemoteResult(mp4=mp4, metadata=metadata).to_dict()


# The SDK's object surface


@dataclass(frozen=True)
class _ClsApi:
    fake: FakeModal

    def from_name(
        self, app_name: str, name: str, /, *, environment_name: str | None = None
    ) -> _Cls:
        return _Cls(self.fake, app_name, name, environment_name)  # lazy, as Modal's


@dataclass(frozen=True)
class _Cls:
    fake: FakeModal
    app_name: str
    name: str
    environment: str | None

    def __call__(self) -> _Obj:
        return _Obj(self)

    async def check(self) -> None:
        await self.fake._check_deployed(self.app_name, self.name, self.environment)


@dataclass(frozen=True)
class _Obj:
    cls: _Cls

    @property
    def render(self) -> _Method:
        return _Method(self.cls)

    @property
    def update_autoscaler(self) -> _DeprecatedUpdateAutoscaler:
        return _DeprecatedUpdateAutoscaler(self.cls)


@dataclass(frozen=True)
class _Method:
    cls: _Cls

    @property
    def spawn(self) -> _Spawn:
        return _Spawn(self.cls)

    @property
    def get_current_stats(self) -> _GetCurrentStats:
        return _GetCurrentStats(self.cls)

    @property
    def autoscaler(self) -> _AutoscalerManager:
        if self.cls.fake.autoscaler_api != "current":
            raise AttributeError("'Function' object has no attribute 'autoscaler'")
        return _AutoscalerManager(self.cls)


@dataclass(frozen=True)
class _Spawn:
    cls: _Cls

    async def aio(self, request: dict[str, Any], /) -> FakeFunctionCall:
        fake = self.cls.fake
        fake.spawns_in_flight += 1
        try:
            await self.cls.check()
            if not fake._spawn_gate.is_set():
                await asyncio.to_thread(fake._spawn_gate.wait)
            if fake._spawn_errors:
                await fake._raise(fake._spawn_errors.popleft())
            call = fake._spawn(request)
        finally:
            fake.spawns_in_flight -= 1
        return FakeFunctionCall(fake, call.call_id, hydrated=True)


@dataclass(frozen=True)
class _GetCurrentStats:
    cls: _Cls

    async def aio(self) -> FunctionCurrentStats:
        await self.cls.check()
        return self.cls.fake._stats()


@dataclass(frozen=True)
class _AutoscalerManager:
    cls: _Cls

    @property
    def update(self) -> _AutoscalerUpdate:
        return _AutoscalerUpdate(self.cls)


@dataclass(frozen=True)
class _AutoscalerUpdate:
    cls: _Cls

    async def aio(
        self,
        *,
        min_containers: int | None = UNSET,
        max_containers: int | None = UNSET,
        buffer_containers: int | None = UNSET,
        scaledown_window: int = UNSET,
    ) -> None:
        """Validates as `_FunctionAutoscalerManager.update` does, with its messages."""
        await self.cls.check()
        invalid = modal.exception.InvalidError
        if min_containers != UNSET and (min_containers or 0) < 0:
            raise invalid(
                "Invalid argument: `min_containers` must be a nonnegative integer or `None`."
            )
        if buffer_containers != UNSET and (buffer_containers or 0) < 0:
            raise invalid(
                "Invalid argument: `buffer_containers` must be a nonnegative integer or `None`."
            )
        if max_containers not in (UNSET, None) and max_containers <= 0:
            raise invalid("Invalid argument: `max_containers` must be a postive integer or `None`.")
        if scaledown_window != UNSET and not 2 <= scaledown_window <= 3600:
            raise invalid(
                "Invalid argument: `scaledown_window` must be between 2 and 3600 (inclusive)"
            )
        self.cls.fake._update_autoscaler(
            "autoscaler.update",
            {
                "min_containers": min_containers,
                "max_containers": max_containers,
                "buffer_containers": buffer_containers,
                "scaledown_window": scaledown_window,
            },
        )


@dataclass(frozen=True)
class _DeprecatedUpdateAutoscaler:
    cls: _Cls

    async def aio(
        self,
        *,
        min_containers: int | None = None,
        max_containers: int | None = None,
        scaledown_window: int | None = None,
        buffer_containers: int | None = None,
    ) -> None:
        """`Obj.update_autoscaler`: None leaves a setting as it is; the server refuses
        what the new API refuses."""
        warnings.warn(
            "2026-10-16: `Function.update_autoscaler()` is deprecated and will be removed in "
            "a future version of `modal`. Use `Function.autoscaler.update()` instead.",
            modal.exception.DeprecationError,
            stacklevel=2,
        )
        await self.cls.check()
        bad = (min_containers or 0) < 0 or (buffer_containers or 0) < 0
        bad = bad or (max_containers is not None and max_containers <= 0)
        bad = bad or (scaledown_window is not None and not 2 <= scaledown_window <= 3600)
        if bad:
            raise modal.exception.InvalidError("Invalid autoscaler settings")

        def given(value: int | None) -> int:
            return UNSET if value is None else value

        self.cls.fake._update_autoscaler(
            "update_autoscaler",
            {
                "min_containers": given(min_containers),
                "max_containers": given(max_containers),
                "buffer_containers": given(buffer_containers),
                "scaledown_window": given(scaledown_window),
            },
        )


@dataclass(frozen=True)
class _EnvironmentApi:
    fake: FakeModal

    def from_name(self, name: str, /) -> _Environment:
        return _Environment(self.fake, name)

    def from_context(self) -> _Environment:
        return _Environment(self.fake, "main")


@dataclass(frozen=True)
class _Environment:
    fake: FakeModal
    name: str

    @property
    def billing(self) -> _Environment:
        return self

    @property
    def report(self) -> _Environment:
        return self

    async def aio(
        self,
        *,
        start: datetime,
        end: datetime | None = None,
        resolution: str = "d",
        tag_names: list[str] | None = None,
    ) -> list[BillingReportItem]:
        await self.fake._reach()
        assert resolution == "h", "the fake reports by the hour only"
        first = start.replace(minute=0, second=0, microsecond=0)
        last = end or datetime.now(UTC)
        return [
            dataclasses.replace(
                item, tags={k: v for k, v in item.tags.items() if k in (tag_names or [])}
            )
            for item in self.fake._bills
            if item.environment_name == self.name
            and first <= item.interval_start
            and item.interval_start + timedelta(hours=1) <= last
        ]


@dataclass(frozen=True)
class _DictApi:
    fake: FakeModal

    def from_name(
        self, name: str, /, *, environment_name: str | None = None, create_if_missing: bool = False
    ) -> FakeDict:
        del environment_name, create_if_missing  # one environment, and every Dict exists
        return self.fake._dict(name)


class FakeDict:
    """A `modal.Dict`: what the start gates use, safe to call from any thread and loop."""

    def __init__(self, fake: FakeModal) -> None:
        self._fake = fake
        self._lock = threading.Lock()
        self.entries: dict[Any, Any] = {}
        self.puts: list[tuple[Any, Any, bool | None]] = []
        """(key, value, wrote) of every put, in order; wrote is None for one that
        raised (`fail_gate`)."""

    @property
    def put(self) -> _DictPut:
        return _DictPut(self)

    @property
    def get(self) -> _DictGet:
        return _DictGet(self)

    def _put(self, key: Any, value: Any, skip_if_exists: bool) -> bool:
        with self._lock:
            wrote = not (skip_if_exists and key in self.entries)
            if wrote:
                self.entries[key] = value
            self.puts.append((key, value, wrote))
            return wrote


@dataclass(frozen=True)
class _DictPut:
    owner: FakeDict

    async def aio(self, key: Any, value: Any, /, *, skip_if_exists: bool = False) -> bool:
        fake = self.owner._fake
        await fake._reach()
        with fake._cond:
            error = fake._gate_errors.popleft() if fake._gate_errors else None
            stall = fake._gate_stalls > 0
            fake._gate_stalls -= stall
        if error is not None:
            with self.owner._lock:
                self.owner.puts.append((key, value, None))
            await fake._raise(error)
        if stall:
            await asyncio.Event().wait()
        return self.owner._put(key, value, skip_if_exists)


@dataclass(frozen=True)
class _DictGet:
    owner: FakeDict

    async def aio(self, key: Any, default: Any | None = None, /) -> Any:
        await self.owner._fake._reach()
        with self.owner._lock:
            return self.owner.entries.get(key, default)


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

    async def aio(self, terminate_containers: bool = False) -> None:
        self.call.hydrated = True
        await self.call.fake._cancel(self.call.call_id, terminate_containers)


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


if TYPE_CHECKING:

    def _conforms(fake: FakeModal) -> ModalSdk:
        """mypy checks here that the fake offers the surface the pool uses."""
        return fake
