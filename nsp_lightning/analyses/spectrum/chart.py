"""The spectrum's change chart for TensorBoard, drawn with Pillow and numpy instead of matplotlib.

One image a record: the first probe's relative change and median decades moved since the
baseline, one line per layer, and a legend with each layer's last values. matplotlib took
about 0.1 s of CPU to draw it, a quarter of what the drawing helper spent on a record of the
digits demo; this draws the same chart (the layout of `~nsp_lightning.analyses.spectrum.
drawing.change_figure`, which the offline report still uses) in a few milliseconds.

No Lightning.
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

from nsp.viz.text import GAP, label_palette, text_line
from nsp_lightning.analyses.spectrum.drawing import number_text
from nsp_lightning.probe.sinks.drawer import drawable

__all__ = ["change_chart"]

_TITLE_PT, _LABEL_PT, _TICK_PT = 12.0, 11.0, 10.0
_PLOT = (230, 220)  # width, height of each panel's plot area, in pixels
_LEFT, _TOP, _BETWEEN = 58, 62, 80  # the first panel's tick labels, the titles above, the second's tick labels
# The relative change spans decades, from 0: a linear scale below this, log above (matplotlib's symlog,
# whose linear part is 1 / (1 - 1/10) decades long by default).
_LINTHRESH = 1e-3
_LINSCALE = 1.0 / (1.0 - 0.1)
_AXIS, _GRID, _WHITE = (80, 80, 80), (225, 225, 225), (255, 255, 255)
# matplotlib's default line colours, and dashes (pixels on, off, ...) for the 11th layer on, as matplotlib's
# "-", "--", ":", "-.".
_COLOURS = [tuple(round(255 * c) for c in rgb) for rgb in matplotlib.colormaps["tab10"].colors]
_DASHES: tuple[tuple[int, ...], ...] = ((), (9, 5), (2, 4), (9, 4, 2, 4))
_MEASURES = (("relative", "relative change"), ("decades", "median decades moved"))


def _symlog(y: np.ndarray) -> np.ndarray:
    """matplotlib's symlog (base 10, ``linthresh`` `_LINTHRESH`, ``linscale`` 1), in units of ``linthresh``."""
    a = np.abs(y) / _LINTHRESH
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sign(y) * np.where(a <= 1, a * _LINSCALE, _LINSCALE + np.log10(np.maximum(a, 1)))


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round ticks from ``lo`` to ``hi``: steps of 1, 2 or 5 times a power of ten, about ``count`` of them."""
    raw = (hi - lo) / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(power * m for m in (1, 2, 5, 10) if power * m >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def _axis(values: np.ndarray, logarithmic: bool) -> tuple[float, float, list[tuple[float, str]]]:
    """The display range of ``values`` and its ticks ``(display value, label)``."""
    finite = values[np.isfinite(values)]
    lo, hi = (min(0.0, float(finite.min())), float(finite.max())) if finite.size else (0.0, 1.0)
    if logarithmic and hi > 0:
        top = math.ceil(math.log10(hi) - 1e-9)
        decades = range(round(math.log10(_LINTHRESH)), top + 1)
        step = max(1, math.ceil(len(decades) / 7))
        ticks = [(0.0, "0")] + [(float(_symlog(np.float64(10.0 ** k))), f"{10.0 ** k:g}") for k in decades[::step]]
        return 0.0, float(_symlog(np.float64(hi))), ticks
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi, [(t, f"{t:g}") for t in _nice_ticks(lo, hi)]


def _dashed(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], colour: tuple[int, ...],
            dashes: tuple[int, ...]) -> None:
    """A polyline, solid or in ``dashes`` (lengths on, off, ... in pixels, carried across its corners)."""
    if not dashes:
        draw.line(points, fill=colour, width=2, joint="curve")
        return
    phase, k = 0.0, 0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        length, done = math.hypot(x1 - x0, y1 - y0), 0.0
        while done < length:
            part = min(dashes[k] - phase, length - done)
            if k % 2 == 0:
                a, b = done / length, (done + part) / length
                draw.line([(x0 + (x1 - x0) * a, y0 + (y1 - y0) * a), (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b)],
                          fill=colour, width=2)
            done += part
            phase += part
            if phase >= dashes[k]:
                phase, k = 0.0, (k + 1) % len(dashes)


def _style(l: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return _COLOURS[l % len(_COLOURS)], _DASHES[l // len(_COLOURS) % len(_DASHES)]


@drawable
def change_chart(history: Sequence[tuple[int, dict[str, np.ndarray]]], names: Sequence[str], p: int,
                 indices: Sequence[int]) -> np.ndarray:
    """Relative change and median decades moved of probe ``p`` since the baseline, one line per layer.

    Parameters
    ----------
    history : sequence of (int, dict)
        ``(epoch, change)`` per record, from the baseline on; ``change[measure]`` of shape
        ``(P, L)`` (`~nsp_lightning.analyses.spectrum.drawing.change_since_baseline`).
    names : sequence of str
        The layers' names.
    p : int
        The probe.
    indices : sequence of int
        The layers' indices, shown before their names.

    Returns
    -------
    numpy.ndarray
        ``uint8`` RGB, shape ``(height, width, 3)``: a title, two panels (the relative
        change on a symlog scale, decades moved on a linear one; epochs below) and a legend
        of every layer with its last values.
    """
    pal = label_palette()
    epochs = np.array([e for e, _ in history], dtype=np.float64)
    last = history[-1][1]
    legend = [f"epoch {int(epochs[-1])}: relative | decades"] + [
        f"{indices[l]:02d} {name}: {number_text(last['relative'][p, l])} | {number_text(last['decades'][p, l])}"
        for l, name in enumerate(names)]
    lines = [text_line(text, pal, _LABEL_PT) for text in legend]
    legend_x = _LEFT + 2 * _PLOT[0] + _BETWEEN + 24
    row = lines[0].shape[0] + 2
    width = legend_x + 34 + max(line.shape[1] for line in lines) + GAP
    height = max(_TOP + _PLOT[1] + 50, _TOP + row * len(lines) + GAP)
    image = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(image)
    texts: list[tuple[np.ndarray, float, float]] = []  # (pixels, x, y) pasted after the lines
    x_lo, x_hi = (epochs[0] - 1, epochs[0] + 1) if epochs[-1] == epochs[0] else (epochs[0], epochs[-1])
    x_ticks = [t for t in _nice_ticks(x_lo, x_hi, 6) if t == int(t)]
    for k, (measure, caption) in enumerate(_MEASURES):
        left, top = _LEFT + k * (_PLOT[0] + _BETWEEN), _TOP
        values = np.array([[change[measure][p, l] for _, change in history] for l in range(len(names))], np.float64)
        logarithmic = measure == "relative"
        shown = _symlog(values) if logarithmic and np.nanmax(np.where(np.isfinite(values), values, 0)) > 0 else values
        lo, hi, y_ticks = _axis(values, logarithmic)
        # 4 % margins, as matplotlib's.
        y_lo, y_hi = lo - 0.04 * (hi - lo), hi + 0.04 * (hi - lo)
        ex_lo, ex_hi = x_lo - 0.04 * (x_hi - x_lo), x_hi + 0.04 * (x_hi - x_lo)

        def at(x: float, y: float) -> tuple[float, float]:
            return (left + (x - ex_lo) / (ex_hi - ex_lo) * _PLOT[0], top + (y_hi - y) / (y_hi - y_lo) * _PLOT[1])

        for y, label in (t for t in y_ticks if y_lo <= t[0] <= y_hi):
            _, py = at(x_lo, y)
            draw.line([(left, py), (left + _PLOT[0], py)], fill=_GRID)
            draw.line([(left - 4, py), (left, py)], fill=_AXIS)
            tick = text_line(label, pal, _TICK_PT)
            texts.append((tick, left - 6 - tick.shape[1], py - tick.shape[0] / 2))
        for x in x_ticks:
            px, _ = at(x, y_lo)
            draw.line([(px, top), (px, top + _PLOT[1])], fill=_GRID)
            draw.line([(px, top + _PLOT[1]), (px, top + _PLOT[1] + 4)], fill=_AXIS)
            tick = text_line(f"{int(x)}", pal, _TICK_PT)
            texts.append((tick, px - tick.shape[1] / 2, top + _PLOT[1] + 6))
        for l in range(len(names)):
            colour, dashes = _style(l)
            finite = np.isfinite(shown[l])
            points = [at(x, y) for x, y, ok in zip(epochs, shown[l], finite) if ok]
            # A non-finite value breaks the line, as matplotlib leaves a gap.
            runs = np.split(np.arange(len(points)), np.flatnonzero(np.diff(np.flatnonzero(finite)) > 1) + 1)
            for run in runs:
                if len(run) > 1:
                    _dashed(draw, [points[i] for i in run], colour, dashes)
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.rectangle([left, top, left + _PLOT[0], top + _PLOT[1]], outline=_AXIS)
        heading = text_line(caption, pal, _LABEL_PT)
        texts.append((heading, left + (_PLOT[0] - heading.shape[1]) / 2, top - heading.shape[0] - 4))
        axis_label = text_line("epoch", pal, _TICK_PT)
        texts.append((axis_label, left + (_PLOT[0] - axis_label.shape[1]) / 2, top + _PLOT[1] + 8 + axis_label.shape[0]))
    for l in range(len(names)):
        colour, dashes = _style(l)
        y = _TOP + row * (l + 1) + row / 2
        _dashed(draw, [(legend_x, y), (legend_x + 26, y)], colour, dashes)
        draw.ellipse([legend_x + 10, y - 3, legend_x + 16, y + 3], fill=colour)
    pixels = np.array(image)
    title = text_line(f"probe {p}: change of the spectrum since the baseline (epoch {int(epochs[0])})", pal, _TITLE_PT)
    texts.append((title, (width - title.shape[1]) / 2, GAP))
    texts.append((lines[0], legend_x, _TOP))
    texts += [(line, legend_x + 34, _TOP + row * (l + 1) + 1) for l, line in enumerate(lines[1:])]
    for part, x, y in texts:
        x0, y0 = max(0, round(x)), max(0, round(y))
        h, w = min(part.shape[0], height - y0), min(part.shape[1], width - x0)
        pixels[y0: y0 + h, x0: x0 + w] = part[:h, :w]
    return pixels
