"""Charts of spectral energy: matplotlib figures without pyplot state, and their pixels.

The energy plots are real charts (axes, ticks, legends), so unlike the heatmaps they are
drawn by matplotlib; they return ``(Figure, Axes)`` with an Agg canvas, never registered
with pyplot, and `figure_to_rgb` turns any figure into an RGB array.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nsp.viz.colors import GREY, colormap
from nsp.viz.values import as_float64

__all__ = ["energy_bars", "energy_over_epochs", "figure_to_rgb"]

_GREY_FLOAT = tuple(c / 255 for c in GREY)
_LINE_STYLES = ("-", "--", ":", "-.")


def _new_axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _energy_array(values: Any, ndim: int, argname: str, where: str) -> np.ndarray:
    arr = as_float64(values, argname, where)
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
    cmap = colormap("viridis").with_extremes(bad=_GREY_FLOAT)
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
