"""Text drawn into RGB arrays, and the stacking of labelled parts into one image.

Labels are drawn with Pillow's ``ImageDraw`` in DejaVu Sans, the font file that ships
with matplotlib (so nothing is downloaded and every machine draws the same pixels), at
100 dots per inch. A line of text is a box one line high with its baseline at the font's
ascent, so lines of one size stack evenly and parts placed side by side line up.
"""

from __future__ import annotations

import functools
import math
import threading
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nsp.viz.colors import ROW_BG, ROW_INK, Palette

__all__ = ["FONT_PT", "GAP", "line_metrics", "text_line", "blank", "hstack", "vstack", "format_number"]

FONT_PT = 8.0  # the size of the labels of whole patterns, in points
GAP = 4  # pixels between labels, images and layers
_FONT_DPI = 100.0
_FONT_FILE = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
# FreeType faces must not be used by two threads at once, and one face per size is shared.
_FONT_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def _font(points: float) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(_FONT_FILE, size=points * _FONT_DPI / 72.0)


def line_metrics(points: float = FONT_PT) -> tuple[int, int]:
    """``(ascent, height)`` in pixels of a line of text at ``points``."""
    ascent, descent = _font(points).getmetrics()
    return ascent, ascent + descent


@functools.lru_cache(maxsize=2048)
def _text_alpha(text: str, points: float = FONT_PT) -> np.ndarray:
    """Coverage of ``text`` in a box one line high, baseline-aligned; read-only."""
    ascent, height = line_metrics(points)
    font = _font(points)
    with _FONT_LOCK:
        left, _, right, _ = font.getbbox(text, anchor="ls")
        # A glyph may reach left of the pen (left < 0) or past the last advance.
        x = max(0, -left)
        width = x + max(right, math.ceil(font.getlength(text)))
        if width == 0:
            return np.zeros((height, 0), dtype=np.uint8)
        image = Image.new("L", (width, height), 0)
        ImageDraw.Draw(image).text((x, ascent), text, fill=255, font=font, anchor="ls")
    box = np.asarray(image)
    box.flags.writeable = False
    return box


def text_line(text: str, pal: Palette, points: float = FONT_PT) -> np.ndarray:
    """``text`` as one line of the palette's ink on its canvas colour.

    Returns
    -------
    numpy.ndarray
        ``uint8``, shape ``(line_metrics(points)[1], width, 3)``; as wide as the text.
    """
    bg, ink = pal.lut[pal.row(ROW_BG)], pal.lut[pal.row(ROW_INK)]
    # One gather from a table of the 256 coverages, not a float blend per pixel: cards draw
    # hundreds of lines per record.
    return _blend_table(bg.tobytes(), ink.tobytes())[_text_alpha(text, points)]


@functools.lru_cache(maxsize=64)
def _blend_table(bg: bytes, ink: bytes) -> np.ndarray:
    """``(256, 3)`` uint8: the colour of each coverage 0..255 of ``ink`` on ``bg`` (RGB bytes)."""
    alpha = np.arange(256, dtype=np.float32)[:, None] / 255.0
    low, high = (np.frombuffer(c, dtype=np.uint8).astype(np.float32) for c in (bg, ink))
    table = np.rint(low + (high - low) * alpha).astype(np.uint8)
    table.flags.writeable = False
    return table


def blank(height: int, width: int, pal: Palette) -> np.ndarray:
    """A ``height x width`` RGB image of the palette's canvas colour."""
    # np.tile copies whole rows; filling a broadcast 3-byte pattern is many times slower.
    return np.tile(np.tile(pal.lut[pal.row(ROW_BG)], width), (height, 1)).reshape(height, width, 3)


def hstack(parts: Sequence[np.ndarray], pal: Palette, gap: int = GAP, centre: bool = True) -> np.ndarray:
    """Parts side by side, vertically centred (or top-aligned), on the background."""
    height = max(p.shape[0] for p in parts)
    out = blank(height, sum(p.shape[1] for p in parts) + gap * (len(parts) - 1), pal)
    x = 0
    for p in parts:
        y = (height - p.shape[0]) // 2 if centre else 0
        out[y: y + p.shape[0], x: x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


def vstack(parts: Sequence[np.ndarray], pal: Palette, gap: int = GAP, min_width: int = 0) -> np.ndarray:
    """Parts one below the other, left-aligned, on the background."""
    width = max([min_width] + [p.shape[1] for p in parts])
    out = blank(sum(p.shape[0] for p in parts) + gap * (len(parts) - 1), width, pal)
    y = 0
    for p in parts:
        out[y: y + p.shape[0], : p.shape[1]] = p
        y += p.shape[0] + gap
    return out


def format_number(x: float) -> str:
    """A value as labels show it: three significant digits."""
    return f"{x:.3g}"
