"""Neural response maps over training
===================================

:class:`ResponseMapAnalysis` lays the network's neurons out once, by how they co-vary over
a fixed set of inputs (:class:`nsp.NeuralResponseMap`: Spearman correlation, then t-SNE),
and at every record draws each probe's response on that same layout, so that the maps of
different epochs are comparable pixel for pixel.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

import nsp.common.memory as memory
from nsp.response_map.layout import check_iterations
from nsp.response_map.responses import METRICS, non_finite_rows
from nsp_lightning.analyses.captions import probe_caption, probe_predictions, record_caption
from nsp_lightning.probe.analysis import (
    AnalysisRecord,
    LogSink,
    ProbeAnalysis,
    ProbeContext,
    check_arrays,
    read_probe_record,
)

__all__ = ["ResponseMapAnalysis"]

_ARRAYS = ("layout", "maps", "responses", "neuron_layer", "neuron_index")
# The layout's state (NeuralResponseMap.state, its layout being the record's own), kept so
# that a resumed run continues the same layout.
_STATE = ("keep", "raw", "lo", "span")
# The layout's t-SNE schedule by default (issue 21: a third of openTSNE's 250 + 500 iterations).
_FIT_ITER = (100, 150)


class ResponseMapAnalysis(ProbeAnalysis):
    """Each probe's neural response map, on one neuron layout fitted at fit start.

    When the layout is fitted: in :meth:`setup`, at fit start, i.e. on the weights the
    baseline record sees (the untrained network on a fresh fit). A resumed run takes the
    layout (and the neurons' scaling) back from its last record, so the layout stays the
    same across the resume as in an uninterrupted run. With ``refit=True`` every later record first
    refits the layout on the same inputs for the current weights, starting from the
    previous layout (``refit_iter`` iterations, no early exaggeration), so that it stays
    aligned, and logs how far the neurons moved as the Procrustes disparity between the
    two layouts (scalar ``procrustes_disparity``; 0: the same up to rotation, reflection
    and scale).

    At every record: each probe's map (its neurons' activations scaled to [0, 1] by their
    range over ``inputs``, interpolated over the layout) is kept in the record and logged to
    TensorBoard as the image ``<prefix>/probe_<p>``: the map with its colour bar (0 to 1),
    beside it the layout's layer regions (each point coloured by its nearest neuron's
    layer) with a legend, under a title naming the epoch and step, the probe, its label
    and its prediction (:func:`nsp.response_map.map_card`); the report shows every probe's
    maps with an epoch slider.

    TensorBoard's embedding projector gets the 2-D layout, at the first record and again
    only when it changes (a refit): every neuron (``<prefix>/layout/all``) and each
    layer's neurons (``<prefix>/layout/<ii>_<layer>``, ``<ii>`` the layer's position).
    Each neuron's metadata are its layer, its index in the layer and each probe's response
    at that record (0 to 1, as in the maps): "Color by" colours the neurons by layer or by
    a probe's response. The projector always opens a 3-D PCA (TensorBoard has no setting
    for its first view): the layout is written with a zero third column, so that it lies
    flat in the plane of the first two components (100 % of the variance; a 2-column
    tensor would read "NaN%" and show no point). Untick the PCA's 3-D box for a flat view;
    PCA may turn or mirror the layout to its principal axes.

    TensorBoard shows at most 10 images per tag unless started with
    ``--samples_per_plugin images=N``; the records keep every map.

    Cost at the defaults on the digits demo (4 probes; ``benchmarks/analysis_overhead.py``,
    BENCHMARKS.md "Quiet rerun of issue 21's and 23's acceptance figures"; a quiet 2-core
    machine, one torch thread, 4-epoch fits): the layout at fit start (the t-SNE of 240
    channels: 153 ms of CPU, 456 ms with openTSNE's schedule) and a record of 44 ms (min) /
    51 ms (median) on the training thread, 2.1 % of the demo's epoch; the hooks, the layout
    included, hold 5.0 % of a fit (7.0 % with openTSNE's schedule beside it), and the fit
    takes 7.6 % longer (6.4 % beside it, within two children's noise).

    Args:
        inputs: The fixed inputs ``(B, *input_shape)`` the layout is fitted on, B >= 3
            (e.g. a few hundred training images). Default: the probe batch itself.
        layers: Which module outputs to lay out, as for
            :meth:`nsp.NeuralResponseMap.TrainMap`: ``None`` (every top-level child
            except the output), module names at any depth, or submodules.
        units: ``'channels'`` (a conv channel, averaged over space, is one neuron) or
            ``'all'`` (every element is one).
        method: ``'linear'`` (the default here: smooth maps) or ``'nearest'``.
        resolution: Pixels per side of a map.
        scale: Where each neuron's [0, 1] range comes from: ``'record'`` (the default: its
            range over ``inputs`` with the weights of the record, so that a neuron whose
            activations grow during training is not saturated) or ``'fit'`` (its range when
            the layout was fitted, as the original does for every map).
        refit: Refit the layout at every record after the first.
        refit_iter: t-SNE iterations of a refit.
        fit_iter: t-SNE iterations of the layout at fit start: ``(early exaggeration, then
            plain)``, or None for openTSNE's own ``(250, 500)``, which cost 2.5-3× as much for a slightly finer
            layout: on the digits CNN's 240-270 channels, trustworthiness at 10 neighbours of
            0.89, 0.93 and 0.98 against 0.89, 0.95 and 0.99 (untrained and trained on 256
            digits, and on the demo's 4 probes).
        perplexity: t-SNE perplexity.
        seed: Seed of the layout.
        metric: The neurons' similarity the layout is made from: ``'spearman'`` (the
            default, as the original), ``'pearson'`` or ``'cosine'``.
        cmap: matplotlib colormap of the images.
        name: The analysis's name (record directory and tag prefix).

    Raises:
        ValueError: If ``inputs`` has fewer than 3 inputs, NaN or infinite values, or another
            shape than the probes, an argument is out of range, or (at fit start) a layer is unknown.
        TypeError: If ``inputs`` is not a tensor or a whole number is not an int.
        MemoryError: If a map at ``resolution`` (when built) or the maps of every probe (at
            fit start) would not fit in the memory available (:mod:`nsp.common.memory`); the
            message gives the estimate.

    Example::

        analysis = ResponseMapAnalysis(inputs=x_train[:256], layers=["conv1", "conv2", "fc1"])
        trainer = Trainer(callbacks=[ProbeCallback(x_val[:4], analyses=[analysis])])
    """

    # Records name an analysis by its class's path; this is the public one, which does not
    # change when the package's modules are reorganised.
    __module__ = "nsp_lightning.analyses.response_map"

    name = "response_map"
    title = "Neural response maps"

    def __init__(
        self,
        inputs: torch.Tensor | None = None,
        layers: Sequence[Any] | None = None,
        *,
        units: str = "channels",
        method: str = "linear",
        resolution: int = 256,
        scale: str = "record",
        refit: bool = False,
        refit_iter: int = 250,
        fit_iter: tuple[int, int] | None = _FIT_ITER,
        perplexity: float = 30.0,
        seed: int = 0,
        cmap: str = "viridis",
        metric: str = "spearman",
        name: str | None = None,
    ) -> None:
        where = "ResponseMapAnalysis"
        if inputs is not None:
            if not isinstance(inputs, torch.Tensor):
                raise TypeError(f"{where}: expected `inputs` to be a torch.Tensor, got {type(inputs).__name__}")
            if inputs.dim() < 2 or inputs.shape[0] < 3:
                raise ValueError(
                    f"{where}: expected `inputs` of shape (B, *input_shape) with B >= 3 to correlate neurons, "
                    f"got {list(inputs.shape)}"
                )
            shown = non_finite_rows(inputs)
            if shown:
                raise ValueError(f"{where}: `inputs` {shown} hold NaN or infinite values, which would silently drop "
                                 "every neuron they reach; remove or repair them first")
        for argname, value, low in (("resolution", resolution, 2), ("refit_iter", refit_iter, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{where}: expected `{argname}` to be an int, got {value!r}")
            if value < low:
                raise ValueError(f"{where}: expected `{argname}` >= {low}, got {value!r}")
        if isinstance(perplexity, bool) or not isinstance(perplexity, (int, float)) or not 0 < perplexity < math.inf:
            raise ValueError(f"{where}: expected `perplexity` > 0, got {perplexity!r}")
        check_iterations(fit_iter, where, "fit_iter")
        if metric not in METRICS:
            raise ValueError(f"{where}: expected `metric` to be one of {METRICS}, got {metric!r}")
        # The map's grid (NeuralResponseMap's estimate), refused here rather than at fit start.
        memory.require(4 * 8 * int(resolution) ** 2, f"{where}: a {resolution}x{resolution} map",
                       "choose a smaller `resolution`")
        if units not in ("channels", "all"):
            raise ValueError(f"{where}: expected `units` to be 'channels' or 'all', got {units!r}")
        if method not in ("linear", "nearest"):
            raise ValueError(f"{where}: expected `method` to be 'linear' or 'nearest', got {method!r}")
        if scale not in ("record", "fit"):
            raise ValueError(f"{where}: expected `scale` to be 'record' or 'fit', got {scale!r}")
        from nsp.viz.colors import colormap

        colormap(cmap, where)
        if name is not None:
            self.name = name
        self.inputs = None if inputs is None else inputs.detach()
        self.layers = None if layers is None else list(layers) if not isinstance(layers, (str, nn.Module)) else [layers]
        self.units = units
        self.method = method
        self.resolution = int(resolution)
        self.scale = scale
        self.refit = bool(refit)
        self.refit_iter = int(refit_iter)
        self.fit_iter = None if fit_iter is None else (int(fit_iter[0]), int(fit_iter[1]))
        self.perplexity = float(perplexity)
        self.seed = int(seed)
        self.cmap = cmap
        self.metric = metric
        self._map: Any = None
        self._fitted_at: int | None = None
        # What the images of the last record name: its epoch, step and the probes' predictions.
        self._shown: tuple[int, int, list[tuple[str, str, str]]] = (0, 0, [])
        self._logged_layout: str | None = None

    def check(self, model: nn.Module, probes: torch.Tensor) -> None:
        if self.inputs is None and probes.shape[0] < 3:
            raise ValueError(
                f"ResponseMapAnalysis: the probe batch has {probes.shape[0]} input(s); pass `inputs` with at least "
                "3 (better a few hundred) to fit the layout on"
            )
        if self.inputs is not None and tuple(self.inputs.shape[1:]) != tuple(probes.shape[1:]):
            raise ValueError(
                f"ResponseMapAnalysis: `inputs` have shape {list(self.inputs.shape)}, but the probes "
                f"{list(probes.shape)}: they must be inputs of the same kind"
            )
        shown = non_finite_rows(probes)
        if shown:
            raise ValueError(f"ResponseMapAnalysis: the probes {shown} hold NaN or infinite values; a map needs "
                             "finite inputs")
        # Every record holds one float32 map per probe.
        memory.require(4 * probes.shape[0] * self.resolution ** 2,
                       f"ResponseMapAnalysis: the maps of {probes.shape[0]} probes at {self.resolution}x{self.resolution}",
                       "use fewer probes or a smaller `resolution`")
        names = dict(model.named_modules())
        unknown = [n for n in self.layers or [] if isinstance(n, str) and n not in names]
        if unknown:
            raise ValueError(f"ResponseMapAnalysis(layers={self.layers!r}): unknown layers {unknown}")

    def setup(self, model: nn.Module, probes: torch.Tensor, context: ProbeContext) -> None:
        from nsp.response_map import NeuralResponseMap

        self._inputs = (probes if self.inputs is None else self.inputs).to(probes.device, probes.dtype)
        self._map = NeuralResponseMap(
            model, units=self.units, perplexity=self.perplexity, seed=self.seed, resolution=self.resolution,
            metric=self.metric,
        )
        self._logged_layout = None
        directory = context.directories.get(self.name)
        last = _last_record(directory)
        if last is None:
            self._map.train_map(self._inputs, self.layers, iterations=self.fit_iter)
            self._fitted_at = context.epoch
            return
        state = {k: last.arrays[f"state_{k}"] for k in _STATE if f"state_{k}" in last.arrays}
        state["layout"] = last.arrays["layout"]
        try:
            self._map.load_state(self._inputs, self.layers, state)
        except ValueError as err:
            raise ValueError(
                f"ResponseMapAnalysis: cannot continue the layout of epoch {last.epoch}'s record in {directory}: {err}"
            ) from err
        self._fitted_at = last.epoch

    def header(self) -> dict[str, Any]:
        return {
            "layers": None if self.layers is None else [n if isinstance(n, str) else type(n).__name__ for n in self.layers],
            "units": self.units,
            "method": self.method,
            "resolution": self.resolution,
            "scale": self.scale,
            "inputs": None if self.inputs is None else list(self.inputs.shape),
            "fit": "at fit start (the baseline's weights)",
            "refit": self.refit,
            "refit_iter": self.refit_iter,
            "perplexity": self.perplexity,
            "seed": self.seed,
            "cmap": self.cmap,
            # Only a metric or schedule other than the default is named, so that a series recorded
            # before they existed can still be continued (a resumed run takes its layout back).
            **({"metric": self.metric} if self.metric != "spearman" else {}),
            **({"fit_iter": self.fit_iter and list(self.fit_iter)} if self.fit_iter != _FIT_ITER else {}),
        }

    def compute(self, model: nn.Module, probes: torch.Tensor, context: ProbeContext) -> AnalysisRecord:
        if self._map is None:
            raise RuntimeError("ResponseMapAnalysis.compute: no layout; setup() runs first, at fit start")
        scalars: dict[str, float] = {}
        refitted = self.refit and context.epoch != self._fitted_at
        if refitted:
            scalars["procrustes_disparity"] = self._map.refit(self._inputs, n_iter=self.refit_iter)
        elif self.scale == "record" and context.epoch != self._fitted_at:
            self._map.rescale(self._inputs)
        responses = self._map.scaled_responses(probes)
        maps = np.empty((len(responses), self.resolution, self.resolution), dtype=np.float32)
        for p, r in enumerate(responses):
            maps[p] = self._map.map_values(r, self.method)
        layers = self._map.layers
        position = {name: i for i, name in enumerate(layers)}
        self._shown = (context.epoch, context.global_step, probe_predictions(context))
        return AnalysisRecord(
            arrays={
                "layout": self._map.layout.copy(),
                "maps": maps,
                "responses": responses.astype(np.float32),
                "neuron_layer": np.array([position[n] for n, _ in self._map.neurons], dtype=np.int32),
                "neuron_index": np.array([i for _, i in self._map.neurons], dtype=np.int64),
                **{f"state_{k}": v for k, v in self._map.state().items() if k != "layout"},
            },
            scalars=scalars,
            meta={"layers": layers, "refitted": refitted},
            summary={"neurons": len(self._map.neurons), "refitted": refitted},
        )

    def log(self, record: AnalysisRecord, sink: LogSink) -> None:
        if not sink.enabled:
            return
        from nsp.response_map import layer_regions, map_card

        layers = record.meta["layers"]
        epoch, step, predictions = self._shown
        maps, neuron_layer = record.arrays["maps"], record.arrays["neuron_layer"]
        counts = np.bincount(neuron_layer, minlength=len(layers)).tolist()
        # Every map of a record shares one layout and grid: the regions are found once.
        regions = layer_regions(record.arrays["layout"], neuron_layer, np.isfinite(maps[0])) if len(maps) else None
        for p, grid in enumerate(maps):
            title = [f"{self.name} · {record_caption(epoch, step)}", probe_caption(p, predictions)]
            sink.image(f"probe_{p}", map_card(grid, regions, layers, title=title, counts=counts, cmap=self.cmap,
                                              bar_label="each neuron scaled to its range"))
        layout = record.arrays["layout"]
        digest = hashlib.sha1(np.ascontiguousarray(layout).tobytes()).hexdigest()
        if digest == self._logged_layout:
            return  # the projector keeps every embedding it is given: a copy per record would list the same one
        self._logged_layout = digest
        responses = record.arrays["responses"]
        header = ["layer", "index", *(f"response of probe {p}" for p in range(len(responses)))]
        rows = [
            [f"{l:02d}_{layers[l]}", str(i), *(f"{r:.4g}" for r in responses[:, n])]
            for n, (l, i) in enumerate(zip(neuron_layer, record.arrays["neuron_index"]))
        ]
        sink.embedding("layout/all", layout, rows, header)
        for l, name in enumerate(layers):
            members = np.flatnonzero(neuron_layer == l)
            if members.size:
                sink.embedding(f"layout/{l:02d}_{name}", layout[members], [rows[n] for n in members], header)

    @classmethod
    def read_record(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any], path: Path) -> Any:
        missing = [name for name in _ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"ResponseMapAnalysis: the record {path} lacks the array(s) {missing}")
        n = len(arrays["layout"])
        if arrays["layout"].shape != (n, 2) or arrays["responses"].shape[1:] != (n,) or arrays["maps"].ndim != 3:
            raise ValueError(
                f"ResponseMapAnalysis: the record {path} has inconsistent shapes: layout "
                f"{list(arrays['layout'].shape)}, responses {list(arrays['responses'].shape)}, "
                f"maps {list(arrays['maps'].shape)}"
            )
        return read_probe_record(arrays, meta, path)

    @classmethod
    def check_record(cls, record: Any, header: dict[str, Any], path: Path) -> None:
        """Shapes that agree (N neurons, P probes) and neuron layers that index the record's layer names."""
        who = cls.__name__
        neurons = check_arrays(record.arrays, path, who, {
            "layout": ("f", 2), "neuron_layer": ("iu", 1), "neuron_index": ("iu", 1),
        })
        probes = check_arrays(record.arrays, path, who, {"maps": ("f", 3), "responses": ("f", 2)})
        if record.arrays["layout"].shape[1] != 2 or record.arrays["responses"].shape != (probes, neurons):
            raise ValueError(f"{who}: the record {path} has a layout of shape {list(record.arrays['layout'].shape)}"
                             f" and responses of shape {list(record.arrays['responses'].shape)}; expected ({neurons}, 2)"
                             f" and ({probes}, {neurons})")
        layers = record.meta.get("layers")
        if not isinstance(layers, list) or not all(isinstance(n, str) for n in layers):
            raise ValueError(f"{who}: the record {path} has layers {layers!r}, expected a list of layer names")
        index = record.arrays["neuron_layer"]
        if index.size and (int(index.min()) < 0 or int(index.max()) >= len(layers)):
            raise ValueError(f"{who}: the record {path} has neuron layers outside 0..{len(layers) - 1}")

    @classmethod
    def report_steps(cls, records: Sequence[Any], header: Mapping[str, Any]) -> int:
        return 1 + records[-1].arrays["maps"].shape[0]

    @classmethod
    def report(cls, records: Sequence[Any], header: Mapping[str, Any], context: Any) -> Any:
        from nsp.response_map import to_rgb
        from nsp_lightning.report.sections import Facts, Film, Frame, Image, Row, Section, Table, Text

        cmap = header.get("cmap", "viridis")
        last = records[-1]
        facts = [
            ("records", str(context.directory)),
            ("epochs", ", ".join(str(r.epoch) for r in records)),
            ("neurons", f"{len(last.arrays['layout']):,} in layers {', '.join(last.meta.get('layers', []))}"),
            ("layout", f"fitted {header.get('fit', 'at fit start')}; "
                       + ("refitted at every later record" if header.get("refit") else "the same at every record")),
            ("maps", f"{header.get('method')} interpolation, {header.get('resolution')} px a side, "
                     "0 (dark) to 1 (bright): each neuron scaled by its range over the layout's inputs "
                     + ("at the record" if header.get("scale", "record") == "record" else "when the layout was fitted")),
        ]
        blocks: list[Any] = [
            Text("Neurons that co-vary over the layout's inputs lie close together; each map colours a "
                 "probe's response over that layout. White: outside the neurons' convex hull."),
            Facts(facts),
        ]
        probes = last.arrays["maps"].shape[0]
        films = []
        for p in range(probes):
            frames = []
            for record in records:
                frames.append(Frame(f"epoch {record.epoch} (global step {record.global_step})",
                                    Image.from_rgb(to_rgb(record.arrays["maps"][p], cmap), f"probe {p}, epoch {record.epoch}", lossy=True)))
            films.append(Film(f"probe {p}", frames))
            context.step(f"maps of probe {p}")
        blocks.append(Row(films, heading="Maps per epoch"))
        if header.get("refit"):
            rows = [[str(r.epoch), f"{r.scalars['procrustes_disparity']:.4f}" if "procrustes_disparity" in r.scalars else "fit"]
                    for r in records]
            blocks.append(Table("how far the neurons moved at each refit (Procrustes disparity)", ["epoch", "disparity"], rows))
        context.step(f"section {context.name}")
        return Section(context.name.replace("_", "-"), cls.title or context.name, blocks)


def _last_record(directory: str | None) -> Any:
    """The latest record of a series this run continues, or None for a new series."""
    from nsp_lightning.probe.store import read_records

    if not directory or not Path(directory, "manifest.json").exists():
        return None
    records = read_records(directory)
    return max(records, key=lambda r: r.epoch) if records else None
