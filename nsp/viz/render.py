"""Heatmaps of activation patterns and spectra as RGB arrays, without matplotlib figures.

A layer becomes an image in three vectorised steps: values are normalised by a colour
scale, the normalised values index a colormap's lookup table, and the channels are laid
out as a grid of tiles with thin separators. Nothing here creates a matplotlib figure
except the energy plots, which are real charts and return ``(Figure, Axes)``.

Colour scales
-------------
``scale`` chooses the range of the colormap and whether values are log-compressed:

=================  ==========================================================
``'layerscale'``   linear; min to max of each layer
``'layernorm'``    linear; ``[-m, m]`` with ``m`` the largest ``|x|`` of each layer,
                   so 0 is the colormap's centre
``'globalscale'``  as ``'layerscale'``, with one range over the whole pattern
``'globalnorm'``   as ``'layernorm'``, with one ``m`` over the whole pattern
``'layersymlog'``  signed log (below); ``[-f(m), f(m)]`` per layer
``'globalsymlog'`` signed log with one threshold and one ``m`` over the pattern
=================  ==========================================================

The signed log is ``f(x) = sign(x) * log10(1 + |x| / t)`` (see `signed_log10`). It is
nearly linear for ``|x| << t`` and ``log10|x| - log10 t`` for ``|x| >> t``, so one
colour step stands for a fixed number of decades. Unless given, ``t`` is the smallest
nonzero ``|x|`` of the layer (or pattern): the colormap then spans exactly the decades
the data hold, and the smallest nonzero value sits ``log10 2`` from 0 on that axis
(with 256 colours, a colour apart from 0 while the layer spans at most about 38 decades).
Spectra span hundreds of decades (GUIDE §3, fact 5), which no linear scale can show.

Only finite values set a range. Values outside it take the colormap's end colours.

Flags
-----
What a colour cannot say is drawn as a hatch of two colours: NaN as black and magenta
stripes, ``+inf`` (``-inf``) as stripes of the top (bottom) colour, and a layer whose
range is a single value as stripes over the colormap's centre colour. An empty layer is
a small cross-hatched tile. The text labels of `render_pattern` count what was flagged.

Layout
------
A 3-D or higher layer ``(C, ..., H, W)`` is a grid of ``H x W`` tiles, one per leading
index in row-major order, as close to square as the tile shape allows. A 2-D layer is
one ``H x W`` tile and a 1-D layer of ``N`` values is a ``1 x N`` strip.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib import font_manager, ft2font
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nsp.viz.colors import check_colormap, colour_table

__all__ = [
    "SCALES",
    "signed_log10",
    "render_layer",
    "render_pattern",
    "render_side_by_side",
    "render_card",
    "energy_bars",
    "energy_over_epochs",
    "figure_to_rgb",
]

SCALES: tuple[str, ...] = (
    "layerscale",
    "layernorm",
    "globalscale",
    "globalnorm",
    "layersymlog",
    "globalsymlog",
)

_LN10 = math.log(10.0)
_EMPTY_TILE = 4  # cells per side of the tile that stands for an empty layer
_MIN_STRIP_HEIGHT = 8  # pixels; a 1-pixel strip is invisible next to 2-D maps
_AUTO_WIDTH = 256  # pixels; automatic upscaling aims small layers at least at this width
_MAX_AUTO_WIDTH = 1024
_MAX_AUTO_UPSCALE = 32
_COLOURBAR_WIDTH = 64
_FONT_PT, _FONT_DPI = 8.0, 100.0
_GAP = 4  # pixels between labels, images and layers

_WHITE, _BLACK = (255, 255, 255), (0, 0, 0)
_GREY, _MAGENTA = (160, 160, 160), (255, 0, 255)
_GREY_FLOAT = tuple(c / 255 for c in _GREY)
_LINE_STYLES = ("-", "--", ":", "-.")


# ---------------------------------------------------------------------------------------
# Argument checks and conversion
# ---------------------------------------------------------------------------------------


def _check_scale(scale: str, where: str, argname: str = "scale") -> str:
    if scale not in SCALES:
        raise ValueError(f"{where}: unknown {argname}={scale!r}; expected one of {', '.join(map(repr, SCALES))}")
    return scale


def _positive_int(value: Any, argname: str, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{where}: expected {argname} to be an int >= {minimum}, got {value!r}")
    return int(value)


def _as_float64(values: Any, argname: str, where: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        if values.is_complex():
            raise TypeError(f"{where}: {argname} is a complex tensor; pass real values (e.g. .abs() or .real)")
        tensor = values.detach().cpu()
        # numpy converts without torch's thread pool, which is far slower under load;
        # bfloat16 has no numpy dtype and goes through float32 (exactly).
        return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy().astype(np.float64)
    if np.iscomplexobj(values):
        raise TypeError(f"{where}: {argname} is complex; pass real values (e.g. np.abs or .real)")
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{where}: expected {argname} to be a numpy array or torch tensor of real numbers, "
            f"got {type(values).__name__}"
        ) from err


def _check_threshold(threshold: float | None, where: str) -> float | None:
    is_number = isinstance(threshold, (int, float, np.integer, np.floating)) and not isinstance(threshold, bool)
    if threshold is not None and not (is_number and math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"{where}: expected threshold to be a finite number > 0 or None, got {threshold!r}")
    return None if threshold is None else float(threshold)


def _unpack_pattern(layers: Any, names: Sequence[str] | None, argname: str, where: str):
    """Per-layer float64 arrays, names and type names from an Activations or a sequence."""
    values = getattr(layers, "layeractivations", layers)
    if isinstance(values, (np.ndarray, torch.Tensor)) or not isinstance(values, Sequence):
        raise TypeError(
            f"{where}: expected {argname} to be an nsp.Activations or a sequence of per-layer arrays, "
            f"got {type(layers).__name__}"
        )
    arrays = [_as_float64(v, f"{argname}[{i}]", where) for i, v in enumerate(values)]
    if names is None:
        names = getattr(layers, "layernames", None) or [str(i) for i in range(len(arrays))]
    names = [str(n) for n in names]
    if len(names) != len(arrays):
        raise ValueError(f"{where}: got {len(names)} names for {len(arrays)} layers in {argname}")
    descriptions = getattr(layers, "layerdescriptions", None)
    kinds = [_describe(d) for d in descriptions] if descriptions is not None else [""] * len(arrays)
    return arrays, names, kinds


def _describe(description: Any) -> str:
    """A short type name for an entry of ``Activations.layerdescriptions``.

    ``'Input[1, 1, 4, 4]'`` becomes ``'Input'`` and a module its class name.
    """
    if isinstance(description, str):
        return description.split("[", 1)[0]
    return type(description).__name__


# ---------------------------------------------------------------------------------------
# Scales: value -> normalised -> lookup-table index
# ---------------------------------------------------------------------------------------


def signed_log10(values: Any, threshold: float) -> np.ndarray:
    """The signed-log transform ``sign(x) * log10(1 + |x| / threshold)``.

    Parameters
    ----------
    values : array-like or torch.Tensor
        Real values of any magnitude.
    threshold : float
        ``t > 0``. Values with ``|x| << t`` are compressed nearly linearly towards 0;
        above ``t`` one unit of the result is one decade.

    Returns
    -------
    numpy.ndarray
        float64, same shape; NaN stays NaN and ``+-inf`` stays ``+-inf``. Computed
        without forming ``|x| / t``, so it does not overflow where that ratio would.

    Raises
    ------
    ValueError
        If ``threshold`` is not a finite number > 0.

    Examples
    --------
    >>> signed_log10([0.0, 9.0, -99.0, 1e300], threshold=1.0)
    array([  0.,   1.,  -2., 300.])
    >>> float(signed_log10(1e54, threshold=1e-117)[()])
    171.0
    """
    where = "nsp.render.signed_log10"
    t = _check_threshold(threshold, where)
    if t is None:
        raise ValueError(f"{where}: expected threshold to be a finite number > 0, got None")
    return _signed_log10(_as_float64(values, "values", where), t)


def _signed_log10(x: np.ndarray, t: float) -> np.ndarray:
    # log10(1 + |x|/t) = log10(t + |x|) - log10(t): |x|/t, which can exceed float64, is never
    # formed. Near 0 this loses digits only relative to log10(t), below one colour step.
    with np.errstate(invalid="ignore"):
        y = np.asarray(np.abs(x))
        y += t
        np.log10(y, out=y)
        y -= math.log10(t)
        return np.copysign(y, x, out=y)


@dataclass(frozen=True)
class _Stats:
    """Summary of one layer's (or a whole pattern's) values, over finite values only."""

    size: int
    vmin: float
    vmax: float
    tiny: float  # smallest nonzero |x|; NaN if there is none or it was not needed
    nan: int = 0
    posinf: int = 0
    neginf: int = 0

    @property
    def absmax(self) -> float:
        return max(-self.vmin, self.vmax)

    @property
    def has_finite(self) -> bool:
        return not math.isnan(self.vmin)

    @property
    def nonfinite(self) -> int:
        return self.nan + self.posinf + self.neginf


def _stats(v: np.ndarray, need_tiny: bool) -> _Stats:
    if v.size == 0:
        return _Stats(0, math.nan, math.nan, math.nan)
    lo, hi = float(v.min()), float(v.max())
    counts = (0, 0, 0)
    finite = v
    if not (math.isfinite(lo) and math.isfinite(hi)):
        mask = np.isfinite(v)
        finite = v[mask]
        counts = (int(np.isnan(v).sum()), int(np.isposinf(v).sum()), int(np.isneginf(v).sum()))
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (math.nan, math.nan)
    tiny = math.nan
    if need_tiny and finite.size:
        a = np.abs(finite)
        tiny = float(np.min(a, where=a > 0, initial=np.inf))
        tiny = tiny if math.isfinite(tiny) else math.nan
    return _Stats(v.size, lo, hi, tiny, *counts)


def _merge(stats: Sequence[_Stats]) -> _Stats:
    finite = [s for s in stats if s.has_finite]
    tinies = [s.tiny for s in finite if not math.isnan(s.tiny)]
    return _Stats(
        sum(s.size for s in stats),
        min((s.vmin for s in finite), default=math.nan),
        max((s.vmax for s in finite), default=math.nan),
        min(tinies, default=math.nan),
        sum(s.nan for s in stats),
        sum(s.posinf for s in stats),
        sum(s.neginf for s in stats),
    )


@dataclass(frozen=True)
class _Norm:
    """A colour range ``[lo, hi]`` in display units (after the signed log, if any)."""

    lo: float
    hi: float
    threshold: float | None = None  # signed-log threshold; None for a linear scale

    @property
    def degenerate(self) -> bool:
        return not self.hi > self.lo

    def display(self, x: np.ndarray) -> np.ndarray:
        return x if self.threshold is None else _signed_log10(x, self.threshold)

    def data_value(self, y: float) -> float:
        """The data value shown at display value ``y`` (the inverse of `display`)."""
        if self.threshold is None:
            return y
        if abs(y) < 15:
            return math.copysign(self.threshold * math.expm1(abs(y) * _LN10), y)
        # 10**|y| alone may overflow where threshold * 10**|y| does not; the -1 is below rounding.
        with np.errstate(over="ignore"):
            return math.copysign(float(np.power(10.0, abs(y) + math.log10(self.threshold))), y)


def _make_norm(stats: _Stats, scale: str, vrange: tuple[float, float] | None, threshold: float | None) -> _Norm:
    t = None
    if scale.endswith("symlog"):
        t = threshold if threshold is not None else (stats.tiny if not math.isnan(stats.tiny) else 1.0)
    if vrange is not None:
        lo, hi = vrange
    elif not stats.has_finite:
        lo = hi = 0.0
    elif scale.endswith("scale"):
        lo, hi = stats.vmin, stats.vmax
    else:
        lo, hi = -stats.absmax, stats.absmax
    if t is not None:
        lo, hi = (float(_signed_log10(np.float64(v), t)) for v in (lo, hi))
    return _Norm(float(lo), float(hi), t)


def _norms(stats: Sequence[_Stats], scale: str, threshold: float | None) -> list[_Norm]:
    if scale.startswith("global"):
        norm = _make_norm(_merge(stats), scale, None, threshold)
        return [norm] * len(stats)
    return [_make_norm(s, scale, None, threshold) for s in stats]


# ---------------------------------------------------------------------------------------
# Palette: the colormap's lookup table plus a few fixed colours and flag codes
# ---------------------------------------------------------------------------------------


# Rows appended to a colormap's lookup table, and the flag codes that follow them. _BG is
# the canvas (shared by both colormaps of a side-by-side image), _SEP the separators (the
# best contrast to this colormap alone), _VOID the unused grid cells: canvas-coloured, but
# pages make them transparent.
_BG, _INK, _BLACK_ROW, _WHITE_ROW, _MAGENTA_ROW, _GREY_ROW, _VOID, _SEP = range(8)
_NAN, _POSINF, _NEGINF, _CONSTANT, _EMPTY = range(8, 13)


@dataclass(frozen=True)
class _Palette:
    """A colormap's lookup table (rows ``0..n-1``) plus fixed colours at ``n + _BG`` etc."""

    lut: np.ndarray
    n: int

    def __post_init__(self) -> None:
        self.lut.flags.writeable = False

    @functools.cached_property
    def _packed(self) -> np.ndarray:
        # One 3-byte item per colour: a single gather then yields contiguous HxWx3 pixels.
        return np.ascontiguousarray(self.lut).view("V3").ravel()

    def rgb(self, image: np.ndarray) -> np.ndarray:
        """Colours of an index image, ``uint8`` of shape ``image.shape + (3,)``."""
        return np.take(self._packed, image).view(np.uint8).reshape(*image.shape, 3)

    def row(self, offset: int) -> int:
        return self.n + offset

    def stripes_for(self, index: int) -> int:
        """The black or white row, whichever stands out more against colour ``index``."""
        light = int(self.lut[index].astype(np.int32).sum()) > 3 * 127
        return self.row(_BLACK_ROW if light else _WHITE_ROW)


def _cmap_lut(cmap: str | Colormap) -> np.ndarray:
    # Truncated to bytes as matplotlib's cmap(..., bytes=True), so the colours are matplotlib's own.
    return (colour_table(cmap) * 255).astype(np.uint8)


def _background(luts: Sequence[np.ndarray]) -> tuple[int, int, int]:
    """White, black, grey or azure: whichever stays farthest from every colour of the colormaps."""
    colours = np.concatenate(luts).astype(np.float64)
    candidates = (_WHITE, _BLACK, (128, 128, 128), (0, 160, 255))
    gaps = [np.min(np.sum((colours - np.array(c)) ** 2, axis=1)) for c in candidates]
    return candidates[int(np.argmax(gaps))]


def _build_palette(cmap: str | Colormap, background: tuple[int, int, int] | None) -> _Palette:
    lut = _cmap_lut(cmap)
    separator = _background([lut])
    bg = background if background is not None else separator
    ink = _BLACK if sum(bg) > 3 * 127 else _WHITE
    extra = np.array([bg, ink, _BLACK, _WHITE, _MAGENTA, _GREY, bg, separator], dtype=np.uint8)
    return _Palette(np.concatenate([lut, extra]), len(lut))


@functools.lru_cache(maxsize=64)
def _named_palette(name: str, background: tuple[int, int, int] | None) -> _Palette:
    return _build_palette(name, background)


def _palette(cmap: str | Colormap, background: tuple[int, int, int] | None = None) -> _Palette:
    """The palette of a colormap; registered names are cached, Colormap objects are not
    (they are mutable and unhashable)."""
    if isinstance(cmap, str):
        return _named_palette(cmap, background)
    return _build_palette(cmap, background)


def _hatch_pairs(pal: _Palette) -> dict[int, tuple[int, int]]:
    """The two colours of each flag's hatch, by flag code."""
    centre, top = pal.n // 2, pal.n - 1
    return {
        pal.row(_NAN): (pal.row(_BLACK_ROW), pal.row(_MAGENTA_ROW)),
        pal.row(_POSINF): (top, pal.stripes_for(top)),
        pal.row(_NEGINF): (0, pal.stripes_for(0)),
        pal.row(_CONSTANT): (centre, pal.stripes_for(centre)),
        pal.row(_EMPTY): (pal.row(_GREY_ROW), pal.row(_BG)),
    }


# ---------------------------------------------------------------------------------------
# Functional core: values -> index image -> RGB
# ---------------------------------------------------------------------------------------


def _indices(v: np.ndarray, norm: _Norm, stats: _Stats, pal: _Palette) -> np.ndarray:
    """Lookup-table index (or flag code) of every value, as matplotlib's Normalize + Colormap."""
    if norm.degenerate:
        idx = np.full(v.shape, pal.row(_CONSTANT), dtype=np.uint16)
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            u = (norm.display(v) - norm.lo) / (norm.hi - norm.lo)
            u *= pal.n
            np.clip(u, 0, pal.n - 1, out=u)
            if stats.nonfinite:
                u[~np.isfinite(u)] = 0
            idx = u.astype(np.uint16)
    if stats.nonfinite:
        idx[np.isnan(v)] = pal.row(_NAN)
        idx[np.isposinf(v)] = pal.row(_POSINF)
        idx[np.isneginf(v)] = pal.row(_NEGINF)
    return idx


def _tiles(v: np.ndarray) -> np.ndarray:
    if v.ndim <= 1:
        return v.reshape(1, 1, -1)
    return v.reshape(-1, *v.shape[-2:])


def _columns(count: int, height: int, width: int) -> int:
    """Grid columns that make ``count`` tiles of ``height x width`` as square as possible."""
    return max(1, min(count, math.ceil(math.sqrt(count * height / width))))


def _mosaic(tiles: np.ndarray, upscale: tuple[int, int], separator: int, fill: int, void: int) -> np.ndarray:
    """Lay out ``(C, h, w)`` index tiles as a grid, each value ``uy x ux`` pixels.

    Separators get ``fill``; the unused cells after the last tile get ``void``.
    """
    count, h, w = tiles.shape
    cols = _columns(count, h, w)
    rows = -(-count // cols)
    uy, ux = upscale
    if uy > 1 or ux > 1:
        tiles = np.broadcast_to(tiles[:, :, None, :, None], (count, h, uy, w, ux)).reshape(count, h * uy, w * ux)
        h, w = h * uy, w * ux
    grid = np.full((rows, h + separator, cols, w + separator), fill, dtype=np.uint16)
    full = (count // cols) * cols
    grid[: count // cols, :h, :, :w] = tiles[:full].reshape(-1, cols, h, w).transpose(0, 2, 1, 3)
    if full < count:
        grid[-1, :h, : count - full, :w] = tiles[full:].transpose(1, 0, 2)
        grid[-1, :, count - full:, :] = void
    height, width = rows * (h + separator) - separator, cols * (w + separator) - separator
    return grid.reshape(rows * (h + separator), cols * (w + separator))[:height, :width]


def _resolve_flags(image: np.ndarray, pal: _Palette, stripe: int) -> None:
    """Replace flag codes in an index image by two-colour hatches, in place."""
    flagged = image >= pal.row(_NAN)
    if not flagged.any():
        return
    ys, xs = np.nonzero(flagged)
    codes = image[ys, xs]
    first = ((ys + xs) // stripe) % 2 == 0
    cross = first | (((ys - xs) // stripe) % 2 == 0)
    for code, (a, b) in _hatch_pairs(pal).items():
        sel = codes == code
        if sel.any():
            pick = cross[sel] if code == pal.row(_EMPTY) else first[sel]
            image[ys[sel], xs[sel]] = np.where(pick, a, b)


def _layer_indices(
    v: np.ndarray, norm: _Norm, stats: _Stats, pal: _Palette, upscale: tuple[int, int], separator: int
) -> np.ndarray:
    if v.size == 0:
        tiles = np.full((1, _EMPTY_TILE, _EMPTY_TILE), pal.row(_EMPTY), dtype=np.uint16)
    else:
        tiles = _indices(v.reshape(-1), norm, stats, pal).reshape(_natural(v))
    image = _mosaic(tiles, upscale, separator, pal.row(_SEP), pal.row(_VOID))
    if v.size == 0 or norm.degenerate or stats.nonfinite:
        _resolve_flags(image, pal, stripe=max(2, min(upscale) // 2))
    return image


# ---------------------------------------------------------------------------------------
# Text, colour bars and composition (labels for whole patterns)
# ---------------------------------------------------------------------------------------


_FONT_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _font() -> ft2font.FT2Font:
    return ft2font.FT2Font(font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans")))


def _line_metrics(points: float = _FONT_PT) -> tuple[int, int]:
    font = _font()
    px = points * _FONT_DPI / 72.0
    ascent = round(font.ascender / font.units_per_EM * px)
    height = round((font.ascender - font.descender) / font.units_per_EM * px)
    return ascent, height


@functools.lru_cache(maxsize=2048)
def _text_alpha(text: str, points: float = _FONT_PT) -> np.ndarray:
    """Coverage of ``text`` in a box one line high, baseline-aligned; read-only."""
    ascent, height = _line_metrics(points)
    with _FONT_LOCK:  # one shared FT2Font holds the text being laid out
        font = _font()
        font.clear()
        font.set_size(points, _FONT_DPI)
        font.set_text(text, 0.0)
        font.draw_glyphs_to_bitmap(antialiased=True)
        glyphs = np.asarray(font.get_image()).copy()
        descent = round(font.get_descent() / 64)
    box = np.zeros((height, glyphs.shape[1]), dtype=np.uint8)
    top = ascent - (glyphs.shape[0] - descent)
    src = glyphs[max(0, -top): height - top]
    box[max(0, top): max(0, top) + src.shape[0]] = src
    box.flags.writeable = False
    return box


def _text(text: str, pal: _Palette, points: float = _FONT_PT) -> np.ndarray:
    alpha = _text_alpha(text, points)[..., None].astype(np.float32) / 255.0
    bg, ink = pal.lut[pal.row(_BG)].astype(np.float32), pal.lut[pal.row(_INK)].astype(np.float32)
    return np.rint(bg + (ink - bg) * alpha).astype(np.uint8)


def _blank(height: int, width: int, pal: _Palette) -> np.ndarray:
    # np.tile copies whole rows; filling a broadcast 3-byte pattern is many times slower.
    return np.tile(np.tile(pal.lut[pal.row(_BG)], width), (height, 1)).reshape(height, width, 3)


def _hstack(parts: Sequence[np.ndarray], pal: _Palette, gap: int = _GAP, centre: bool = True) -> np.ndarray:
    """Parts side by side, vertically centred (or top-aligned), on the background."""
    height = max(p.shape[0] for p in parts)
    out = _blank(height, sum(p.shape[1] for p in parts) + gap * (len(parts) - 1), pal)
    x = 0
    for p in parts:
        y = (height - p.shape[0]) // 2 if centre else 0
        out[y: y + p.shape[0], x: x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


def _vstack(parts: Sequence[np.ndarray], pal: _Palette, gap: int = _GAP, min_width: int = 0) -> np.ndarray:
    """Parts one below the other, left-aligned, on the background."""
    width = max([min_width] + [p.shape[1] for p in parts])
    out = _blank(sum(p.shape[0] for p in parts) + gap * (len(parts) - 1), width, pal)
    y = 0
    for p in parts:
        out[y: y + p.shape[0], : p.shape[1]] = p
        y += p.shape[0] + gap
    return out


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _flag_text(stats: _Stats) -> str:
    parts = [f"{count} {what}" for count, what in ((stats.nan, "NaN"), (stats.posinf, "+inf"), (stats.neginf, "-inf"))
             if count]
    return ", ".join(parts)


def _colourbar_line(norm: _Norm, stats: _Stats, pal: _Palette) -> np.ndarray:
    """The range line above a layer: ``lo [colour bar] hi``, or what is wrong with it."""
    _, height = _line_metrics()
    if stats.size == 0:
        parts = [_text("empty layer", pal)]
    elif not stats.has_finite:
        parts = [_text("no finite values", pal)]
    elif norm.degenerate:
        parts = [_text(f"every value {_fmt(norm.data_value(norm.lo))} (hatched)", pal)]
    else:
        ramp = np.linspace(0, pal.n - 1, _COLOURBAR_WIDTH).round().astype(np.int64)
        bar = np.broadcast_to(pal.lut[ramp], (height - 4, _COLOURBAR_WIDTH, 3))
        parts = [_text(_fmt(norm.data_value(norm.lo)), pal), bar, _text(_fmt(norm.data_value(norm.hi)), pal)]
        if norm.threshold is not None:
            parts.append(_text(f"signed log10, t={_fmt(norm.threshold)}", pal))
    flags = _flag_text(stats)
    if flags:
        parts.append(_text(flags + " (hatched)", pal))
    return _hstack(parts, pal)


def _auto_upscale(shapes: Sequence[tuple[int, int, int]], separator: int) -> list[int]:
    """Per layer, the largest factor (at most 32) that keeps its grid within a target width:
    the widest 2-D grid's natural width, but at least 256 and at most 1024 pixels. Long
    strips do not set the target, so one wide Linear layer cannot blow up every other layer."""
    grids = [(_columns(c, h, w), w, c == 1 and h == 1) for c, h, w in shapes]
    widest = max([cols * (w + separator) - separator for cols, w, strip in grids if not strip], default=0)
    target = min(max(_AUTO_WIDTH, widest), _MAX_AUTO_WIDTH)
    return [max(1, min(_MAX_AUTO_UPSCALE, (target - (cols - 1) * separator) // (cols * w))) for cols, w, _ in grids]


def _natural(v: np.ndarray) -> tuple[int, int, int]:
    if v.size == 0:
        return (1, _EMPTY_TILE, _EMPTY_TILE)
    return _tiles(v).shape  # type: ignore[return-value]


def _cell(v: np.ndarray, upscale: int) -> tuple[int, int]:
    """Pixels per value, (height, width): square, except that single-row strips are
    stretched to be visible."""
    count, h, _ = _natural(v)
    is_strip = v.size > 0 and count == 1 and h == 1
    return (max(upscale, _MIN_STRIP_HEIGHT) if is_strip else upscale, upscale)


def _column_images(
    arrays: Sequence[np.ndarray],
    scale: str,
    cmap: str | Colormap,
    threshold: float | None,
    upscale: int | None,
    separator: int,
    background: tuple[int, int, int] | None,
) -> tuple[list[np.ndarray], list[_Norm], list[_Stats], _Palette]:
    pal = _palette(cmap, background)
    stats = [_stats(v, scale.endswith("symlog")) for v in arrays]
    norms = _norms(stats, scale, threshold)
    if upscale is None:
        ups = _auto_upscale([_natural(v) for v in arrays], separator)
    else:
        ups = [upscale] * len(arrays)
    images = [
        pal.rgb(_layer_indices(v, n, s, pal, _cell(v, u), separator))
        for v, n, s, u in zip(arrays, norms, stats, ups)
    ]
    return images, norms, stats, pal


def _title(index: int, name: str, kind: str, shape: tuple[int, ...]) -> str:
    dims = "x".join(map(str, shape)) if shape else "scalar"
    return f"{index}: {name}" + (f" ({kind})" if kind else "") + f"  {dims}"


def _layer_block(
    title: str | None, image: np.ndarray, norm: _Norm, stats: _Stats, pal: _Palette, labels: bool
) -> np.ndarray:
    if not labels:
        return image
    parts = [_colourbar_line(norm, stats, pal), image]
    if title is not None:
        parts.insert(0, _text(title, pal))
    return _vstack(parts, pal, gap=2)


# ---------------------------------------------------------------------------------------
# Public renderers
# ---------------------------------------------------------------------------------------


def render_layer(
    values: Any,
    *,
    scale: str = "layerscale",
    cmap: str | Colormap = "viridis",
    vrange: tuple[float, float] | None = None,
    threshold: float | None = None,
    upscale: int = 1,
    separator: int = 1,
) -> np.ndarray:
    """Render one layer of values as an RGB image.

    Parameters
    ----------
    values : numpy.ndarray or torch.Tensor
        One layer without the batch dimension: ``(N,)`` becomes a ``1 x N`` strip,
        ``(H, W)`` one map, and ``(C, ..., H, W)`` a grid of ``H x W`` channel tiles in
        row-major order.
    scale : str, default 'layerscale'
        One of `SCALES` (see the module docstring). For a single layer the ``global``
        scales equal their ``layer`` counterparts.
    cmap : str or matplotlib.colors.Colormap, default 'viridis'
        Any matplotlib colormap or its name.
    vrange : (float, float), optional
        ``(vmin, vmax)`` in data units, replacing the range that ``scale`` would derive
        from the values (for example to keep colours comparable across epochs). The
        scale still decides between linear and signed-log.
    threshold : float, optional
        The signed-log threshold ``t`` of the ``symlog`` scales; by default the
        smallest nonzero ``|x|``. Ignored by linear scales.
    upscale : int, default 1
        Each value becomes an ``upscale x upscale`` block of pixels (nearest neighbour),
        so small maps stay crisp when shown large.
    separator : int, default 1
        Pixels between channel tiles (0 for none), in a colour that stands out from
        the colormap.

    Returns
    -------
    numpy.ndarray
        ``uint8``, shape ``(height, width, 3)``, RGB; ready for TensorBoard's
        ``add_image(..., dataformats='HWC')``. A grid of ``C`` tiles of ``h x w`` values
        with ``c`` columns and ``r`` rows is ``r*h*upscale + (r-1)*separator`` high.

    Raises
    ------
    ValueError
        For an unknown ``scale`` or ``cmap``, a bad ``vrange``, ``threshold``,
        ``upscale`` or ``separator``.
    TypeError
        If ``values`` is not a real array or tensor.

    Examples
    --------
    >>> img = render_layer(np.arange(8.0).reshape(2, 2, 2), upscale=3)
    >>> img.shape, img.dtype
    ((6, 13, 3), dtype('uint8'))
    >>> render_layer(np.array([0.0, 1.0]), cmap='gray')[0].tolist()
    [[0, 0, 0], [255, 255, 255]]
    """
    where = "nsp.render.render_layer"
    _check_scale(scale, where)
    colormap = check_colormap(cmap, where)
    threshold = _check_threshold(threshold, where)
    upscale = _positive_int(upscale, "upscale", where, 1)
    separator = _positive_int(separator, "separator", where, 0)
    if vrange is not None:
        try:
            lo, hi = (float(x) for x in vrange)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: expected vrange to be a pair (vmin, vmax), got {vrange!r}") from err
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"{where}: expected vrange=(vmin, vmax) finite with vmin <= vmax, got {vrange!r}")
        vrange = (lo, hi)
    v = _as_float64(values, "values", where)
    stats = _stats(v, scale.endswith("symlog"))
    norm = _make_norm(stats, scale, vrange, threshold)
    pal = _palette(colormap)
    return pal.rgb(_layer_indices(v, norm, stats, pal, (upscale, upscale), separator))


def render_pattern(
    layers: Any,
    names: Sequence[str] | None = None,
    *,
    scale: str = "layerscale",
    cmap: str | Colormap = "viridis",
    threshold: float | None = None,
    upscale: int | None = None,
    separator: int = 1,
    labels: bool = True,
) -> np.ndarray:
    """Render every layer of a pattern, one below the other, as one RGB image.

    Parameters
    ----------
    layers : nsp.Activations or sequence of array-like
        The pattern (activations or a spectrum), or its per-layer arrays.
    names : sequence of str, optional
        Layer names; by default ``layers.layernames`` or ``'0', '1', ...``.
    scale, cmap, threshold, separator
        As in `render_layer`; ``global`` scales share one range over all layers.
    upscale : int, optional
        Pixels per value. By default each layer gets the largest factor (up to 32)
        that keeps it within the widest channel grid's width (clamped to 256..1024
        pixels), so small layers are legible next to large ones.
    labels : bool, default True
        Draw a title (index, name, type, shape) and a colour bar with the range above
        each layer, and count the flagged values there. Without labels the layers are
        stacked with 4-pixel gaps.

    Returns
    -------
    numpy.ndarray
        ``uint8``, shape ``(height, width, 3)``, RGB. 1-D layers are strips at least
        8 pixels high.

    Raises
    ------
    ValueError, TypeError
        As in `render_layer`, or if ``names`` does not match the layers.

    Examples
    --------
    >>> img = render_pattern([np.zeros((1, 4, 4)), np.arange(6.0)], scale='layernorm')
    >>> img.dtype, img.ndim
    (dtype('uint8'), 3)
    """
    where = "nsp.render.render_pattern"
    _check_scale(scale, where)
    colormap = check_colormap(cmap, where)
    threshold = _check_threshold(threshold, where)
    if upscale is not None:
        upscale = _positive_int(upscale, "upscale", where, 1)
    separator = _positive_int(separator, "separator", where, 0)
    arrays, names, kinds = _unpack_pattern(layers, names, "layers", where)
    if not arrays:
        raise ValueError(f"{where}: layers is empty; expected at least one layer")
    images, norms, stats, pal = _column_images(arrays, scale, colormap, threshold, upscale, separator, None)
    blocks = [
        _layer_block(_title(i, n, k, v.shape), im, nm, st, pal, labels)
        for i, (n, k, v, im, nm, st) in enumerate(zip(names, kinds, arrays, images, norms, stats))
    ]
    return _vstack(blocks, pal, gap=3 * _GAP if labels else _GAP)


def render_side_by_side(
    activations: Any,
    spectrum: Any,
    names: Sequence[str] | None = None,
    *,
    activation_scale: str = "layerscale",
    spectrum_scale: str = "layersymlog",
    activation_cmap: str | Colormap = "viridis",
    spectrum_cmap: str | Colormap = "RdBu_r",
    threshold: float | None = None,
    upscale: int | None = None,
    separator: int = 1,
    labels: bool = True,
) -> np.ndarray:
    """Render activations and their spectrum as one RGB image, layer by layer side by side.

    Parameters
    ----------
    activations, spectrum : nsp.Activations or sequence of array-like
        Two patterns with the same layer shapes (e.g. ``acts`` and
        ``graph.transform(acts)``).
    names : sequence of str, optional
        Layer names; by default ``activations.layernames`` or ``'0', '1', ...``.
    activation_scale, spectrum_scale : str
        One of `SCALES` for each side. The default signed-log scale shows spectra
        that span hundreds of decades.
    activation_cmap, spectrum_cmap : str or matplotlib.colors.Colormap
        Colormaps for each side; a diverging map suits the centred spectrum scale.
    threshold : float, optional
        Signed-log threshold for whichever side uses a ``symlog`` scale.
    upscale, separator, labels
        As in `render_pattern`.

    Returns
    -------
    numpy.ndarray
        ``uint8``, shape ``(height, width, 3)``, RGB: a header row, then one row per
        layer with the activations on the left and the spectrum on the right.

    Raises
    ------
    ValueError
        If the two patterns differ in layer count or shapes, or as in `render_pattern`.

    Examples
    --------
    >>> acts = [np.ones((2, 3, 3)), np.arange(4.0)]
    >>> spec = [np.full((2, 3, 3), -1e-30), np.array([0.0, 1e50, -1e-50, 2.0])]
    >>> render_side_by_side(acts, spec).dtype
    dtype('uint8')
    """
    where = "nsp.render.render_side_by_side"
    _check_scale(activation_scale, where, "activation_scale")
    _check_scale(spectrum_scale, where, "spectrum_scale")
    cmaps = (check_colormap(activation_cmap, where, "activation_cmap"), check_colormap(spectrum_cmap, where, "spectrum_cmap"))
    threshold = _check_threshold(threshold, where)
    if upscale is not None:
        upscale = _positive_int(upscale, "upscale", where, 1)
    separator = _positive_int(separator, "separator", where, 0)
    acts, names, kinds = _unpack_pattern(activations, names, "activations", where)
    spec, _, _ = _unpack_pattern(spectrum, names, "spectrum", where)
    if not acts:
        raise ValueError(f"{where}: activations is empty; expected at least one layer")
    for i, (a, s) in enumerate(zip(acts, spec)):
        if a.shape != s.shape:
            raise ValueError(
                f"{where}: layer {i} ({names[i]}) has shape {a.shape} in activations but {s.shape} in spectrum"
            )
    background = _background([_palette(c).lut[: _palette(c).n] for c in cmaps])
    sides = [
        _column_images(arrays, scale, cmap, threshold, upscale, separator, background)
        for arrays, scale, cmap in ((acts, activation_scale, cmaps[0]), (spec, spectrum_scale, cmaps[1]))
    ]
    pal = sides[0][3]
    columns = []
    for side, (images, norms, stats, side_pal) in enumerate(sides):
        columns.append([
            _layer_block(_title(i, n, k, v.shape) if side == 0 else None, im, nm, st, side_pal, labels)
            for i, (n, k, v, im, nm, st) in enumerate(zip(names, kinds, acts, images, norms, stats))
        ])
    widths = [max(b.shape[1] for b in col) for col in columns]
    if labels:
        headers = [f"activations ({activation_scale})", f"spectrum ({spectrum_scale})"]
        columns = [[_text(h, pal), *col] for h, col in zip(headers, columns)]
    rows = [
        _hstack([_vstack([left], pal, min_width=widths[0]), right], pal, gap=4 * _GAP, centre=False)
        for left, right in zip(*columns)
    ]
    return _vstack(rows, pal, gap=3 * _GAP if labels else _GAP)


_CARD_BAR_WIDTH = 256
_CARD_MAX_UPSCALE = 48
# Larger than the pattern labels: TensorBoard shrinks an image card to fit its box, about 350 x 230 pixels.
_CARD_FONT_PT = 11.0
_CARD_MAX_HEIGHT = 256


def _overlay(canvas: np.ndarray, part: np.ndarray, x: int) -> None:
    x = max(0, min(x, canvas.shape[1] - part.shape[1]))
    canvas[: part.shape[0], x: x + part.shape[1]] = part[:, : canvas.shape[1]]


def _card_bar(lo_text: str, hi_text: str, zero_at: float | None, width: int, pal: _Palette) -> np.ndarray:
    """A colour bar ``width`` pixels wide with its end values (and 0, where it lies inside) below it."""
    _, height = _line_metrics(_CARD_FONT_PT)
    ramp = np.linspace(0, pal.n - 1, width).round().astype(np.int64)
    bar = np.ascontiguousarray(np.broadcast_to(pal.lut[ramp], (height, width, 3)))
    labels = _blank(height, width, pal)
    _overlay(labels, _text(lo_text, pal, _CARD_FONT_PT), 0)
    hi = _text(hi_text, pal, _CARD_FONT_PT)
    _overlay(labels, hi, width - hi.shape[1])
    if zero_at is not None:
        zero = _text("0", pal, _CARD_FONT_PT)
        x = int(round(zero_at * (width - 1)))
        labels[: height // 3, x: x + 1] = pal.lut[pal.row(_INK)]
        if zero.shape[1] + 8 < x < width - hi.shape[1] - zero.shape[1] - 8:
            _overlay(labels, zero, x - zero.shape[1] // 2)
    return _vstack([bar, labels], pal, gap=1)


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
    _check_scale(scale, where)
    colormap = check_colormap(cmap, where)
    threshold = _check_threshold(threshold, where)
    min_width = _positive_int(min_width, "min_width", where, 1)
    if vrange is not None:
        lo, hi = (float(x) for x in vrange)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"{where}: expected vrange=(vmin, vmax) finite with vmin <= vmax, got {vrange!r}")
        vrange = (lo, hi)
    v = _as_float64(values, "values", where)
    pal = _palette(colormap)
    stats = _stats(v, scale.endswith("symlog"))
    notes: list[str] = []
    norm = _make_norm(stats, scale, vrange, threshold)
    if vrange is not None and norm.degenerate and stats.has_finite and stats.vmax > stats.vmin:
        norm = _make_norm(stats, scale, None, threshold)
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
        index = _indices(finite, norm, _stats(finite, False), pal)
        if np.unique(index).size == 1:
            centre, half = (stats.vmin + stats.vmax) / 2, (stats.vmax - stats.vmin) / 2
            notes.append(
                f"all values lie within {centre:.6g} ± {half:.2g}, less than one colour step apart:"
                f" colours show x − ({centre:.6g})"
            )
            shown, norm = v - centre, _Norm(-half, half)
        display = norm.display(finite)
        beyond = int(np.count_nonzero((display < norm.lo) | (display > norm.hi)))
        if beyond and shown is v:
            notes.append(f"{beyond} of {finite.size} values beyond the colour range (drawn in its end colours)")
    flags = _flag_text(stats)
    if flags:
        notes.append(flags + " (hatched)")
    count, h, w = _natural(v)
    cols = _columns(count, h, w)
    natural_width = cols * w + (cols - 1)
    rows = -(-count // cols)
    natural_height = rows * h + (rows - 1)
    upscale = max(1, min(_CARD_MAX_UPSCALE, -(-min_width // natural_width), _CARD_MAX_HEIGHT // natural_height))
    image = pal.rgb(_layer_indices(shown, norm, _stats(shown, False) if shown is not v else stats, pal,
                                   _cell(v, upscale), 1))
    parts = [_text(title, pal, _CARD_FONT_PT), image]
    if not norm.degenerate:
        zero = None
        if norm.lo < 0 < norm.hi:
            zero = (0.0 - norm.lo) / (norm.hi - norm.lo)
        parts.append(_card_bar(_fmt(norm.data_value(norm.lo)), _fmt(norm.data_value(norm.hi)), zero,
                               max(_CARD_BAR_WIDTH, min(image.shape[1], 2 * _CARD_BAR_WIDTH)), pal))
    parts += [_text(line, pal, _CARD_FONT_PT) for line in legend]
    parts += [_text("note: " + line, pal, _CARD_FONT_PT) for line in notes]
    card = _vstack(parts, pal, gap=3, min_width=max(min_width, _CARD_BAR_WIDTH))
    return np.pad(card, ((_GAP, _GAP), (_GAP, _GAP), (0, 0)), mode="edge")


# ---------------------------------------------------------------------------------------
# Spectral energy plots (matplotlib figures; no pyplot state)
# ---------------------------------------------------------------------------------------


def _new_axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _energy_array(values: Any, ndim: int, argname: str, where: str) -> np.ndarray:
    arr = _as_float64(values, argname, where)
    if arr.ndim != ndim:
        raise ValueError(f"{where}: expected {argname} to be {ndim}-D, got shape {arr.shape}")
    return arr


def _check_names(names: Sequence[str], count: int, where: str) -> list[str]:
    names = [str(n) for n in names]
    if len(names) != count:
        raise ValueError(f"{where}: got {len(names)} names for {count} layers")
    return names


def energy_bars(log10_energies: Any, names: Sequence[str], *, ax: Axes | None = None) -> tuple[Figure, Axes]:
    """Horizontal bars of log10 spectral energy, one per layer, for one pattern.

    Parameters
    ----------
    log10_energies : array-like, shape (num_layers,)
        log10 of each layer's spectral energy, e.g. ``nsp.energy.log10_energy(spectrum)``
        (log10 because energies overflow float64 on deep networks). ``-inf`` (a zero
        layer) draws no bar and is labelled ``0``; NaN and ``+inf`` are labelled too.
    names : sequence of str
        Layer names, top to bottom.
    ax : matplotlib.axes.Axes, optional
        Draw into this axes instead of a new figure.

    Returns
    -------
    (matplotlib.figure.Figure, matplotlib.axes.Axes)
        A figure with an Agg canvas, not registered with pyplot; `figure_to_rgb`
        turns it into an image.

    Examples
    --------
    >>> fig, ax = energy_bars([2.0, -np.inf, 54.3], ['input', 'relu', 'fc'])
    >>> figure_to_rgb(fig).shape[2]
    3
    """
    where = "nsp.render.energy_bars"
    e = _energy_array(log10_energies, 1, "log10_energies", where)
    names = _check_names(names, e.size, where)
    fig, ax = _new_axes(ax, (6.0, 1.0 + 0.3 * max(e.size, 1)))
    y = np.arange(e.size)
    finite = np.isfinite(e)
    ax.barh(y[finite], e[finite], color="tab:blue")
    ax.axvline(0.0, color="black", linewidth=0.8)
    for yi, value in zip(y, e):
        if np.isfinite(value):
            text, x, right = f"{value:.1f}", value, value < 0
        else:
            text, x, right = {-np.inf: "energy 0", np.inf: "inf"}.get(value, "nan"), 0.0, False
        ax.annotate(text, (x, yi), xytext=(-3 if right else 3, 0), textcoords="offset points", va="center",
                    ha="right" if right else "left", fontsize=8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("log10 spectral energy (sum of squared coefficients)")
    ax.margins(x=0.15)
    return fig, ax


def energy_over_epochs(
    log10_energies: Any,
    epochs: Sequence[int],
    names: Sequence[str],
    *,
    kind: Literal["lines", "heatmap"] = "lines",
    ax: Axes | None = None,
) -> tuple[Figure, Axes]:
    """log10 spectral energy of every layer across epochs.

    Parameters
    ----------
    log10_energies : array-like, shape (num_epochs, num_layers)
        One row of ``nsp.energy.log10_energy`` per recorded epoch.
    epochs : sequence of int
        The epoch of each row (need not be evenly spaced).
    names : sequence of str
        Layer names, one per column.
    kind : {'lines', 'heatmap'}, default 'lines'
        One line per layer against the epoch, or a layer x epoch heatmap (epochs as
        equally wide columns) with a log10 colour bar. Non-finite values leave gaps
        in lines and grey cells in the heatmap.
    ax : matplotlib.axes.Axes, optional
        Draw into this axes instead of a new figure.

    Returns
    -------
    (matplotlib.figure.Figure, matplotlib.axes.Axes)

    Raises
    ------
    ValueError
        For an unknown ``kind`` or mismatched shapes.

    Examples
    --------
    >>> e = np.array([[0.0, 10.0], [1.0, 12.0], [2.0, 20.0]])
    >>> fig, ax = energy_over_epochs(e, [0, 5, 10], ['conv', 'fc'], kind='heatmap')
    >>> figure_to_rgb(fig).dtype
    dtype('uint8')
    """
    where = "nsp.render.energy_over_epochs"
    if kind not in ("lines", "heatmap"):
        raise ValueError(f"{where}: unknown kind={kind!r}; expected 'lines' or 'heatmap'")
    e = _energy_array(log10_energies, 2, "log10_energies", where)
    epochs = [int(x) for x in epochs]
    if len(epochs) != e.shape[0]:
        raise ValueError(f"{where}: got {len(epochs)} epochs for {e.shape[0]} rows of log10_energies")
    names = _check_names(names, e.shape[1], where)
    if kind == "lines":
        fig, ax = _new_axes(ax, (7.0, 4.0))
        shown = np.where(np.isfinite(e), e, np.nan)
        for j, name in enumerate(names):
            # The colour cycle has 10 colours; later layers differ by line style too.
            ax.plot(epochs, shown[:, j], marker="o", markersize=3, label=name, linestyle=_LINE_STYLES[j // 10 % 4])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("log10 spectral energy")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        return fig, ax
    fig, ax = _new_axes(ax, (1.5 + 0.5 * max(len(epochs), 4), 1.0 + 0.3 * max(len(names), 2)))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=_GREY_FLOAT)
    image = ax.imshow(np.ma.masked_invalid(e.T), aspect="auto", interpolation="nearest", cmap=cmap)
    ax.set_xticks(np.arange(len(epochs)), [str(x) for x in epochs])
    ax.set_yticks(np.arange(len(names)), names)
    ax.set_xlabel("epoch")
    ax.figure.colorbar(image, ax=ax, label="log10 spectral energy")
    if not np.isfinite(e).all():
        ax.set_title("grey: zero or non-finite energy", fontsize=8)
    return fig, ax



def figure_to_rgb(figure: Figure) -> np.ndarray:
    """Draw a matplotlib figure with Agg and return its pixels.

    Parameters
    ----------
    figure : matplotlib.figure.Figure

    Returns
    -------
    numpy.ndarray
        ``uint8``, shape ``(height, width, 3)``, RGB (alpha dropped).
    """
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
