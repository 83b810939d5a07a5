"""Pictures of attributions: overlays on the input, side-by-side signs, grids of methods x probes.

Two kinds of output:

- :func:`overlay_rgb` draws one overlay straight into a ``uint8`` RGB array through a
  colormap lookup (no matplotlib figure, well under a millisecond for a small image);
  :func:`overlay_card` adds the input, a title and colour bars with their values, for
  TensorBoard images logged at every record, which are shown without any other context;
- :func:`overlay_figure` and :func:`grid_figure` are matplotlib figures with real
  colourbars, saved as PNG or PDF with :func:`save_figure`.

Modes
-----
An attribution ``(C, H, W)`` becomes one map per picture by summing over channels:

============  ==================================================================
``signed``    ``sum_c a``, on a diverging colormap centred at 0 (red positive,
              blue negative: 'bwr')
``absolute``  ``sum_c |a|``, on a sequential colormap from 0
``posneg``    positive and negative saliency side by side: ``sum_c max(a, 0)``
              and ``sum_c max(-a, 0)``, each on a sequential colormap from 0
============  ==================================================================

The scale runs to ``vmax`` (by default the largest magnitude of the map, per picture);
pass a fixed ``vmax`` to compare pictures across probes or records. The overlay's
opacity grows with the magnitude, so the input shows through where the attribution is 0.
A map smaller than the input (Grad-CAM without upsampling) is enlarged to it (nearest).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from nsp.viz.colors import WHITE, colour_table, palette
from nsp.viz.text import colour_bar, hstack, label_palette, titled, vstack

__all__ = ["MODES", "attribution_maps", "overlay_rgb", "overlay_card", "overlay_figure", "grid_figure", "save_figure"]

MODES: tuple[str, ...] = ("signed", "absolute", "posneg")
_CMAPS = {"signed": "bwr", "absolute": "inferno", "positive": "Reds", "negative": "Blues"}
_MIN_SIDE = 96  # pixels: small inputs (8x8 digits) are enlarged to at least this
_CARD_SIDE = 160  # pixels: the least side of a card's pictures, which TensorBoard shrinks to its card
# What the colours mean, written under a card's pictures.
_MEANING = {"signed": "red: raises the explained score; blue: lowers it",
            "absolute": "|attribution|: moves the score, either way",
            "posneg": "left: what raises the explained score; right: what lowers it"}


def _array(values: Any, argname: str, where: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{where}: expected {argname} to be a tensor or array of real numbers") from err
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{where}: expected {argname} of shape (C, H, W) or (H, W), got {array.shape}")
    return array


def _check_mode(mode: str, where: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{where}: unknown mode={mode!r}; expected one of {', '.join(map(repr, MODES))}")
    return mode


def _check_vmax(vmax: float | None, where: str) -> float | None:
    if vmax is None:
        return None
    if isinstance(vmax, bool) or not isinstance(vmax, (int, float, np.floating)) or not (math.isfinite(vmax) and vmax > 0):
        raise ValueError(f"{where}: expected vmax to be a finite number > 0 or None, got {vmax!r}")
    return float(vmax)


def _resize(map2d: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if map2d.shape == shape:
        return map2d
    t = torch.from_numpy(np.ascontiguousarray(map2d))[None, None]
    return F.interpolate(t, size=shape, mode="nearest")[0, 0].numpy()


def attribution_maps(attribution: Any, mode: str = "signed", shape: tuple[int, int] | None = None
                     ) -> list[tuple[str, np.ndarray]]:
    """The map(s) a mode draws of one attribution: ``[(kind, (H, W) float64 map), ...]``.

    ``kind`` is 'signed', 'absolute', 'positive' or 'negative' (two maps for 'posneg').
    ``shape`` resizes the maps (nearest neighbour), e.g. to the input's.
    """
    where = "nsp.attribution.plot.attribution_maps"
    a = _array(attribution, "attribution", where)
    _check_mode(mode, where)
    if mode == "signed":
        maps = [("signed", a.sum(0))]
    elif mode == "absolute":
        maps = [("absolute", np.abs(a).sum(0))]
    else:
        maps = [("positive", np.clip(a, 0, None).sum(0)), ("negative", np.clip(-a, 0, None).sum(0))]
    return [(kind, _resize(m, shape) if shape is not None else m) for kind, m in maps]


def _grey(image: Any, where: str) -> np.ndarray:
    """The input's channel mean, stretched to [0, 1] (0 where not finite)."""
    img = _array(image, "image", where)
    grey = img.mean(0)
    finite = grey[np.isfinite(grey)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    grey = (grey - lo) / (hi - lo) if hi > lo else np.zeros_like(grey)
    return np.nan_to_num(grey)


def _base_rgb(image: Any, where: str) -> np.ndarray:
    """The input as a dimmed greyscale RGB picture in [0, 1] (colour would fight the overlay)."""
    return np.repeat((0.25 + 0.5 * _grey(image, where))[..., None], 3, axis=2)


def _scale_of(kind: str, m: np.ndarray, vmax: float | None) -> float:
    if vmax is not None:
        return vmax
    finite = np.abs(m[np.isfinite(m)])
    top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0


def _blend(base: np.ndarray, kind: str, m: np.ndarray, vmax: float, alpha: float) -> np.ndarray:
    lut = colour_table(_CMAPS[kind], 256)
    m = np.nan_to_num(m)
    if kind == "signed":
        u = np.clip(m / vmax, -1, 1)
        index = np.rint((u + 1) * 127.5).astype(np.int64)
        strength = np.abs(u)
    else:
        u = np.clip(m / vmax, 0, 1)
        index = np.rint(u * 255).astype(np.int64)
        strength = u
    weight = (alpha * strength)[..., None]
    return base * (1 - weight) + lut[index] * weight


def _colourbar(kind: str, height: int, width: int = 10) -> np.ndarray:
    ramp = np.linspace(1, 0, height) if kind != "signed" else np.linspace(1, -1, height)
    index = np.rint((ramp + 1) * 127.5 if kind == "signed" else ramp * 255).astype(np.int64)
    return np.repeat(colour_table(_CMAPS[kind], 256)[index][:, None, :], width, axis=1)


def overlay_rgb(image: Any, attribution: Any, *, mode: str = "signed", vmax: float | None = None,
                alpha: float = 0.8, upscale: int | None = None, colourbar: bool = True) -> np.ndarray:
    """One attribution drawn over its input, as an RGB array.

    Parameters
    ----------
    image : torch.Tensor or numpy.ndarray
        The input, ``(C, H, W)`` or ``(H, W)``; drawn as dimmed grey.
    attribution : torch.Tensor or numpy.ndarray
        ``(C', H', W')`` or ``(H', W')``; channels are summed as ``mode`` says, and a
        smaller map is enlarged to ``(H, W)``.
    mode : str, default 'signed'
        One of :data:`MODES`; 'posneg' draws the positive and negative maps side by side.
    vmax : float, optional
        The magnitude at full colour; by default the map's largest magnitude. Fix it to
        compare pictures.
    alpha : float, default 0.8
        The overlay's opacity at full colour.
    upscale : int, optional
        Pixels per input element; by default enough for at least 96 pixels a side.
    colourbar : bool, default True
        A colour ramp to the right of each map (top: ``+vmax``; bottom: ``-vmax`` for
        'signed', 0 otherwise).

    Returns
    -------
    numpy.ndarray
        ``uint8`` ``(height, width, 3)``, for ``add_image(..., dataformats='HWC')``.

    Examples
    --------
    >>> overlay_rgb(np.zeros((1, 8, 8)), np.eye(8), mode="posneg").shape
    (96, 226, 3)
    """
    where = "nsp.attribution.plot.overlay_rgb"
    _check_mode(mode, where)
    vmax = _check_vmax(vmax, where)
    if not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
        raise ValueError(f"{where}: expected alpha in [0, 1], got {alpha!r}")
    base = _base_rgb(image, where)
    h, w = base.shape[:2]
    if upscale is None:
        upscale = max(1, math.ceil(_MIN_SIDE / min(h, w)))
    elif isinstance(upscale, bool) or not isinstance(upscale, int) or upscale < 1:
        raise ValueError(f"{where}: expected upscale to be an int >= 1, got {upscale!r}")
    panels = []
    for kind, m in attribution_maps(attribution, mode, (h, w)):
        picture = _blend(base, kind, m, _scale_of(kind, m, vmax), alpha)
        picture = np.repeat(np.repeat(picture, upscale, axis=0), upscale, axis=1)
        if colourbar:
            gap = np.ones((picture.shape[0], 3, 3))
            picture = np.concatenate([picture, gap, _colourbar(kind, picture.shape[0])], axis=1)
        panels.append(picture)
    if len(panels) > 1:
        gap = np.ones((panels[0].shape[0], 8, 3))
        panels = [panels[0], gap, panels[1]]
    return np.rint(np.concatenate(panels, axis=1) * 255).astype(np.uint8)


def overlay_card(image: Any, attribution: Any, *, mode: str = "signed", vmax: float | None = None,
                 alpha: float = 0.8, title: Sequence[str] = (), side: int = _CARD_SIDE) -> np.ndarray:
    """The input and its attribution overlay(s), each with a caption, a colour bar with values, and a title.

    From left to right: the input (grey, stretched to its range), then each map of the
    mode (:func:`overlay_rgb` without its bare ramp) with its colour bar under it, the
    bar's ends (and 0) written in the attribution's units. ``title`` is written above,
    one line each (e.g. the method, the probe, its label and prediction, the epoch), and
    what the colours mean below.

    Parameters
    ----------
    image, attribution, mode, vmax, alpha
        As in :func:`overlay_rgb`.
    title : sequence of str
        Lines of text above the pictures.
    side : int, default 160
        The least side of each picture in pixels: small inputs are enlarged (nearest
        neighbour) by the smallest integer factor that reaches it.

    Returns
    -------
    numpy.ndarray
        ``uint8`` ``(height, width, 3)``, for ``add_image(..., dataformats='HWC')``.

    Examples
    --------
    >>> card = overlay_card(np.zeros((1, 8, 8)), np.eye(8), title=["saliency · probe 0"])
    >>> card.dtype, card.shape[1] >= 2 * 160
    (dtype('uint8'), True)
    """
    where = "nsp.attribution.plot.overlay_card"
    _check_mode(mode, where)
    vmax = _check_vmax(vmax, where)
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise ValueError(f"{where}: expected side to be an int >= 1, got {side!r}")
    grey = _grey(image, where)
    upscale = max(1, math.ceil(side / min(grey.shape)))
    text = label_palette()
    panels = [titled(_enlarge(np.repeat(grey[..., None], 3, axis=2), upscale), ["input"], text)]
    base = _base_rgb(image, where)
    for kind, m in attribution_maps(attribution, mode, grey.shape):
        scale = _scale_of(kind, m, vmax)
        picture = _enlarge(_blend(base, kind, m, scale, alpha), upscale)
        bar = colour_bar(palette(_CMAPS[kind], WHITE), -scale if kind == "signed" else 0.0, scale,
                         picture.shape[1])
        panels.append(titled(vstack([picture, bar], text), [kind], text))
    return titled(hstack(panels, text, gap=8, centre=False), list(title), text, below=[_MEANING[mode]])


def _enlarge(picture: np.ndarray, upscale: int) -> np.ndarray:
    picture = picture if picture.dtype == np.uint8 else np.rint(picture * 255).astype(np.uint8)
    return np.repeat(np.repeat(picture, upscale, axis=0), upscale, axis=1)


def overlay_figure(image: Any, attribution: Any, *, mode: str = "signed", vmax: float | None = None,
                   alpha: float = 0.8, title: str | None = None, colourbar: bool = True) -> Figure:
    """:func:`overlay_rgb` as a matplotlib figure, with a labelled colourbar per map.

    Returns
    -------
    matplotlib.figure.Figure
        Not attached to pyplot; save it with :func:`save_figure`.
    """
    return grid_figure([image], {title or "": [attribution]}, mode=mode, vmax=vmax, alpha=alpha,
                       colourbar=colourbar, show_input=False)


def grid_figure(images: Sequence[Any] | torch.Tensor, attributions: Mapping[str, Sequence[Any] | torch.Tensor], *,
                mode: str = "signed", vmax: float | str | None = "column", alpha: float = 0.8,
                colourbar: bool = True, show_input: bool = True, probe_names: Sequence[str] | None = None,
                panel_size: float = 1.8, title: str | None = None) -> Figure:
    """A grid of overlays: one row per probe, one column per method (two with 'posneg').

    Parameters
    ----------
    images : sequence or tensor ``(P, C, H, W)``
        The probe inputs.
    attributions : mapping of str to sequence or tensor
        Method name (the column title) to its ``P`` attributions.
    mode : str, default 'signed'
        One of :data:`MODES`.
    vmax : float, 'column' or None, default 'column'
        A fixed magnitude for every panel; 'column' one scale per column (comparable
        across probes); None one per panel.
    colourbar : bool, default True
        A colourbar per panel (with its numbers).
    show_input : bool, default True
        A first column with the inputs.
    probe_names : sequence of str, optional
        Row labels; by default ``probe 0``, ``probe 1``, ... Name what a reader needs:
        e.g. ``probe 0: label 3, predicted 3``.
    title : str, optional
        The figure's title (e.g. the model and its epoch).

    Returns
    -------
    matplotlib.figure.Figure
    """
    where = "nsp.attribution.plot.grid_figure"
    _check_mode(mode, where)
    if not (vmax is None or vmax == "column"):
        vmax = _check_vmax(vmax, where)  # type: ignore[arg-type]
    images = list(images)
    names = list(probe_names) if probe_names is not None else [f"probe {i}" for i in range(len(images))]
    if len(names) != len(images):
        raise ValueError(f"{where}: {len(names)} probe_names for {len(images)} images")
    columns: list[tuple[str, str, list[np.ndarray]]] = []  # (heading, kind, per-probe maps)
    bases = [_base_rgb(im, where) for im in images]
    for method, values in attributions.items():
        values = list(values)
        if len(values) != len(images):
            raise ValueError(f"{where}: {len(values)} attributions of {method!r} for {len(images)} images")
        per_probe = [attribution_maps(v, mode, b.shape[:2]) for v, b in zip(values, bases)]
        for k, (kind, _) in enumerate(per_probe[0]):
            heading = method if len(per_probe[0]) == 1 else f"{method} ({kind})"
            columns.append((heading, kind, [maps[k][1] for maps in per_probe]))
    ncols = len(columns) + int(show_input)
    fig = Figure(figsize=(panel_size * ncols * (1.25 if colourbar else 1), panel_size * len(images) + 0.4),
                 layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(images), ncols, squeeze=False))
    for row, (base, name) in enumerate(zip(bases, names)):
        col = 0
        if show_input:
            ax = axes[row, 0]
            ax.imshow(base[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_ylabel(name)
            if row == 0:
                ax.set_title("input")
            col = 1
        for heading, kind, maps in columns:
            ax = axes[row, col]
            if vmax == "column":
                scale = max(_scale_of(kind, m, None) for m in maps)
            else:
                scale = _scale_of(kind, maps[row], vmax)  # type: ignore[arg-type]
            ax.imshow(_blend(base, kind, maps[row], scale, alpha), interpolation="nearest")
            if row == 0 and heading:
                ax.set_title(heading, fontsize=9)
            if colourbar:
                lo = -scale if kind == "signed" else 0.0
                mappable = ScalarMappable(Normalize(lo, scale), _CMAPS[kind])
                fig.colorbar(mappable, ax=ax, fraction=0.08, pad=0.02)
            if not show_input and col == 0:
                ax.set_ylabel(name)
            col += 1
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig


def save_figure(figure: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Save a figure as PNG or PDF, by the path's suffix.

    Raises
    ------
    ValueError
        For any other suffix.
    """
    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf"):
        raise ValueError(f"nsp.attribution.plot.save_figure: expected a .png or .pdf path, got {str(path)!r}")
    figure.savefig(path, dpi=dpi, format=path.suffix.lower()[1:])
    return path
