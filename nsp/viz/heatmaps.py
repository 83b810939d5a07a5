"""Heatmaps: layers of values as grids of tiles, in vectorised steps and without figures.

A layer becomes an image in three steps: values are normalised by a colour scale (see
`nsp.viz.scales`), the normalised values index a palette (see `nsp.viz.colors`), and the
channels are laid out as a grid of tiles with thin separators. `render_pattern` and
`render_side_by_side` put a title and a colour bar with the range above each layer.

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

import math
from typing import Any, Sequence

import numpy as np
from matplotlib.colors import Colormap

from nsp.viz.colors import (
    FLAG_CONSTANT,
    FLAG_EMPTY,
    FLAG_NAN,
    FLAG_NEGINF,
    FLAG_POSINF,
    ROW_BG,
    ROW_BLACK,
    ROW_GREY,
    ROW_MAGENTA,
    ROW_SEP,
    ROW_VOID,
    Palette,
    background_for,
    check_colormap,
    palette,
)
from nsp.viz.scales import (
    Norm,
    Stats,
    check_scale,
    check_threshold,
    flag_text,
    layer_stats,
    make_norm,
    pattern_norms,
)
from nsp.viz.text import GAP, format_number, hstack, line_metrics, text_line, vstack
from nsp.viz.values import as_float64, positive_int, unpack_pattern

__all__ = [
    "render_layer",
    "render_pattern",
    "render_side_by_side",
    "colour_indices",
    "grid_columns",
    "layer_indices",
    "natural_shape",
    "cell_size",
]

_EMPTY_TILE = 4  # cells per side of the tile that stands for an empty layer
_MIN_STRIP_HEIGHT = 8  # pixels; a 1-pixel strip is invisible next to 2-D maps
_AUTO_WIDTH = 256  # pixels; automatic upscaling aims small layers at least at this width
_MAX_AUTO_WIDTH = 1024
_MAX_AUTO_UPSCALE = 32
_COLOURBAR_WIDTH = 64


def _hatch_pairs(pal: Palette) -> dict[int, tuple[int, int]]:
    """The two colours of each flag's hatch, by flag code."""
    centre, top = pal.n // 2, pal.n - 1
    return {
        pal.row(FLAG_NAN): (pal.row(ROW_BLACK), pal.row(ROW_MAGENTA)),
        pal.row(FLAG_POSINF): (top, pal.stripes_for(top)),
        pal.row(FLAG_NEGINF): (0, pal.stripes_for(0)),
        pal.row(FLAG_CONSTANT): (centre, pal.stripes_for(centre)),
        pal.row(FLAG_EMPTY): (pal.row(ROW_GREY), pal.row(ROW_BG)),
    }


def colour_indices(v: np.ndarray, norm: Norm, stats: Stats, pal: Palette) -> np.ndarray:
    """Lookup-table index (or flag code) of every value, as matplotlib's Normalize + Colormap."""
    if norm.degenerate:
        idx = np.full(v.shape, pal.row(FLAG_CONSTANT), dtype=np.uint16)
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            u = (norm.display(v) - norm.lo) / (norm.hi - norm.lo)
            u *= pal.n
            np.clip(u, 0, pal.n - 1, out=u)
            if stats.nonfinite:
                u[~np.isfinite(u)] = 0
            idx = u.astype(np.uint16)
    if stats.nonfinite:
        idx[np.isnan(v)] = pal.row(FLAG_NAN)
        idx[np.isposinf(v)] = pal.row(FLAG_POSINF)
        idx[np.isneginf(v)] = pal.row(FLAG_NEGINF)
    return idx


def _tiles(v: np.ndarray) -> np.ndarray:
    if v.ndim <= 1:
        return v.reshape(1, 1, -1)
    return v.reshape(-1, *v.shape[-2:])


def grid_columns(count: int, height: int, width: int) -> int:
    """Grid columns that make ``count`` tiles of ``height x width`` as square as possible."""
    return max(1, min(count, math.ceil(math.sqrt(count * height / width))))


def _mosaic(tiles: np.ndarray, upscale: tuple[int, int], separator: int, fill: int, void: int) -> np.ndarray:
    """Lay out ``(C, h, w)`` index tiles as a grid, each value ``uy x ux`` pixels.

    Separators get ``fill``; the unused cells after the last tile get ``void``.
    """
    count, h, w = tiles.shape
    cols = grid_columns(count, h, w)
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


def _resolve_flags(image: np.ndarray, pal: Palette, stripe: int) -> None:
    """Replace flag codes in an index image by two-colour hatches, in place.

    The hatches repeat every ``2 * stripe`` pixels both ways: one period is drawn and tiled
    over the image (a card of a constant layer is all hatch, a hundred thousand pixels).
    """
    if not image.size or int(image.max()) < pal.row(FLAG_NAN):
        return
    period = np.arange(2 * stripe)
    first = ((period[:, None] + period[None, :]) // stripe) % 2 == 0
    cross = first | (((period[:, None] - period[None, :]) // stripe) % 2 == 0)
    reps = (-(-image.shape[0] // (2 * stripe)), -(-image.shape[1] // (2 * stripe)))
    for code, (a, b) in _hatch_pairs(pal).items():
        sel = image == code
        if sel.any():
            pick = np.tile(cross if code == pal.row(FLAG_EMPTY) else first, reps)[: image.shape[0], : image.shape[1]]
            image[sel] = np.where(pick, a, b)[sel]


def layer_indices(
    v: np.ndarray, norm: Norm, stats: Stats, pal: Palette, upscale: tuple[int, int], separator: int
) -> np.ndarray:
    """A layer as an index image into ``pal``: its grid of tiles, each value an
    ``upscale = (height, width)`` block, flags already hatched (``pal.rgb`` colours it)."""
    if v.size == 0:
        tiles = np.full((1, _EMPTY_TILE, _EMPTY_TILE), pal.row(FLAG_EMPTY), dtype=np.uint16)
    else:
        tiles = colour_indices(v.reshape(-1), norm, stats, pal).reshape(natural_shape(v))
    image = _mosaic(tiles, upscale, separator, pal.row(ROW_SEP), pal.row(ROW_VOID))
    if v.size == 0 or norm.degenerate or stats.nonfinite:
        _resolve_flags(image, pal, stripe=max(2, min(upscale) // 2))
    return image


def _colourbar_line(norm: Norm, stats: Stats, pal: Palette) -> np.ndarray:
    """The range line above a layer: ``lo [colour bar] hi``, or what is wrong with it."""
    _, height = line_metrics()
    if stats.size == 0:
        parts = [text_line("empty layer", pal)]
    elif not stats.has_finite:
        parts = [text_line("no finite values", pal)]
    elif norm.degenerate:
        parts = [text_line(f"every value {format_number(norm.data_value(norm.lo))} (hatched)", pal)]
    else:
        ramp = np.linspace(0, pal.n - 1, _COLOURBAR_WIDTH).round().astype(np.int64)
        bar = np.broadcast_to(pal.lut[ramp], (height - 4, _COLOURBAR_WIDTH, 3))
        parts = [text_line(format_number(norm.data_value(norm.lo)), pal), bar, text_line(format_number(norm.data_value(norm.hi)), pal)]
        if norm.threshold is not None:
            parts.append(text_line(f"signed log10, t={format_number(norm.threshold)}", pal))
    flags = flag_text(stats)
    if flags:
        parts.append(text_line(flags + " (hatched)", pal))
    return hstack(parts, pal)


def _auto_upscale(shapes: Sequence[tuple[int, int, int]], separator: int) -> list[int]:
    """Per layer, the largest factor (at most 32) that keeps its grid within a target width:
    the widest 2-D grid's natural width, but at least 256 and at most 1024 pixels. Long
    strips do not set the target, so one wide Linear layer cannot blow up every other layer."""
    grids = [(grid_columns(c, h, w), w, c == 1 and h == 1) for c, h, w in shapes]
    widest = max([cols * (w + separator) - separator for cols, w, strip in grids if not strip], default=0)
    target = min(max(_AUTO_WIDTH, widest), _MAX_AUTO_WIDTH)
    return [max(1, min(_MAX_AUTO_UPSCALE, (target - (cols - 1) * separator) // (cols * w))) for cols, w, _ in grids]


def natural_shape(v: np.ndarray) -> tuple[int, int, int]:
    """``(tiles, height, width)`` of a layer's grid before upscaling (an empty layer is one small tile)."""
    if v.size == 0:
        return (1, _EMPTY_TILE, _EMPTY_TILE)
    return _tiles(v).shape  # type: ignore[return-value]


def cell_size(v: np.ndarray, upscale: int) -> tuple[int, int]:
    """Pixels per value, (height, width): square, except that single-row strips are
    stretched to be visible."""
    count, h, _ = natural_shape(v)
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
) -> tuple[list[np.ndarray], list[Norm], list[Stats], Palette]:
    pal = palette(cmap, background)
    stats = [layer_stats(v, scale.endswith("symlog")) for v in arrays]
    norms = pattern_norms(stats, scale, threshold)
    if upscale is None:
        ups = _auto_upscale([natural_shape(v) for v in arrays], separator)
    else:
        ups = [upscale] * len(arrays)
    images = [
        pal.rgb(layer_indices(v, n, s, pal, cell_size(v, u), separator))
        for v, n, s, u in zip(arrays, norms, stats, ups)
    ]
    return images, norms, stats, pal


def _title(index: int, name: str, kind: str, shape: tuple[int, ...]) -> str:
    dims = "x".join(map(str, shape)) if shape else "scalar"
    return f"{index}: {name}" + (f" ({kind})" if kind else "") + f"  {dims}"


def _layer_block(
    title: str | None, image: np.ndarray, norm: Norm, stats: Stats, pal: Palette, labels: bool
) -> np.ndarray:
    if not labels:
        return image
    parts = [_colourbar_line(norm, stats, pal), image]
    if title is not None:
        parts.insert(0, text_line(title, pal))
    return vstack(parts, pal, gap=2)


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
        One of `SCALES` (see `nsp.viz.scales`). For a single layer the ``global``
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
    check_scale(scale, where)
    colormap = check_colormap(cmap, where)
    threshold = check_threshold(threshold, where)
    upscale = positive_int(upscale, "upscale", where, 1)
    separator = positive_int(separator, "separator", where, 0)
    if vrange is not None:
        try:
            lo, hi = (float(x) for x in vrange)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: expected vrange to be a pair (vmin, vmax), got {vrange!r}") from err
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"{where}: expected vrange=(vmin, vmax) finite with vmin <= vmax, got {vrange!r}")
        vrange = (lo, hi)
    v = as_float64(values, "values", where)
    stats = layer_stats(v, scale.endswith("symlog"))
    norm = make_norm(stats, scale, vrange, threshold)
    pal = palette(colormap)
    return pal.rgb(layer_indices(v, norm, stats, pal, (upscale, upscale), separator))


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
    check_scale(scale, where)
    colormap = check_colormap(cmap, where)
    threshold = check_threshold(threshold, where)
    if upscale is not None:
        upscale = positive_int(upscale, "upscale", where, 1)
    separator = positive_int(separator, "separator", where, 0)
    arrays, names, kinds = unpack_pattern(layers, names, "layers", where)
    if not arrays:
        raise ValueError(f"{where}: layers is empty; expected at least one layer")
    images, norms, stats, pal = _column_images(arrays, scale, colormap, threshold, upscale, separator, None)
    blocks = [
        _layer_block(_title(i, n, k, v.shape), im, nm, st, pal, labels)
        for i, (n, k, v, im, nm, st) in enumerate(zip(names, kinds, arrays, images, norms, stats))
    ]
    return vstack(blocks, pal, gap=3 * GAP if labels else GAP)


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
    check_scale(activation_scale, where, "activation_scale")
    check_scale(spectrum_scale, where, "spectrum_scale")
    cmaps = (check_colormap(activation_cmap, where, "activation_cmap"), check_colormap(spectrum_cmap, where, "spectrum_cmap"))
    threshold = check_threshold(threshold, where)
    if upscale is not None:
        upscale = positive_int(upscale, "upscale", where, 1)
    separator = positive_int(separator, "separator", where, 0)
    acts, names, kinds = unpack_pattern(activations, names, "activations", where)
    spec, _, _ = unpack_pattern(spectrum, names, "spectrum", where)
    if not acts:
        raise ValueError(f"{where}: activations is empty; expected at least one layer")
    for i, (a, s) in enumerate(zip(acts, spec)):
        if a.shape != s.shape:
            raise ValueError(
                f"{where}: layer {i} ({names[i]}) has shape {a.shape} in activations but {s.shape} in spectrum"
            )
    background = background_for([palette(c).lut[: palette(c).n] for c in cmaps])
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
        columns = [[text_line(h, pal), *col] for h, col in zip(headers, columns)]
    rows = [
        hstack([vstack([left], pal, min_width=widths[0]), right], pal, gap=4 * GAP, centre=False)
        for left, right in zip(*columns)
    ]
    return vstack(rows, pal, gap=3 * GAP if labels else GAP)
