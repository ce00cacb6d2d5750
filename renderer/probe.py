"""Checking an MP4 the only reliable way: decoding every frame of it.

A header check passes on a truncated faststart file, because the moov atom at the front
already lists every frame.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import av


@dataclass(frozen=True, slots=True)
class Mp4Info:
    codec: str
    width: int
    height: int
    frames: int
    fps: float
    duration_seconds: float


def probe_mp4(source: Path | bytes) -> Mp4Info:
    """Decode the first video stream of `source` to the end; raises av.error.FFmpegError
    (or ValueError without a video stream) when it does not decode."""
    with av.open(
        str(source) if isinstance(source, Path) else io.BytesIO(source), mode="r"
    ) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        if stream.duration is None or stream.time_base is None:
            raise ValueError("video stream has no duration")
        return Mp4Info(
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            frames=frames,
            fps=float(stream.average_rate or 0),
            duration_seconds=float(stream.duration * stream.time_base),
        )
