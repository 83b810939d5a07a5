"""Text drawn into RGB arrays, and the stacking of labelled parts into one image.

Labels are drawn with Pillow's ``ImageDraw`` in DejaVu Sans, the font file that ships
with matplotlib (so nothing is downloaded and every machine draws the same pixels), at
100 dots per inch. A line of text is a box one line high with its baseline at the font's
ascent, so lines of one size stack evenly and parts placed side by side line up.

Images shown alone (a TensorBoard image card, a PNG) explain themselves with the parts
built here: `titled` (lines of text above a picture), `colour_bar` (a colormap's ramp with
its values written under it), `tile_grid` (labelled tiles in rows) and `table_grid`
(cells with row and column headers), all at `LABEL_PT`, in black on white.
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

from nsp.viz.colors import ROW_BG, ROW_INK, WHITE, Palette, palette

__all__ = [
    "FONT_PT",
    "LABEL_PT",
    "GAP",
    "line_metrics",
    "text_line",
    "text_coverage",
    "ink_colours",
    "fit_text",
    "blank",
    "hstack",
    "vstack",
    "format_number",
    "label_palette",
    "titled",
    "colour_bar",
    "tile_grid",
    "table_grid",
]

FONT_PT = 8.0  # the size of the labels of whole patterns, in points
# Labels of images shown alone: TensorBoard shrinks an image to its card (about 350 to 450
# pixels wide), so these stay readable in an image about 400 pixels wide.
LABEL_PT = 11.0
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
    # One gather from a table of the 256 coverages, not a float blend per pixel: cards draw
    # hundreds of lines per record.
    return ink_colours(pal)[_text_alpha(text, points)]


def text_coverage(text: str, points: float = FONT_PT) -> np.ndarray:
    """How much of each pixel ``text`` covers, 0 to 255, in a box as `text_line` draws it.

    Returns
    -------
    numpy.ndarray
        ``uint8``, shape ``(line_metrics(points)[1], width)``, read-only (cached);
        ``ink_colours(pal)[text_coverage(text)]`` is ``text_line(text, pal)``.
    """
    return _text_alpha(text, points)


def ink_colours(pal: Palette) -> np.ndarray:
    """``(256, 3)`` uint8, read-only: the colour of each coverage 0 (canvas) to 255 (ink) of text in ``pal``."""
    return _blend_table(pal.lut[pal.row(ROW_BG)].tobytes(), pal.lut[pal.row(ROW_INK)].tobytes())


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


def vstack(parts: Sequence[np.ndarray], pal: Palette, gap: int = GAP, min_width: int = 0,
           background: int | None = None) -> np.ndarray:
    """Parts one below the other, left-aligned, on the background.

    RGB parts ``(h, w, 3)`` give RGB; index parts ``(h, w)`` (as a card draws them) give an
    index image of their dtype on index ``background`` (by default ``pal``'s canvas row).
    """
    width = max([min_width] + [p.shape[1] for p in parts])
    height = sum(p.shape[0] for p in parts) + gap * (len(parts) - 1)
    out = (blank(height, width, pal) if parts[0].ndim == 3
           else np.full((height, width), pal.row(ROW_BG) if background is None else background, dtype=parts[0].dtype))
    y = 0
    for p in parts:
        out[y: y + p.shape[0], : p.shape[1]] = p
        y += p.shape[0] + gap
    return out


def format_number(x: float) -> str:
    """A value as labels show it: three significant digits."""
    return f"{x:.3g}"


def fit_text(text: str, width: int, points: float = FONT_PT) -> str:
    """``text``, or its longest start ending in an ellipsis, that is at most ``width`` pixels wide."""
    if _text_alpha(text, points).shape[1] <= width:
        return text
    for end in range(len(text) - 1, 0, -1):
        shortened = text[:end].rstrip() + "…"
        if _text_alpha(shortened, points).shape[1] <= width:
            return shortened
    return "…"


def label_palette() -> Palette:
    """The palette labelled images are drawn on: black ink on white."""
    return palette("gray", WHITE)


def titled(image: np.ndarray, lines: Sequence[str], pal: Palette | None = None, points: float = LABEL_PT,
           below: Sequence[str] = ()) -> np.ndarray:
    """``image`` with ``lines`` of text above it and ``below`` under it, left-aligned, on white.

    Parameters
    ----------
    image : numpy.ndarray
        ``uint8`` RGB ``(H, W, 3)``.
    lines, below : sequence of str
        One line of text each (empty lines are left out).
    pal : Palette, optional
        Gives the canvas and ink; by default `label_palette`.
    points : float, default `LABEL_PT`
        The size of the text.

    Returns
    -------
    numpy.ndarray
        ``uint8`` RGB, as wide as the widest part.
    """
    pal = label_palette() if pal is None else pal
    top = [text_line(line, pal, points) for line in lines if line]
    bottom = [text_line(line, pal, points) for line in below if line]
    return vstack(top + [image] + bottom, pal, gap=2)


def _ticks(lo: float, hi: float) -> list[float]:
    # The ends, and 0 where it lies inside: the values a reader needs to decode a colour.
    return [lo, 0.0, hi] if lo < 0 < hi else [lo, hi]


def colour_bar(pal: Palette, lo: float, hi: float, width: int, points: float = LABEL_PT,
               ticks: Sequence[float] | None = None, label: str = "") -> np.ndarray:
    """A horizontal bar of the palette's colormap from ``lo`` (left) to ``hi``, its values written under it.

    Parameters
    ----------
    pal : Palette
        The colormap (rows ``0..n-1``) and the canvas and ink colours.
    lo, hi : float
        The values at the left and right ends, ``lo < hi``.
    width : int
        The bar's width in pixels (at least 2).
    points : float, default `LABEL_PT`
        The size of the numbers.
    ticks : sequence of float, optional
        The values marked and written; by default the ends, and 0 where it lies inside.
        The ends are always marked and written; each number is centred on its tick and
        kept inside the bar, and an inner one that would touch another is left out.
    label : str, optional
        A line under the numbers saying what the values are.

    Returns
    -------
    numpy.ndarray
        ``uint8`` RGB, ``width`` pixels wide.

    Raises
    ------
    ValueError
        If ``lo`` and ``hi`` are not finite with ``lo < hi``, or ``width < 2``.
    """
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or width < 2:
        raise ValueError(f"nsp.viz.text.colour_bar: expected finite lo < hi and width >= 2, got {lo!r}, {hi!r}, "
                         f"{width!r}")
    _, height = line_metrics(points)
    ramp = np.linspace(0, pal.n - 1, width).round().astype(np.int64)
    bar = np.ascontiguousarray(np.broadcast_to(pal.lut[ramp], (height, width, 3)))
    marks = blank(max(2, height // 4), width, pal)
    numbers = blank(height, width, pal)
    values = sorted(set(_ticks(lo, hi) if ticks is None else [float(t) for t in ticks if lo <= t <= hi] + [lo, hi]))
    drawn: list[tuple[int, np.ndarray]] = []  # (left, text) of the numbers written
    # The ends first, then the inner values left to right, each only where it touches no other number.
    for value in [values[0], values[-1]] + values[1:-1]:
        x = int(round((value - lo) / (hi - lo) * (width - 1)))
        marks[:, x] = pal.lut[pal.row(ROW_INK)]
        text = text_line(format_number(value), pal, points)[:, :width]
        left = min(max(0, x - text.shape[1] // 2), width - text.shape[1])
        if all(left >= l + t.shape[1] + 6 or left + text.shape[1] + 6 <= l for l, t in drawn) or len(drawn) < 2:
            drawn.append((left, text))
    for left, text in drawn:
        numbers[:, left: left + text.shape[1]] = np.minimum(numbers[:, left: left + text.shape[1]], text)
    parts = [bar, marks, numbers]
    if label:
        parts.append(text_line(fit_text(label, width, points), pal, points))
    return vstack(parts, pal, gap=0)


def tile_grid(tiles: Sequence[np.ndarray], labels: Sequence[Sequence[str]], columns: int,
              pal: Palette | None = None, points: float = LABEL_PT, gap: int = 2 * GAP) -> np.ndarray:
    """Tiles in rows of ``columns``, each with its lines of text above it.

    Every cell is as wide as the widest tile or label line, but at most twice the widest
    tile: a longer line is cut short with an ellipsis (`fit_text`).

    Parameters
    ----------
    tiles : sequence of numpy.ndarray
        ``uint8`` RGB images; each cell is as wide and high as the largest tile.
    labels : sequence of sequence of str
        The lines above each tile, one sequence per tile.
    columns : int
        Tiles per row (at least 1).

    Returns
    -------
    numpy.ndarray
        ``uint8`` RGB.

    Raises
    ------
    ValueError
        If there are no tiles, the counts of tiles and labels differ, or ``columns < 1``.
    """
    if not tiles or len(tiles) != len(labels) or columns < 1:
        raise ValueError(f"nsp.viz.text.tile_grid: expected tiles with one list of lines each and columns >= 1, got "
                         f"{len(tiles)} tiles, {len(labels)} labels, columns={columns!r}")
    pal = label_palette() if pal is None else pal
    # Cells widen for their labels, up to twice the widest tile; longer lines are cut.
    widest = max(t.shape[1] for t in tiles)
    width = min(2 * widest, max([widest] + [_text_alpha(line, points).shape[1] for ls in labels for line in ls]))
    lines = max(len(ls) for ls in labels)
    _, line_height = line_metrics(points)
    cells = []
    for tile, tile_labels in zip(tiles, labels):
        text = [text_line(fit_text(line, width, points), pal, points) for line in tile_labels]
        text += [blank(line_height, 1, pal)] * (lines - len(text))
        cells.append(vstack(text + [tile], pal, gap=1, min_width=width))
    rows = [hstack(cells[k: k + columns], pal, gap=gap, centre=False) for k in range(0, len(cells), columns)]
    return vstack(rows, pal, gap=gap)


def table_grid(cells: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str], column_labels: Sequence[str],
               pal: Palette | None = None, points: float = LABEL_PT, gap: int = GAP) -> np.ndarray:
    """Cells in rows and columns, the rows named at the left and the columns above.

    Parameters
    ----------
    cells : sequence of sequence of numpy.ndarray
        ``cells[r][c]``, ``uint8`` RGB; every row has one cell per column label.
    row_labels, column_labels : sequence of str
        A name per row and per column; a column is as wide as its widest cell or name.

    Returns
    -------
    numpy.ndarray
        ``uint8`` RGB.

    Raises
    ------
    ValueError
        If the cells do not form ``len(row_labels) x len(column_labels)``.
    """
    if len(cells) != len(row_labels) or not row_labels or any(len(r) != len(column_labels) for r in cells):
        raise ValueError(f"nsp.viz.text.table_grid: expected {len(row_labels)} row(s) of {len(column_labels)} "
                         f"cell(s), got rows of {[len(r) for r in cells]}")
    pal = label_palette() if pal is None else pal
    heads = [text_line(label, pal, points) for label in column_labels]
    widths = [max([h.shape[1]] + [row[k].shape[1] for row in cells]) for k, h in enumerate(heads)]
    names = [text_line(label, pal, points) for label in row_labels]
    name_width = max(n.shape[1] for n in names)
    header = [blank(line_metrics(points)[1], name_width, pal)]
    header += [vstack([h], pal, min_width=w) for h, w in zip(heads, widths)]
    rows = [hstack(header, pal, gap=gap, centre=False)]
    for name, row in zip(names, cells):
        padded = [vstack([c], pal, min_width=w) for c, w in zip(row, widths)]
        rows.append(hstack([vstack([name], pal, min_width=name_width)] + padded, pal, gap=gap))
    return vstack(rows, pal, gap=gap)
