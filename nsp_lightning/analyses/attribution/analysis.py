"""Attribution over training
=========================

:class:`AttributionAnalysis` computes each probe's attribution with chosen methods of
:mod:`nsp.attribution` at every record, logs the overlays on the probes, and tracks two
rank correlations per probe and method: with the baseline record (how far the explanation
has moved since training began) and with the same attribution after the top layer's
weights are randomised (the model-randomisation sanity check of Adebayo et al., 2018: an
explanation that survives it does not explain the model).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from nsp_lightning.analyses.captions import probe_caption, probe_predictions, record_caption
from nsp_lightning.probe.analysis import AnalysisRecord, LogSink, ProbeAnalysis, ProbeContext, check_arrays

__all__ = ["AttributionAnalysis"]



class AttributionAnalysis(ProbeAnalysis):
    """Each probe's attributions, their overlays and two rank correlations, at every record.

    At every record, for each method and probe ``p``:

    - the attribution (``nsp.attribution.attribute``) is kept in the record (array
      ``<method>``, shaped like the probes, or ``(P, 1, h, w)`` for Grad-CAM) and drawn over
      the probe as the TensorBoard image ``<prefix>/<method>/probe_<p>``: the input and the
      overlay side by side, each overlay's colour bar with its values, and a title naming
      the method, the epoch and step, the probe, its label (where the probe batch has
      labels), its prediction, the class explained and (Grad-CAM) the layer
      (:func:`nsp.attribution.plot.overlay_card`);
    - scalar ``<method>/probe_<p>/baseline_rho``: Spearman's rank correlation with the
      attribution of the series' first record (1 at the baseline; a resumed run reads
      that record back from the record directory);
    - scalar ``<method>/probe_<p>/sanity_rho``: Spearman's rank correlation with the
      attribution of a copy of the model whose top layer (``sanity_layer``) is
      re-initialised. Low means the explanation depends on what the network learned;
      guided backprop is known to stay high.

    The report shows the overlays per epoch (one film per method, all probes side by side)
    and both correlations over the records. Gradients are re-enabled for the computation
    (``context.enable_grad()``), so records work under ``trainer.validate()`` and
    ``trainer.test()`` too, where Lightning runs in inference mode.

    TensorBoard shows at most 10 images per tag unless started with
    ``--samples_per_plugin images=N``; the records keep every attribution.

    Cost at the defaults on the digits demo (4 probes; ``benchmarks/analysis_overhead.py``,
    BENCHMARKS.md "Per-analysis overhead"; quiet 2-core machine, one torch thread): 29 ms
    (min) / 30 ms (median) a record on the training thread, 1.3 % of the demo's epoch
    measured beside it; 2.2 % of a fit.

    Args:
        methods: Names in ``nsp.attribution.METHODS``, or a mapping of names to their
            options (JSON values: numbers, strings, lists), e.g.
            ``{"saliency": {}, "smoothgrad": {"samples": 10}}``.
        target: The class to explain for every probe (an int or one per probe). Default:
            each probe's prediction at the record.
        layer: The layer of Grad-CAM and guided Grad-CAM: a dotted name in the
            LightningModule (``"model.layer4"``) or the module itself (recorded by its
            name). Default: the last convolution that runs.
        sanity_layer: The layer the sanity check randomises, a dotted name or the module.
            Default: the last module with parameters (the output layer).
        sanity: Compute ``sanity_rho`` (it doubles the cost: a model copy per record).
        mode: How overlays are drawn: ``'signed'``, ``'absolute'`` or ``'posneg'``
            (``nsp.attribution.plot``).
        seed: Seed of the randomised top layer (the same at every record).
        name: The analysis's name (record directory and tag prefix).

    Raises:
        ValueError: For an unknown method, option, mode, or (at fit start) a layer or
            target the model does not have.
        TypeError: For options that are not JSON values.
        ImportError: If captum (``pip install 'nsp-lightning[attribution]'``) is missing.

    Example::

        analysis = AttributionAnalysis(["saliency", "gradcam", "guided_backprop"], layer="conv2")
        trainer = Trainer(callbacks=[ProbeCallback(x_val[:4], analyses=[analysis])])
    """

    # Records name an analysis by its class's path; this is the public one, which does not
    # change when the package's modules are reorganised.
    __module__ = "nsp_lightning.analyses.attribution"

    name = "attribution"
    title = "Attribution"

    def __init__(
        self,
        methods: Sequence[str] | Mapping[str, Mapping[str, Any]] = ("saliency", "gradcam"),
        *,
        target: int | Sequence[int] | None = None,
        layer: str | nn.Module | None = None,
        sanity_layer: str | nn.Module | None = None,
        sanity: bool = True,
        mode: str = "signed",
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        import nsp.attribution as attribution
        from nsp.attribution.plot import MODES

        who = type(self).__name__
        if isinstance(methods, str):
            methods = [methods]
        if isinstance(methods, Mapping):
            chosen = {m: dict(o or {}) for m, o in methods.items()}
        elif isinstance(methods, Sequence) and methods:
            chosen = {m: {} for m in methods}
        else:
            raise TypeError(f"{who}(methods={methods!r}): expected method names or a mapping of names to options")
        if not chosen:
            raise ValueError(f"{who}(methods={methods!r}): choose at least one method")
        for method, options in chosen.items():
            cls = attribution.method_class(method, f"{who}(methods)")
            known = {**cls.options(), "sign": "signed"}
            unknown = sorted(set(options) - set(known))
            if unknown:
                raise ValueError(f"{who}(methods): unknown option(s) {', '.join(unknown)} of {method!r}; it takes "
                                 f"{', '.join(known)}")
        try:
            json.dumps(chosen, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{who}(methods): options must be JSON values (numbers, strings, lists): {err}") from err
        if target is not None and not (
            (isinstance(target, int) and not isinstance(target, bool))
            or (isinstance(target, Sequence) and all(isinstance(t, int) and not isinstance(t, bool) for t in target))
        ):
            raise TypeError(f"{who}(target={target!r}): expected None, an int or a sequence of int")
        for argname, value in (("layer", layer), ("sanity_layer", sanity_layer)):
            if value is not None and not isinstance(value, (str, nn.Module)):
                raise TypeError(f"{who}({argname}={value!r}): expected a dotted module name, a module or None")
        if mode not in MODES:
            raise ValueError(f"{who}(mode={mode!r}): expected one of {', '.join(map(repr, MODES))}")
        if not isinstance(sanity, bool):
            raise TypeError(f"{who}(sanity={sanity!r}): expected a bool")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"{who}(seed={seed!r}): expected an int")
        self.methods = chosen
        self.target = list(target) if isinstance(target, Sequence) else target
        self.layer, self.sanity_layer, self.sanity, self.mode, self.seed = layer, sanity_layer, sanity, mode, seed
        if name is not None:
            self.name = name
        self._baseline: dict[str, torch.Tensor] | None = None
        self._probe_count: int | None = None
        # What the images of the last record name: its epoch, step and the probes' predictions.
        self._shown: tuple[int, int, list[tuple[str, str, str]]] = (0, 0, [])

    def check(self, model: nn.Module, probes: torch.Tensor) -> None:
        """Check the probes, the model's output and every named layer against one forward pass.

        Raises
        ------
        TypeError
            If the probes are not floating-point.
        ValueError
            If the model's output is not a tensor ``(N, classes)`` or ``(N,)`` (what
            :func:`nsp.attribution.attribute` explains), if ``layer`` or ``sanity_layer``
            is unknown or never runs on the probes (the error lists the modules that ran),
            or if ``target`` is out of range.
        """
        from nsp.attribution.base import resolve_layer
        from nsp.common.modes import eval_mode
        from nsp.common.tracer import trace

        who = type(self).__name__
        if not probes.is_floating_point():
            raise TypeError(f"{who}: the probes have dtype {probes.dtype}; attribution needs floating-point inputs")
        self._probe_count = int(probes.shape[0])
        with eval_mode(model), torch.no_grad():
            traced = trace(model, probes)
        outputs = traced.output
        if not isinstance(outputs, torch.Tensor) or outputs.dim() not in (1, 2) or outputs.shape[0] != probes.shape[0]:
            got = list(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            raise ValueError(f"{who}: the model ({type(model).__name__}) returns {got} for {probes.shape[0]} probes; "
                             f"attribution explains one output tensor (N, classes) or (N,). Wrap the model so that "
                             f"it returns the logits to explain")
        for argname, value in (("layer", self.layer), ("sanity_layer", self.sanity_layer)):
            if value is None:
                continue
            module = resolve_layer(model, value, f"{who}({argname})")
            # Records and their header name the layer; a module given as such is named here.
            name = next(n for n, m in model.named_modules() if m is module)
            setattr(self, argname, name)
            if traced.calls.get(module, 0) == 0:
                ran = [traced.name(m) for m in traced.order if traced.name(m)]
                raise ValueError(f"{who}({argname}={name!r}): {name!r} never runs in the model's forward pass on "
                                 f"the probes; the modules that run are: {', '.join(ran)}")
        if self.target is not None:
            classes = outputs.shape[1] if outputs.dim() == 2 else 0
            targets = [self.target] if isinstance(self.target, int) else self.target
            if len(targets) not in (1, probes.shape[0]) or not all(0 <= t < classes for t in targets):
                raise ValueError(f"{who}(target={self.target!r}): expected one class or one per probe "
                                 f"({probes.shape[0]}), each in 0..{classes - 1}")

    def setup(self, model: nn.Module, probes: torch.Tensor, context: ProbeContext) -> None:
        self._baseline = None

    def header(self) -> dict[str, Any]:
        return {
            "methods": self.methods, "target": self.target, "layer": self.layer, "sanity_layer": self.sanity_layer,
            "sanity": self.sanity, "mode": self.mode, "seed": self.seed, "probes": self._probe_count,
        }

    def custom_scalars(self) -> dict[str, dict[str, list[Any]]]:
        prefix = self.prefix
        charts = {}
        for method in self.methods:
            charts[f"{method}: rank correlation with the baseline"] = ["Multiline", [rf"^{prefix}/{method}/probe_\d+/baseline_rho$"]]
            if self.sanity:
                charts[f"{method}: sanity (top layer randomised)"] = ["Multiline", [rf"^{prefix}/{method}/probe_\d+/sanity_rho$"]]
        return {self.title or self.name: charts}

    def compute(self, model: nn.Module, probes: torch.Tensor, context: ProbeContext) -> AnalysisRecord:
        from nsp.attribution import METHODS, LayerAttribution, attribute, randomize_top_layer, spearman

        outputs = context.outputs()
        # A model with one output per probe has no class to choose: attribute() explains it as is.
        target = (outputs.argmax(dim=1) if outputs.dim() == 2 else None) if self.target is None else self.target
        results: dict[str, torch.Tensor] = {}
        scalars: dict[str, float] = {}
        with context.enable_grad():
            randomized = randomize_top_layer(model, self.sanity_layer, seed=self.seed) if self.sanity else None
            for method, options in self.methods.items():
                layer = self.layer if issubclass(METHODS[method], LayerAttribution) else None
                results[method] = attribute(model, probes, method, target=target, layer=layer, **options).cpu()
                if randomized is not None:
                    other = attribute(randomized, probes, method, target=target, layer=layer, **options).cpu()
                    for p, rho in enumerate(spearman(results[method], other)):
                        scalars[f"{method}/probe_{p}/sanity_rho"] = float(rho)
        if self._baseline is None and context.epoch > 0:
            self._baseline = _baseline_on_disk(self, context)
        if self._baseline is None:
            self._baseline = results
        for method, values in results.items():
            base = self._baseline.get(method)
            rhos = spearman(values, base) if base is not None and base.shape == values.shape else [math.nan] * len(values)
            for p, rho in enumerate(rhos):
                scalars[f"{method}/probe_{p}/baseline_rho"] = float(rho)
        arrays = {method: values.float().numpy() for method, values in results.items()}
        arrays["probes"] = probes.detach().float().cpu().numpy()
        # -1: the model returns one value per probe, explained without a class.
        arrays["target"] = torch.as_tensor(-1 if target is None else target).reshape(-1).expand(
            probes.shape[0]).cpu().numpy().astype(np.int64)
        self._shown = (context.epoch, context.global_step, probe_predictions(context))
        return AnalysisRecord(arrays=arrays, scalars=scalars, meta={"methods": list(results)})

    def log(self, record: AnalysisRecord, sink: LogSink) -> None:
        if not sink.enabled:
            return
        from nsp.attribution import METHODS, LayerAttribution
        from nsp.attribution.plot import overlay_card

        epoch, step, predictions = self._shown
        probes, targets = record.arrays["probes"], record.arrays["target"]
        for method in record.meta["methods"]:
            at = f" · layer {self.layer or 'the last conv'}" if issubclass(METHODS[method], LayerAttribution) else ""
            for p, values in enumerate(record.arrays[method]):
                explained = "the output" if targets[p] < 0 else f"class {targets[p]}"
                title = [f"{method} · {record_caption(epoch, step)}", probe_caption(p, predictions),
                         f"explains {explained} · {self.mode}{at}"]
                sink.image(f"{method}/probe_{p}", overlay_card(probes[p], values, mode=self.mode, title=title))

    @classmethod
    def check_header(cls, header: dict[str, Any], path: Path) -> None:
        methods = header.get("methods", {})
        if not isinstance(methods, dict):
            raise ValueError(f"{cls.__name__}: the manifest {path} has methods {methods!r}, expected an object")
        probes = header.get("probes")
        if probes is not None and (isinstance(probes, bool) or not isinstance(probes, int) or probes < 1):
            raise ValueError(f"{cls.__name__}: the manifest {path} has probes {probes!r}, expected an int >= 1")

    @classmethod
    def check_record(cls, record: Any, header: dict[str, Any], path: Path) -> None:
        """The probes and one attribution per probe for every method the record names, real-valued."""
        who = cls.__name__
        methods = record.meta.get("methods", [])
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise ValueError(f"{who}: the record {path} has methods {methods!r}, expected a list of names")
        probes = check_arrays(record.arrays, path, who, {"probes": ("f", None)})
        check_arrays(record.arrays, path, who, {m: ("f", None) for m in methods if m in record.arrays}, rows=probes)
        expected = header.get("probes")
        if expected is not None and probes != expected:
            raise ValueError(f"{who}: the record {path} holds {probes} probe(s), but its series has {expected} "
                             f"(the manifest's header)")

    @classmethod
    def report_steps(cls, records: Sequence[Any], header: Mapping[str, Any]) -> int:
        return 1 + len(header.get("methods", {}))

    @classmethod
    def report(cls, records: Sequence[Any], header: Mapping[str, Any], context: Any) -> Any:
        from nsp.attribution.plot import overlay_rgb
        from nsp_lightning.report.sections import Facts, Film, Frame, Image, Row, Section, Text, scalar_chart

        mode = header.get("mode", "signed")
        epochs = [r.epoch for r in records]
        methods = list(header.get("methods", {}))
        probes = records[-1].arrays["probes"].shape[0]
        facts = [
            ("records", str(context.directory)),
            ("epochs", f"{len(records)} record(s) at epochs {', '.join(map(str, epochs))}"),
            ("methods", ", ".join(f"{m} {json.dumps(o)}" if o else m for m, o in header.get("methods", {}).items())),
            ("target", "each probe's prediction" if header.get("target") is None else json.dumps(header["target"])),
            ("Grad-CAM layer", header.get("layer") or "the last convolution"),
            ("sanity check", f"top layer {header.get('sanity_layer') or '(the last with parameters)'} randomised, "
                             f"seed {header.get('seed')}" if header.get("sanity") else "off"),
            ("overlays", f"{mode}; red positive, blue negative" if mode == "signed" else mode),
        ]
        blocks: list[Any] = [Facts(facts), Text(
            "baseline_rho: Spearman's rank correlation of each attribution with the first record's. "
            "sanity_rho: with the same attribution after the top layer's weights are randomised "
            "(Adebayo et al., 2018); an explanation of what the network learned should score low.")]
        charts = []
        for method in methods:
            for kind in ("baseline_rho", "sanity_rho"):
                series = {f"probe {p}": [r.scalars.get(f"{method}/probe_{p}/{kind}", math.nan) for r in records]
                          for p in range(min(probes, 10))}
                if any(np.isfinite(v).any() for v in series.values()):
                    charts.append(scalar_chart(epochs, series, f"{method}: {kind}"))
        if charts:
            blocks.append(Row(charts, heading="Rank correlations over the records"))
        context.step("charts")
        films = []
        for method in methods:
            frames = []
            for record in records:
                if method not in record.arrays:
                    continue
                panels = [overlay_rgb(record.arrays["probes"][p], record.arrays[method][p], mode=mode)
                          for p in range(probes)]
                frames.append(Frame(f"epoch {record.epoch} (global step {record.global_step})",
                                    Image.from_rgb(_side_by_side(panels), f"{method}, epoch {record.epoch}")))
            films.append(Film(f"{method}: probes 0..{probes - 1}", frames))
            context.step(f"overlays of {method}")
        blocks.append(Row(films, heading="Overlays per epoch"))
        return Section(context.name, cls.title or context.name, blocks)


def _baseline_on_disk(analysis: AttributionAnalysis, context: ProbeContext) -> dict[str, torch.Tensor] | None:
    """The first record's attributions of a series this run resumes, if its callback has them."""
    from nsp_lightning.probe.store import read_records

    for callback in getattr(context.trainer, "callbacks", None) or []:
        if any(a is analysis for a in getattr(callback, "analyses", [])):
            directory = getattr(callback, "record_dirs", {}).get(analysis.name)
            if directory and Path(directory, "manifest.json").exists():
                records = read_records(directory)
                if records:
                    first = min(records, key=lambda r: r.epoch)
                    return {m: torch.from_numpy(first.arrays[m]) for m in analysis.methods if m in first.arrays}
    return None


def _side_by_side(panels: list[np.ndarray], gap: int = 6) -> np.ndarray:
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for p in panels:
        out[: p.shape[0], x: x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out
