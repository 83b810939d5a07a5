"""Cards: one layer as an image that explains itself, for places that show images alone.

A TensorBoard image card shows an image with no caption but its tag, shrunk to its box;
a card therefore carries its own title, colour bar, legend and notes in large text.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from matplotlib.colors import Colormap

from nsp.viz.colors import ROW_INK, Palette, check_colormap, palette
from nsp.viz.heatmaps import cell_size, colour_indices, grid_columns, layer_indices, natural_shape
from nsp.viz.scales import Norm, check_scale, check_threshold, flag_text, layer_stats, make_norm
from nsp.viz.text import GAP, blank, format_number, line_metrics, text_line, vstack
from nsp.viz.values import as_float64, positive_int

__all__ = ["render_card", "CARD_FONT_PT"]

# Larger than the pattern labels: TensorBoard shrinks an image card to fit its box, about 350 x 230 pixels.
CARD_FONT_PT = 11.0
_CARD_BAR_WIDTH = 256
_CARD_MAX_UPSCALE = 48
_CARD_MAX_HEIGHT = 256


def _overlay(canvas: np.ndarray, part: np.ndarray, x: int) -> None:
    x = max(0, min(x, canvas.shape[1] - part.shape[1]))
    canvas[: part.shape[0], x: x + part.shape[1]] = part[:, : canvas.shape[1]]


def _card_bar(lo_text: str, hi_text: str, zero_at: float | None, width: int, pal: Palette) -> np.ndarray:
    """A colour bar ``width`` pixels wide with its end values (and 0, where it lies inside) below it."""
    _, height = line_metrics(CARD_FONT_PT)
    ramp = np.linspace(0, pal.n - 1, width).round().astype(np.int64)
    bar = np.ascontiguousarray(np.broadcast_to(pal.lut[ramp], (height, width, 3)))
    labels = blank(height, width, pal)
    _overlay(labels, text_line(lo_text, pal, CARD_FONT_PT), 0)
    hi = text_line(hi_text, pal, CARD_FONT_PT)
    _overlay(labels, hi, width - hi.shape[1])
    if zero_at is not None:
        zero = text_line("0", pal, CARD_FONT_PT)
        x = int(round(zero_at * (width - 1)))
        labels[: height // 3, x: x + 1] = pal.lut[pal.row(ROW_INK)]
        if zero.shape[1] + 8 < x < width - hi.shape[1] - zero.shape[1] - 8:
            _overlay(labels, zero, x - zero.shape[1] // 2)
    return vstack([bar, labels], pal, gap=1)


def render_card(
    values: Any,
    *,
    title: str,
    scale: str = "layerscale",
    cmap: str | Colormap = "viridis",
    vrange: tuple[float, float] | None = None,
    threshold: float | None = None,
    legend: Sequence[str] = (),
    min_width: int = 320,
) -> np.ndarray:
    """One layer as an image that explains itself: title, heatmap, colour bar, legend and notes.

    Made for places that show an image without any other context, such as a TensorBoard
    image card. From top to bottom:

    - ``title`` (e.g. the layer's index, name, shape and what is shown);
    - the heatmap (as `render_layer`), enlarged with crisp pixels to at least
      ``min_width`` pixels wide (at most 48 pixels per value; 1-D layers as a band);
    - a colour bar with the values at its ends, and a tick at 0 where 0 lies inside;
    - the caller's ``legend`` lines (e.g. the scale, the sign convention, where the
      range comes from);
    - notes on what the colours cannot say: an exactly zero or constant layer, values
      beyond the colour range (drawn in its end colours), non-finite values (hatched).

    Values that the colour scale cannot resolve (they differ, yet all fall within one
    colour step, as coefficients ``-7.1e4 ± 15`` on a signed-log scale do) are shown as
    their deviation from the centre of their range instead, on a linear scale, and a
    note says so.

    Parameters
    ----------
    values : numpy.ndarray or torch.Tensor
        One layer without the batch dimension, as in `render_layer`.
    title : str
        The first line of the card.
    scale, cmap, vrange, threshold
        As in `render_layer`. A ``vrange`` fixed across images (e.g. from a baseline)
        makes equal colours mean equal values in all of them.
    legend : sequence of str, optional
        Lines of text below the colour bar.
    min_width : int, default 320
        The least width of the heatmap, in pixels.

    Returns
    -------
    numpy.ndarray
        ``uint8``, shape ``(height, width, 3)``, RGB.

    Raises
    ------
    ValueError, TypeError
        As in `render_layer`, or for a ``min_width`` below 1.

    Examples
    --------
    >>> card = render_card(np.zeros(10), title="3: flatten (spectrum)", scale="layersymlog", cmap="RdBu_r")
    >>> card.dtype, card.shape[1] >= 320
    (dtype('uint8'), True)
    """
    where = "nsp.render.render_card"
    check_scale(scale, where)
    colormap = check_colormap(cmap, where)
    threshold = check_threshold(threshold, where)
    min_width = positive_int(min_width, "min_width", where, 1)
    if vrange is not None:
        lo, hi = (float(x) for x in vrange)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"{where}: expected vrange=(vmin, vmax) finite with vmin <= vmax, got {vrange!r}")
        vrange = (lo, hi)
    v = as_float64(values, "values", where)
    pal = palette(colormap)
    stats = layer_stats(v, scale.endswith("symlog"))
    notes: list[str] = []
    norm = make_norm(stats, scale, vrange, threshold)
    if vrange is not None and norm.degenerate and stats.has_finite and stats.vmax > stats.vmin:
        norm = make_norm(stats, scale, None, threshold)
        notes.append("the fixed range is a single value: this image uses its own range")
    shown = v
    finite = v[np.isfinite(v)]
    if stats.size == 0:
        notes.append("empty layer")
    elif not stats.has_finite:
        notes.append("no finite values")
    elif stats.vmin == stats.vmax:
        what = "exactly 0" if stats.vmax == 0 else f"equal to {stats.vmax:.6g}"
        notes.append(f"all {finite.size} finite values are {what}")
    elif not norm.degenerate:
        index = colour_indices(finite, norm, layer_stats(finite, False), pal)
        if np.unique(index).size == 1:
            centre, half = (stats.vmin + stats.vmax) / 2, (stats.vmax - stats.vmin) / 2
            notes.append(
                f"all values lie within {centre:.6g} ± {half:.2g}, less than one colour step apart:"
                f" colours show x − ({centre:.6g})"
            )
            shown, norm = v - centre, Norm(-half, half)
        display = norm.display(finite)
        beyond = int(np.count_nonzero((display < norm.lo) | (display > norm.hi)))
        if beyond and shown is v:
            notes.append(f"{beyond} of {finite.size} values beyond the colour range (drawn in its end colours)")
    flags = flag_text(stats)
    if flags:
        notes.append(flags + " (hatched)")
    count, h, w = natural_shape(v)
    cols = grid_columns(count, h, w)
    natural_width = cols * w + (cols - 1)
    rows = -(-count // cols)
    natural_height = rows * h + (rows - 1)
    upscale = max(1, min(_CARD_MAX_UPSCALE, -(-min_width // natural_width), _CARD_MAX_HEIGHT // natural_height))
    image = pal.rgb(layer_indices(shown, norm, layer_stats(shown, False) if shown is not v else stats, pal,
                                   cell_size(v, upscale), 1))
    parts = [text_line(title, pal, CARD_FONT_PT), image]
    if not norm.degenerate:
        zero = None
        if norm.lo < 0 < norm.hi:
            zero = (0.0 - norm.lo) / (norm.hi - norm.lo)
        parts.append(_card_bar(format_number(norm.data_value(norm.lo)), format_number(norm.data_value(norm.hi)), zero,
                               max(_CARD_BAR_WIDTH, min(image.shape[1], 2 * _CARD_BAR_WIDTH)), pal))
    parts += [text_line(line, pal, CARD_FONT_PT) for line in legend]
    parts += [text_line("note: " + line, pal, CARD_FONT_PT) for line in notes]
    card = vstack(parts, pal, gap=3, min_width=max(min_width, _CARD_BAR_WIDTH))
    return np.pad(card, ((GAP, GAP), (GAP, GAP), (0, 0)), mode="edge")
