"""Cards: one layer as an image that explains itself, for places that show images alone.

A TensorBoard image card shows an image with no caption but its tag, shrunk to its box;
a card therefore carries its own title, colour bar, legend and notes in large text.

A card is drawn as an index image: each pixel a row of the colormap's palette (colours,
canvas, ink, separators) or one of 256 levels of ink over the canvas (text), two bytes a
pixel instead of three. `render_card` gives its RGB pixels; `render_card_paletted` a
`~nsp.viz.png.PalettedImage` of at most 256 colours (the colormap's colours, its ends
exact, in at most 232 steps, and text in 16 levels of ink), which encodes as a palette PNG:
a third of the bytes to compress and write.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import numpy as np
from matplotlib.colors import Colormap

from nsp.viz.colors import FLAG_EMPTY, ROW_BG, ROW_INK, ROW_SEP, WHITE, Palette, check_colormap, palette
from nsp.viz.heatmaps import cell_size, colour_indices, grid_columns, layer_indices, natural_shape
from nsp.viz.scales import (
    Norm,
    check_scale,
    check_threshold,
    flag_text,
    layer_stats,
    make_norm,
    signed_log10_array,
)
from nsp.viz.png import PalettedImage
from nsp.viz.text import GAP, format_number, ink_colours, line_metrics, text_coverage, vstack
from nsp.viz.values import as_float64, positive_int

__all__ = ["render_card", "render_card_paletted", "CARD_FONT_PT", "CARD_BACKGROUND"]

# Larger than the pattern labels: TensorBoard shrinks an image card to fit its box, about 350 x 230 pixels.
CARD_FONT_PT = 11.0
_CARD_BAR_WIDTH = 256
_CARD_MAX_UPSCALE = 48
_CARD_MAX_HEIGHT = 256
# Every card is drawn on white, whatever its colormap, so that cards side by side match.
CARD_BACKGROUND = WHITE
_TICK = 3  # pixels: the ticks below the colour bar
_LABEL_GAP = 6  # pixels at least between two labels of the colour bar
_MIN_TICK_SPACING = 4  # pixels at least between two decade ticks
_SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
# A range for values less than one colour step apart: the first of these (times a power of
# ten) above their half-width, so that the outermost values stay off the end colours.
_NICE = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)
# A card's index image: the palette's rows (colormap, then ROW_* and FLAG_*), then from this
# offset the 256 coverages of ink over the canvas (text).
_TEXT_ROW = FLAG_EMPTY + 1
# A paletted card: text in 16 levels of ink (antialiasing needs no more at this size), the
# colormap in the rest of PNG's 256 palette entries after the 8 fixed colours.
_PNG_GREYS = 16
_PNG_FIXED = 8


def _overlay(canvas: np.ndarray, part: np.ndarray, x: int) -> None:
    x = max(0, min(x, canvas.shape[1] - part.shape[1]))
    canvas[: part.shape[0], x: x + part.shape[1]] = part[:, : canvas.shape[1]]


def _decade_text(sign: float, k: int) -> str:
    """``10³``, ``−10⁻²``: a power of ten as people write it."""
    return ("−" if sign < 0 else "") + "10" + str(k).translate(_SUPERSCRIPTS)


def _end_text(value: float) -> str:
    """A colour bar's end: a power of ten as ``10^k``, other numbers with three digits."""
    if value != 0 and math.isfinite(value):
        k = round(math.log10(abs(value)))
        if abs(math.log10(abs(value)) - k) < 1e-9:
            return _decade_text(value, k)
    return format_number(value).replace("-", "−")


def _bar_ticks(norm: Norm, width: int, pal: Palette) -> tuple[list[float], list[list[tuple[float, str]]]]:
    """Where a colour bar gets ticks, and its labels ``(position, text)`` in groups, most important first.

    Positions are fractions of the bar. The ends come first, then 0. On a signed-log scale
    every decade from the threshold out gets a tick (every ``m``-th where they would crowd),
    and every ``L``-th decade from the outermost a label, ``L`` the smallest of 1, 2, 3, 4,
    5, 10, 20, ... that leaves room for the widest label; ``10^k`` and ``-10^k`` form one
    group, so that a symmetric scale is labelled symmetrically.
    """
    span = norm.hi - norm.lo
    groups = [[(0.0, _end_text(norm.data_value(norm.lo))), (1.0, _end_text(norm.data_value(norm.hi)))]]
    if norm.lo < 0 < norm.hi:
        groups.append([((0.0 - norm.lo) / span, "0")])
    ticks = [p for group in groups for p, _ in group]
    if norm.threshold is None:
        return ticks, groups
    t = norm.threshold
    first = math.ceil(math.log10(t) - 1e-9)
    last = math.floor(math.log10(max(abs(norm.data_value(norm.lo)), abs(norm.data_value(norm.hi)))) + 1e-9)
    decades: dict[int, list[tuple[float, str]]] = {}
    for k in range(last, first - 1, -1):
        y = float(signed_log10_array(np.float64(10.0 ** k), t))
        inside = [((sign * y - norm.lo) / span, _decade_text(sign, k)) for sign in (1.0, -1.0)]
        decades[k] = [(p, text) for p, text in inside if 0.0 < p < 1.0]
    # Above the threshold a decade is one display unit, width / span pixels, wide.
    decade_pixels = width / span
    widest = max((text_coverage(text, CARD_FONT_PT).shape[1] for g in decades.values() for _, text in g), default=0)
    every = _step_above(_MIN_TICK_SPACING / decade_pixels)
    step = _step_above((widest + _LABEL_GAP) / decade_pixels)
    ticks += [p for k, group in decades.items() if k % every == 0 for p, _ in group]
    groups += [group for k, group in decades.items() if (last - k) % step == 0 and group]
    return ticks, groups


def _step_above(x: float) -> int:
    """The first of 1, 2, 3, 4, 5, 10, 20, 50, 100, 200, ... at or above ``x``."""
    if x <= 5:
        return max(1, math.ceil(x))
    step = 10
    while step < x:
        step = step * 5 // 2 if str(step)[0] == "2" else step * 2
    return step


def _text(text: str, pal: Palette) -> np.ndarray:
    """``text`` as a line of a card's index image (the coverage rows from ``pal.row(_TEXT_ROW)``)."""
    return text_coverage(text, CARD_FONT_PT).astype(np.uint16) + np.uint16(pal.row(_TEXT_ROW))


@functools.lru_cache(maxsize=4)
def _identity_rows(size: int) -> np.ndarray:
    """A card's own indices, unchanged (``remap`` of `_card_indices` for RGB)."""
    rows = np.arange(size, dtype=np.uint16)
    rows.flags.writeable = False
    return rows


@functools.lru_cache(maxsize=16)
def _card_colours(lut: bytes, n: int) -> Palette:
    """The colours of a card's index image: the palette's rows, the flags (never left in a card), the text's."""
    pal = Palette(np.frombuffer(lut, dtype=np.uint8).reshape(-1, 3).copy(), n)
    flags = np.broadcast_to(pal.lut[pal.row(ROW_BG)], (pal.row(_TEXT_ROW) - pal.lut.shape[0], 3))
    return Palette(np.concatenate([pal.lut, flags, ink_colours(pal)]), n)


@functools.lru_cache(maxsize=16)
def _paletted_colours(lut: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(remap, colours)``: a card's index image row to at most 256 PNG palette entries, and their colours.

    The colormap keeps its own colours: both ends exactly (so a saturated value reads as
    one), the steps between merged evenly where there are more than the room left. Text
    keeps 16 levels of ink, from the canvas to the ink exactly.
    """
    full = _card_colours(lut, n)
    slots = min(n, 256 - _PNG_FIXED - _PNG_GREYS)
    steps = np.arange(n)
    if n > slots:
        steps = np.concatenate([[0], 1 + (steps[1:-1] - 1) * (slots - 2) // (n - 2), [slots - 1]])
    # Each merged step is drawn in the colour of its middle row.
    middle = np.rint(np.bincount(steps, weights=np.arange(n)) / np.bincount(steps)).astype(np.int64)
    levels = np.rint(np.arange(256) * (_PNG_GREYS - 1) / 255).astype(np.int64)
    remap = np.concatenate([steps, slots + np.arange(_PNG_FIXED),
                            np.full(_TEXT_ROW - _PNG_FIXED, slots + ROW_BG), slots + _PNG_FIXED + levels])
    greys = ink_colours(full)[np.rint(np.arange(_PNG_GREYS) * 255 / (_PNG_GREYS - 1)).astype(np.int64)]
    colours = np.concatenate([full.lut[middle], full.lut[n: n + _PNG_FIXED], greys])
    remap, colours = remap.astype(np.uint8), np.ascontiguousarray(colours, dtype=np.uint8)
    remap.flags.writeable = colours.flags.writeable = False
    return remap, colours


def _card_bar(norm: Norm, width: int, pal: Palette) -> np.ndarray:
    """A colour bar ``width`` pixels wide with ticks and their labels below it, as card indices (read-only;
    see `_drawn_bar`)."""
    return _drawn_bar(norm, width, pal.lut.tobytes(), pal.n)


@functools.lru_cache(maxsize=256)
def _drawn_bar(norm: Norm, width: int, lut: bytes, n: int) -> np.ndarray:
    """The colour bar of `_card_bar`, drawn once per range, width and palette.

    Label groups are placed most important first; a group that would come closer than a
    few pixels to a label already placed is left out whole. Cached: a layer's range fixed
    at the baseline gives every probe's card at every record the same bar, whose decade
    labels were most of a card's text.
    """
    pal = Palette(np.frombuffer(lut, dtype=np.uint8).reshape(-1, 3).copy(), n)
    _, height = line_metrics(CARD_FONT_PT)
    ramp = np.linspace(0, pal.n - 1, width).round().astype(np.uint16)
    bar = np.ascontiguousarray(np.broadcast_to(ramp, (height, width)))
    below = np.full((height + _TICK, width), pal.row(ROW_BG), dtype=np.uint16)
    ink = pal.row(ROW_INK)
    ticks, groups = _bar_ticks(norm, width, pal)
    for position in ticks:
        x = int(round(position * (width - 1)))
        below[:_TICK, x: x + 1] = ink
    taken: list[tuple[int, int]] = []
    for group in groups:
        placed = []
        for position, text in group:
            line = _text(text, pal)
            left = max(0, min(int(round(position * (width - 1))) - line.shape[1] // 2, width - line.shape[1]))
            placed.append((left, line))
        boxes = [(left, left + line.shape[1]) for left, line in placed]
        if all(b + _LABEL_GAP <= c or d + _LABEL_GAP <= a for a, b in boxes for c, d in taken):
            for left, line in placed:
                _overlay(below[_TICK:], line, left)
            taken += boxes
    drawn = vstack([bar, below], pal, gap=1)
    drawn.flags.writeable = False
    return drawn


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
    - a colour bar with the values at its ends and a tick at 0 where 0 lies inside; on a
      signed-log scale a tick per decade and labels ``10^k`` (as ``10³``, ``−10⁵``) where
      they fit, in ``±`` pairs (see `nsp.viz.scales.decade_range` for ranges in decades);
    - the caller's ``legend`` lines (e.g. the scale, the sign convention, where the
      range comes from);
    - notes on what the colours cannot say: an exactly zero or constant layer, values
      beyond the colour range (drawn in its end colours), non-finite values (hatched).

    Values that the colour scale cannot resolve (they differ, yet all fall within one
    colour step, as coefficients ``-7.1e4 ± 15`` on a signed-log scale do) are shown as
    their deviation from the centre of their range instead, on a linear scale rounded up
    to a round number (so that the outermost stay off the end colours), and a note says so.

    Every card is drawn on white (`CARD_BACKGROUND`), whatever its colormap, and the
    heatmap has a 1-pixel frame in the separators' colour.

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
    indices, pal = _card_indices(values, title=title, scale=scale, cmap=cmap, vrange=vrange, threshold=threshold,
                                 legend=legend, min_width=min_width)
    return _card_colours(pal.lut.tobytes(), pal.n).rgb(indices)


def render_card_paletted(values: Any, **options: Any) -> PalettedImage:
    """`render_card` as a `~nsp.viz.png.PalettedImage`: one byte a pixel, at most 256 colours.

    The same card, with the colormap's colours in at most 232 steps (its two end colours
    exact, so that a value beyond the range still shows as one) and text antialiased in 16
    levels of ink: to the eye the card of `render_card`, at a third of its bytes to
    encode (`nsp.viz.png.encode_png` writes it as a palette PNG).

    Parameters
    ----------
    values : numpy.ndarray or torch.Tensor
        As in `render_card`.
    **options
        `render_card`'s keywords (``title`` is required).

    Returns
    -------
    PalettedImage
        ``numpy.asarray`` of it is its RGB pixels.

    Raises
    ------
    ValueError, TypeError
        As `render_card`.

    Examples
    --------
    >>> card = render_card_paletted(np.arange(4.0), title="1: fc (activations)")
    >>> card.indices.dtype, card.colours.shape[0] <= 256, card.shape == render_card(np.arange(4.0), title="1: fc (activations)").shape
    (dtype('uint8'), True, True)
    """
    pal = palette(check_colormap(options.get("cmap", "viridis"), "nsp.render.render_card_paletted"), CARD_BACKGROUND)
    remap, colours = _paletted_colours(pal.lut.tobytes(), pal.n)
    # Each part mapped to the PNG's palette as it is placed: one byte a pixel from the start.
    indices, _ = _card_indices(values, remap=remap, **options)
    return PalettedImage(indices, colours)


def _card_indices(values: Any, *, title: str, scale: str = "layerscale", cmap: str | Colormap = "viridis",
                  vrange: tuple[float, float] | None = None, threshold: float | None = None,
                  legend: Sequence[str] = (), min_width: int = 320, remap: np.ndarray | None = None
                  ) -> tuple[np.ndarray, Palette]:
    """`render_card`'s card as an index image into ``_card_colours`` of the palette returned with it.

    ``uint16``; or, given ``remap`` (a table from those indices to others), those others in
    ``remap``'s dtype.
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
    pal = palette(colormap, CARD_BACKGROUND)
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
            shown, norm = v - centre, Norm(-_nice_above(half), _nice_above(half))
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
    image = layer_indices(shown, norm, layer_stats(shown, False) if shown is not v else stats, pal,
                          cell_size(v, upscale), 1)
    # A frame in the separators' colour: the colormap's light centre would melt into the canvas.
    if remap is None:
        remap = _identity_rows(pal.row(_TEXT_ROW) + 256)
    framed_image = np.full((image.shape[0] + 2, image.shape[1] + 2), remap[pal.row(ROW_SEP)], dtype=remap.dtype)
    framed_image[1:-1, 1:-1] = remap[image]
    parts = [remap[_text(title, pal)], framed_image]
    if not norm.degenerate:
        parts.append(remap[_card_bar(norm, max(min_width, _CARD_BAR_WIDTH, min(image.shape[1], 2 * _CARD_BAR_WIDTH)),
                                     pal)])
    parts += [remap[_text(line, pal)] for line in legend]
    parts += [remap[_text("note: " + line, pal)] for line in notes]
    card = vstack(parts, pal, gap=3, min_width=max(min_width, _CARD_BAR_WIDTH), background=int(remap[pal.row(ROW_BG)]))
    # Padded in the canvas colour: padding with the edge pixels smeared the first letter
    # of each line into a mark left of it.
    framed = np.full((card.shape[0] + 2 * GAP, card.shape[1] + 2 * GAP), remap[pal.row(ROW_BG)], dtype=remap.dtype)
    framed[GAP: GAP + card.shape[0], GAP: GAP + card.shape[1]] = card
    return framed, pal


def _nice_above(half: float) -> float:
    """The first of 1, 1.2, 1.5, 2, ... 8, 10 (times a power of ten) at least 2 % above ``half`` > 0."""
    scale = 10.0 ** math.floor(math.log10(half * 1.02))
    return next(scale * n for n in _NICE if scale * n >= half * 1.02)
