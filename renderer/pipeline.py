"""One render: a token engine feeds a frame decoder, whose frames an encoder writes as MP4.

The engine and decoder are the plug points for the production model (SGLang on a GPU);
`renderer.cpu` provides stand-ins that need neither. The pipeline is synchronous,
CPU-bound work: servers run it in a worker thread.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy.typing as npt

from renderer.encoder import DEFAULT_PRESET, Frame, Mp4Encoder
from renderer.errors import RenderCancelled, RenderFailed

__all__ = [
    "Frame",
    "FrameDecoder",
    "FrameTokens",
    "ProgressCallback",
    "RenderResult",
    "RenderSpec",
    "TokenEngine",
    "render_to_file",
]

ProgressCallback = Callable[[int, int], None]
"""Called with (frames_done, frames_total): once with 0 before the first frame, then
after every frame written."""


@dataclass(frozen=True, slots=True)
class RenderSpec:
    """What to render: a validated request."""

    job_id: str
    prompt: str
    model: str
    seconds: int
    width: int
    height: int
    fps: int

    @property
    def frames(self) -> int:
        return self.seconds * self.fps


@dataclass(frozen=True, slots=True)
class FrameTokens:
    """The engine's output for one frame: tokens or latents, as the decoder expects."""

    index: int
    data: npt.NDArray[Any]


@dataclass(frozen=True, slots=True)
class RenderResult:
    """A finished MP4 on disk and what a caller needs to trust and describe it."""

    path: Path
    bytes: int
    sha256: str
    duration_seconds: float
    frames: int
    fps: int
    render_seconds: float
    engine: str


class TokenEngine(Protocol):
    """Turns a prompt into per-frame tokens. One instance serves concurrent renders,
    each calling `tokens` from its own thread."""

    @property
    def name(self) -> str: ...

    def tokens(self, spec: RenderSpec) -> Iterator[FrameTokens]:
        """Yield `spec.frames` items, in frame order."""


class FrameDecoder(Protocol):
    """Turns one render's token stream into RGB frames (height x width x 3, uint8).
    A stream in, a stream out, so a decoder may keep per-render state or batch."""

    def frames(self, spec: RenderSpec, tokens: Iterable[FrameTokens]) -> Iterator[Frame]: ...


def render_to_file(
    spec: RenderSpec,
    path: Path,
    *,
    engine: TokenEngine,
    decoder: FrameDecoder,
    preset: str = DEFAULT_PRESET,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> RenderResult:
    """Render `spec` into an MP4 at `path`.

    Raises RenderCancelled when `cancel` is set (checked between frames), and
    RenderFailed when the decoder yields the wrong number of frames. On any error the
    file at `path` may be partial: the caller owns it either way.
    """
    started = time.perf_counter()
    total = spec.frames
    report = on_progress or _ignore_progress
    report(0, total)
    with Mp4Encoder(
        path, width=spec.width, height=spec.height, fps=spec.fps, preset=preset
    ) as encoder:
        for frame in decoder.frames(spec, engine.tokens(spec)):
            if encoder.frames == total:
                raise RenderFailed(f"decoder yielded more than the {total} frames requested")
            encoder.write(frame)
            report(encoder.frames, total)
            if cancel is not None and cancel.is_set():
                raise RenderCancelled(f"render {spec.job_id} cancelled")
        if encoder.frames != total:
            raise RenderFailed(f"decoder yielded {encoder.frames} of {total} frames")
    size, digest = _size_and_sha256(path)
    return RenderResult(
        path=path,
        bytes=size,
        sha256=digest,
        duration_seconds=total / spec.fps,
        frames=total,
        fps=spec.fps,
        render_seconds=time.perf_counter() - started,
        engine=engine.name,
    )


def _ignore_progress(frames_done: int, frames_total: int) -> None:
    return None


def _size_and_sha256(path: Path) -> tuple[int, str]:
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return f.tell(), digest.hexdigest()
