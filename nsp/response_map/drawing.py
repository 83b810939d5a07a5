"""Drawing a response map: as an RGB array (no figure), as a labelled card, or as a matplotlib figure.

A card (:func:`map_card`) is what an image shown alone needs: a title, the map with a
colour bar and its values, and beside it the layout's layer regions (each grid point
coloured by the layer of its nearest neuron, :func:`layer_regions`) with a legend.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["map_figure", "to_rgb", "layer_regions", "map_card"]

_MAP_SIDE = 200  # pixels: a smaller map is enlarged to at least this on a card


def to_rgb(grid: np.ndarray, cmap: str = "viridis", vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """A map as an RGB image, by colormap lookup (no figure): NaN (outside the layout) is white.

    Parameters
    ----------
    grid : numpy.ndarray
        ``(H, W)`` map, row 0 at the top.
    cmap : str
        A matplotlib colormap name.
    vmin, vmax : float
        The values drawn with the colormap's ends; values beyond are clipped.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8.
    """
    from nsp.viz.colors import colormap, colour_table

    colormap(cmap, "nsp.response_map.to_rgb")
    grid = np.asarray(grid)
    if grid.ndim != 2 or grid.dtype.kind not in "fiub":
        raise ValueError(f"nsp.response_map.to_rgb: expected a real (H, W) grid, got {grid.dtype} {list(grid.shape)}")
    if not (math.isfinite(vmin) and math.isfinite(vmax) and vmin < vmax):
        raise ValueError(f"nsp.response_map.to_rgb: expected finite vmin < vmax, got {vmin!r}, {vmax!r}")
    lut = (colour_table(cmap, 256) * 255).round().astype(np.uint8)
    finite = np.isfinite(grid)
    index = np.zeros(grid.shape, dtype=np.int64)
    index[finite] = np.clip((grid[finite] - vmin) / (vmax - vmin), 0, 1) * 255 + 0.5
    rgb = lut[index]
    rgb[~finite] = 255
    return rgb


def map_figure(grid: np.ndarray, extent: tuple[float, float, float, float], cmap: str, size: tuple[float, float],
               file: str | None, where: str) -> Any:
    """A map drawn on its layout's extent with ``vmin=0, vmax=1``, as the seed's ``GenerateMap`` draws it.

    Parameters
    ----------
    grid : numpy.ndarray
        ``(H, W)`` map, row 0 at the top; NaN is left blank.
    extent : (float, float, float, float)
        ``(left, right, bottom, top)`` of the layout.
    cmap : str
        A matplotlib colormap name.
    size : (float, float)
        Figure size in inches.
    file : str, optional
        Where to save the figure (format from the extension).
    where : str
        The function named in errors.

    Returns
    -------
    matplotlib.figure.Figure
        Not registered with pyplot, so it leaves no open figure behind.
    """
    from matplotlib.figure import Figure

    from nsp.viz.colors import colormap

    colormap(cmap, where)
    figure = Figure(figsize=size)
    axes = figure.add_subplot()
    axes.imshow(grid, vmin=0, vmax=1, cmap=cmap, extent=extent, interpolation="nearest")
    axes.axis("off")
    if file is not None:
        figure.savefig(file)
    return figure


def layer_regions(layout: np.ndarray, neuron_layer: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Each grid point's nearest neuron's layer, on the grid the maps of ``layout`` are drawn on.

    Parameters
    ----------
    layout : numpy.ndarray
        ``(N, 2)`` neuron positions.
    neuron_layer : numpy.ndarray
        ``(N,)`` each neuron's layer index.
    inside : numpy.ndarray
        ``(H, W)`` bool, the grid points inside the layout (a map's finite values);
        the grid spans the layout's bounding box, row 0 at the top, as the maps do.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int64: the layer index, -1 outside.

    Raises
    ------
    ValueError
        If the shapes do not agree.
    """
    from scipy.spatial import cKDTree

    layout, neuron_layer, inside = np.asarray(layout, dtype=np.float64), np.asarray(neuron_layer), np.asarray(inside)
    if layout.ndim != 2 or layout.shape[1] != 2 or neuron_layer.shape != (len(layout),) or inside.ndim != 2 \
            or not len(layout):
        raise ValueError(f"nsp.response_map.layer_regions: expected a layout (N, 2), N layer indices and an (H, W) "
                         f"mask, got {list(layout.shape)}, {list(neuron_layer.shape)}, {list(inside.shape)}")
    lo, hi = layout.min(axis=0), layout.max(axis=0)
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], inside.shape[1]), np.linspace(hi[1], lo[1], inside.shape[0]))
    regions = np.full(inside.shape, -1, dtype=np.int64)
    nearest = cKDTree(layout).query(np.column_stack([gx[inside], gy[inside]]))[1]
    regions[inside] = neuron_layer[nearest]
    return regions


def map_card(grid: np.ndarray, regions: np.ndarray, layer_names: Sequence[str], *, title: Sequence[str] = (),
             counts: Sequence[int] | None = None, cmap: str = "viridis", vmin: float = 0.0, vmax: float = 1.0,
             bar_label: str = "") -> np.ndarray:
    """A map as an image that explains itself: title, map with colour bar, and the layer regions beside it.

    Parameters
    ----------
    grid : numpy.ndarray
        ``(H, W)`` map, as :func:`to_rgb` takes it; a map smaller than 200 pixels is
        enlarged (nearest neighbour).
    regions : numpy.ndarray
        ``(H, W)`` layer index per grid point, -1 outside (:func:`layer_regions`); drawn
        at half the map's size in categorical colours, with a legend naming each layer.
    layer_names : sequence of str
        The names of the layer indices.
    title : sequence of str
        Lines above.
    counts : sequence of int, optional
        Neurons per layer, written in the legend.
    cmap, vmin, vmax
        As in :func:`to_rgb`; the colour bar under the map runs from ``vmin`` to ``vmax``.
    bar_label : str, optional
        What the map's values are, under its colour bar.

    Returns
    -------
    numpy.ndarray
        ``(height, width, 3)`` uint8.

    Raises
    ------
    ValueError
        If ``regions`` is not shaped as ``grid`` or names a layer ``layer_names`` lacks.
    """
    from nsp.viz.colors import WHITE, colour_table, palette
    from nsp.viz.text import LABEL_PT, colour_bar, hstack, label_palette, line_metrics, text_line, titled, vstack

    where = "nsp.response_map.map_card"
    regions = np.asarray(regions)
    if regions.shape != np.shape(grid) or (regions.size and int(regions.max()) >= len(layer_names)):
        raise ValueError(f"{where}: expected regions shaped as the map {list(np.shape(grid))} with layer indices "
                         f"below {len(layer_names)}, got {list(regions.shape)}")
    picture = to_rgb(grid, cmap, vmin, vmax)
    factor = max(1, -(-_MAP_SIDE // min(picture.shape[:2])))
    picture = picture.repeat(factor, axis=0).repeat(factor, axis=1)
    text = label_palette()
    bar = colour_bar(palette(cmap, WHITE), vmin, vmax, picture.shape[1], label=bar_label)
    colours = (colour_table("tab10" if len(layer_names) <= 10 else "tab20") * 255).astype(np.uint8)
    colours = np.concatenate([colours[np.arange(len(layer_names)) % len(colours)], [[255, 255, 255]]]).astype(np.uint8)
    small = regions.repeat(factor, axis=0).repeat(factor, axis=1)[::2, ::2]
    legend = []
    swatch_side = line_metrics(LABEL_PT)[1]
    for k, name in enumerate(layer_names):
        swatch = np.broadcast_to(colours[k], (swatch_side - 4, swatch_side - 4, 3)).astype(np.uint8)
        what = name if counts is None else f"{name} ({counts[k]:,})"
        legend.append(hstack([swatch, text_line(what, text, LABEL_PT)], text))
    side = vstack([colours[small]] + legend, text, gap=2)
    panels = [titled(vstack([picture, bar], text), ["response"], text),
              titled(side, ["layers (nearest neuron)"], text)]
    return titled(hstack(panels, text, gap=12, centre=False), list(title), text)
