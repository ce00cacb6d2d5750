"""Text rendered once into alpha masks: the CPU stand-in's captions.

Pillow runs only while a render sets up; per frame, callers just copy these arrays.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

Alpha = npt.NDArray[np.uint8]
"""A height x width coverage mask, 0 (clear) to 255 (solid)."""

MIN_FONT_PX = 8
ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"
# Past this a caption is unreadable at any size; the cut keeps layout time bounded.
MAX_CAPTION_CHARS = 1000


def font(size_px: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled font, so captions look the same on every machine."""
    face = ImageFont.load_default(size=max(MIN_FONT_PX, size_px))
    if not isinstance(face, ImageFont.FreeTypeFont):
        raise RuntimeError("Pillow was built without FreeType; captions need it")
    return face


def line_height(face: ImageFont.FreeTypeFont) -> int:
    ascent, descent = face.getmetrics()
    return int(ascent + descent)


def text_width(face: ImageFont.FreeTypeFont, text: str) -> int:
    return math.ceil(face.getlength(text))


def draw(text: str, face: ImageFont.FreeTypeFont, width: int | None = None) -> Alpha:
    """One line of text as a mask, `width` wide (its own width by default)."""
    image = Image.new("L", (width or max(1, text_width(face, text)), line_height(face)))
    ImageDraw.Draw(image).text((0, 0), text, font=face, fill=255)
    return np.asarray(image, dtype=np.uint8)


def caption(text: str, *, width: int, height: int, size_px: int) -> Alpha:
    """`text` word-wrapped and centred in a box at most width x height.

    The font shrinks from `size_px` until the text fits; if it still does not fit at
    the smallest size, the last line that fits ends in an ellipsis. The mask is only as
    tall as its lines.
    """
    text = " ".join(text.split())
    if len(text) > MAX_CAPTION_CHARS:
        text = text[:MAX_CAPTION_CHARS] + ELLIPSIS
    size = max(MIN_FONT_PX, size_px)
    while True:
        face = font(size)
        lines = wrap(text, face, width)
        fits = len(lines) * line_height(face) <= height
        if fits or size == MIN_FONT_PX:
            break
        size = max(MIN_FONT_PX, size * 5 // 6)
    if not fits:
        lines = _truncate(lines, face, width, max(1, height // line_height(face)))
    step = line_height(face)
    image = Image.new("L", (max(1, width), max(1, step * len(lines))))
    pen = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        pen.text(((width - face.getlength(line)) / 2, row * step), line, font=face, fill=255)
    return np.asarray(image, dtype=np.uint8)


def wrap(text: str, face: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap; a word wider than a line is broken between characters."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if face.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while len(word) > 1 and face.getlength(word) > width:
            cut = _longest_fitting_prefix(word, face, width)
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line:
        lines.append(line)
    return lines


def _longest_fitting_prefix(word: str, face: ImageFont.FreeTypeFont, width: int) -> int:
    """Length of the longest prefix of `word` that fits, at least 1 character."""
    low, high = 1, len(word)
    while low < high:
        middle = (low + high + 1) // 2
        if face.getlength(word[:middle]) <= width:
            low = middle
        else:
            high = middle - 1
    return low


def _truncate(lines: list[str], face: ImageFont.FreeTypeFont, width: int, keep: int) -> list[str]:
    kept = lines[:keep]
    last = kept[-1]
    while last and face.getlength(last + ELLIPSIS) > width:
        last = last[:-1]
    return [*kept[:-1], last + ELLIPSIS]
