r"""
Spectrum Analysis
=================

The spectra of the probes' activation patterns (nsp's exact causal Fourier or Laplacian
transform on the network's graph): the first probe analysis, which
:class:`~nsp_lightning.SpectrumCallback` runs.

"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

import nsp
import nsp.energy
import nsp.render
from nsp_lightning.analysis import AnalysisRecord, LogSink, ProbeAnalysis, ProbeContext, ReportContext
from nsp_lightning.records import SpectrumRecord, _from_rows, make_record, spectrum_analysis_record
from nsp_lightning.report import HEATMAP_EPOCHS
from nsp_lightning.sections import Cell, Chart, Facts, Film, Frame, Image, Row, Section, Table, Text

__all__ = ["SpectrumAnalysis"]

_TRANSFORMS = ("standard", "laplacian")
# Spectra span hundreds of decades: only a signed-log scale shows them.
_HEATMAPS = {
    "activations": {"scale": "layerscale", "cmap": "viridis"},
    "spectrum": {"scale": "layersymlog", "cmap": "RdBu_r"},
}
_BAND_ASPECT, _BAND_MIN_ROWS, _BAND_MAX_ROWS = 8, 8, 32
# What read_header promises; "modules" (descriptions) and "edges" (an int, or one per layer) are optional.
_HEADER_KEYS = ("layernames", "shapes", "probes", "probe_shape", "transform", "INCL", "model")
_TRANSFORM_TEXT = {
    "standard": "standard: the causal (Möbius) Fourier transform",
    "laplacian": "laplacian: the graph-Laplacian Fourier transform",
}
# Rounding sensitivity from which a layer's spectrum has less than one reliable digit.
_SENSITIVE = 0.1
# Above this many epochs the energy heatmap labels every k-th column only.
_MAX_TICKS = 20


class SpectrumAnalysis(ProbeAnalysis):
    r"""Record the exact spectrum of each probe's activation pattern.

    At setup it builds the network's :class:`nsp.NNGraph` and its transformer once; at
    every record it computes the spectrum of each probe's activation pattern on that graph
    (the probes' patterns come from the record's shared forward pass,
    ``context.activations()``).

    Args:
        layers: names of the layers to log and record (``Activations.layernames``, e.g.
            ``["input", "conv1"]``); all layers by default. The graph always spans every
            layer, since a layer's spectrum depends on all of its ancestors.
        transform: ``"standard"`` (the causal Fourier transform) or ``"laplacian"``.
        INCL: ``True`` builds the structural graph, which is the same for every input and
            every epoch. ``False`` builds each probe's data-dependent graph (zero weights,
            max-pool argmax and dead ReLU units drop edges); it is rebuilt, with its
            transformer, only when the graph's fingerprint (:func:`nsp.fingerprint`)
            changes, and the rebuild is logged.

    Records (``<dirpath>/spectra``) are :class:`~nsp_lightning.SpectrumRecord`\ s; the tags,
    the record format and the report are those of :class:`~nsp_lightning.SpectrumCallback`:

        - scalars ``nsp/log10_energy/probe_<p>/<layer>``, ``nsp/record_seconds`` and
          (``INCL=False``) ``nsp/graph_rebuilt``, and a custom-scalars chart per probe;
        - images ``nsp/activations/<layer>/probe_<p>`` and ``nsp/spectrum/<layer>/probe_<p>``.

    Raises:
        TypeError: if ``layers`` or ``INCL`` has the wrong type.
        ValueError: if ``layers`` or ``transform`` is invalid; at fit start, if a layer
            name is unknown.

    Example::

        >>> import torch
        >>> from lightning.pytorch import Trainer
        >>> from nsp_lightning import ProbeCallback
        >>> from nsp_lightning.analyses import SpectrumAnalysis
        >>> callback = ProbeCallback(torch.rand(2, 1, 8, 8), [SpectrumAnalysis(layers=["input", "conv"])])
    """

    name = "spectra"
    tag_prefix = "nsp"
    title = "spectrum"
    # The energies are arrays of the record already; the record format predates stored scalars.
    store_scalars = False

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        transform: str = "standard",
        INCL: bool = True,
        *,
        _caller: str = "SpectrumAnalysis",
    ) -> None:
        self._who = _caller
        self.layers = _check_layers(layers, _caller)
        if transform not in _TRANSFORMS:
            raise ValueError(f"{_caller}(transform={transform!r}): expected one of {_TRANSFORMS}")
        self.transform = transform
        if not isinstance(INCL, bool):
            raise TypeError(f"{_caller}(INCL={INCL!r}): expected a bool")
        self.INCL = INCL
        self.layernames: list[str] = []
        self.shapes: list[list[int]] = []
        self._layers: list[int] = []
        self._graphs: dict[str, Any] = {}
        self._header: dict[str, Any] = {}

    def check(self, model: nn.Module, probes: torch.Tensor) -> None:
        """Resolve the layer names; raise ``ValueError`` naming an unknown one."""
        acts = nsp.Activations(model, probes[:1])
        available = list(acts.layernames)
        if self.layers is None:
            self._layers = list(range(len(available)))
        else:
            unknown = [name for name in self.layers if name not in available]
            if unknown:
                raise ValueError(
                    f"{self._who}(layers={self.layers!r}): unknown layers {unknown}; the model has {available}"
                )
            self._layers = [available.index(name) for name in self.layers]
        self.layernames = [available[i] for i in self._layers]
        self.shapes = [list(acts.layeractivations[i].shape) for i in self._layers]

    def setup(self, model: nn.Module, probes: torch.Tensor, context: ProbeContext) -> None:
        """Build the graph(s) and transformer(s) for the current model."""
        self._graphs = {}
        self._update(context)
        self._header = {
            "layernames": self.layernames,
            "shapes": self.shapes,
            "probes": probes.shape[0],
            "probe_shape": list(probes.shape),
            "transform": self.transform,
            "INCL": self.INCL,
            "model": type(model).__qualname__,
        }

    def header(self) -> dict[str, Any]:
        return dict(self._header)

    def custom_scalars(self) -> dict[str, dict[str, list[Any]]]:
        charts = {
            f"log10 spectral energy, probe {p}": ["Multiline", [rf"^{self.prefix}/log10_energy/probe_{p}/"]]
            for p in range(self._header["probes"])
        }
        return {f"{self.prefix} spectra": charts}

    def compute(self, model: nn.Module, probes: torch.Tensor, context: ProbeContext) -> AnalysisRecord:
        activations, fingerprints, rebuilt = self._update(context)
        if rebuilt:
            from lightning.pytorch.utilities.rank_zero import rank_zero_info

            rank_zero_info(
                f"{self._who}: the graph fingerprint changed at record {context.epoch}"
                f" (global step {context.global_step}); rebuilt the NNGraph and its transformer"
            )
        # One vectorised transform per graph rather than one per probe.
        members: dict[str, list[int]] = {}
        for p, fp in enumerate(fingerprints):
            members.setdefault(fp, []).append(p)
        spectra: list[Any] = [None] * len(activations)
        for fp, group in members.items():
            batch = self._graphs[fp].transform([activations[p] for p in group], type=self.transform)
            for p, spectrum in zip(group, batch):
                spectra[p] = spectrum
        record = make_record(
            context.epoch, context.global_step, activations, spectra, self._layers, fingerprints, rebuilt, seconds=0.0
        )
        result = spectrum_analysis_record(record)
        if not self.INCL:
            result.scalars["graph_rebuilt"] = float(rebuilt)
        return result

    def log(self, record: AnalysisRecord, sink: LogSink) -> None:
        """Heatmaps of every probe's activations and spectrum, per recorded layer."""
        if not sink.enabled:
            return
        names = record.meta["layernames"]
        for p in range(record.meta["probes"]):
            for l, name in enumerate(names):
                for kind, key in (("activations", "activations"), ("spectrum", "spectrum")):
                    sink.image(f"{kind}/{name}/probe_{p}", _heatmap(record.arrays[f"{key}.{l}"][p], kind))

    @classmethod
    def read_record(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any], path: Path) -> SpectrumRecord:
        return _from_rows(arrays, meta, where=str(path))

    @classmethod
    def report_steps(cls, records: Sequence[Any], header: Mapping[str, Any]) -> int:
        return records[0].num_probes * (2 + len(_sample(len(records), HEATMAP_EPOCHS)))

    @classmethod
    def report(cls, records: Sequence[Any], header: Mapping[str, Any], context: ReportContext) -> list[Section]:
        """Run and model, spectral energy, energy shares, heatmaps, and rebuilds or conditioning where present."""
        missing = [key for key in _HEADER_KEYS if key not in header]
        if missing:
            raise ValueError(
                f"nsp_lightning.report: the manifest in {context.directory} lacks {missing};"
                " it was not written by SpectrumCallback"
            )
        return _sections(context.directory, header, list(records), context.step)

    @classmethod
    def document_title(cls, header: Mapping[str, Any]) -> str:
        return f"Spectral report: {header['model']}"

    def _update(self, context: ProbeContext) -> tuple[list[Any], list[str], bool]:
        activations = context.activations()
        if self.INCL:
            first = activations[0]
            structure = repr(list(zip(first.layernames, [a.shape for a in first.layeractivations], first.layerdescriptions)))
            fingerprints = [hashlib.blake2b(structure.encode(), digest_size=16).hexdigest()] * len(activations)
        else:
            fingerprints = [nsp.fingerprint(acts) for acts in activations]
        had_graphs = bool(self._graphs)
        graphs = {}
        for acts, fp in zip(activations, fingerprints):
            if fp not in graphs:
                graphs[fp] = self._graphs[fp] if fp in self._graphs else self._build(acts)
        rebuilt = had_graphs and not set(graphs) <= set(self._graphs)
        self._graphs = graphs
        return activations, fingerprints, rebuilt

    def _build(self, acts: Any) -> Any:
        graph = nsp.NNGraph(acts, INCL=self.INCL)
        graph.get_transformer(type=self.transform)
        return graph


def _heatmap(values: np.ndarray, kind: str) -> np.ndarray:
    """The TensorBoard image of one layer: one pixel per value, 1-D layers as a band.

    TensorBoard fits an image to its card and keeps the aspect ratio, so a ``1 x N``
    strip would show as a hairline: each of its values becomes a column of
    ``N / 8`` pixels (8 to 32), which makes the band at most 8 times as wide as high.
    """
    image = nsp.render.render_layer(values, **_HEATMAPS[kind])
    if values.ndim <= 1:
        rows = min(max(_BAND_MIN_ROWS, -(-image.shape[1] // _BAND_ASPECT)), _BAND_MAX_ROWS)
        image = np.repeat(image, rows, axis=0)
    return image


def _check_layers(layers: Sequence[str] | None, who: str) -> list[str] | None:
    if layers is None:
        return None
    if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
        raise TypeError(f"{who}(layers={layers!r}): expected a sequence of layer names or None")
    layers = list(layers)
    if not layers:
        raise ValueError(f"{who}(layers=[]): expected at least one layer name, or None for all layers")
    if len(set(layers)) != len(layers):
        raise ValueError(f"{who}(layers={layers!r}): layer names repeat")
    return layers


# ---------------------------------------------------------------------------------------
# Report sections
# ---------------------------------------------------------------------------------------


def _num(text: str) -> Cell:
    return Cell(text, number=True)


def _sample(count: int, most: int) -> list[int]:
    """Up to ``most`` indices out of ``range(count)``: the first, the last and evenly spaced ones."""
    return sorted({int(round(x)) for x in np.linspace(0, count - 1, min(count, most))})


def _epochs_text(epochs: Sequence[int]) -> str:
    """Runs of consecutive epochs as ranges: ``0–3, 5, 10–12``."""
    runs: list[list[int]] = []
    for epoch in epochs:
        if runs and epoch == runs[-1][1] + 1:
            runs[-1][1] = epoch
        else:
            runs.append([epoch, epoch])
    parts = [str(a) if a == b else f"{a}–{b}" for a, b in runs]
    if len(parts) > 12:
        parts = [*parts[:6], "…", *parts[-5:]]
    return ", ".join(parts)


def _count(n: int) -> str:
    return f"{n:,}"


def _share_text(share: float) -> str:
    percent = 100 * share
    if percent == 0:
        return "0"
    return f"{percent:.1f} %" if percent >= 0.1 else f"{percent:.1e} %"


def _log10_text(value: float) -> str:
    return {-math.inf: "energy 0", math.inf: "overflow"}.get(value, f"{value:.2f}")


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(s) for s in shape) or "scalar"


def _run_facts(directory: Path, header: dict[str, Any], records: list[SpectrumRecord]) -> Facts:
    epochs = [r.epoch for r in records]
    steps = [r.global_step for r in records]
    shapes = header["shapes"]
    seconds = [r.seconds for r in records]
    if header["INCL"] is False:
        graph = "False: each probe's data-dependent graph (Jacobian nonzeros), rebuilt when it changes"
    else:
        graph = "True: the structural graph, the same for every probe and epoch"
    items = [
        ("records", str(directory)),
        ("model", str(header["model"])),
        ("transform", _TRANSFORM_TEXT.get(header["transform"], str(header["transform"]))),
        ("INCL", graph),
        ("probes", f"{records[0].num_probes} input(s) of shape {_shape_text(header['probe_shape'][1:])}"),
        (
            "epochs",
            f"{len(records)} record(s) at epochs {_epochs_text(epochs)} (global steps {min(steps)}–{max(steps)});"
            " epoch 0 is the baseline before training",
        ),
        ("recorded layers", f"{len(records[0].layernames)}, {_count(sum(int(np.prod(s)) for s in shapes))} neurons"),
    ]
    edges = header.get("edges")
    if edges is not None:
        items.append(("graph edges", _count(sum(edges) if isinstance(edges, list) else int(edges))))
    items.append(("time per record", f"{np.mean(seconds):.3g} s on average, {max(seconds):.3g} s at most"))
    return Facts(items)


def _model_table(header: dict[str, Any], layernames: Sequence[str]) -> Table:
    shapes = header["shapes"]
    modules = header.get("modules")
    edges = header.get("edges")
    per_layer_edges = edges if isinstance(edges, list) and len(edges) == len(layernames) else None
    headers = ["#", "layer"] + (["module"] if modules else []) + ["shape", "neurons"]
    headers += ["edges in"] if per_layer_edges else []
    rows = []
    for i, (name, shape) in enumerate(zip(layernames, shapes)):
        row = [_num(str(i)), Cell(name)] + ([Cell(str(modules[i]), mono=True)] if modules else [])
        row += [_num(_shape_text(shape)), _num(_count(int(np.prod(shape))))]
        row += [_num(_count(int(per_layer_edges[i])))] if per_layer_edges else []
        rows.append(row)
    total = [Cell(""), Cell("total")] + ([Cell("")] if modules else [])
    total += [Cell(""), _num(_count(sum(int(np.prod(s)) for s in shapes)))]
    total += [_num(_count(sum(int(e) for e in per_layer_edges)))] if per_layer_edges else []
    return Table("Recorded layers, in execution order", headers, rows + [total])


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _energy_charts(records: list[SpectrumRecord], p: int, progress: Callable[[str], None]) -> Row:
    epochs = [r.epoch for r in records]
    names = list(records[0].layernames)
    energy = np.stack([r.log10_energy[p] for r in records])
    lines = _figure(5.6, 3.2)
    _, ax = nsp.render.energy_over_epochs(energy, epochs, names, kind="lines", ax=lines.add_subplot())
    ax.set_title("log10 spectral energy per layer", fontsize=10)
    charts = [Chart.from_figure(lines, f"probe {p}: log10 spectral energy of every layer against the epoch")]
    progress(f"energy lines, probe {p}")
    heatmap = _figure(min(11.0, 2.6 + 0.25 * len(epochs)), 1.2 + 0.3 * max(len(names), 2))
    _, ax = nsp.render.energy_over_epochs(energy, epochs, names, kind="heatmap", ax=heatmap.add_subplot())
    if len(epochs) > _MAX_TICKS:
        ticks = list(range(0, len(epochs), math.ceil(len(epochs) / _MAX_TICKS)))
        ax.set_xticks(ticks, [str(epochs[i]) for i in ticks])
    ax.set_title("log10 spectral energy, layer × epoch", fontsize=10)
    charts.append(Chart.from_figure(heatmap, f"probe {p}: heatmap of log10 spectral energy, layers by epochs"))
    progress(f"energy heatmap, probe {p}")
    return Row(charts, heading=f"probe {p}")


def _share_table(records: list[SpectrumRecord], chosen: list[int], p: int) -> Table:
    names = records[0].layernames
    shares = [nsp.energy.energy_share(list(records[i].spectra[p])) for i in chosen]
    rows = []
    for l, name in enumerate(names):
        row = [Cell(name)]
        for i, share in zip(chosen, shares):
            log10 = float(records[i].log10_energy[p, l])
            text = _share_text(float(share[l]))
            row.append(Cell(text, number=True, share=float(share[l]), title=f"log10 energy {_log10_text(log10)}"))
        rows.append(row)
    headers = ["layer"] + [f"epoch {records[i].epoch}" for i in chosen]
    return Table(f"probe {p}: share of the total spectral energy", headers, rows)


def _film(records: list[SpectrumRecord], chosen: list[int], p: int, progress: Callable[[str], None]) -> Film:
    frames = []
    names = list(records[0].layernames)
    for i in chosen:
        record = records[i]
        rgb = nsp.render.render_side_by_side(list(record.activations[p]), list(record.spectra[p]), names)
        label = f"epoch {record.epoch} (global step {record.global_step})"
        frames.append(Frame(label, Image.from_rgb(rgb, f"probe {p}, {label}: activations and spectrum of every layer")))
        progress(f"heatmaps, probe {p}, epoch {record.epoch}")
    return Film(f"probe {p}", frames)


def _rebuild_section(records: list[SpectrumRecord]) -> Section:
    section = Section("rebuilds", "Graph rebuilds")
    rebuilt = [i for i, r in enumerate(records) if r.rebuilt]
    probes = records[0].num_probes
    distinct = [len({r.fingerprints[p] for r in records}) for p in range(probes)]
    section.blocks.append(
        Text(
            "With INCL=False each probe's graph depends on the weights' zero pattern and on the probe's activity "
            "(dead ReLU units, max-pool winners). The callback rebuilds a graph and its transformer when its "
            f"fingerprint changes. It did so at {len(rebuilt)} of {len(records)} records; distinct graphs per probe: "
            f"{', '.join(str(d) for d in distinct)}."
        )
    )
    rows = []
    for i in [0, *rebuilt]:
        record = records[i]
        before = records[i - 1].fingerprints if i else None
        changed = [p for p in range(probes) if before is None or record.fingerprints[p] != before[p]]
        what = "initial graphs" if before is None else ", ".join(str(p) for p in changed) or "—"
        rows.append([
            _num(str(record.epoch)),
            _num(str(record.global_step)),
            Cell(what),
            Cell(" ".join(record.fingerprints), mono=True),
        ])
    headers = ["epoch", "global step", "probes with a new graph", "fingerprints (one per probe)"]
    section.blocks.append(Table("Records whose graphs were built anew", headers, rows))
    return section


def _sensitivity(records: list[SpectrumRecord]) -> list[np.ndarray] | None:
    # Shown only where every record carries it: records written without it have no such field.
    values = [getattr(r, "rounding_sensitivity", None) for r in records]
    if any(v is None for v in values):
        return None
    return [np.asarray(v, dtype=np.float64) for v in values]


def _sensitivity_section(records: list[SpectrumRecord], values: list[np.ndarray], chosen: list[int]) -> Section:
    section = Section("conditioning", "Conditioning: rounding sensitivity per layer")
    section.blocks.append(
        Text(
            "Spectra are exact for the recorded activations, but deep layers amplify the activations' own rounding "
            "enormously. κ is the relative change of a layer's spectrum when every activation moves by half a unit "
            "in its last place (nsp.rounding_sensitivity): the spectrum is determined to about −log10 κ digits. "
            f"Shaded cells (κ ≥ {_SENSITIVE:g}) have less than one reliable digit: rounding in the forward pass "
            "dominates them, so compare them with care."
        )
    )
    names = records[0].layernames
    headers = ["layer"] + [f"epoch {records[i].epoch}" for i in chosen]
    tables = []
    for p in range(records[0].num_probes):
        rows = []
        for l, name in enumerate(names):
            row = [Cell(name)]
            for i in chosen:
                kappa = float(values[i][p, l])
                row.append(Cell(f"{kappa:.1e}", number=True, warn=not kappa < _SENSITIVE))
            rows.append(row)
        tables.append(Table(f"probe {p}: rounding sensitivity κ", headers, rows))
    section.blocks.append(Row(tables))
    return section


def _sections(
    directory: Path, header: Mapping[str, Any], records: list[SpectrumRecord], progress: Callable[[str], None]
) -> list[Section]:
    probes = records[0].num_probes
    chosen = _sample(len(records), HEATMAP_EPOCHS)
    chosen_text = ", ".join(str(records[i].epoch) for i in chosen)

    summary = Row([_run_facts(directory, header, records), _model_table(header, records[0].layernames)])
    run = Section("run", "Run and model", [summary])

    energy = Section("energy", "Spectral energy per layer")
    energy.blocks.append(
        Text(
            "Spectral energy is Σ ŝ² over a layer's spectral coefficients, shown as log10 because it spans hundreds "
            "of decades. Grey heatmap cells and gaps in the lines mark a zero (or non-finite) energy."
        )
    )
    for p in range(probes):
        energy.blocks.append(_energy_charts(records, p, progress))

    share = Section("share", "Share of energy per layer")
    share.blocks.append(
        Text(
            f"Each layer's share of the probe's total spectral energy, at epochs {chosen_text}. "
            "Hover over a cell for its log10 energy."
        )
    )
    share.blocks.append(Row([_share_table(records, chosen, p) for p in range(probes)]))

    heatmaps = Section("heatmaps", "Activations and spectra")
    heatmaps.blocks.append(
        Text(
            f"Per probe, every layer's activations (left, linear colour scale per layer) beside its spectrum "
            f"(right, signed log10 per layer, since spectra span hundreds of decades), at epochs {chosen_text}"
            + (f" (selected from {len(records)} records)" if len(chosen) < len(records) else "")
            + ". Use the slider to step through the epochs."
        )
    )
    heatmaps.blocks.append(Row([_film(records, chosen, p, progress) for p in range(probes)]))

    sections = [run, energy, share, heatmaps]
    if header["INCL"] is False:
        sections.append(_rebuild_section(records))
    sensitivity = _sensitivity(records)
    if sensitivity is not None:
        sections.append(_sensitivity_section(records, sensitivity, chosen))
    return sections
