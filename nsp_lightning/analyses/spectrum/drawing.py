"""What the spectrum's TensorBoard cards and its report share: colour ranges, the change since the baseline, number formats.

No Lightning: the report (:mod:`nsp_lightning.analyses.spectrum.report`) draws without it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

import nsp.transforms.energy
from nsp_lightning.analyses.spectrum.records import SpectrumRecord

__all__ = [
    "CHANGE",
    "CHANGE_TEXT",
    "HEATMAPS",
    "TRANSFORM_TEXT",
    "change_figure",
    "change_since_baseline",
    "fixed_range",
    "number_text",
    "shape_text",
]

# Spectra span hundreds of decades: only a signed-log scale shows them.
HEATMAPS = {
    "activations": {"scale": "layerscale", "cmap": "viridis"},
    "spectrum": {"scale": "layersymlog", "cmap": "RdBu_r"},
}
# The change-since-baseline measures (nsp.energy.change_since), in the order they are shown.
CHANGE = nsp.transforms.energy.CHANGE_MEASURES
CHANGE_TEXT = {
    "relative": "relative change ‖ŝ − ŝ₀‖ / ‖ŝ₀‖",
    "log10_energy": "change of log10 energy (decades)",
    "decades": "median decades a coefficient moved",
    "sign_flips": "fraction of coefficients that flipped sign",
}
TRANSFORM_TEXT = {
    "standard": "standard: the causal (Möbius) Fourier transform",
    "laplacian": "laplacian: the graph-Laplacian Fourier transform",
}


def fixed_range(base: np.ndarray, kind: str) -> dict[str, Any]:
    """The colour range (and signed-log threshold) a layer keeps across the run, from its baseline values."""
    finite = base[np.isfinite(base)]
    if not finite.size:
        return {}
    if kind == "activations":
        return {"vrange": (float(finite.min()), float(finite.max()))}
    magnitudes = np.abs(finite)
    nonzero = magnitudes[magnitudes > 0]
    if not nonzero.size:
        return {}
    peak = float(nonzero.max())
    return {"vrange": (-peak, peak), "threshold": float(nonzero.min())}

def change_since_baseline(baseline: SpectrumRecord, record: SpectrumRecord) -> dict[str, np.ndarray]:
    """Each change measure, shape ``(P, L)``, of ``record`` against ``baseline``."""
    per_probe = [nsp.transforms.energy.change_since(list(b), list(s)) for b, s in zip(baseline.spectra, record.spectra)]
    return {m: np.stack([c[m] for c in per_probe]) for m in CHANGE}

def change_figure(history: Sequence[tuple[int, dict[str, np.ndarray]]], names: Sequence[str], p: int,
                   indices: Sequence[int]) -> Figure:
    """Relative change and decades moved since the baseline, one line per layer; one legend gives the last values.

    Drawn without constrained layout and with plain-text tick labels: measuring mathtext
    labels made each figure take seconds. The offline report's chart; TensorBoard's, drawn
    at every record, is `~nsp_lightning.analyses.spectrum.chart.change_chart` (the same
    layout in Pillow, a twentieth of the CPU).
    """
    epochs = [e for e, _ in history]
    figure = Figure(figsize=(8.0, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.07, right=0.66, bottom=0.15, top=0.84, wspace=0.32)
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    last = history[-1][1]
    for k, measure in enumerate(("relative", "decades")):
        ax = figure.add_subplot(1, 2, k + 1)
        for l, name in enumerate(names):
            values = np.array([change[measure][p, l] for _, change in history], dtype=np.float64)
            style = ("-", "--", ":", "-.")[l // 10 % 4]
            label = f"{indices[l]:02d} {name}: {number_text(last['relative'][p, l])} | {number_text(last['decades'][p, l])}"
            ax.plot(epochs, np.where(np.isfinite(values), values, np.nan), marker="o", markersize=3,
                    linestyle=style, label=label)
        ax.set_xlabel("epoch", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        # y given: matplotlib then skips measuring the tick labels to place the title (nothing
        # is above the axes here), a fifth of the drawing time.
        ax.set_title(("relative change", "median decades moved")[k], fontsize=10, y=1.0)
        ax.grid(alpha=0.3)
        if measure == "relative" and np.nanmax([np.nanmax(c[measure][p]) for _, c in history] + [0]) > 0:
            ax.set_yscale("symlog", linthresh=1e-3)
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(plain)
        ax.tick_params(labelsize=8)
    figure.axes[1].legend(fontsize=8.5, loc="upper left", bbox_to_anchor=(1.04, 1.02), frameon=False,
                          title=f"epoch {epochs[-1]}: relative | decades", title_fontsize=8.5)
    figure.suptitle(f"probe {p}: change of the spectrum since the baseline (epoch {epochs[0]})", fontsize=11)
    return figure

def number_text(value: float) -> str:
    """A number for people: 3 significant digits, no exponent between 0.001 and 10,000."""
    if not math.isfinite(value):
        return {math.inf: "∞", -math.inf: "−∞"}.get(value, "n/a")
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}×10^{int(exponent)}"


def shape_text(shape: Sequence[int]) -> str:
    """A shape for people: ``3×8×8``, or ``scalar``."""
    return "×".join(str(s) for s in shape) or "scalar"
