"""The Modal fleet: `Renderer().render.spawn(request)` on a deployed app, resumable by
FunctionCall id from any replica.

Only the `modal` SDK's async (`.aio`) calls are used, through the narrow surface that
`ModalSdk` describes; tests pass a fake with that surface. Credentials are the SDK's own
(`MODAL_TOKEN_ID` / `MODAL_TOKEN_SECRET` in the environment); the class is looked up in
one Modal environment (`dev`, `prod`).

Every failure ends in one decision (`RenderError.retryable`, `charge_attempt`), or in
waiting on the same call. The rule behind the table: an attempt is charged when the
input may have run and left no result; Modal turning the input away before it ran is not
charged, nor is an input that can never render; no failure on the result side ever
spawns a second call for the same attempt.

where   the SDK reports                                outcome
------  ---------------------------------------------  ------------------------------------
spawn   ResourceExhaustedError (Modal is full)         retryable, not charged (hold);
                                                       unavailable for `full_backoff_s`
spawn   AuthError, PermissionDeniedError,              retryable, not charged, and
        NotFoundError (app not deployed),              `available` is False for
        ConnectionError, ServiceError, InternalError,  `unavailable_backoff_s`, so the
        TimeoutError (the client's retries spent),     policy stops spilling (so do these
        or no answer within `call_timeout_s`           from `stats`, `set_autoscaler`)
spawn   any other modal.exception.Error                retryable, charged
wait    the renderer's InvalidRenderRequest (a bad     NOT retryable, not charged, the
        request, or SGLang's 4xx: prompt too long)     renderer's message
wait    the renderer's RendererBusy                    retryable, not charged
wait    FunctionTimeoutError                           retryable, charged (fresh container)
wait    OutputExpiredError (the result is gone)        retryable, charged
wait    NotFoundError (no such call)                   retryable, charged
wait    RemoteError (a crash, or a call cancelled by   retryable, charged
        anyone: modal 1.6.4 reports a cancelled
        input as a RemoteError), InternalFailure,
        ExecutionError, any other remote exception
wait    builtin TimeoutError (get's window passed)     keep waiting on the same call
wait    ConnectionError, ServiceError, InternalError,  keep waiting on the same call, with
        AuthError, PermissionDeniedError,              backoff; never a second spawn (the
        ResourceExhaustedError, TimeoutError, or no    spawn-row ones, and a wait that
        answer within the window and `get_grace_s`    never answered, also make the pool
                                                       unavailable for a while)
wait    `render_timeout_s` passes                      call cancelled; retryable, charged
result  malformed, or bytes/sha256 differ from         retryable, charged
        the metadata

Modal's client keeps retrying a connection for about a minute before it raises
ConnectionError, so an outage shows first as calls that do not answer: a spawn, stats
or autoscaler call that takes longer than `call_timeout_s`, or a wait that hangs past
its window, counts as Modal unreachable at once.

Recall: each request carries a start gate (`renderer.start_gate`), a key in the
`start_dict` Dict that the container writes before any GPU work; `claim_recall` writes
it first or not at all, so a recalled input never renders and a started one is never
recalled. An input that finds its gate closed raises RenderRecalled, which a pool still
waiting on it (the recall did not go through) reads as retryable, not charged.

Cancellation: `asyncio.CancelledError` always propagates. A cancelled `render` leaves a
recorded call running (the dispatcher decides: another replica adopts it on shutdown,
`cancel` stops it when the job is cancelled); a call spawned but not yet recorded is
cancelled, since nobody could adopt it. No cancel leaks a temporary file. A cancel never
terminates a container that takes more than one input at once (`terminate_containers`
would reschedule its other inputs, each a render done twice); with one input a
container, it does, so that a render stuck in its engine stops holding the GPU.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib
import logging
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeVar, cast

from renderer.errors import InvalidRenderRequest, RendererBusy, RenderRecalled
from renderer.modal_config import BILLING_TAG
from renderer.remote import RemoteRequest, RemoteResult
from renderer.start_gate import RECALLED, GateDict, gate_key
from scheduler.policy.model import Autoscale
from scheduler.pools.base import (
    Pool,
    PoolStats,
    Rendered,
    RenderError,
    RenderHooks,
    RenderInfo,
    Slot,
    Superseded,
)
from scheduler.store.jobs import Job
from scheduler.telemetry import tracing

log = logging.getLogger(__name__)

T = TypeVar("T")

_CLOSE_GRACE_S = 10.0
"""How long `close` waits for cancels of orphaned calls to reach Modal."""
SCALEDOWN_WINDOW_S = (2, 3600)
"""The scaledown windows Modal accepts (modal 1.6.4, `_FunctionAutoscalerManager.update`)."""


# The SDK surface this pool uses: the real `modal` module has it, and so has the fake.


class FunctionCallHandle(Protocol):
    """`modal.FunctionCall`."""

    @property
    def object_id(self) -> str: ...
    @property
    def get(self) -> _Get: ...
    @property
    def cancel(self) -> _Cancel: ...


class _Get(Protocol):
    async def aio(self, timeout: float | None = None) -> Any: ...  # noqa: ASYNC109 (the SDK's)


class _Cancel(Protocol):
    async def aio(self, terminate_containers: bool = False) -> None: ...


class CurrentStats(Protocol):
    """`modal.types.FunctionCurrentStats`."""

    @property
    def backlog(self) -> int: ...
    @property
    def num_total_runners(self) -> int: ...
    @property
    def num_running_inputs(self) -> int: ...
    @property
    def input_headroom(self) -> int: ...


class _Spawn(Protocol):
    async def aio(self, request: dict[str, Any], /) -> FunctionCallHandle: ...


class _GetCurrentStats(Protocol):
    async def aio(self) -> CurrentStats: ...


class _UpdateAutoscaler(Protocol):
    async def aio(
        self,
        *,
        min_containers: int | None = None,
        max_containers: int | None = None,
        scaledown_window: int | None = None,
        buffer_containers: int | None = None,
    ) -> object: ...


class AutoscalerManager(Protocol):
    """`modal.Function.autoscaler`: the autoscaler API that replaces the deprecated
    `update_autoscaler` (modal 1.6.4, `_FunctionAutoscalerManager`)."""

    @property
    def update(self) -> _UpdateAutoscaler: ...


class RenderMethod(Protocol):
    """`Renderer().render`, a `modal.Function`. Its `autoscaler`, which SDKs before the
    new API lack, is read with `getattr`: a method's object id is its class's service
    function, so it updates the class's autoscaler."""

    @property
    def spawn(self) -> _Spawn: ...
    @property
    def get_current_stats(self) -> _GetCurrentStats: ...


class RendererObj(Protocol):
    """`modal.Cls.from_name(app, "Renderer", environment_name=env)()`, a
    `modal.cls.Obj`."""

    @property
    def render(self) -> RenderMethod: ...
    @property
    def update_autoscaler(self) -> _UpdateAutoscaler: ...


class ClsHandle(Protocol):
    def __call__(self) -> RendererObj: ...


class _ClsApi(Protocol):
    def from_name(
        self, app_name: str, name: str, /, *, environment_name: str | None = None
    ) -> ClsHandle: ...


class _FunctionCallApi(Protocol):
    def from_id(self, function_call_id: str, /) -> FunctionCallHandle: ...


class _DictApi(Protocol):
    def from_name(
        self, name: str, /, *, environment_name: str | None = None, create_if_missing: bool = False
    ) -> GateDict: ...


class BillingItem(Protocol):
    """`modal.types.BillingReportItem`: one object's cost over one interval."""

    @property
    def cost(self) -> Decimal: ...
    @property
    def tags(self) -> dict[str, str]: ...


class _Report(Protocol):
    async def aio(
        self,
        *,
        start: datetime,
        end: datetime | None = None,
        resolution: str = "d",
        tag_names: list[str] | None = None,
    ) -> list[BillingItem]: ...


class _Billing(Protocol):
    @property
    def report(self) -> _Report: ...


class EnvironmentHandle(Protocol):
    """`modal.Environment`, for its billing report (modal 1.6.4,
    `_EnvironmentBillingManager.report`)."""

    @property
    def billing(self) -> _Billing: ...


class _EnvironmentApi(Protocol):
    def from_name(self, name: str, /) -> EnvironmentHandle: ...
    def from_context(self) -> EnvironmentHandle: ...


class ModalSdk(Protocol):
    """The parts of the `modal` module the pool uses: `Cls`, `FunctionCall`, `Dict`
    (the start gates), `Environment` (the bill), and the real `modal.exception`
    module."""

    @property
    def Cls(self) -> _ClsApi: ...
    @property
    def FunctionCall(self) -> _FunctionCallApi: ...
    @property
    def Dict(self) -> _DictApi: ...
    @property
    def Environment(self) -> _EnvironmentApi: ...
    @property
    def exception(self) -> ModuleType: ...


def import_modal() -> ModalSdk:
    """The real SDK, imported on first use so that the scheduler runs without it."""
    try:
        module = importlib.import_module("modal")
    except ImportError as exc:
        raise RuntimeError(
            "the Modal pool needs the modal SDK: pip install 'spillway[modal]'"
        ) from exc
    return cast(ModalSdk, module)


def autoscale_problem(settings: Autoscale) -> str | None:
    """Why Modal would refuse these settings, or None: the ranges modal 1.6.4's
    `_FunctionAutoscalerManager.update` checks, and the cap, which Modal would read as
    "no limit" when 0."""
    low, high = SCALEDOWN_WINDOW_S
    if settings.max_containers < 1:
        return f"max_containers must be at least 1 (0 means no limit to Modal): {settings}"
    if settings.min_containers < 0 or settings.buffer_containers < 0:
        return f"min_containers and buffer_containers must not be negative: {settings}"
    if not low <= settings.scaledown_window_s <= high:
        return f"scaledown_window must be between {low} and {high} s: {settings}"
    return None


@dataclass(frozen=True)
class ModalPoolConfig:
    app_name: str = "spillway-renderer"
    """The deployed Modal app."""
    class_name: str = "Renderer"
    """The class in that app whose `render` method renders one request."""
    environment: str | None = None
    """The Modal environment the app is deployed in; None for the SDK's default."""
    concurrency: int = 1
    """Inputs one container takes at once (the app's `@modal.concurrent(max_inputs=)`)."""
    render_timeout_s: float = 3600.0
    """How long one `render` waits for its call (from when it starts waiting) before it
    cancels the call and gives the job back: long enough for a container's start (a
    first boot after a deploy can take most of the app's startup timeout) and a render."""
    tmp_dir: Path | None = None
    """Where MP4s are written; the system temp dir when None."""
    unavailable_backoff_s: float = 30.0
    """How long the pool reports itself unavailable after Modal reported an auth,
    not-found or connection problem, or did not answer."""
    full_backoff_s: float = 5.0
    """How long the pool reports itself unavailable after Modal said it is full."""
    call_timeout_s: float = 30.0
    """How long a spawn, stats, autoscaler or cancel call may go unanswered before Modal
    counts as unreachable (its client retries a connection for about a minute)."""
    stats_ttl_s: float = 5.0
    """How long `stats` answers from its cache before asking Modal again."""
    poll_interval_s: float = 15.0
    """How long each wait for the result lasts before progress is reported."""
    expected_render_s: float = 120.0
    """A typical render's length, for the coarse progress estimate (Modal sends none)."""
    get_retry_min_s: float = 0.5
    get_retry_max_s: float = 30.0
    """Backoff bounds between waits after a transport error, doubling from the first."""
    start_dict: str = "spillway-starts"
    """The `modal.Dict` holding each input's start gate (`renderer.start_gate`), in
    the app's environment."""
    gate_timeout_s: float = 5.0
    """How long a recall waits for the start gate: the dispatcher waits with it, and a
    gate that does not answer in time leaves the job on Modal."""
    get_grace_s: float = 10.0
    """How long past its window one wait may hang (the SDK's connection attempts do not
    heed the window) before it is abandoned, Modal counted unreachable, and the same
    call waited on again."""

    def __post_init__(self) -> None:
        for name in ("app_name", "class_name", "start_dict"):
            if not getattr(self, name):
                raise ValueError(f"ModalPoolConfig.{name} must not be empty")
        if self.environment == "":
            raise ValueError("ModalPoolConfig.environment must be None or a name, got ''")
        if self.concurrency < 1:
            raise ValueError(f"ModalPoolConfig.concurrency must be >= 1, got {self.concurrency!r}")
        for name in (
            "render_timeout_s",
            "unavailable_backoff_s",
            "full_backoff_s",
            "call_timeout_s",
            "poll_interval_s",
            "expected_render_s",
            "get_retry_min_s",
            "get_retry_max_s",
            "get_grace_s",
            "gate_timeout_s",
        ):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"ModalPoolConfig.{name} must be > 0, got {value!r}")
        if not self.stats_ttl_s >= 0:
            raise ValueError(f"ModalPoolConfig.stats_ttl_s must be >= 0, got {self.stats_ttl_s!r}")
        if self.get_retry_min_s > self.get_retry_max_s:
            raise ValueError(
                f"ModalPoolConfig.get_retry_min_s ({self.get_retry_min_s!r}) must not exceed "
                f"get_retry_max_s ({self.get_retry_max_s!r})"
            )


@dataclass(frozen=True)
class _Errors:
    """The SDK's exception classes, sorted by what they mean to this pool."""

    full: tuple[type[BaseException], ...]
    unreachable: tuple[type[BaseException], ...]
    sdk: type[BaseException]
    transient: tuple[type[BaseException], ...]
    not_found: type[BaseException]
    expired: type[BaseException]
    function_timeout: type[BaseException]

    @classmethod
    def of(cls, exception: ModuleType) -> _Errors:
        e = exception
        unreachable = (
            e.AuthError,
            e.PermissionDeniedError,
            e.NotFoundError,
            e.ConnectionError,
            e.ServiceError,
            e.InternalError,
            e.TimeoutError,
        )
        return cls(
            full=(e.ResourceExhaustedError,),
            unreachable=unreachable,
            sdk=e.Error,
            # FunctionTimeoutError and OutputExpiredError are TimeoutErrors too: they
            # are matched first.
            transient=(*unreachable, e.ResourceExhaustedError),
            not_found=e.NotFoundError,
            expired=e.OutputExpiredError,
            function_timeout=e.FunctionTimeoutError,
        )


class Unanswered(Exception):
    """Modal did not answer an SDK call within `call_timeout_s`."""


class _ModalSlot(Slot):
    """Modal has no local slots: the global cap is enforced in Redis at the claim."""

    def release(self) -> None:
        return None


@dataclass
class _StatsCache:
    value: PoolStats = field(default_factory=lambda: PoolStats(containers=0, ready_slots=0))
    at: float | None = None
    refreshing: asyncio.Future[PoolStats] | None = None


class ModalPool(Pool):
    name = "modal"
    resumable = True
    recallable = True

    def __init__(
        self,
        config: ModalPoolConfig,
        *,
        sdk: ModalSdk | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._sdk = sdk if sdk is not None else import_modal()
        self._errors = _Errors.of(self._sdk.exception)
        self._clock = clock
        self._tmp_dir = config.tmp_dir or Path(tempfile.gettempdir())
        self._obj: RendererObj | None = None
        self._gate: GateDict | None = None
        self._unavailable_until = float("-inf")
        self._stats = _StatsCache()
        self._tasks: set[asyncio.Future[Any]] = set()

    @property
    def available(self) -> bool:
        return self._clock() >= self._unavailable_until

    async def acquire(self) -> Slot:
        return _ModalSlot()

    async def render(self, slot: Slot, job: Job, hooks: RenderHooks) -> Rendered:
        del slot
        if job.call_id:
            call_id = job.call_id
            call = self._sdk.FunctionCall.from_id(call_id)
            log.info("job %s: resuming Modal call %s", job.id, call_id, extra=_fields(job))
        else:
            call = await self._spawn_once(job)
            call_id = call.object_id
            if not await hooks.remote_call(call_id):
                self._cancel_soon(call, call_id, "its job moved on before it was recorded")
                raise Superseded(job.id)
            log.info("job %s: spawned Modal call %s", job.id, call_id, extra=_fields(job))
        payload = await self._wait(call, call_id, job, hooks)
        path = self._tmp_dir / f"{job.id}-{job.attempt}-{secrets.token_hex(4)}.mp4"
        writing = asyncio.ensure_future(asyncio.to_thread(_write_verified, payload, path, call_id))
        try:
            info = await asyncio.shield(writing)
        except asyncio.CancelledError:
            writing.add_done_callback(functools.partial(_discard_written, path))
            raise
        return Rendered(path=path, info=info)

    async def cancel(self, job: Job, call_id: str) -> None:
        call = self._sdk.FunctionCall.from_id(call_id)
        await self._cancel_call(call, call_id, f"job {job.id} was cancelled")

    async def claim_recall(self, job: Job) -> bool:
        """Closes the job's start gate (`renderer.start_gate`) before its container
        opens it: True if this wrote `RECALLED` first, so the input will not render.
        False, and the job stays on Modal, when the container started first, when the
        gate fails or does not answer within `gate_timeout_s`, and for a call resumed
        from an earlier lease (adopted), whose gate is that lease's."""
        if job.call_id:
            return False
        key = gate_key(job.id, job.lease)
        try:
            wrote = await self._answered(
                self._start_gate().put.aio(key, RECALLED, skip_if_exists=True),
                "start gate write",
                self._config.gate_timeout_s,
            )
        except Exception as exc:
            self._note_unreachable(exc)
            log.warning(
                "job %s: could not close its start gate, so it stays on Modal: %r",
                job.id,
                exc,
                extra=_fields(job),
            )
            return False
        if not wrote:
            log.info(
                "job %s: its render started on Modal first; not recalled",
                job.id,
                extra=_fields(job),
            )
        return bool(wrote)

    async def set_autoscaler(self, settings: Autoscale) -> None:
        """Applies the settings (`apply_autoscaler`). A failure is logged, not raised:
        the reconcile loop that calls this applies them again (a deploy resets them
        anyway)."""
        try:
            await self.apply_autoscaler(settings)
        except ValueError as exc:
            log.error("not sending Modal autoscaler settings it would refuse: %s", exc)
        except Exception as exc:
            log.warning(
                "Modal autoscaler update to %s failed: %r",
                settings,
                exc,
                exc_info=not isinstance(exc, (self._errors.sdk, Unanswered)),
            )

    async def apply_autoscaler(self, settings: Autoscale) -> None:
        """Applies the settings through `Function.autoscaler.update` where the SDK has it
        and the deprecated `update_autoscaler` where it does not. Raises ValueError for
        settings Modal would refuse (they are not sent), and what the SDK raises; an
        unreachable Modal also makes the pool unavailable."""
        if (problem := autoscale_problem(settings)) is not None:
            raise ValueError(problem)
        obj = self._renderer()
        manager = cast(AutoscalerManager | None, getattr(obj.render, "autoscaler", None))
        update = obj.update_autoscaler if manager is None else manager.update
        try:
            await self._answered(
                update.aio(
                    min_containers=settings.min_containers,
                    max_containers=settings.max_containers,
                    buffer_containers=settings.buffer_containers,
                    scaledown_window=settings.scaledown_window_s,
                ),
                "autoscaler update",
            )
        except Exception as exc:
            self._note_unreachable(exc)
            raise

    async def stats(self) -> PoolStats:
        """The last known figures, at once: never a network call on the caller's path.
        Once they are older than `stats_ttl_s`, one refresh starts in the background."""
        cache = self._stats
        fresh = cache.at is not None and self._clock() - cache.at < self._config.stats_ttl_s
        if not fresh and cache.refreshing is None:
            cache.refreshing = self._hold(asyncio.ensure_future(self.refresh_stats()))
        return cache.value

    async def refresh_stats(self) -> PoolStats:
        """Asks Modal now. On failure, logs and keeps the last known figures.

        Modal counts every container, booting and buffer ones too, in
        `num_total_runners`; only a container that finished its start offers ready
        slots. While inputs wait (`backlog`), no ready slot is free, or an input would
        be in it: the ready slots are the busy ones. Otherwise they are the busy ones
        and the `input_headroom`. The containers' other slots are starting."""
        cache = self._stats
        concurrency = self._config.concurrency
        try:
            current = await self._answered(
                self._renderer().render.get_current_stats.aio(), "stats request"
            )
            idle = 0 if current.backlog > 0 else max(0, current.input_headroom)
            slots = current.num_total_runners * concurrency
            ready = min(slots, current.num_running_inputs + idle)
            cache.value = PoolStats(
                containers=current.num_total_runners,
                ready_slots=ready,
                starting_slots=slots - ready,
            )
        except Exception as exc:
            self._note_unreachable(exc)
            log.warning(
                "Modal stats failed, keeping the last known %s: %r",
                cache.value,
                exc,
                exc_info=not isinstance(exc, (self._errors.sdk, Unanswered)),
            )
        finally:
            cache.at = self._clock()
            cache.refreshing = None
        return cache.value

    async def billed_usd(self, start: datetime, end: datetime) -> float:
        """What Modal's billing report says the renderer's app cost from `start` to
        `end` (UTC; whole hours only, as the report counts only full intervals). Raises
        what the SDK raises, or Unanswered."""
        config = self._config
        environments = self._sdk.Environment
        environment = (
            environments.from_name(config.environment)
            if config.environment
            else environments.from_context()
        )
        items = await self._answered(
            environment.billing.report.aio(
                start=start, end=end, resolution="h", tag_names=[BILLING_TAG]
            ),
            "billing report",
        )
        return float(sum(i.cost for i in items if i.tags.get(BILLING_TAG) == config.app_name))

    async def close(self) -> None:
        """Lets cancels of orphaned calls reach Modal (for a while), then stops the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=_CLOSE_GRACE_S)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("Modal pool closed with %d SDK calls unfinished", len(pending))
            await asyncio.wait(pending)

    # Spawning

    def _renderer(self) -> RendererObj:
        """The class instance; `from_name` is lazy (no network until the first call)."""
        if self._obj is None:
            config = self._config
            cls = self._sdk.Cls.from_name(
                config.app_name, config.class_name, environment_name=config.environment
            )
            self._obj = cls()
        return self._obj

    def _start_gate(self) -> GateDict:
        """The Dict of start gates; like `from_name` for the class, lazy."""
        if self._gate is None:
            self._gate = self._sdk.Dict.from_name(
                self._config.start_dict,
                environment_name=self._config.environment,
                create_if_missing=True,
            )
        return self._gate

    async def _spawn_once(self, job: Job) -> FunctionCallHandle:
        """Spawns the job's call. Should we be cancelled, or give up on an unanswered
        spawn, while it is in flight, the call it makes is cancelled: it was never
        recorded, so nobody could adopt it."""
        spawning = self._hold(asyncio.ensure_future(self._spawn(job)))
        try:
            return await self._answered(asyncio.shield(spawning), "spawn")
        except Unanswered as exc:
            spawning.add_done_callback(self._cancel_orphan)
            self._note_unreachable(exc)
            raise RenderError(
                f"Modal is unavailable ({exc}); not spilling to it for "
                f"{self._config.unavailable_backoff_s:g} s",
                retryable=True,
                charge_attempt=False,
            ) from exc
        except asyncio.CancelledError:
            spawning.add_done_callback(self._cancel_orphan)
            raise

    async def _spawn(self, job: Job) -> FunctionCallHandle:
        request = RemoteRequest(
            job_id=job.id,
            prompt=job.spec.prompt,
            model=job.spec.model,
            seconds=job.spec.seconds,
            width=job.spec.width,
            height=job.spec.height,
            trace_context=tracing.carrier(),
            # Wall time, compared with the container's: the scheduler's clock and Modal's
            # are NTP-synced, which is well within a boot's seconds.
            spawned_at=time.time(),
            start_dict=self._config.start_dict,
            start_key=gate_key(job.id, job.lease),
        ).to_dict()
        errors = self._errors
        try:
            return await self._renderer().render.spawn.aio(request)
        except errors.full as exc:
            # Without a pause the policy would spill straight back into a full Modal.
            self._unavailable_until = max(
                self._unavailable_until, self._clock() + self._config.full_backoff_s
            )
            raise RenderError(
                f"Modal is full ({_describe(exc)}); the job waits for room",
                retryable=True,
                charge_attempt=False,
            ) from exc
        except errors.unreachable as exc:
            self._note_unreachable(exc)
            raise RenderError(
                f"Modal is unavailable ({_describe(exc)}); not spilling to it for "
                f"{self._config.unavailable_backoff_s:g} s",
                retryable=True,
                charge_attempt=False,
            ) from exc
        except errors.sdk as exc:
            raise RenderError(f"Modal refused the spawn: {_describe(exc)}", retryable=True) from exc

    def _cancel_orphan(self, spawning: asyncio.Future[FunctionCallHandle]) -> None:
        if spawning.cancelled() or spawning.exception() is not None:
            return
        call = spawning.result()
        self._cancel_soon(call, call.object_id, "it was spawned for a render that gave up on it")

    def _cancel_soon(self, call: FunctionCallHandle, call_id: str, why: str) -> None:
        """Cancels the call in the background: a cancel that cannot reach Modal may take
        a minute to fail, and the render's outcome does not depend on it."""
        self._hold(asyncio.ensure_future(self._cancel_call(call, call_id, why)))

    async def _cancel_call(self, call: FunctionCallHandle, call_id: str, why: str) -> None:
        # Terminating the container takes its other inputs down with it (Modal reruns
        # them elsewhere); alone on its container, a render stuck in SGLang is stopped
        # for sure only by terminating it.
        terminate = self._config.concurrency == 1
        try:
            await self._answered(call.cancel.aio(terminate_containers=terminate), "cancel")
            log.info("cancelled Modal call %s: %s", call_id, why)
        except Exception as exc:
            log.warning("could not cancel Modal call %s (%s): %r", call_id, why, exc)

    async def _answered(self, awaitable: Awaitable[T], what: str, limit: float | None = None) -> T:
        """`awaitable`, or Unanswered once `limit` (by default `call_timeout_s`) has
        passed without an answer."""
        limit = self._config.call_timeout_s if limit is None else limit
        timeout = asyncio.timeout(limit)
        try:
            async with timeout:
                return await awaitable
        except TimeoutError:
            if timeout.expired():
                raise Unanswered(f"Modal did not answer a {what} within {limit:g} s") from None
            raise

    # Waiting

    async def _wait(
        self, call: FunctionCallHandle, call_id: str, job: Job, hooks: RenderHooks
    ) -> Any:
        """The call's result, waiting at most `render_timeout_s` (give or take
        `get_grace_s`); transport trouble means waiting longer on the same call, never
        spawning another. Each `poll_interval_s` it reports progress, estimated from the
        time spent over `expected_render_s` and capped at 90."""
        config = self._config
        started = self._clock()
        deadline = started + config.render_timeout_s
        backoff = config.get_retry_min_s
        while (remaining := deadline - self._clock()) > 0:
            window = min(config.poll_interval_s, remaining)
            asked_at = self._clock()
            hang = asyncio.timeout(window + config.get_grace_s)
            try:
                async with hang:
                    return await call.get.aio(timeout=window)
            except TimeoutError:
                if hang.expired():
                    # The SDK is still retrying a connection it cannot make.
                    self._note_unreachable(
                        Unanswered(f"a wait on Modal call {call_id} hung past its window")
                    )
                else:
                    # The SDK's get raises the builtin TimeoutError once its window has
                    # passed with no result: the call is still running. One that comes
                    # back early is something else (a remote TimeoutError, say): back off.
                    early = self._clock() - asked_at < window / 2
                    if early:
                        await self._sleep_until(backoff, deadline)
                    backoff = (
                        min(backoff * 2, config.get_retry_max_s)
                        if early
                        else config.get_retry_min_s
                    )
            except Exception as exc:
                if (error := self._outcome(exc, call_id)) is not None:
                    raise error from exc
                log.warning(
                    "job %s: waiting on Modal call %s failed, retrying in %.1f s: %r",
                    job.id,
                    call_id,
                    backoff,
                    exc,
                    extra=_fields(job),
                )
                await self._sleep_until(backoff, deadline)
                backoff = min(backoff * 2, config.get_retry_max_s)
            percent = min(90, int(100 * (self._clock() - started) / config.expected_render_s))
            if not await hooks.progress(percent):
                raise Superseded(job.id)
        self._cancel_soon(call, call_id, f"no result within {config.render_timeout_s:g} s")
        raise RenderError(
            f"Modal call {call_id} did not finish within {config.render_timeout_s:g} s; "
            "cancelling it",
            retryable=True,
        )

    def _outcome(self, exc: BaseException, call_id: str) -> RenderError | None:
        """What a failed wait means: a final `RenderError`, or None to keep waiting."""
        e = self._errors
        what = f"Modal call {call_id}"
        if isinstance(exc, InvalidRenderRequest):
            return RenderError(str(exc), retryable=False, charge_attempt=False)
        if isinstance(exc, RenderRecalled):
            # Only when the recall itself did not go through (the job moved on, or Redis
            # failed): the input did no work, so the job goes back in line uncharged.
            return RenderError(f"{what}: {exc}", retryable=True, charge_attempt=False)
        if isinstance(exc, RendererBusy):
            return RenderError(
                f"{what}: renderer busy: {exc}", retryable=True, charge_attempt=False
            )
        if isinstance(exc, e.function_timeout):
            return RenderError(f"{what} timed out in its container: {exc}", retryable=True)
        if isinstance(exc, e.expired):
            return RenderError(f"{what}: its result expired", retryable=True)
        if isinstance(exc, e.not_found):
            return RenderError(f"{what} not found: {exc}", retryable=True)
        if isinstance(exc, e.transient):
            self._note_unreachable(exc)
            return None
        return RenderError(f"{what} failed: {_describe(exc)}", retryable=True)

    async def _sleep_until(self, delay: float, deadline: float) -> None:
        await asyncio.sleep(min(delay, max(0.0, deadline - self._clock())))

    # Bookkeeping

    def _note_unreachable(self, exc: BaseException) -> None:
        if isinstance(exc, (*self._errors.unreachable, Unanswered)):
            self._unavailable_until = self._clock() + self._config.unavailable_backoff_s
            self._obj = None  # looked up afresh next time (after a deploy, say)
            self._gate = None
            log.warning("Modal unavailable for %g s: %r", self._config.unavailable_backoff_s, exc)

    def _hold(self, future: asyncio.Future[T]) -> asyncio.Future[T]:
        """Keeps a background future referenced until done, for `close` to wait on."""
        self._tasks.add(future)
        future.add_done_callback(self._tasks.discard)
        return future


def _write_verified(payload: Any, path: Path, call_id: str) -> RenderInfo:
    """Decodes a call's result, checks the MP4 against its metadata and writes it to a
    new file at `path` (removed again if writing fails). Runs in a thread."""
    try:
        result = RemoteResult.from_dict(payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise RenderError(
            f"Modal call {call_id} returned a malformed result: {exc!r}", retryable=True
        ) from exc
    meta = result.metadata
    digest = hashlib.sha256(result.mp4).hexdigest()
    if len(result.mp4) != meta.bytes or digest != meta.sha256:
        raise RenderError(
            f"Modal call {call_id}: MP4 arrived corrupted ({len(result.mp4)} bytes, sha256 "
            f"{digest[:12]}; expected {meta.bytes}, {meta.sha256[:12]})",
            retryable=True,
        )
    out = path.open("xb")
    try:
        with out:
            out.write(result.mp4)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return RenderInfo.from_metadata(meta)


def _discard_written(path: Path, writing: asyncio.Future[RenderInfo]) -> None:
    """The render was cancelled while its file was being written: remove the file."""
    if not writing.cancelled():
        writing.exception()  # seen: the caller is gone, and the file goes either way
    path.unlink(missing_ok=True)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _fields(job: Job) -> dict[str, str]:
    return {"job_id": job.id, "trace_id": job.trace_id}
