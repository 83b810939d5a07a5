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
import time
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence, Union

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter
from torch import nn

import nsp
import nsp.transforms.energy
import nsp.viz.render
from nsp_lightning.probe.analysis import AnalysisRecord, LogSink, ProbeAnalysis, ProbeContext, ReportContext
from nsp.io.storage import load_npz
from nsp_lightning.analyses.spectrum.records import (
    SpectrumRecord,
    make_record,
    read_spectrum_record,
    spectrum_analysis_record,
)
from nsp_lightning.probe.store import record_name
from nsp_lightning.report.html import HEATMAP_EPOCHS
from nsp_lightning.report.sections import Cell, Chart, Facts, Film, Frame, Grid, Image, Row, Section, Table, Text

__all__ = ["SpectrumAnalysis"]

_TRANSFORMS = ("standard", "laplacian")
_COLOUR_SCALES = ("baseline", "image")
# Spectra span hundreds of decades: only a signed-log scale shows them.
_HEATMAPS = {
    "activations": {"scale": "layerscale", "cmap": "viridis"},
    "spectrum": {"scale": "layersymlog", "cmap": "RdBu_r"},
}
# The change-since-baseline measures (nsp.energy.change_since), in the order they are shown.
_CHANGE = nsp.energy.CHANGE_MEASURES
_CHANGE_TEXT = {
    "relative": "relative change ‖ŝ − ŝ₀‖ / ‖ŝ₀‖",
    "log10_energy": "change of log10 energy (decades)",
    "decades": "median decades a coefficient moved",
    "sign_flips": "fraction of coefficients that flipped sign",
}
Layers = Union[None, str, Sequence[str], Callable[[str, nn.Module], bool]]
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
        layers: the layers, as :class:`nsp.Activations` takes them: ``None`` (the default:
            the input and the model's top-level children), ``"leaves"`` (every module
            without children), a list of module names at any depth (``["conv1",
            "net.0", "net.4"]``, and ``"input"``), or a predicate ``(name, module) -> bool``.
            A list of top-level names picks among the default layers, in the list's
            order; the graph then spans every top-level layer, since a layer's spectrum
            depends on all of its ancestors. Otherwise the graph spans the chosen layers.
        transform: ``"standard"`` (the causal Fourier transform) or ``"laplacian"``.
        INCL: ``True`` builds the structural graph, which is the same for every input and
            every epoch. ``False`` builds each probe's data-dependent graph (zero weights,
            max-pool argmax and dead ReLU units drop edges); it is rebuilt, with its
            transformer, only when the graph's fingerprint (:func:`nsp.fingerprint`)
            changes, and the rebuild is logged.
        colour_scale: ``"baseline"`` (the default) fixes each layer's colour range, per
            probe, from the baseline record (epoch 0), so that equal colours mean equal
            values at every epoch (values beyond it take the end colours, and the image
            says how many); ``"image"`` scales every image to its own values.

    Records (``<dirpath>/spectra``) are :class:`~nsp_lightning.SpectrumRecord`\ s; the tags,
    the record format and the report are those of :class:`~nsp_lightning.SpectrumCallback`:

        - scalars ``nsp/change/<measure>/probe_<p>/<ii>_<layer>``: the change since the
          baseline (:func:`nsp.energy.change_since`: ``relative``, ``log10_energy``,
          ``decades``, ``sign_flips``), ``<ii>`` the layer's index in execution order;
        - scalars ``nsp/log10_energy/probe_<p>/<layer>``, ``nsp/record_seconds`` and
          (``INCL=False``) ``nsp/graph_rebuilt``; custom-scalars charts per probe, the
          change since the baseline first;
        - images ``nsp/<ii>_<layer>/activations/probe_<p>`` and
          ``nsp/<ii>_<layer>/spectrum/probe_<p>`` (:func:`nsp.render.render_card`: title,
          colour bar with its range, scale and sign convention, notes), and
          ``nsp/00_change/probe_0``, a chart of the first probe's change since the baseline
          with a legend;
        - histograms ``nsp/<ii>_<layer>/log10_abs_spectrum/probe_<p>`` of log10|ŝ| over
          the nonzero coefficients;
        - text ``nsp/predictions``: each probe's label (where the probe was a batch
          ``(x, y)``) and the model's prediction, and ``nsp/about``, the configuration
          (also as hparams ``nsp/transform``, ``nsp/INCL``, ``nsp/layers``, ...).

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

    # Records name an analysis by its class's path; this is the public one, which does not
    # change when the package's modules are reorganised.
    __module__ = "nsp_lightning.analyses.spectrum"

    name = "spectra"
    tag_prefix = "nsp"
    title = "spectrum"
    # The energies are arrays of the record already; the record format predates stored scalars.
    store_scalars = False

    def __init__(
        self,
        layers: Layers = None,
        transform: str = "standard",
        INCL: bool = True,
        *,
        colour_scale: Literal["baseline", "image"] = "baseline",
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
        if colour_scale not in _COLOUR_SCALES:
            raise ValueError(f"{_caller}(colour_scale={colour_scale!r}): expected one of {_COLOUR_SCALES}")
        self.colour_scale = colour_scale
        self.layernames: list[str] = []
        self.shapes: list[list[int]] = []
        self._layers: list[int] = []
        self._capture: Any = None
        self._graphs: dict[str, Any] = {}
        self._header: dict[str, Any] = {}
        self._baseline: SpectrumRecord | None = None
        self._history: list[tuple[int, dict[str, np.ndarray]]] = []
        self._last: dict[str, Any] = {}

    def check(self, model: nn.Module, probes: torch.Tensor) -> None:
        """Resolve the layers; raise ``ValueError`` naming an unknown one, warn if the top level hides them."""
        top = nsp.Activations(model, probes[:1])
        names = self.layers
        if names is None or (isinstance(names, list) and set(names) <= set(top.layernames)):
            self._capture, acts = None, top
        else:
            if isinstance(names, list):
                modules = dict(model.named_modules())
                unknown = [n for n in names if n != "input" and (n not in modules or not n)]
                if unknown:
                    raise ValueError(
                        f"{self._who}(layers={names!r}): unknown layers {unknown}; the model has {list(top.layernames)}"
                        f" at its top level, and modules {[n for n in modules if n][:12]}"
                    )
            self._capture = [n for n in names if n != "input"] if isinstance(names, list) else names
            try:
                acts = nsp.Activations(model, probes[:1], self._capture)
            except (ValueError, TypeError) as err:
                raise ValueError(f"{self._who}(layers={_layers_text(names)}): {err}") from err
        available = list(acts.layernames)
        if isinstance(names, list):
            unknown = [name for name in names if name not in available]
            if unknown:
                raise ValueError(
                    f"{self._who}(layers={names!r}): unknown layers {unknown}; the model has {available}"
                )
            self._layers = [available.index(name) for name in names]
        else:
            self._layers = list(range(len(available)))
        self.layernames = [available[i] for i in self._layers]
        self.shapes = [list(acts.layeractivations[i].shape) for i in self._layers]
        if names is None:
            _warn_if_hidden(model, available, self._who)

    def setup(self, model: nn.Module, probes: torch.Tensor, context: ProbeContext) -> None:
        """Build the graph(s) and transformer(s) for the current model; find the baseline of a resumed series."""
        self._graphs = {}
        self._update(context)
        self._baseline, self._history = None, []
        baseline = Path(context.directories.get(self.name, "")) / f"{record_name(0)}.npz"
        if self.name in context.directories and baseline.is_file():
            self._baseline = read_spectrum_record(*load_npz(baseline), where=str(baseline))
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
        probes = range(self._header["probes"])
        change = {
            f"{_CHANGE_TEXT[m]}, probe {p}": ["Multiline", [rf"^{self.prefix}/change/{m}/probe_{p}/"]]
            for p in probes
            for m in _CHANGE
        }
        energy = {
            f"log10 spectral energy, probe {p}": ["Multiline", [rf"^{self.prefix}/log10_energy/probe_{p}/"]]
            for p in probes
        }
        return {f"{self.prefix} change since the baseline": change, f"{self.prefix} spectra": energy}

    def hparams(self) -> dict[str, Any]:
        return {
            "transform": self.transform,
            "INCL": self.INCL,
            "layers": ", ".join(self.layernames),
            "layer_choice": _layers_text(self.layers),
            "probes": int(self._header.get("probes", 0)),
            "probe_shape": "×".join(map(str, self._header.get("probe_shape", [])[1:])),
            "colour_scale": self.colour_scale,
        }

    def describe(self) -> str:
        scale = (
            "fixed per layer and probe from the baseline record (epoch 0): equal colours mean equal values at every"
            " epoch; values beyond that range take its end colours, and the image says how many"
            if self.colour_scale == "baseline"
            else "each image's own range"
        )
        rows = "\n".join(
            f"| {i:02d} | {name} | {'×'.join(map(str, shape))} |"
            for i, name, shape in zip(self._layers, self.layernames, self.shapes)
        )
        return (
            f"**Spectra of the probes' activation patterns** ({self._who})\n\n"
            f"* transform: {_TRANSFORM_TEXT[self.transform]}\n"
            f"* INCL: {self.INCL} ({'structural graph' if self.INCL else 'data-dependent graph'})\n"
            f"* probes: {self._header.get('probes')} of shape {self._header.get('probe_shape', [])[1:]}\n"
            f"* layers ({_layers_text(self.layers)}):\n\n| # | layer | shape |\n|---|---|---|\n{rows}\n\n"
            "**Reading the images.** Activations: viridis, linear. Spectra: red positive, blue negative, white 0, on"
            " a signed log10 scale sign(ŝ)·log10(1 + |ŝ|/t), since spectra span hundreds of decades; |ŝ| below t is"
            f" near white. Colour range: {scale}.\n\n"
            "**Change since the baseline** (`nsp/change/...`, chart `nsp/00_change`): relative change"
            " ‖ŝ − ŝ₀‖/‖ŝ₀‖ (the dominant coefficients), change of log10 energy (decades), the median number of"
            " decades a coefficient moved (every coefficient alike, whatever its magnitude), and the fraction of"
            " coefficients whose sign flipped."
        )

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
        if self._baseline is None:
            self._baseline = record  # the baseline, or the first record of a series whose baseline is missing
        result = spectrum_analysis_record(record)
        change = _change(self._baseline, record)
        for measure, values in change.items():
            for p in range(record.num_probes):
                for l, name in enumerate(record.layernames):
                    result.scalars[f"change/{measure}/probe_{p}/{self._tag(l)}"] = float(values[p, l])
        if not self.INCL:
            result.scalars["graph_rebuilt"] = float(rebuilt)
        self._history = [h for h in self._history if h[0] < context.epoch] + [(context.epoch, change)]
        self._last = {"epoch": context.epoch, "step": context.global_step, "predictions": _predictions(context)}
        return result

    def log(self, record: AnalysisRecord, sink: LogSink) -> None:
        """Cards of every probe's activations and spectrum per layer, histograms, the change chart, predictions."""
        if not sink.enabled:
            return
        names = record.meta["layernames"]
        epoch = self._last.get("epoch", 0)
        where = f"epoch {epoch}, step {self._last.get('step', sink.step)}"
        predictions = self._last.get("predictions") or []
        for p in range(record.meta["probes"]):
            label = f", label {predictions[p][0]}" if predictions and predictions[p][0] else ""
            for l, name in enumerate(names):
                for kind in ("activations", "spectrum"):
                    values = record.arrays[f"{kind}.{l}"][p]
                    title = f"{self._tag(l)} · {kind} · probe {p}{label} · {_shape_text(values.shape)} · {where}"
                    sink.image(f"{self._tag(l)}/{kind}/probe_{p}", self._card(values, kind, p, l, title))
                spectrum = record.arrays[f"spectrum.{l}"][p]
                magnitudes = np.abs(spectrum[np.isfinite(spectrum) & (spectrum != 0)])
                if magnitudes.size:
                    sink.histogram(f"{self._tag(l)}/log10_abs_spectrum/probe_{p}", np.log10(magnitudes))
            if p == 0 and self._history:
                # One chart, of the first probe: a matplotlib figure costs as much as a hundred cards.
                sink.figure(f"00_change/probe_{p}", _change_figure(self._history, names, p, self._layers))
        if predictions:
            lines = ["| probe | label | prediction | probability |", "|---|---|---|---|"]
            lines += [f"| {p} | {lab or '—'} | {pred} | {prob} |" for p, (lab, pred, prob) in enumerate(predictions)]
            sink.text("predictions", f"**{where}**\n\n" + "\n".join(lines))

    def _tag(self, l: int) -> str:
        """The tag of recorded layer ``l``: its index in execution order, then its name (``03_conv2``)."""
        return f"{self._layers[l]:02d}_{self.layernames[l]}"

    def _card(self, values: np.ndarray, kind: str, p: int, l: int, title: str) -> np.ndarray:
        options = dict(_HEATMAPS[kind])
        legend = []
        if kind == "spectrum":
            legend.append("signed log10: red > 0, blue < 0, white 0")
        else:
            legend.append("linear scale")
        if self.colour_scale == "baseline" and self._baseline is not None:
            base = (self._baseline.activations if kind == "activations" else self._baseline.spectra)[p][l]
            options.update(_fixed_range(np.asarray(base, dtype=np.float64), kind))
            legend.append(f"colour range fixed from the baseline (epoch {self._baseline.epoch})")
        else:
            legend.append("colour range: this image's own values")
        if options.get("threshold") is not None:
            legend[0] += f"; |ŝ| < {options['threshold']:.3g} near white"
        return nsp.render.render_card(values, title=title, legend=legend, **options)

    @classmethod
    def read_record(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any], path: Path) -> SpectrumRecord:
        return read_spectrum_record(arrays, meta, where=str(path))

    @classmethod
    def check_header(cls, header: dict[str, Any], path: Path) -> None:
        """The fields of a SpectrumCallback header that are present, typed and consistent.

        A header may lack fields (records written through :func:`~nsp_lightning.analyses.spectrum.records.write_record`
        with a header of one's own); the report refuses one that lacks what it shows.
        """
        wrong = []
        names = header.get("layernames")
        if names is not None and not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            wrong.append(f"layernames {_short(names)}, expected a non-empty list of strings")
            names = None
        shapes = header.get("shapes")
        if shapes is not None:
            if not isinstance(shapes, list) or not all(
                isinstance(shape, list) and all(_is_count(n) for n in shape) for shape in shapes
            ):
                wrong.append(f"shapes {_short(shapes)}, expected a list of shapes (lists of ints >= 0)")
            elif names is not None and len(shapes) != len(names):
                wrong.append(f"{len(shapes)} shapes for {len(names)} layers")
        probes = header.get("probes")
        if probes is not None and not (_is_count(probes) and probes >= 1):
            wrong.append(f"probes {_short(probes)}, expected an int >= 1")
        shape = header.get("probe_shape")
        if shape is not None and not (
            isinstance(shape, list) and len(shape) >= 2 and all(_is_count(n) for n in shape)
            and (probes is None or shape[0] == probes)
        ):
            wrong.append(f"probe_shape {_short(shape)}, expected [probes, *input_shape]")
        for key in ("transform", "model"):
            if key in header and not isinstance(header[key], str):
                wrong.append(f"{key} {_short(header[key])}, expected a string")
        if "INCL" in header and not isinstance(header["INCL"], bool):
            wrong.append(f"INCL {_short(header['INCL'])}, expected true or false")
        layers = len(names) if names is not None else None
        modules = header.get("modules")
        if modules is not None and not (
            isinstance(modules, list) and all(isinstance(m, str) for m in modules)
            and layers in (None, len(modules))
        ):
            wrong.append(f"modules {_short(modules)}, expected one description (a string) per layer")
        edges = header.get("edges")
        if edges is not None and not (
            _is_count(edges)
            or (isinstance(edges, list) and all(_is_count(e) for e in edges) and layers in (None, len(edges)))
        ):
            wrong.append(f"edges {_short(edges)}, expected an int >= 0 or one per layer")
        if wrong:
            raise ValueError(f"nsp_lightning.read_records: the manifest {path} has {'; '.join(wrong)} in its header")

    @classmethod
    def check_record(cls, record: SpectrumRecord, header: dict[str, Any], path: Path) -> None:
        """The record's layers, probes, shapes and dtypes, against the header where it has them."""
        where = f"nsp_lightning.read_records: {path}"
        names = header.get("layernames", list(record.layernames))
        probes = header.get("probes", record.num_probes)
        if list(record.layernames) != names:
            raise ValueError(
                f"{where} holds the layers {_short(list(record.layernames))}, but its series has {_short(names)};"
                " it is a record of another network"
            )
        if record.num_probes != probes or len(record.fingerprints) != probes:
            raise ValueError(
                f"{where} holds {record.num_probes} probe(s) and {len(record.fingerprints)} fingerprint(s),"
                f" but its series has {probes} probe(s)"
            )
        shapes = header.get("shapes")
        for kind, rows, kinds in (("activations", record.activations, "biuf"), ("spectrum", record.spectra, "f")):
            for l, name in enumerate(names):
                array = rows[0][l]
                expected = None if shapes is None else tuple(shapes[l])
                if (expected is not None and array.shape != expected) or array.dtype.kind not in kinds:
                    raise ValueError(
                        f"{where} holds {kind} of layer {name!r} of shape {list(array.shape)} ({array.dtype}), but its"
                        f" series has shape {shapes[l] if shapes is not None else list(array.shape)}"
                        f" ({'real numbers' if kinds == 'f' else 'real numbers or ints'});"
                        " it is a record of another network or is corrupt"
                    )
        for key in ("energy", "log10_energy"):
            array = getattr(record, key)
            if array.shape != (probes, len(names)) or array.dtype.kind != "f":
                raise ValueError(
                    f"{where} holds {key} of shape {list(array.shape)} ({array.dtype}); expected real numbers of shape"
                    f" [{probes}, {len(names)}] (probes × layers)"
                )

    @classmethod
    def report_steps(cls, records: Sequence[Any], header: Mapping[str, Any]) -> int:
        return records[0].num_probes * (4 + len(_sample(len(records), HEATMAP_EPOCHS)))

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
        activations = context.activations(self._capture)
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
        if self.transform != "laplacian":
            graph.get_transformer(type=self.transform)
            return graph
        # A dense eigendecomposition: minutes for large graphs, so say what is happening.
        from lightning.pytorch.utilities.rank_zero import rank_zero_info
        from nsp.transforms.laplacian import eigh_seconds, eigh_threads

        nodes = sum(int(a.numel()) for a in acts.layeractivations)
        threads = eigh_threads()
        rank_zero_info(
            f"{self._who}: eigendecomposition of the graph Laplacian ({nodes:,} nodes, dense, {threads} BLAS"
            f" thread(s)); estimated {eigh_seconds(nodes, threads):.0f} s"
        )
        start = time.perf_counter()
        graph.get_transformer(type=self.transform)
        rank_zero_info(f"{self._who}: Laplacian eigendecomposition done in {time.perf_counter() - start:.1f} s")
        return graph


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_layers(layers: Layers, who: str) -> Any:
    if layers is None or layers == "leaves" or (callable(layers) and not isinstance(layers, str)):
        return layers
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not all(isinstance(n, str) for n in layers):
        raise TypeError(
            f"{who}(layers={layers!r}): expected None, 'leaves', a sequence of layer names or a predicate"
            " (name, module) -> bool"
        )
    layers = list(layers)
    if not layers:
        raise ValueError(f"{who}(layers=[]): expected at least one layer name, or None for all layers")
    if len(set(layers)) != len(layers):
        raise ValueError(f"{who}(layers={layers!r}): layer names repeat")
    return layers


def _layers_text(layers: Any) -> str:
    if layers is None:
        return "top-level children"
    if callable(layers) and not isinstance(layers, str):
        return f"predicate {getattr(layers, '__qualname__', type(layers).__name__)}"
    return repr(layers)


def _warn_if_hidden(model: nn.Module, layernames: Sequence[str], who: str) -> None:
    """Warn when the default layers are one container holding the whole network."""
    modules = dict(model.named_modules())
    inner = [name for name in layernames[1:] if next(modules[name].children(), None) is not None]
    if len(layernames) == 2 and inner:
        container = modules[inner[0]]
        leaves = [n for n, m in container.named_modules(prefix=inner[0]) if next(m.children(), None) is None]
        from lightning.pytorch.utilities.rank_zero import rank_zero_warn

        rank_zero_warn(
            f"{who}: the model's top level is one {type(container).__name__} '{inner[0]}' holding"
            f" {len(leaves)} modules, so only {list(layernames)} are recorded. Reach the inner layers with"
            f" layers='leaves' or names at any depth, e.g. layers={leaves[:2] + leaves[-1:]!r}."
        )


def _fixed_range(base: np.ndarray, kind: str) -> dict[str, Any]:
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


def _change(baseline: SpectrumRecord, record: SpectrumRecord) -> dict[str, np.ndarray]:
    """Each change measure, shape ``(P, L)``, of ``record`` against ``baseline``."""
    per_probe = [nsp.energy.change_since(list(b), list(s)) for b, s in zip(baseline.spectra, record.spectra)]
    return {m: np.stack([c[m] for c in per_probe]) for m in _CHANGE}


def _predictions(context: ProbeContext) -> list[tuple[str, str, str]]:
    """Per probe: its label (or ''), the predicted class and its softmax probability, for classifier outputs."""
    try:
        outputs = context.outputs()
    except Exception:  # a model whose outputs are not one tensor has no prediction to show
        return []
    if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2 or outputs.shape[0] != len(context.probes):
        return []
    probs = torch.softmax(outputs.detach().double().cpu(), dim=1)
    prob, pred = probs.max(dim=1)
    labels = context.labels
    return [
        ("" if labels is None else str(int(labels[p])), str(int(pred[p])), f"{float(prob[p]):.3f}")
        for p in range(len(pred))
    ]


def _change_figure(history: Sequence[tuple[int, dict[str, np.ndarray]]], names: Sequence[str], p: int,
                   indices: Sequence[int]) -> Figure:
    """Relative change and decades moved since the baseline, one line per layer; one legend gives the last values.

    Drawn without constrained layout and with plain-text tick labels: measuring mathtext
    labels made each figure take seconds. Sized to stay legible in a TensorBoard card.
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
            label = f"{indices[l]:02d} {name}: {_number(last['relative'][p, l])} | {_number(last['decades'][p, l])}"
            ax.plot(epochs, np.where(np.isfinite(values), values, np.nan), marker="o", markersize=3,
                    linestyle=style, label=label)
        ax.set_xlabel("epoch", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(("relative change", "median decades moved")[k], fontsize=10)
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


def _number(value: float) -> str:
    """A number for people: 3 significant digits, no exponent between 0.001 and 10,000."""
    if not math.isfinite(value):
        return {math.inf: "∞", -math.inf: "−∞"}.get(value, "n/a")
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}×10^{int(exponent)}"


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
    """A share for people: ``99.7 %``, ``0.052 %``, ``< 0.001 %``."""
    percent = 100 * share
    if percent == 0:
        return "0"
    if percent >= 1:
        return f"{percent:.1f} %"
    if percent >= 1e-3:
        return f"{percent:.2g} %"
    return "< 0.001 %"


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
            title = f"{100 * float(share[l]):.3g} % of the energy; log10 energy {_log10_text(log10)}"
            row.append(Cell(text, number=True, share=float(share[l]), title=title))
        rows.append(row)
    headers = ["layer"] + [f"epoch {records[i].epoch}" for i in chosen]
    return Table(f"probe {p}: share of the total spectral energy", headers, rows)


def _run_ranges(records: list[SpectrumRecord], p: int) -> list[dict[str, dict[str, Any]]]:
    """Per layer, the colour range of the whole run for probe ``p``: activations and spectrum.

    Activations: the run's min to max; spectra: ``±`` the run's largest ``|ŝ|``, on a signed
    log10 scale with threshold the run's smallest nonzero ``|ŝ|``. Equal colours then mean
    equal values at every epoch.
    """
    ranges = []
    for l in range(len(records[0].layernames)):
        acts = np.concatenate([np.asarray(r.activations[p][l], dtype=np.float64).ravel() for r in records])
        spec = np.concatenate([np.asarray(r.spectra[p][l], dtype=np.float64).ravel() for r in records])
        ranges.append({"activations": _fixed_range(acts, "activations"), "spectrum": _fixed_range(spec, "spectrum")})
    return ranges


def _legend(kind: str, options: Mapping[str, Any]) -> list[str]:
    if kind == "activations":
        return ["linear scale, range of the whole run"]
    line = "signed log10: red > 0, blue < 0, white 0"
    if options.get("threshold") is not None:
        line += f"; |ŝ| < {options['threshold']:.3g} near white"
    return [line, "range of the whole run"]


def _frame_image(record: SpectrumRecord, p: int, ranges: list[dict[str, dict[str, Any]]]) -> np.ndarray:
    """Every layer of one record: its activations card beside its spectrum card, layer below layer."""
    rows = []
    for l, name in enumerate(record.layernames):
        cards = []
        for kind, values in (("activations", record.activations[p][l]), ("spectrum", record.spectra[p][l])):
            options = {**_HEATMAPS[kind], **ranges[l][kind]}
            title = f"{l}: {name} · {kind} · {_shape_text(np.shape(values))}"
            cards.append(nsp.render.render_card(values, title=title, legend=_legend(kind, options), **options))
        rows.append(cards)
    widths = [max(row[k].shape[1] for row in rows) for k in range(2)]
    lines = []
    for cards in rows:
        height = max(c.shape[0] for c in cards)
        padded = [_pad(c, height, w) for c, w in zip(cards, widths)]
        lines.append(np.concatenate([padded[0], np.full((height, 8, 3), 255, np.uint8), padded[1]], axis=1))
    return np.concatenate([np.concatenate([line, np.full((6, line.shape[1], 3), 255, np.uint8)]) for line in lines])


def _pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` on a canvas of ``height`` x ``width`` in its own background colour (its corner's)."""
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = image[0, 0]
    canvas[: image.shape[0], : image.shape[1]] = image
    return canvas


def _film(
    records: list[SpectrumRecord], chosen: list[int], p: int, ranges: list[dict[str, dict[str, Any]]],
    progress: Callable[[str], None],
) -> Film:
    frames = []
    for i in chosen:
        record = records[i]
        label = f"epoch {record.epoch} (global step {record.global_step})"
        rgb = _frame_image(record, p, ranges)
        frames.append(Frame(label, Image.from_rgb(rgb, f"probe {p}, {label}: activations and spectrum of every layer")))
        progress(f"heatmaps, probe {p}, epoch {record.epoch}")
    return Film(f"probe {p}", frames, group="heatmaps")


def _epoch_grid(records: list[SpectrumRecord], p: int, ranges: list[dict[str, dict[str, Any]]]) -> Grid:
    """Every record's spectrum of every layer, side by side: a row per layer, a column per record."""
    rows = []
    for l, name in enumerate(records[0].layernames):
        options = {**_HEATMAPS["spectrum"], **ranges[l]["spectrum"]}
        first = np.asarray(records[0].spectra[p][l], dtype=np.float64)
        # About 96 pixels wide, whatever the layer's size, at a whole number of pixels per value.
        upscale = max(1, min(16, 96 // nsp.render.render_layer(first, **options).shape[1]))
        images: list[Image | None] = []
        for record in records:
            values = np.asarray(record.spectra[p][l], dtype=np.float64)
            rgb = nsp.render.render_layer(values, upscale=upscale, **options)
            if values.ndim <= 1:
                rgb = np.repeat(rgb, max(1, 8 // upscale), axis=0)
            images.append(Image.from_rgb(rgb, f"probe {p}, {name}, epoch {record.epoch}: spectrum"))
        shown = f"{l}: {name} ({_shape_text(first.shape)})"
        rows.append((shown, images))
    columns = [f"epoch {r.epoch}" for r in records]
    return Grid(f"probe {p}: every record's spectra, a row per layer", columns, rows)


def _change_section(records: list[SpectrumRecord], progress: Callable[[str], None]) -> Section:
    section = Section("change", "Change since the baseline")
    baseline = records[0]
    section.blocks.append(
        Text(
            f"How far each layer's spectrum has moved from the baseline record (epoch {baseline.epoch}), measures"
            " chosen to stay meaningful when coefficients span hundreds of decades (nsp.energy.change_since):"
            " the relative change ‖ŝ − ŝ₀‖ / ‖ŝ₀‖, which follows the layer's dominant coefficients; the median"
            " number of decades a coefficient moved, |log10|ŝ| − log10|ŝ₀||, every coefficient counting alike"
            " whatever its magnitude; the change of log10 spectral energy; and the fraction of coefficients"
            " whose sign flipped. The per-layer energies below can look flat while these move."
        )
    )
    history = [(r.epoch, _change(baseline, r)) for r in records]
    names = list(baseline.layernames)
    indices = list(range(len(names)))
    for p in range(baseline.num_probes):
        chart = Chart.from_figure(
            _change_figure(history, names, p, indices),
            f"probe {p}: relative change and decades moved since the baseline, per layer, against the epoch",
        )
        last = history[-1][1]
        rows = [
            [Cell(f"{l}: {name}")] + [Cell(_number(float(last[m][p, l])), number=True) for m in _CHANGE]
            for l, name in enumerate(names)
        ]
        headers = ["layer", "relative change", "log10 energy change", "median decades moved", "sign flips"]
        table = Table(f"probe {p}: change at the last record (epoch {records[-1].epoch})", headers, rows)
        section.blocks.append(Row([chart, table], heading=f"probe {p}"))
        progress(f"change since the baseline, probe {p}")
    return section


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
    chosen_text = _epochs_text([records[i].epoch for i in chosen])

    summary = Row([_run_facts(directory, header, records), _model_table(header, records[0].layernames)])
    run = Section("run", "Run and model", [summary])

    change = _change_section(records, progress)

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
            "Hover over a cell for its exact share and log10 energy."
        )
    )
    share.blocks.append(Row([_share_table(records, chosen, p) for p in range(probes)]))

    ranges = [_run_ranges(records, p) for p in range(probes)]
    heatmaps = Section("heatmaps", "Activations and spectra")
    selected = (
        f"{len(chosen)} of the {len(records)} records (epochs {chosen_text}; the grid below shows every record)"
        if len(chosen) < len(records)
        else f"every record (epochs {chosen_text})"
    )
    heatmaps.blocks.append(
        Text(
            "Per probe, every layer's activations (left, viridis, linear) beside its spectrum (right, red positive,"
            " blue negative, white 0, on a signed log10 scale, since spectra span hundreds of decades). Each"
            " layer's colour range is fixed over the whole run, so a colour means the same value at every epoch;"
            f" each card's colour bar gives it. The slider steps through {selected}, and moves every probe."
        )
    )
    heatmaps.blocks.append(Row([_film(records, chosen, p, ranges[p], progress) for p in range(probes)]))

    grid = Section("grid", "Spectra of every record, side by side")
    grid.blocks.append(
        Text(
            f"Every record ({len(records)}), a column each, and every layer, a row each, per probe: the spectra on"
            " the colour ranges of the heatmaps above (fixed per layer over the run), so that epochs compare"
            " side by side."
        )
    )
    for p in range(probes):
        grid.blocks.append(_epoch_grid(records, p, ranges[p]))
        progress(f"epoch grid, probe {p}")

    sections = [run, change, energy, share, heatmaps, grid]
    if header["INCL"] is False:
        sections.append(_rebuild_section(records))
    sensitivity = _sensitivity(records)
    if sensitivity is not None:
        sections.append(_sensitivity_section(records, sensitivity, chosen))
    return sections
