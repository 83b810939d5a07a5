"""The seed's ``Visualizer``: one titled page with a colour bar per layer, as PDF or PNG.

The pages show the same images as `nsp.render` (same scales, grid layout and flags for
non-finite, empty and constant layers), drawn into matplotlib figures that are never
registered with pyplot, so no call leaves figures behind.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from nsp.viz.colors import ROW_VOID, check_colormap, palette
from nsp.viz.heatmaps import cell_size, grid_columns, layer_indices, natural_shape
from nsp.viz.scales import Norm, Stats, check_scale, flag_text, layer_stats, pattern_norms, signed_log10_array
from nsp.viz.text import format_number
from nsp.viz.values import unpack_pattern

__all__ = ["Visualizer"]

_PAGE_PIXELS = 512  # long side of a PDF page's image, so each value is a crisp block
_PNG_PIXELS = 1300  # about twice the axes of a 100-dpi PNG page, for a clean downsampling
_MAX_UPSCALE = 64
_TITLE_CHARS = 90


def _description(description: Any) -> str:
    """``'Input[1, 1, 4, 4]'`` as is, a module as ``Conv2d(1, 2, kernel_size=...)``."""
    if isinstance(description, str):
        return description
    extra = description.extra_repr() if hasattr(description, "extra_repr") else ""
    text = f"{type(description).__name__}({extra})"
    return text if len(text) <= _TITLE_CHARS else text[: _TITLE_CHARS - 3] + "..."


def _page_upscale(v: np.ndarray, pixels: int = _PAGE_PIXELS) -> int:
    count, h, w = natural_shape(v)
    cols = grid_columns(count, h, w)
    rows = -(-count // cols)
    longest = max(rows * h, cols * w, 1)
    return max(1, min(_MAX_UPSCALE, math.ceil(pixels / longest)))


def _symlog_ticks(norm: Norm) -> np.ndarray:
    """Colour-bar tick positions (display units) on a signed-log scale: decades where the
    scale spans several, round data values where it does not, at least 1/8 bar apart."""
    lo, hi = norm.data_value(norm.lo), norm.data_value(norm.hi)
    if max(abs(norm.lo), abs(norm.hi)) < 2:
        ticks = list(MaxNLocator(7).tick_values(lo, hi))
    else:
        # Rounding in data_value may put the largest value a hair below its decade.
        top = math.floor(math.log10(max(abs(lo), abs(hi))) + 1e-9)
        decades = list(range(top, math.ceil(math.log10(norm.threshold)) - 1, -1))
        decades = decades[:: max(1, math.ceil(len(decades) / 3))]
        ticks = [0.0] + [sign * 10.0**k for k in decades for sign in (1.0, -1.0)]
    slack = 1e-9 * max(abs(lo), abs(hi))
    positions = signed_log10_array(np.array([x for x in ticks if lo - slack <= x <= hi + slack]), norm.threshold)
    kept: list[float] = []
    for y in sorted(positions, key=abs):  # from 0 outwards, so 0 and small decades win
        if all(abs(y - k) >= (norm.hi - norm.lo) / 8 for k in kept):
            kept.append(float(y))
    return np.sort(kept)


def _layout_note(shape: tuple[int, ...]) -> str:
    if len(shape) <= 1:
        count = shape[0] if shape else 1
        return f"{count} value{'s' if count != 1 else ''} as a strip"
    if len(shape) == 2:
        return f"one {shape[0]}x{shape[1]} map"
    count = int(np.prod(shape[:-2]))
    return f"{count} channel{'s' if count != 1 else ''} of {shape[-2]}x{shape[-1]}, row-major"


def _page(
    index: int,
    name: str,
    description: Any,
    v: np.ndarray,
    norm: Norm,
    stats: Stats,
    cmap: Any,
    scale: str,
    for_png: bool,
) -> Figure:
    pal = palette(cmap)
    upscale = _page_upscale(v, _PNG_PIXELS if for_png else _PAGE_PIXELS)
    indices = layer_indices(v, norm, stats, pal, cell_size(v, upscale), separator=1)
    # Unused grid cells become transparent, so they read as page, not as data.
    alpha = np.where(indices == pal.row(ROW_VOID), 0, 255).astype(np.uint8)
    image = np.dstack([pal.rgb(indices), alpha])
    height, width = image.shape[:2]
    fig_width = 7.0
    # Room for the two-line title and the colour bar, plus the image at the page's width.
    fig_height = min(11.0, max(3.5, 0.9 * fig_width * height / width + 1.4))
    fig = Figure(figsize=(fig_width, fig_height), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # A PDF embeds the image as is (viewers keep the blocks sharp at any zoom); a PNG is
    # resampled to the axes' pixels, where area-averaging keeps 1-pixel separators visible.
    ax.imshow(image, interpolation="antialiased" if for_png else "none")
    ax.set_axis_off()
    lines = [f"Layer {index}: {name} \N{EM DASH} {_description(description)}"]
    facts = [f"shape {tuple(v.shape)}", _layout_note(v.shape) if v.size else "empty layer", scale]
    flags = flag_text(stats)
    if flags:
        facts.append(flags + " (hatched)")
    if v.size and not stats.has_finite:
        facts.append("no finite values")
    elif v.size and norm.degenerate:
        facts.append(f"every value {format_number(norm.data_value(norm.lo))} (hatched)")
    lines.append(", ".join(facts))
    fig.suptitle("\n".join(lines), fontsize=9)
    lo, hi = norm.lo, norm.hi
    if norm.degenerate:
        # A single value sits at the colormap's centre, as in the image.
        half = max(abs(lo), 1.0)
        lo, hi = lo - half, lo + half
    mappable = ScalarMappable(norm=Normalize(lo, hi), cmap=cmap)
    bar = fig.colorbar(mappable, ax=ax, orientation="horizontal", shrink=0.8, aspect=35, pad=0.02)
    if norm.threshold is not None:
        bar.set_ticks(_symlog_ticks(norm))
        bar.ax.xaxis.set_major_formatter(FuncFormatter(lambda y, _pos: format_number(norm.data_value(y))))
        bar.set_label(f"signed log10 scale: sign(x)·log10(1 + |x|/t), t = {format_number(norm.threshold)}", fontsize=8)
    bar.ax.tick_params(labelsize=8)
    return fig


def _pages(
    activations: Any, scale: str, cmap_style: Any, where: str, for_png: bool = False
) -> Iterator[tuple[int, str, Figure]]:
    """Check the arguments now, then yield ``(index, name, page)`` one layer at a time, so
    that only one figure is alive at once."""
    check_scale(scale, where)
    check_colormap(cmap_style, where, "cmap_style")
    if not all(hasattr(activations, attr) for attr in ("layernames", "layeractivations")):
        raise TypeError(
            f"{where}: expected activations to be an nsp.Activations (with .layernames and .layeractivations), "
            f"got {type(activations).__name__}"
        )
    arrays, names, _ = unpack_pattern(activations, None, "activations", where)
    descriptions = list(getattr(activations, "layerdescriptions", None) or [""] * len(arrays))
    if len(descriptions) != len(arrays):
        raise ValueError(f"{where}: activations has {len(descriptions)} layerdescriptions for {len(arrays)} layers")
    stats = [layer_stats(v, scale.endswith("symlog")) for v in arrays]
    norms = pattern_norms(stats, scale, None)
    return (
        (i, name, _page(i, name, d, v, norm, st, cmap_style, scale, for_png))
        for i, (name, d, v, norm, st) in enumerate(zip(names, descriptions, arrays, norms, stats))
    )


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "layer"


class Visualizer:
    """Plot activation patterns and spectra, one page per layer (the seed's API)."""

    @staticmethod
    def visualize_pattern(
        activations: Any,
        pdf_filepath: str | os.PathLike,
        scale: str = "layerscale",
        cmap_style: str = "viridis",
    ) -> None:
        """Write an activation pattern (or spectrum) to a PDF, one page per layer.

        Each page shows the layer's channels as a grid of tiles (as `nsp.render`
        lays them out), a title with the layer's index, name, type and shape, and a
        colour bar. 1-D layers are strips and 2-D layers a single map.

        Parameters
        ----------
        activations : nsp.Activations
            Anything with ``.layernames``, ``.layeractivations`` (arrays or tensors
            without the batch dimension) and optionally ``.layerdescriptions``.
        pdf_filepath : str or os.PathLike
            Where to write the PDF; missing parent folders are created.
        scale : str, default 'layerscale'
            One of ``nsp.render.SCALES``: the seed's ``'layerscale'`` (one range per
            layer), ``'layernorm'`` (per layer, centred on 0), ``'globalscale'`` and
            ``'globalnorm'`` (one range for the whole pattern), and the signed-log
            ``'layersymlog'`` and ``'globalsymlog'`` for spectra.
        cmap_style : str, default 'viridis'
            A matplotlib colormap name. Diverging maps suit the centred scales.

        Returns
        -------
        None

        Raises
        ------
        ValueError
            For an unknown ``scale`` or ``cmap_style`` (the message lists the allowed
            values).
        TypeError
            If ``activations`` lacks the attributes of an Activations.

        Examples
        --------
        >>> import torch, nsp
        >>> acts = nsp.Activations(torch.nn.Sequential(torch.nn.Linear(2, 3)), torch.ones(1, 2))
        >>> nsp.Visualizer.visualize_pattern(acts, 'activations.pdf', scale='layernorm',
        ...                                  cmap_style='RdBu_r')  # doctest: +SKIP
        """
        where = "nsp.Visualizer.visualize_pattern"
        pages = _pages(activations, scale, cmap_style, where)
        path = Path(pdf_filepath)
        path.parent.mkdir(parents=True, exist_ok=True)
        with PdfPages(path) as pdf:
            for _index, _name, fig in pages:
                pdf.savefig(fig)

    @staticmethod
    def visualize_pattern_png(
        activations: Any,
        png_dirpath: str | os.PathLike,
        scale: str = "layerscale",
        cmap_style: str = "viridis",
    ) -> list[Path]:
        """Write the pages of `visualize_pattern` as one PNG per layer.

        Parameters
        ----------
        activations, scale, cmap_style
            As in `visualize_pattern`.
        png_dirpath : str or os.PathLike
            Folder for the images (created if missing). Files are named
            ``<index>_<layer name>.png``, e.g. ``01_conv1.png``.

        Returns
        -------
        list of pathlib.Path
            The files written, in layer order.

        Raises
        ------
        ValueError, TypeError
            As in `visualize_pattern`.
        """
        where = "nsp.Visualizer.visualize_pattern_png"
        pages = _pages(activations, scale, cmap_style, where, for_png=True)
        folder = Path(png_dirpath)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for index, name, fig in pages:
            path = folder / f"{index:02d}_{_safe_filename(name)}.png"
            fig.savefig(path, dpi=100)
            written.append(path)
        return written
