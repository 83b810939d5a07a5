"""Feature visualisation over training
===================================

:class:`FeatureVisAnalysis` renders chosen channels and classes with :mod:`nsp.optvis` at
every record, from the same seed and the same starting image each time, so that what
changes between epochs is the model and not the noise. The pictures go to TensorBoard as
image grids and to the records; the objective reached goes to both as scalars; the
report shows the grids per epoch and all of them as one mosaic (epochs down, targets
across), which is how the features form during training.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from nsp.viz.text import format_number
from nsp_lightning.analyses.captions import record_caption
from nsp_lightning.probe.analysis import AnalysisRecord, LogSink, ProbeAnalysis, ProbeContext, check_arrays

__all__ = ["FeatureVisAnalysis", "feature_grid", "feature_mosaic"]

# Tiles smaller than this are enlarged (nearest neighbour) in the grids, so that an 8×8
# digit stays visible.
MIN_TILE = 64
GAP = 2
# TensorBoard's images: tiles at least this large, four to a row, fit a card about 400
# pixels wide with their labels readable.
CARD_TILE = 96
CARD_COLUMNS = 4


def feature_grid(images: np.ndarray, gap: int = GAP, min_tile: int = MIN_TILE) -> np.ndarray:
    """Images ``(T, C, H, W)`` (uint8, C = 1 or 3) side by side as one ``(H', W', 3)`` uint8 RGB image.

    Each tile is enlarged by the smallest integer factor that makes it at least
    ``min_tile`` pixels high (nearest neighbour); tiles are ``gap`` white pixels apart.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError(f"feature_grid: expected uint8 images (T, 1 or 3, H, W), got {images.dtype} "
                         f"{list(images.shape)}")
    factor = max(1, math.ceil(min_tile / images.shape[2]))
    tiles = images.repeat(factor, axis=2).repeat(factor, axis=3)
    if tiles.shape[1] == 1:
        tiles = np.repeat(tiles, 3, axis=1)
    t, _, h, w = tiles.shape
    out = np.full((h, t * w + gap * (t - 1), 3), 255, dtype=np.uint8)
    for k, tile in enumerate(tiles):
        out[:, k * (w + gap): k * (w + gap) + w] = tile.transpose(1, 2, 0)
    return out


def _short(label: str) -> str:
    """A target's label in a few characters: ``'relu2:3'`` for ``'net.relu2/channel_3'``, ``'class 7'``."""
    if label.startswith("class_"):
        return f"class {label[len('class_'):]}"
    layer, _, channel = label.rpartition("/channel_")
    return f"{layer.rsplit('.', 1)[-1]}:{channel}"


def feature_mosaic(records: Sequence[Any], labels: Sequence[str]) -> np.ndarray:
    """Every record's images as one table: a row per record (named by its epoch), a column per target.

    Parameters
    ----------
    records : sequence of records
        Records read back (each with ``epoch`` and ``arrays["images"]``).
    labels : sequence of str
        The targets' labels (:meth:`FeatureVisAnalysis.labels`); columns are headed by a
        short form, ``'relu2:3'`` for channel 3 of ``relu2``, ``'class 7'``.

    Returns
    -------
    numpy.ndarray
        ``uint8`` RGB.
    """
    from nsp.viz.text import table_grid

    cells = [[feature_grid(r.arrays["images"][k: k + 1]) for k in range(len(labels))] for r in records]
    return table_grid(cells, [f"epoch {r.epoch}" for r in records], [_short(label) for label in labels])


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class FeatureVisAnalysis(ProbeAnalysis):
    """Channel and class visualisations of the model at every record, from one seed and one starting image.

    At every record all targets are rendered in one batch (:func:`nsp.optvis.render`):
    each target's image starts from the same noise, drawn from ``seed``, and the random
    transforms are drawn from ``seed`` too, so that a record differs from the last only
    because the model did. The budget is explicit: ``steps`` optimiser steps of a batch
    of ``len(channels) + len(classes)`` images of ``size`` pixels, each step one forward
    and one backward pass of the model (up to the deepest layer needed, or the whole model
    when classes are rendered). BENCHMARKS.md gives the cost per record.

    Cost with ``classes=range(10)`` and the other arguments at their defaults on the digits
    demo (``benchmarks/analysis_overhead.py``, BENCHMARKS.md "Quiet rerun of issue 21's and
    23's acceptance figures"; a quiet 2-core machine, one torch thread, 4-epoch fits): a record
    holds the training thread 91 ms (min) / 97 ms (median), 4.1 % of the demo's epoch; the
    epoch takes 5.4 % longer and the fit 6.2 % (the hooks 5.4 % of it), against 160 ms, +9.3 %
    and +9.8 % for the defaults before issue 21's budgets (64 steps, an objective per target)
    measured beside it. The cost scales with ``steps`` and the number of targets.

    Logged (``<prefix>`` is the analysis's name, ``feature_vis`` by default):

    - images ``<prefix>/channels`` and ``<prefix>/classes``: one grid each, the targets
      in the order given, four to a row, each tile named (layer and channel, or class)
      with the objective it reached (a class's log-probability as its probability),
      under a title naming the epoch and step;
    - scalars ``<prefix>/<layer>/channel_<c>/objective`` (the channel's mean activation
      on its image) and ``<prefix>/class_<k>/objective`` (the class's log-probability,
      or its logit with ``class_objective="logit"``), measured on the image itself.

    Records keep ``images`` ``(T, C, H, W)`` uint8, ``values`` and ``initial_values``
    ``(T,)`` (the objective of the final and the starting image).

    Args:
        channels: ``(layer, channel)`` pairs, or a mapping ``layer -> [channels]``; layers
            are dotted names in the LightningModule (``"net.conv2"``).
        classes: Output classes to render.
        steps: Optimiser steps per record.
        size: Image size (int or ``(H, W)``); default the probes'. The model is always
            shown the probes' size (images are resized to it).
        param: ``'fourier'`` or ``'pixel'`` (:mod:`nsp.optvis.param`).
        transforms: ``'default'`` (lucid's, scaled to the size) or None.
        lr: Adam's learning rate.
        seed: Seed of the starting image and of the transforms (the same at every record).
        mean, std: The model's input normalisation, per channel (default none): images
            in [0, 1] are shown to the model as ``(x - mean) / std``.
        class_objective: ``'log_probability'`` or ``'logit'``.
        name: The analysis's name (record directory and tag prefix).

    Raises:
        ValueError: For no targets, a bad budget, or (at fit start) an unknown layer, a
            channel or class out of range, or a model that cannot take the images.

    Example::

        analysis = FeatureVisAnalysis(channels={"net.conv2": [0, 1, 2]}, classes=[0, 7], steps=64)
        trainer = Trainer(callbacks=[ProbeCallback(x_val[:1], analyses=[analysis])])
    """

    # Records name an analysis by its class's path; this is the public one, which does not
    # change when the package's modules are reorganised.
    __module__ = "nsp_lightning.analyses.feature_vis"

    name = "feature_vis"
    title = "Feature visualisation"

    def __init__(
        self,
        channels: Sequence[tuple[str, int]] | Mapping[str, Sequence[int]] = (),
        classes: Sequence[int] = (),
        *,
        steps: int = 48,
        size: int | tuple[int, int] | None = None,
        param: str = "fourier",
        transforms: str | None = "default",
        lr: float = 0.05,
        seed: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        class_objective: str = "log_probability",
        name: str | None = None,
    ) -> None:
        who = type(self).__name__
        pairs = [(layer, c) for layer, cs in channels.items() for c in cs] if isinstance(channels, Mapping) \
            else list(channels)
        for pair in pairs:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str) and _int(pair[1])
                    and pair[1] >= 0):
                raise TypeError(f"{who}(channels): expected (layer name, channel >= 0) pairs, got {pair!r}")
        classes = list(classes)
        if not all(_int(k) and k >= 0 for k in classes):
            raise TypeError(f"{who}(classes={classes!r}): expected class indices >= 0")
        if not pairs and not classes:
            raise ValueError(f"{who}: choose at least one channel or class to render")
        if not _int(steps) or steps < 1:
            raise ValueError(f"{who}(steps={steps!r}): expected an int >= 1")
        if size is not None and not (_int(size) and size > 0) and not (
                isinstance(size, (tuple, list)) and len(size) == 2 and all(_int(s) and s > 0 for s in size)):
            raise ValueError(f"{who}(size={size!r}): expected None, an int or (H, W)")
        if param not in ("fourier", "pixel"):
            raise ValueError(f"{who}(param={param!r}): expected 'fourier' or 'pixel'")
        if transforms not in ("default", None):
            raise ValueError(f"{who}(transforms={transforms!r}): expected 'default' or None")
        if class_objective not in ("log_probability", "logit"):
            raise ValueError(f"{who}(class_objective={class_objective!r}): expected 'log_probability' or 'logit'")
        if not _int(seed):
            raise TypeError(f"{who}(seed={seed!r}): expected an int")
        self.channels = [(str(layer), int(c)) for layer, c in pairs]
        self.classes = [int(k) for k in classes]
        self.steps, self.param, self.transforms, self.lr, self.seed = steps, param, transforms, float(lr), seed
        self.size = (size, size) if _int(size) else (tuple(size) if size is not None else None)
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]
        self.class_objective = class_objective
        self._shown = (0, 0)  # the epoch and step of the last record, which its images name
        if name is not None:
            self.name = name

    # ----------------------------------------------------------------- targets

    def labels(self) -> list[str]:
        """One label per target, in render order: ``<layer>/channel_<c>`` then ``class_<k>``."""
        return [f"{layer}/channel_{c}" for layer, c in self.channels] + [f"class_{k}" for k in self.classes]

    def _objective(self) -> Any:
        from nsp import optvis

        # One objective per layer and one for the classes, each indexing the batch once: a sum of one
        # objective per target took a masked mean (or a softmax) and its backward pass per target,
        # a third of a record's render on the digits demo.
        by_layer: dict[str, tuple[list[int], list[int]]] = {}
        for i, (layer, c) in enumerate(self.channels):
            by_layer.setdefault(layer, ([], []))[0].append(c)
            by_layer[layer][1].append(i)
        parts = [optvis.channel_batch(layer, cs, rows) for layer, (cs, rows) in by_layer.items()]
        if self.classes:
            n = len(self.channels)
            parts.append(optvis.class_batch(self.classes, range(n, n + len(self.classes)), self.class_objective))
        return sum(parts)

    def _model(self, model: nn.Module, probes: torch.Tensor) -> Any:
        from nsp import optvis

        return optvis.normalized(model, self.mean, self.std, size=tuple(probes.shape[-2:]))

    def _shape(self, probes: torch.Tensor) -> tuple[int, int, int, int]:
        size = self.size or tuple(probes.shape[-2:])
        return (len(self.channels) + len(self.classes), int(probes.shape[1]), int(size[0]), int(size[1]))

    # ----------------------------------------------------------------- the core's calls

    def check(self, model: nn.Module, probes: torch.Tensor) -> None:
        from nsp import optvis

        who = type(self).__name__
        if probes.dim() != 4 or not probes.is_floating_point():
            raise ValueError(f"{who}: expected floating-point image probes (P, C, H, W), got {probes.dtype} "
                             f"{list(probes.shape)}")
        for argname, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) not in (1, probes.shape[1]):
                raise ValueError(f"{who}({argname}={values}): expected one value per input channel "
                                 f"({probes.shape[1]})")
        from nsp.optvis.optimize import device_dtype, require_memory

        wrapped, objective, shape = self._model(model, probes), self._objective(), self._shape(probes)
        # Before the grey image of that size is made and evaluated: compute() renders it.
        require_memory(wrapped, shape, device_dtype(wrapped)[1], objective.layers, who)
        optvis.evaluate(wrapped, objective, torch.full(shape, 0.5), where=who)

    def header(self) -> dict[str, Any]:
        return {
            "channels": [list(pair) for pair in self.channels], "classes": self.classes, "steps": self.steps,
            "size": list(self.size) if self.size else None, "param": self.param, "transforms": self.transforms,
            "lr": self.lr, "seed": self.seed, "mean": self.mean, "std": self.std,
            "class_objective": self.class_objective, "labels": self.labels(),
        }

    def custom_scalars(self) -> dict[str, dict[str, list[Any]]]:
        prefix = self.prefix
        charts = {}
        if self.channels:
            charts["channel objectives"] = ["Multiline", [rf"^{prefix}/.+/channel_\d+/objective$"]]
        if self.classes:
            charts["class objectives"] = ["Multiline", [rf"^{prefix}/class_\d+/objective$"]]
        return {self.title or self.name: charts}

    def compute(self, model: nn.Module, probes: torch.Tensor, context: ProbeContext) -> AnalysisRecord:
        from nsp import optvis
        from nsp.optvis.optimize import make_param

        shape = self._shape(probes)
        with context.enable_grad():
            result = optvis.render(self._model(model, probes), self._objective(),
                                   make_param(self.param, shape, self.seed), steps=self.steps,
                                   transforms=self.transforms, lr=self.lr, seed=self.seed,
                                   where=type(self).__name__)
        images = np.round(result.image.clamp(0, 1).numpy() * 255).astype(np.uint8)
        labels = self.labels()
        scalars = {f"{label}/objective": float(v) for label, v in zip(labels, result.value)}
        arrays = {"images": images, "values": result.value.double().numpy(),
                  "initial_values": result.initial_value.double().numpy()}
        self._shown = (context.epoch, context.global_step)
        return AnalysisRecord(arrays=arrays, scalars=scalars,
                              meta={"labels": labels, "render_seconds": result.seconds})

    def log(self, record: AnalysisRecord, sink: LogSink) -> None:
        if not sink.enabled:
            return
        from nsp.viz.text import tile_grid, titled

        images, values = record.arrays["images"], record.arrays["values"]
        tiles = [feature_grid(images[k: k + 1], min_tile=CARD_TILE) for k in range(len(images))]
        when = record_caption(*self._shown)
        n = len(self.channels)
        if n:
            labels = [[layer, f"channel {c}", f"mean {format_number(v)}"] for (layer, c), v in zip(self.channels, values)]
            sink.image("channels", titled(tile_grid(tiles[:n], labels, CARD_COLUMNS),
                                          [f"{self.name} · channels · {when}", "mean: the channel's mean activation"]))
        if self.classes:
            # A log-probability is shown as the probability, which reads at a glance.
            if self.class_objective == "log_probability":
                reached, meaning = [f"p {math.exp(v):.3f}" for v in values[n:]], "p: the class's probability"
            else:
                reached, meaning = [f"logit {format_number(v)}" for v in values[n:]], "logit: the class's logit"
            labels = [[f"class {k}", text] for k, text in zip(self.classes, reached)]
            sink.image("classes", titled(tile_grid(tiles[n:], labels, CARD_COLUMNS),
                                         [f"{self.name} · classes · {when}", f"{meaning} on its image"]))

    # ----------------------------------------------------------------- the report

    @classmethod
    def check_record(cls, record: Any, header: dict[str, Any], path: Path) -> None:
        """Images as uint8 (N, C, H, W), one objective value and one label per image."""
        who = cls.__name__
        n = check_arrays(record.arrays, path, who, {"images": ("u", 4), "values": ("f", 1)})
        labels = record.meta.get("labels")
        if not isinstance(labels, list) or len(labels) != n or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"{who}: the record {path} has labels {labels!r}, expected {n} names, one per image")

    @classmethod
    def report_steps(cls, records: Sequence[Any], header: Mapping[str, Any]) -> int:
        return 2

    @classmethod
    def report(cls, records: Sequence[Any], header: Mapping[str, Any], context: Any) -> Any:
        from nsp_lightning.report.sections import Facts, Film, Frame, Image, Row, Section, Text, scalar_chart

        epochs = [r.epoch for r in records]
        labels = list(header.get("labels") or records[-1].meta.get("labels", []))
        n = len(header.get("channels", []))
        seconds = [r.seconds for r in records]
        facts = [
            ("records", str(context.directory)),
            ("epochs", f"{len(records)} record(s) at epochs {', '.join(map(str, epochs))}"),
            ("targets, left to right", ", ".join(labels)),
            ("budget", f"{header.get('steps')} steps of a batch of {len(labels)} image(s) of "
                       f"{'×'.join(map(str, records[-1].arrays['images'].shape[-2:]))} pixels per record"),
            ("parameterisation", f"{header.get('param')}, transforms {header.get('transforms')}, Adam lr "
                                 f"{header.get('lr')}, seed {header.get('seed')} (the same at every record)"),
            ("class objective", str(header.get("class_objective"))),
            ("cost per record", f"{np.mean(seconds):.2f} s on average (render, log and write)"),
        ]
        blocks: list[Any] = [Facts(facts), Text(
            "Every record renders each target from the same starting image and the same random transforms, "
            "so a change between epochs comes from the model. Channel objective: the channel's mean activation; "
            "class objective: the class's log-probability (or logit).")]
        charts = []
        for title, keys in (("channels", labels[:n]), ("classes", labels[n:])):
            for start in range(0, len(keys), 10):
                series = {k: [r.scalars.get(f"{k}/objective", math.nan) for r in records] for k in keys[start: start + 10]}
                charts.append(scalar_chart(epochs, series, f"objective reached: {title}"))
        blocks.append(Row(charts, heading="Objective reached per record"))
        context.step("charts")
        films = []
        for title, part in (("channels", slice(0, n)), ("classes", slice(n, None))):
            if not labels[part]:
                continue
            frames = [Frame(f"epoch {r.epoch} (global step {r.global_step})",
                            Image.from_rgb(feature_grid(r.arrays["images"][part]), f"{title}, epoch {r.epoch}"))
                      for r in records]
            films.append(Film(f"{title}: {', '.join(labels[part])}", frames))
        blocks.append(Row(films, heading="Grids per epoch"))
        mosaic = feature_mosaic(records, labels)
        blocks.append(Row([Image.from_rgb(mosaic, "all targets (across) at every record (down)")],
                          heading=f"How the features form: epochs {epochs[0]} (top) to {epochs[-1]} (bottom)"))
        context.step("grids")
        return Section(context.name, cls.title or context.name, blocks)
