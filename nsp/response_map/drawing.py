"""Drawing a response map: as an RGB array (no figure) or as a matplotlib figure."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["map_figure", "to_rgb"]


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
