"""H.264 MP4 encoding of RGB frames with PyAV's bundled libx264."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Self

import av
import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.uint8]
"""One RGB frame: height x width x 3, uint8."""

DEFAULT_PRESET = "veryfast"
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


class Mp4Encoder:
    """Writes frames, in order, as a yuv420p H.264 MP4 of `fps` frames per second.

    Frame i is stamped at i/fps, so a file of n frames decodes to exactly n/fps
    seconds. The moov atom goes first (`+faststart`) so a reader can start playing
    before the last byte arrives.
    """

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        fps: int,
        preset: str = DEFAULT_PRESET,
    ) -> None:
        if preset not in X264_PRESETS:
            raise ValueError(f"unknown x264 preset {preset!r}; expected one of {X264_PRESETS}")
        self._shape = (height, width, 3)
        self._time_base = Fraction(1, fps)
        self._frames = 0
        self._closed = False
        self._container = av.open(
            str(path), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.time_base = self._time_base
        self._stream.options = {"preset": preset}

    @property
    def frames(self) -> int:
        return self._frames

    def write(self, frame: Frame) -> None:
        # PyAV would silently rescale a frame of the wrong size; a decoder bug should fail.
        if frame.shape != self._shape or frame.dtype != np.uint8:
            raise ValueError(f"frame is {frame.shape} {frame.dtype}, expected {self._shape} uint8")
        # Wrapping the array instead of copying it is safe: encode() converts it to
        # yuv420p before returning, and saves a full-frame copy per frame.
        video_frame = av.VideoFrame.from_numpy_buffer(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self._frames
        video_frame.time_base = self._time_base
        self._container.mux(self._stream.encode(video_frame))
        self._frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # The file is being abandoned: skip the flush, just release the muxer and codec.
        self._closed = True
        self._container.close()
