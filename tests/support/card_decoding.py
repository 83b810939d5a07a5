"""Read a card's heatmap back: each value's cell, mapped back to its colormap's table index.

Independent of how a card picks its colours: the cells are found from the layout a card
promises (a title line, then the heatmap, framed or not, as a grid of tiles with 1-pixel
separators in row-major order) and every cell's centre pixel is looked up in matplotlib's
own table of the colormap (``cmap(i, bytes=True)``), so a value drawn in the table's first
or last colour reads as index 0 or ``N - 1``.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib
import numpy as np

from nsp.viz.cards import CARD_FONT_PT
from nsp.viz.heatmaps import cell_size, grid_columns, natural_shape
from nsp.viz.text import GAP, line_metrics

CMAPS = ("RdBu_r", "viridis")


def colour_table(name: str) -> dict[tuple[int, int, int], int]:
    """matplotlib's byte colours of ``name``, each to its (first) index."""
    cmap = matplotlib.colormaps[name]
    table = cmap(np.arange(cmap.N), bytes=True)[:, :3]
    out: dict[tuple[int, int, int], int] = {}
    for i, colour in enumerate(map(tuple, table.tolist())):
        out.setdefault(colour, i)
    return out


def _cell_centres(shape: Sequence[int], upscale: tuple[int, int], y0: int, x0: int) -> tuple[np.ndarray, np.ndarray]:
    count, h, w = natural_shape(np.empty(shape))
    cols = grid_columns(count, h, w)
    uy, ux = upscale
    i = np.arange(count * h * w)
    tile, r, c = i // (h * w), (i % (h * w)) // w, i % w
    ys = y0 + (tile // cols) * (h * uy + 1) + r * uy + uy // 2
    xs = x0 + (tile % cols) * (w * ux + 1) + c * ux + ux // 2
    return ys, xs


def decode(card: np.ndarray, shape: Sequence[int]) -> tuple[str, np.ndarray]:
    """The colormap of a card's heatmap and the table index of every value (row-major), -1 where none.

    Tries each colormap of `CMAPS` and each pixel size (1 to 48) of the heatmap's cells,
    and keeps the reading in which the most cells are colours of the table and the pixel
    just right of the heatmap is not.
    """
    y0, x0 = GAP + line_metrics(CARD_FONT_PT)[1] + 3, GAP
    best: tuple[int, str, np.ndarray] | None = None
    for name in CMAPS:
        table = colour_table(name)
        framed = tuple(card[y0, x0].tolist()) not in table and tuple(card[y0, x0].tolist()) != (255, 255, 255)
        top, left = (y0 + 1, x0 + 1) if framed else (y0, x0)
        values = np.empty(shape)
        for u in range(1, 49):
            upscale = cell_size(values, u)
            ys, xs = _cell_centres(shape, upscale, top, left)
            count, h, w = natural_shape(values)
            cols = grid_columns(count, h, w)
            right = left + cols * w * upscale[1] + cols - 1
            if ys.max() >= card.shape[0] or right >= card.shape[1]:
                break
            if tuple(card[top, right].tolist()) in table:
                continue
            index = np.array([table.get(tuple(p), -1) for p in card[ys, xs].tolist()])
            hits = int(np.count_nonzero(index >= 0))
            if best is None or hits > best[0]:
                best = (hits, name, index)
    assert best is not None, "no heatmap found below the card's title"
    return best[1], best[2]


def saturated(index: np.ndarray, name: str) -> int:
    """How many decoded values are drawn in the colour table's first or last colour."""
    n = matplotlib.colormaps[name].N
    return int(np.count_nonzero((index == 0) | (index == n - 1)))
