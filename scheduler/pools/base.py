"""What every pool offers the dispatcher."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from scheduler.policy.model import Autoscale
from scheduler.store.jobs import Job


class RenderHooks(Protocol):
    """How a render reports back to the job it belongs to. Each returns False when the
    job was cancelled, deleted or taken over meanwhile: the pool then stops with
    `Superseded`."""

    async def progress(self, percent: int) -> bool:
        """The render's progress, 0-100."""

    async def remote_call(self, call_id: str) -> bool:
        """Records the id of a remote call (a Modal FunctionCall) on the job, before the
        pool waits on it, so that any replica can resume it after a crash."""

    async def started(self) -> bool:
        """Records that the render starts, before its input reaches a renderer: a job
        whose start is recorded is never recalled, and one recalled first answers
        False."""


class Superseded(Exception):
    """The job was cancelled, deleted or taken over by another attempt mid-render."""


class RenderError(Exception):
    """A render did not produce an MP4.

    `retryable`: a fresh attempt may succeed (the renderer died, timed out or was full).
    `charge_attempt`: whether the failure counts against the job's attempts; only a
    render that ran and failed does (not one that never reached a renderer, nor one a
    full fleet turned away).
    `endpoint_down`: the renderer it was sent to is unreachable or full, and should get
    no more work until it is healthy again.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        charge_attempt: bool = True,
        endpoint_down: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.charge_attempt = charge_attempt
        self.endpoint_down = endpoint_down


class RenderMetadata(Protocol):
    """The metadata a renderer reports, over gRPC or from Modal: both use these names."""

    @property
    def container_id(self) -> str: ...
    @property
    def cold_start(self) -> bool: ...
    @property
    def boot_seconds(self) -> float: ...
    @property
    def restore_seconds(self) -> float: ...
    @property
    def render_seconds(self) -> float: ...
    @property
    def bytes(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def duration_seconds(self) -> float: ...
    @property
    def frames(self) -> int: ...
    @property
    def engine(self) -> str: ...


@dataclass(frozen=True)
class RenderInfo:
    """What the renderer reported about one render."""

    container_id: str
    cold_start: bool
    boot_s: float
    restore_s: float
    render_s: float
    bytes: int
    sha256: str
    duration_s: float
    frames: int
    engine: str

    @classmethod
    def from_metadata(cls, meta: RenderMetadata) -> RenderInfo:
        return cls(
            container_id=meta.container_id,
            cold_start=meta.cold_start,
            boot_s=meta.boot_seconds,
            restore_s=meta.restore_seconds,
            render_s=meta.render_seconds,
            bytes=meta.bytes,
            sha256=meta.sha256,
            duration_s=meta.duration_seconds,
            frames=meta.frames,
            engine=meta.engine,
        )


@dataclass(frozen=True)
class Rendered:
    path: Path
    """The MP4's file, which the caller owns; not written when `data` holds the MP4."""
    info: RenderInfo
    data: bytes | None = None
    """The whole MP4, when it was small enough to stay in memory (`stream_render`)."""


@dataclass(frozen=True)
class PoolStats:
    """What a pool knows of its fleet right now."""

    containers: int
    """Containers (or endpoints) up or starting."""
    ready_slots: int
    """Inputs that running containers could take at once without a cold start, busy or
    not (containers x per-container concurrency, for those that finished booting)."""
    starting_slots: int = 0
    """Inputs the containers still starting (waiting for a GPU, booting, restoring) will
    take once ready, busy or not; not counted in `ready_slots`."""


class Slot(ABC):
    """A reserved unit of a pool's capacity, held for the length of one render."""

    @abstractmethod
    def release(self) -> None: ...


class Pool(ABC):
    name: str
    resumable: bool = False
    """Whether a render outlives this process (a Modal call): on shutdown such jobs are
    left running for another replica to adopt, rather than requeued."""
    recallable: bool = False
    """Whether a job not started yet may be recalled: the pool reports each render's
    start (`RenderHooks.started`) before the input reaches a renderer, or settles the
    race with the renderer itself (`claim_recall`). A pool that can do neither never
    has a job recalled."""

    @property
    def available(self) -> bool:
        """False while the fleet is failing (auth, not deployed, unreachable), so that the
        policy holds jobs rather than send them there."""
        return True

    @abstractmethod
    async def acquire(self) -> Slot:
        """Reserves room for one render of a job already claimed for this pool, waiting
        if there is none yet (a container still booting). How many jobs each pool may
        run across all replicas is enforced in Redis, at the claim."""

    @abstractmethod
    async def render(self, slot: Slot, job: Job, hooks: RenderHooks) -> Rendered:
        """Renders the job into a local MP4 file that the caller owns and removes. A job
        with a `call_id` resumes that remote call instead of starting another."""

    async def claim_recall(self, job: Job) -> bool:
        """Called before a recall of a job that has not reported its start: False
        keeps the job where it is, for good (its render started, or the pool could not
        tell). Pools whose start the store alone fences (`RenderHooks.started`) agree."""
        del job
        return True

    async def cancel(self, job: Job, call_id: str) -> None:
        """Stops remote work for a job that was cancelled or deleted. Pools whose
        renders end with the stream that carries them need do nothing."""
        del job, call_id

    @abstractmethod
    async def stats(self) -> PoolStats: ...

    async def billed_usd(self, start: datetime, end: datetime) -> float | None:
        """What the fleet's own bill says it cost from `start` to `end` (UTC), or None
        for a fleet with no bill to read."""
        del start, end
        return None

    async def set_autoscaler(self, settings: Autoscale) -> None:
        """Applies autoscaler settings (pre-warm). Fixed fleets ignore them."""
        del settings

    @abstractmethod
    async def close(self) -> None: ...
