"""The one colour table of nsp: colormaps by name, and their colours as lookup tables.

Every picture in nsp (heatmaps, cards, attribution overlays, response maps) takes its
colours from here, so a colormap name means the same colours, and an unknown name the
same error, everywhere.

Examples
--------
>>> colour_table("gray", 3).tolist()
[[0.0, 0.0, 0.0], [0.5019607843137255, 0.5019607843137255, 0.5019607843137255], [1.0, 1.0, 1.0]]
"""

from __future__ import annotations

import functools

import matplotlib
import numpy as np
from matplotlib.colors import Colormap

__all__ = ["colormap", "check_colormap", "colour_table"]


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
