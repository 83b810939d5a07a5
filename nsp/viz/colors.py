"""The one colour table of nsp: colormaps by name, and their colours as lookup tables.

Every picture in nsp (heatmaps, cards, attribution overlays, response maps) takes its
colours from here, so a colormap name means the same colours, and an unknown name the
same error, everywhere.

A `Palette` is the table the heatmaps index: a colormap's colours as bytes (rows
``0..n-1``), then a few fixed colours at ``n + ROW_*`` (canvas, ink, separators) and, past
those, the codes ``n + FLAG_*`` of values that no colour can show (NaN, infinities, a
constant or empty layer), which the heatmaps replace by hatches.

Examples
--------
>>> colour_table("gray", 3).tolist()
[[0.0, 0.0, 0.0], [0.5019607843137255, 0.5019607843137255, 0.5019607843137255], [1.0, 1.0, 1.0]]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.colors import Colormap

__all__ = [
    "colormap",
    "check_colormap",
    "colour_table",
    "Palette",
    "palette",
    "background_for",
    "WHITE",
    "BLACK",
    "GREY",
    "MAGENTA",
    "ROW_BG",
    "ROW_INK",
    "ROW_BLACK",
    "ROW_WHITE",
    "ROW_MAGENTA",
    "ROW_GREY",
    "ROW_VOID",
    "ROW_SEP",
    "FLAG_NAN",
    "FLAG_POSINF",
    "FLAG_NEGINF",
    "FLAG_CONSTANT",
    "FLAG_EMPTY",
]

WHITE, BLACK = (255, 255, 255), (0, 0, 0)
GREY, MAGENTA = (160, 160, 160), (255, 0, 255)

# Rows appended to a colormap's lookup table, and the flag codes that follow them. ROW_BG is
# the canvas (shared by both colormaps of a side-by-side image), ROW_SEP the separators (the
# best contrast to this colormap alone), ROW_VOID the unused grid cells: canvas-coloured,
# but pages make them transparent.
ROW_BG, ROW_INK, ROW_BLACK, ROW_WHITE, ROW_MAGENTA, ROW_GREY, ROW_VOID, ROW_SEP = range(8)
FLAG_NAN, FLAG_POSINF, FLAG_NEGINF, FLAG_CONSTANT, FLAG_EMPTY = range(8, 13)


def _unknown(cmap: object, where: str, argname: str, objects: bool) -> ValueError:
    names = sorted((n for n in matplotlib.colormaps if not n.endswith("_r")), key=str.lower)
    what = "a matplotlib Colormap or one of the names" if objects else "one of matplotlib's colormap names"
    return ValueError(
        f"{where}: unknown colormap {argname}={cmap!r}; expected {what} "
        f"{', '.join(names)} (each also reversed with the suffix '_r')"
    )


def colormap(name: str, where: str = "nsp.viz.colors.colormap", argname: str = "cmap") -> Colormap:
    """The matplotlib colormap registered under ``name``.

    Parameters
    ----------
    name : str
        A registered colormap name, such as ``'viridis'`` or ``'RdBu_r'``.
    where, argname : str
        The caller and its argument, named in the error.

    Returns
    -------
    matplotlib.colors.Colormap

    Raises
    ------
    ValueError
        If ``name`` is not a registered name; the message lists the names.
    """
    if isinstance(name, str) and name in matplotlib.colormaps:
        return matplotlib.colormaps[name]
    raise _unknown(name, where, argname, objects=False)


def check_colormap(cmap: str | Colormap, where: str, argname: str = "cmap") -> str | Colormap:
    """``cmap`` itself if it is a Colormap or a registered name.

    A name is returned as a name (not resolved), so that the tables built from it can be
    cached by name.

    Raises
    ------
    ValueError
        Otherwise, naming ``where`` and ``argname`` and listing the names.
    """
    if isinstance(cmap, Colormap) or (isinstance(cmap, str) and cmap in matplotlib.colormaps):
        return cmap
    raise _unknown(cmap, where, argname, objects=True)


@functools.lru_cache(maxsize=64)
def _named_table(name: str, size: int | None) -> np.ndarray:
    table = _table(colormap(name), size)
    table.flags.writeable = False
    return table


def _table(cmap: Colormap, size: int | None) -> np.ndarray:
    # size evenly spaced points from 0 to 1; with size == cmap.N these are exactly the
    # colormap's own entries.
    return np.ascontiguousarray(cmap(np.linspace(0.0, 1.0, cmap.N if size is None else size))[:, :3])


def colour_table(cmap: str | Colormap, size: int | None = None) -> np.ndarray:
    """The colours of a colormap at ``size`` evenly spaced points from 0 to 1.

    Parameters
    ----------
    cmap : str or matplotlib.colors.Colormap
        A registered name (its table is cached) or a Colormap.
    size : int, optional
        Entries; by default the colormap's own number of colours ``cmap.N``, whose
        entries are then exactly the colormap's.

    Returns
    -------
    numpy.ndarray
        ``float64``, shape ``(size, 3)``, RGB in ``[0, 1]``; read-only for a name.
        ``(table * 255).astype(np.uint8)`` gives matplotlib's ``bytes=True`` colours.

    Raises
    ------
    ValueError
        For an unknown name.
    """
    if isinstance(cmap, str):
        return _named_table(cmap, size)
    return _table(check_colormap(cmap, "nsp.viz.colors.colour_table"), size)


@dataclass(frozen=True)
class Palette:
    """A colormap's lookup table (rows ``0..n-1``) plus fixed colours at ``n + ROW_BG`` etc."""

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
        """The row of a fixed colour or flag: ``n + offset`` for an ``offset`` ``ROW_*`` or ``FLAG_*``."""
        return self.n + offset

    def stripes_for(self, index: int) -> int:
        """The black or white row, whichever stands out more against colour ``index``."""
        light = int(self.lut[index].astype(np.int32).sum()) > 3 * 127
        return self.row(ROW_BLACK if light else ROW_WHITE)


def _cmap_lut(cmap: str | Colormap) -> np.ndarray:
    # Truncated to bytes as matplotlib's cmap(..., bytes=True), so the colours are matplotlib's own.
    return (colour_table(cmap) * 255).astype(np.uint8)


def background_for(luts: Sequence[np.ndarray]) -> tuple[int, int, int]:
    """White, black, grey or azure: whichever stays farthest from every colour of the colormaps.

    ``luts`` are the colormaps' colours as bytes, e.g. ``palette(name).lut[:palette(name).n]``.
    """
    colours = np.concatenate(luts).astype(np.float64)
    candidates = (WHITE, BLACK, (128, 128, 128), (0, 160, 255))
    gaps = [np.min(np.sum((colours - np.array(c)) ** 2, axis=1)) for c in candidates]
    return candidates[int(np.argmax(gaps))]


def _build_palette(cmap: str | Colormap, background: tuple[int, int, int] | None) -> Palette:
    lut = _cmap_lut(cmap)
    separator = background_for([lut])
    bg = background if background is not None else separator
    ink = BLACK if sum(bg) > 3 * 127 else WHITE
    extra = np.array([bg, ink, BLACK, WHITE, MAGENTA, GREY, bg, separator], dtype=np.uint8)
    return Palette(np.concatenate([lut, extra]), len(lut))


@functools.lru_cache(maxsize=64)
def _named_palette(name: str, background: tuple[int, int, int] | None) -> Palette:
    return _build_palette(name, background)


def palette(cmap: str | Colormap, background: tuple[int, int, int] | None = None) -> Palette:
    """The palette of a checked colormap, on ``background`` (by default `background_for` it).

    Registered names are cached, Colormap objects are not (they are mutable and unhashable).
    The ink (text colour) is black on a light background and white on a dark one.
    """
    if isinstance(cmap, str):
        return _named_palette(cmap, background)
    return _build_palette(cmap, background)
