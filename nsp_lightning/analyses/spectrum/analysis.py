r"""
Spectrum Analysis
=================

The spectra of the probes' activation patterns (nsp's exact causal Fourier or Laplacian
transform on the network's graph): the first probe analysis, which
:class:`~nsp_lightning.SpectrumCallback` runs.

"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

import nsp
from nsp.io.storage import load_npz
from nsp.transforms.transformer import TRANSFORMS
from nsp_lightning.analyses.captions import probe_predictions
from nsp_lightning.analyses.spectrum.cards import CARD_KINDS, card_image, difference_card, fixed_decades
from nsp_lightning.analyses.spectrum.chart import change_chart
from nsp_lightning.analyses.spectrum.drawing import (
    CHANGE,
    CHANGE_TEXT,
    TRANSFORM_TEXT,
    change_since_baseline,
    shape_text,
)
from nsp_lightning.analyses.spectrum.records import (
    SpectrumRecord,
    make_record,
    read_spectrum_record,
    spectrum_analysis_record,
)
from nsp_lightning.analyses.spectrum.report import report_sections, report_steps
from nsp_lightning.probe.analysis import AnalysisRecord, LogSink, ProbeAnalysis, ProbeContext, ReportContext
from nsp_lightning.probe.store import record_name
from nsp_lightning.report.sections import Section

__all__ = ["Layers", "SpectrumAnalysis", "layers_text"]

_COLOUR_SCALES = ("baseline", "image")
Layers = Union[None, str, Sequence[str], Callable[[str, nn.Module], bool]]
# What read_header promises; "modules" (descriptions) and "edges" (an int, or one per layer) are optional.
_HEADER_KEYS = ("layernames", "shapes", "probes", "probe_shape", "transform", "INCL", "model")


class SpectrumAnalysis(ProbeAnalysis):
    r"""Record the exact spectrum of each probe's activation pattern.

    At setup it builds the network's :class:`nsp.NNGraph` and its transformer once; at
    every record it computes the spectrum of each probe's activation pattern on that graph
    (the probes' patterns come from the record's shared forward pass, ``context.activations()``;
    with ``INCL=True``, values only while the layers keep their modules: a forward pass's cost).

    Cost (digits demo: 4 probes, 9 layers, 108 cards and a chart a record; BENCHMARKS.md
    "Per-analysis overhead"): a record holds the training thread 19-32 ms (1-2 % of the
    demo's epoch) for the transform, the change measures and the record file. The drawing
    helper process draws, encodes and writes the cards (palette PNGs) and the chart (Pillow)
    to TensorBoard (run ``<log_dir>/spectrum_images``; :mod:`nsp_lightning.probe.sinks`):
    0.13-0.18 s of CPU a record in steady state (0.40-0.57 s before palette cards and a Pillow
    chart, side by side under load), which a free core takes; the training process's other
    threads 0.06 s. On a quiet 2-core machine the epoch then takes 1.7 % longer (median of five
    4-epoch fits: +0.5 to +11.4 %), against 2.6-8.4 % before that cut.

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
        colour_scale: ``"baseline"`` (the default) fixes each layer's colours at the baseline
            record (epoch 0), over all probes: signed log10 in whole decades, with 2 decades
            of headroom above the layer's peak, so that equal colours mean equal values at
            every epoch while the layer grows (a record that outgrows it is drawn on a
            widened range, and the card says so); ``"image"`` gives every card its own range.

    Records (``<dirpath>/spectrum``) are :class:`~nsp_lightning.SpectrumRecord`\ s; the tags,
    the record format and the report are those of :class:`~nsp_lightning.SpectrumCallback`:

        - scalars ``spectrum/change/<measure>/probe_<p>/<ii>_<layer>``: the change since the
          baseline (:func:`nsp.energy.change_since`: ``relative``, ``log10_energy``,
          ``decades``, ``sign_flips``), ``<ii>`` the layer's index in execution order;
        - scalars ``spectrum/log10_energy/probe_<p>/<ii>_<layer>``, ``spectrum/record_seconds`` and
          (``INCL=False``) ``spectrum/graph_rebuilt``; custom-scalars charts per probe, the
          change since the baseline first. No scalar is ever ±inf or NaN: a layer whose
          spectrum is exactly zero (a flatten layer, whose units copy one parent each)
          is logged as ``spectrum/energy/probe_<p>/<ii>_<layer>`` = 0 instead of its log10
          energy (-inf), and a change that is not finite (a layer whose baseline
          spectrum is zero, once it moves) is not logged;
        - images ``spectrum/<ii>_<layer>/activations/probe_<p>``,
          ``spectrum/<ii>_<layer>/spectrum/probe_<p>`` and, after the baseline,
          ``spectrum/<ii>_<layer>/difference/probe_<p>`` (``ŝ − ŝ₀`` on its own range)
          (:mod:`~nsp_lightning.analyses.spectrum.cards`: title, colour bar in decades,
          sign convention in words, where the range comes from, notes), and
          ``spectrum/00_change/probe_0``, a chart of the first probe's change since the baseline
          with a legend;
        - scalars ``spectrum/00_change/<measure>/probe_<p>`` in one TensorBoard run per layer,
          ``<log_dir>/spectrum_<ii>_<layer>`` (as ``SummaryWriter.add_scalars`` makes them): one
          chart per measure and probe, a line per layer in its own colour, named in the
          run list (TensorBoard only; values that are not finite are left out);
        - histograms ``spectrum/<ii>_<layer>/log10_abs_spectrum/probe_<p>`` of log10|ŝ| over
          the nonzero coefficients;
        - text ``spectrum/predictions``: each probe's label (where the probe was a batch
          ``(x, y)``) and the model's prediction, and ``spectrum/about``, the configuration
          (also as hparams ``spectrum/transform``, ``spectrum/INCL``, ``spectrum/layers``, ...).

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

    name = "spectrum"
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
        if transform not in TRANSFORMS:
            raise ValueError(f"{_caller}(transform={transform!r}): expected one of {list(TRANSFORMS)}")
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
        self._reference: Any = None  # the pattern the last graph was built from
        self._header: dict[str, Any] = {}
        self._baseline: SpectrumRecord | None = None
        self._history: list[tuple[int, dict[str, np.ndarray]]] = []
        self._last: dict[str, Any] = {}
        # The colour ranges fixed at the baseline, computed once per baseline record.
        self._fixed: tuple[Any, dict[str, list[Any]]] = (None, {})

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
                raise ValueError(f"{self._who}(layers={layers_text(names)}): {err}") from err
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
            f"{CHANGE_TEXT[m]}, probe {p}": ["Multiline", [rf"^{self.prefix}/change/{m}/probe_{p}/"]]
            for p in probes
            for m in CHANGE
        }
        energy = {f"log10 spectral energy, probe {p}": ["Multiline", [rf"^{self.prefix}/log10_energy/probe_{p}/"]]
                  for p in probes}
        energy.update({f"spectral energy exactly zero, probe {p}": ["Multiline", [rf"^{self.prefix}/energy/probe_{p}/"]]
                       for p in probes})
        return {f"{self.prefix} change since the baseline": change, f"{self.prefix} spectral energy": energy}

    def hparams(self) -> dict[str, Any]:
        return {
            "transform": self.transform,
            "INCL": self.INCL,
            "layers": ", ".join(self.layernames),
            "layer_choice": layers_text(self.layers),
            "probes": int(self._header.get("probes", 0)),
            "probe_shape": "×".join(map(str, self._header.get("probe_shape", [])[1:])),
            "colour_scale": self.colour_scale,
        }

    def describe(self) -> str:
        scale = (
            "fixed per layer at the baseline record (epoch 0), over all probes, with 2 decades of headroom above"
            " the layer's peak: equal colours mean equal values at every epoch; a record that outgrows it is drawn"
            " on a widened range, and the card says so"
            if self.colour_scale == "baseline"
            else "each card's own range"
        )
        rows = "\n".join(
            f"| {i:02d} | {name} | {'×'.join(map(str, shape))} |"
            for i, name, shape in zip(self._layers, self.layernames, self.shapes)
        )
        return (
            f"**Spectra of the probes' activation patterns** ({self._who})\n\n"
            f"* transform: {TRANSFORM_TEXT.get(self.transform, self.transform)}\n"
            f"* INCL: {self.INCL} ({'structural graph' if self.INCL else 'data-dependent graph'})\n"
            f"* probes: {self._header.get('probes')} of shape {self._header.get('probe_shape', [])[1:]}\n"
            f"* layers ({layers_text(self.layers)}):\n\n| # | layer | shape |\n|---|---|---|\n{rows}\n\n"
            "**Reading the images.** Activations, spectra and differences ŝ − ŝ₀ (the spectrum now minus the"
            " baseline's): red positive, blue negative, white 0, on a signed log10 scale in whole decades (colour"
            " bars read −10^k … 0 … 10^k), since values grow by decades while a network trains and spectra span"
            f" hundreds; magnitudes below the bar's smallest decade fade to white. Colour range: {scale}; a"
            " difference card has its own range.\n\n"
            "**Change since the baseline** (`spectrum/change/...`, chart `spectrum/00_change`): relative change"
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
        result.scalars = self._energy_scalars(record)
        change = change_since_baseline(self._baseline, record)
        for measure, values in change.items():
            for p in range(record.num_probes):
                for l in range(len(record.layernames)):
                    # A layer whose baseline spectrum is zero has no finite relative change
                    # once it moves: charts cannot draw ±inf or NaN.
                    if np.isfinite(values[p, l]):
                        result.scalars[f"change/{measure}/probe_{p}/{self._tag(l)}"] = float(values[p, l])
        if not self.INCL:
            result.scalars["graph_rebuilt"] = float(rebuilt)
        self._history = [h for h in self._history if h[0] < context.epoch] + [(context.epoch, change)]
        self._last = {"epoch": context.epoch, "step": context.global_step, "predictions": probe_predictions(context)}
        return result

    def log(self, record: AnalysisRecord, sink: LogSink) -> None:
        """Cards of every probe's activations and spectrum per layer, histograms, the change chart, predictions."""
        if not sink.enabled:
            return
        names = record.meta["layernames"]
        epoch = self._last.get("epoch", 0)
        where = f"epoch {epoch}, step {self._last.get('step', sink.step)}"
        predictions = self._last.get("predictions") or []
        baseline = self._baseline
        fixed: dict[str, list[Any]] = {"activations": [None] * len(names), "spectrum": [None] * len(names)}
        if self.colour_scale == "baseline" and baseline is not None:
            if self._fixed[0] is not baseline:
                self._fixed = (baseline, fixed_decades(baseline.activations, baseline.spectra))
            fixed = self._fixed[1]
        since = None if baseline is None else baseline.epoch
        for p in range(record.meta["probes"]):
            label = f", label {predictions[p][0]}" if predictions and predictions[p][0] else ""
            for l in range(len(names)):
                spectrum = record.arrays[f"spectrum.{l}"][p]
                # No difference at the baseline itself: nothing has changed yet.
                kinds = CARD_KINDS if baseline is not None and epoch != since else CARD_KINDS[:2]
                for kind in kinds:
                    shown = "difference ŝ − ŝ₀" if kind == "difference" else kind
                    title = f"{self._tag(l)} · {shown} · probe {p}{label} · {shape_text(spectrum.shape)} · {where}"
                    # Drawn later, off the training thread: the record's arrays are its own, and nothing changes them.
                    tag = f"{self._tag(l)}/{kind}/probe_{p}"
                    if kind == "difference":
                        assert baseline is not None
                        sink.image_later(tag, difference_card, spectrum, baseline.spectra[p][l], title,
                                         baseline_epoch=since, threshold_of=fixed["spectrum"][l])
                    else:
                        sink.image_later(tag, card_image, kind, record.arrays[f"{kind}.{l}"][p], title,
                                         fixed=fixed[kind][l], baseline_epoch=since)
                magnitudes = np.abs(spectrum[np.isfinite(spectrum) & (spectrum != 0)])
                if magnitudes.size:
                    sink.histogram(f"{self._tag(l)}/log10_abs_spectrum/probe_{p}", np.log10(magnitudes))
            if p == 0 and self._history:
                # One chart, of the first probe (a figure costs a hundred cards); drawn later, from a copied history.
                sink.image_later(f"00_change/probe_{p}", change_chart, list(self._history), names, p, self._layers)
            if self._history:
                # One run per layer: TensorBoard colours runs apart and names them, so these charts
                # read at any card width, where a picture's legend does not.
                for measure, values in self._history[-1][1].items():
                    sink.scalars(
                        f"00_change/{measure}/probe_{p}", {self._tag(l): values[p, l] for l in range(len(names))}
                    )
        if predictions:
            lines = ["| probe | label | prediction | probability |", "|---|---|---|---|"]
            lines += [f"| {p} | {lab or '—'} | {pred} | {prob} |" for p, (lab, pred, prob) in enumerate(predictions)]
            sink.text("predictions", f"**{where}**\n\n" + "\n".join(lines))

    def _energy_scalars(self, record: SpectrumRecord) -> dict[str, float]:
        """``log10_energy/probe_<p>/<ii>_<layer>``, or ``energy/...`` = 0 where the spectrum is exactly zero.

        log10 of a zero energy is -inf, which TensorBoard cannot chart: such a layer is
        logged once, as its plain energy 0, and in no log10 family.
        """
        scalars = {}
        for p in range(record.num_probes):
            for l in range(len(record.layernames)):
                value = float(record.log10_energy[p, l])
                if np.isfinite(value):
                    scalars[f"log10_energy/probe_{p}/{self._tag(l)}"] = value
                elif record.energy[p, l] == 0:
                    scalars[f"energy/probe_{p}/{self._tag(l)}"] = 0.0
        return scalars

    def _tag(self, l: int) -> str:
        """The tag of recorded layer ``l``: its index in execution order, then its name (``03_conv2``)."""
        return f"{self._layers[l]:02d}_{self.layernames[l]}"

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
        return report_steps(records)

    @classmethod
    def report(cls, records: Sequence[Any], header: Mapping[str, Any], context: ReportContext) -> list[Section]:
        """Run and model, spectral energy, energy shares, heatmaps, and rebuilds or conditioning where present."""
        missing = [key for key in _HEADER_KEYS if key not in header]
        if missing:
            raise ValueError(
                f"nsp_lightning.report: the manifest in {context.directory} lacks {missing};"
                " it was not written by SpectrumCallback"
            )
        return report_sections(context.directory, header, list(records), context.step)

    @classmethod
    def document_title(cls, header: Mapping[str, Any]) -> str:
        return f"Spectral report: {header['model']}"

    def _update(self, context: ProbeContext) -> tuple[list[Any], list[str], bool]:
        activations = context.activations(self._capture, like=self._reference if self.INCL and self._graphs else None)
        if self.INCL:
            first = activations[0]
            structure = repr(list(zip(first.layernames, [a.shape for a in first.layeractivations], first.layerdescriptions)))
            fingerprints = [hashlib.blake2b(structure.encode(), digest_size=16).hexdigest()] * len(activations)
            if fingerprints[0] not in self._graphs and not first.has_dataflow:
                activations = context.activations(self._capture)  # a module changed inside: a new graph
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
        self._reference = acts
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


def layers_text(layers: Any) -> str:
    """The layer choice ``layers`` (as :class:`SpectrumAnalysis` takes it) in words, for hparams and cards."""
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
