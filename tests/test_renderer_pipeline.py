"""The render pipeline with the CPU engine and decoder: real MP4s, checked by decoding."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from renderer.cpu import CpuFrameDecoder, CpuTokenEngine
from renderer.encoder import Frame, Mp4Encoder
from renderer.errors import RenderCancelled, RenderFailed
from renderer.pipeline import FrameTokens, RenderSpec, render_to_file
from renderer.probe import probe_mp4

PROMPT = "A red fox trotting through fresh snow at dawn"


def spec(
    *, prompt: str = PROMPT, seconds: int = 2, width: int = 160, height: int = 128, fps: int = 8
) -> RenderSpec:
    return RenderSpec(
        job_id="job-1",
        prompt=prompt,
        model="stand-in",
        seconds=seconds,
        width=width,
        height=height,
        fps=fps,
    )


def render(tmp_path: Path, render_spec: RenderSpec, name: str = "out.mp4") -> Path:
    path = tmp_path / name
    render_to_file(render_spec, path, engine=CpuTokenEngine(), decoder=CpuFrameDecoder())
    return path


def first_frame(path: Path) -> Frame:
    with av.open(str(path), mode="r") as container:
        frame = next(container.decode(video=0))
        return np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)


def drawn(render_spec: RenderSpec, index: int, phase: float) -> Frame:
    token = FrameTokens(index=index, data=np.array([phase]))
    return next(CpuFrameDecoder().frames(render_spec, [token]))


@pytest.mark.parametrize(
    ("seconds", "width", "height", "fps"),
    [(2, 160, 128, 8), (1, 64, 48, 4), (1, 16, 16, 4), (3, 162, 90, 5)],
)
def test_render_decodes_to_requested_frames_size_and_duration(
    tmp_path: Path, seconds: int, width: int, height: int, fps: int
) -> None:
    """A CPU render decodes fully to seconds*fps H.264 frames of the requested size and length."""
    path = render(tmp_path, spec(seconds=seconds, width=width, height=height, fps=fps))

    info = probe_mp4(path)

    assert (info.codec, info.width, info.height) == ("h264", width, height)
    assert info.frames == seconds * fps
    assert info.duration_seconds == pytest.approx(seconds, abs=1 / fps)


def test_render_at_full_size(tmp_path: Path) -> None:
    """A portrait 720x1280 render of one second at 8 fps decodes to 8 full-size frames."""
    path = render(tmp_path, spec(seconds=1, width=720, height=1280, fps=8))

    info = probe_mp4(path)

    assert (info.width, info.height, info.frames) == (720, 1280, 8)
    assert info.duration_seconds == pytest.approx(1.0, abs=1 / 8)


def test_result_describes_the_file(tmp_path: Path) -> None:
    """The result's size and sha256 are those of the file written, with frames and fps."""
    path = tmp_path / "out.mp4"

    result = render_to_file(spec(), path, engine=CpuTokenEngine(), decoder=CpuFrameDecoder())

    data = path.read_bytes()
    assert result.path == path
    assert result.bytes == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (result.frames, result.fps, result.duration_seconds) == (16, 8, 2.0)
    assert result.engine == "cpu"
    assert result.render_seconds > 0


def test_different_prompts_give_different_first_frames(tmp_path: Path) -> None:
    """Two prompts render visibly different first frames."""
    fox = first_frame(render(tmp_path, spec(prompt=PROMPT), "fox.mp4"))
    owl = first_frame(render(tmp_path, spec(prompt="An owl reading a newspaper"), "owl.mp4"))

    assert np.abs(fox.astype(int) - owl.astype(int)).mean() > 10


def test_prompt_is_drawn_as_text() -> None:
    """A longer prompt lights up more near-white text pixels, which the background never has."""
    short = drawn(spec(prompt="Fox"), index=0, phase=0.0)
    long = drawn(spec(prompt="Fox " * 12), index=0, phase=0.0)

    def text_pixels(frame: Frame) -> int:
        return int((frame.min(axis=2) >= 190).sum())

    assert 0 < text_pixels(short) < text_pixels(long)


def test_frame_index_label_changes_only_the_label() -> None:
    """Frames differing only in index differ only in the bottom-left frame label."""
    render_spec = spec(width=160, height=128)
    frame_3 = drawn(render_spec, index=3, phase=0.25)
    frame_12 = drawn(render_spec, index=12, phase=0.25)

    changed_rows, changed_columns = np.nonzero((frame_3 != frame_12).any(axis=2))
    assert changed_rows.size > 0
    assert changed_rows.min() >= render_spec.height * 3 // 4
    assert changed_columns.max() < render_spec.width * 3 // 4


def test_background_moves_between_frames() -> None:
    """The engine's successive frames differ outside the captions: the background drifts."""
    render_spec = spec(seconds=1, fps=4)
    engine_frames = list(
        CpuFrameDecoder().frames(render_spec, CpuTokenEngine().tokens(render_spec))
    )

    assert not np.array_equal(engine_frames[0][:4], engine_frames[1][:4])


def test_progress_counts_every_frame(tmp_path: Path) -> None:
    """Progress starts at 0 frames and rises by one frame at a time to frames_total."""
    calls: list[tuple[int, int]] = []

    render_to_file(
        spec(seconds=1, fps=6),
        tmp_path / "out.mp4",
        engine=CpuTokenEngine(),
        decoder=CpuFrameDecoder(),
        on_progress=lambda done, total: calls.append((done, total)),
    )

    assert calls == [(done, 6) for done in range(7)]


def test_cancel_stops_between_frames(tmp_path: Path) -> None:
    """Setting the cancel event stops the render before the next frame."""
    cancel = threading.Event()
    done_frames: list[int] = []

    def on_progress(done: int, total: int) -> None:
        done_frames.append(done)
        if done == 3:
            cancel.set()

    with pytest.raises(RenderCancelled):
        render_to_file(
            spec(),
            tmp_path / "out.mp4",
            engine=CpuTokenEngine(),
            decoder=CpuFrameDecoder(),
            on_progress=on_progress,
            cancel=cancel,
        )
    assert done_frames[-1] == 3


class ShortDecoder:
    """A decoder that breaks its contract by dropping the last frame."""

    def frames(self, spec: RenderSpec, tokens: Iterable[FrameTokens]) -> Iterator[Frame]:
        return itertools.islice(CpuFrameDecoder().frames(spec, tokens), spec.frames - 1)


def test_missing_frames_fail_the_render(tmp_path: Path) -> None:
    """A decoder that yields fewer frames than requested fails the render."""
    with pytest.raises(RenderFailed, match="15 of 16 frames"):
        render_to_file(
            spec(), tmp_path / "out.mp4", engine=CpuTokenEngine(), decoder=ShortDecoder()
        )


def test_encoder_rejects_a_frame_of_the_wrong_size(tmp_path: Path) -> None:
    """The encoder refuses a frame whose size differs from the video's."""
    with (
        Mp4Encoder(tmp_path / "out.mp4", width=32, height=16, fps=4) as encoder,
        pytest.raises(ValueError, match="expected"),
    ):
        encoder.write(np.zeros((32, 16, 3), dtype=np.uint8))
