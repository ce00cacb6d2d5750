"""What every pool offers the dispatcher."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from scheduler.jobs import Job

ProgressCallback = Callable[[int], Awaitable[bool]]
"""Called with the render's percent (0-100); returning False aborts the render with
`Superseded` (the job was cancelled or taken over)."""


class Superseded(Exception):
    """The job was cancelled, deleted or taken over by another attempt mid-render."""


class RenderError(Exception):
    """A render did not produce an MP4.

    `retryable`: a fresh attempt may succeed (the renderer died, timed out or was full).
    `charge_attempt`: whether the failure counts against the job's attempts; a full
    renderer turning the job away does not.
    """

    def __init__(self, message: str, *, retryable: bool, charge_attempt: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.charge_attempt = charge_attempt


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


@dataclass(frozen=True)
class Rendered:
    path: Path
    info: RenderInfo


class Slot(ABC):
    """A reserved unit of a pool's capacity, held for the length of one render."""

    @abstractmethod
    def release(self) -> None: ...


class Pool(ABC):
    name: str

    @abstractmethod
    async def acquire(self) -> Slot:
        """Waits until the pool has a free slot and reserves it."""

    @abstractmethod
    async def render(self, slot: Slot, job: Job, on_progress: ProgressCallback) -> Rendered:
        """Renders the job into a local MP4 file that the caller owns and removes."""

    @abstractmethod
    def capacity(self) -> tuple[int, int]:
        """(busy, total) slots."""

    @abstractmethod
    async def close(self) -> None: ...
