"""A token engine and frame decoder that need no GPU and no weights.

They make real, playable videos that show the prompt and the frame index over a
background that drifts, all derived from the prompt alone, so the same request renders
the same video. Everything costly (text layout, the background's colour ramp) happens
once per render; a frame costs one strided copy and a few small in-place blends, far
less than x264 spends encoding it.
"""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

from renderer import textlayer
from renderer.encoder import Frame
from renderer.pipeline import FrameTokens, RenderSpec

ENGINE_NAME = "cpu"


class CpuTokenEngine:
    """Emits, per frame, the background's phase in [0, 1): the only "latent" the CPU
    decoder needs. The drift speed and direction come from the prompt."""

    @property
    def name(self) -> str:
        return ENGINE_NAME

    def tokens(self, spec: RenderSpec) -> Iterator[FrameTokens]:
        seed = _prompt_seed(spec.prompt)
        cycles_per_second = (0.15 + 0.35 * seed[0] / 255) * (1 if seed[1] % 2 else -1)
        step = cycles_per_second / spec.fps
        for index in range(spec.frames):
            phase = (index * step) % 1.0
            yield FrameTokens(index=index, data=np.array([phase], dtype=np.float64))


class CpuFrameDecoder:
    """Draws each frame from a scene laid out once per render."""

    def frames(self, spec: RenderSpec, tokens: Iterable[FrameTokens]) -> Iterator[Frame]:
        scene = _Scene(spec)
        for token in tokens:
            yield scene.draw(token.index, float(token.data[0]))


@dataclass(frozen=True, slots=True)
class _Overlay:
    """A caption box blended in place: background dimmed to a quarter, plus the text
    mask scaled so that the sum never overflows uint8."""

    top: int
    left: int
    layer: Frame

    @classmethod
    def place(cls, layer: Frame, top: int, left: int, frame_shape: tuple[int, int]) -> _Overlay:
        """Clip `layer` to the frame (tiny frames are narrower than a caption). The
        overlay keeps a view, so later writes to `layer` show in the next blend."""
        height, width = frame_shape
        top, left = max(0, top), max(0, left)
        return cls(top, left, layer[: max(0, height - top), : max(0, width - left)])

    def blend_into(self, frame: Frame) -> None:
        height, width = self.layer.shape[:2]
        region = frame[self.top : self.top + height, self.left : self.left + width]
        np.right_shift(region, 2, out=region)
        np.add(region, self.layer, out=region)


class _FrameLabel:
    """The "frame 17/96" label in the bottom-left corner. Digits are pasted from glyphs
    drawn once, right-aligned in fixed slots so the label never jitters."""

    def __init__(self, total: int, frame_shape: tuple[int, int], size_px: int, margin: int):
        face = textlayer.font(size_px)
        self._slots = len(str(total))
        self._digit_width = max(textlayer.text_width(face, d) for d in "0123456789")
        self._glyphs = {
            d: _to_layer(textlayer.draw(d, face, self._digit_width)) for d in "0123456789 "
        }
        prefix = textlayer.draw("frame ", face)
        suffix = textlayer.draw(f"/{total}", face)
        pad = max(1, margin // 2)
        line = textlayer.line_height(face)
        self._top = pad
        self._left = pad + prefix.shape[1]
        width = self._left + self._slots * self._digit_width + suffix.shape[1] + pad
        patch = np.zeros((line + 2 * pad, width), dtype=np.uint8)
        patch[pad : pad + line, pad : self._left] = prefix
        patch[pad : pad + line, width - pad - suffix.shape[1] : width - pad] = suffix
        self._patch = _to_layer(patch)
        top = frame_shape[0] - margin - patch.shape[0]
        self._overlay = _Overlay.place(self._patch, top, margin, frame_shape)

    def blend_into(self, frame: Frame, index: int) -> None:
        digits = str(index + 1).rjust(self._slots)
        rows = slice(self._top, self._top + self._glyphs[" "].shape[0])
        for slot, digit in enumerate(digits):
            x = self._left + slot * self._digit_width
            self._patch[rows, x : x + self._digit_width] = self._glyphs[digit]
        self._overlay.blend_into(frame)


class _Scene:
    """Everything about one render's frames that does not change between frames."""

    def __init__(self, spec: RenderSpec) -> None:
        height, width = spec.height, spec.width
        seed = _prompt_seed(spec.prompt)
        short = min(width, height)
        margin = max(1, short // 40)
        self._shape = (height, width, 3)
        self._label = _FrameLabel(spec.frames, (height, width), short // 24, margin)
        label_height = textlayer.line_height(textlayer.font(short // 24)) + 2 * margin
        text = textlayer.caption(
            spec.prompt,
            width=width - 4 * margin,
            height=height - label_height - 4 * margin,
            size_px=short // 12,
        )
        box = np.zeros((text.shape[0] + 2 * margin, width - 2 * margin), dtype=np.uint8)
        box[margin : margin + text.shape[0], margin : margin + text.shape[1]] = text
        top = margin + max(0, (height - label_height - margin - box.shape[0]) // 2)
        self._caption = _Overlay.place(_to_layer(box), top, margin, (height, width))
        self._background = _Background(seed, width, height)

    def draw(self, index: int, phase: float) -> Frame:
        frame = np.empty(self._shape, dtype=np.uint8)
        np.copyto(frame, self._background.at(phase))
        self._caption.blend_into(frame)
        self._label.blend_into(frame, index)
        return frame


class _Background:
    """Diagonal colour bands that repeat every `period` pixels along a row and shift
    `slope` pixels per row. Every row of every frame is a window on one precomputed
    strip, so a frame is a strided view: no per-pixel arithmetic."""

    def __init__(self, seed: bytes, width: int, height: int) -> None:
        self._width, self._height = width, height
        self._slope = 1 + seed[2] % 3
        self._period = max(32, (width + height) // 2)
        x = np.arange(self._period + self._slope * height + width, dtype=np.float64)
        stops = np.linspace(0.0, 1.0, 4)
        colours = _palette(seed)
        u = (x / self._period) % 1.0
        strip = np.stack([np.interp(u, stops, colours[:, c]) for c in range(3)], axis=1)
        self._strip = np.ascontiguousarray(strip.round().astype(np.uint8))

    def at(self, phase: float) -> Frame:
        offset = int(phase * self._period) % self._period
        start = self._strip[offset:]
        pixel, channel = self._strip.strides
        return as_strided(
            start,
            shape=(self._height, self._width, 3),
            strides=(self._slope * pixel, pixel, channel),
            writeable=False,
        )


def _palette(seed: bytes) -> npt.NDArray[np.float64]:
    """Three colours a third of the hue wheel apart, cycled back to the first."""
    hue = seed[3] / 255
    saturation = 0.45 + 0.35 * seed[4] / 255
    value = 0.55 + 0.3 * seed[5] / 255
    rgb = [colorsys.hsv_to_rgb((hue + k / 3) % 1.0, saturation, value) for k in range(3)]
    return np.array([*rgb, rgb[0]], dtype=np.float64) * 255


def _to_layer(alpha: textlayer.Alpha) -> Frame:
    # A quarter of the background plus three quarters of white tops out at 63 + 189.
    return np.repeat((alpha // 4 * 3)[..., None], 3, axis=2)


def _prompt_seed(prompt: str) -> bytes:
    return hashlib.sha256(prompt.encode()).digest()
