r"""
Spectrum Callback
=================

Watch the spectra of a network's activation patterns evolve during training, in
TensorBoard, and keep records of them for offline reports.

"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from numbers import Integral
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from typing_extensions import override

import lightning.pytorch as pl
from lightning.pytorch.callbacks.callback import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

import nsp
import nsp.render
from nsp.storage import RecordStore

from nsp_lightning.records import SpectrumRecord, make_record, write_record

__all__ = ["SpectrumCallback"]

_TRANSFORMS = ("standard", "laplacian")
_LOG_STEPS = ("epoch", "global_step")
_PREFIX = "nsp"
# Spectra span hundreds of decades: only a signed-log scale shows them.
_HEATMAPS = {
    "activations": {"scale": "layerscale", "cmap": "viridis"},
    "spectrum": {"scale": "layersymlog", "cmap": "RdBu_r"},
}
_BAND_ASPECT, _BAND_MIN_ROWS, _BAND_MAX_ROWS = 8, 8, 32


class SpectrumCallback(Callback):
    r"""Record the spectra of probe inputs' activation patterns during training.

    At fit start the callback builds the network's :class:`nsp.NNGraph` and its transformer
    once, then takes a *baseline* record before any training step. At the end of every
    chosen training epoch it runs the probes through the model and computes the exact
    spectrum of each probe's activation pattern on that graph. Each record is logged (see
    below) and written to disk (see :mod:`nsp_lightning.records`).

    Records are numbered by the training epochs completed: record 0 is the baseline,
    record ``k`` is taken at the end of Lightning's epoch ``k - 1``. On resume from a
    checkpoint (``trainer.fit(..., ckpt_path=...)``) the baseline is not taken again and
    the series continues where the checkpoint left it, without duplicates.

    Probing runs on global rank 0 only, in eval mode, under ``torch.no_grad()`` and with
    autocast disabled, on the model's device; afterwards every module's train/eval flag is
    restored. Gradients, the model's parameters and its outputs are left untouched, and
    mixed precision never reaches the spectrum, which nsp computes exactly.

    Args:
        probe: the probe inputs, one of

            - a tensor of shape ``(P, *input_shape)``: P inputs, recorded together as one
              batch of the model's ``forward`` in eval mode (one input is ``x[None]``);
            - a batch as a DataLoader yields it: a tuple or list whose first item is such
              a tensor, e.g. ``(x, y)``;
            - a :class:`~torch.utils.data.DataLoader`: its first batch, taken at
              construction (use one without shuffling so a resumed run sees the same
              probe);
            - a :class:`~lightning.pytorch.LightningDataModule`: the first batch of its
              ``val_dataloader()`` (``train_dataloader()`` if it has none), taken at fit
              start, after the Trainer has set it up.

            The probe moves to the model's device once per fit; floating-point probes are
            cast to the dtype of the model's parameters.
        layers: names of the layers to log and record (``Activations.layernames``, e.g.
            ``["input", "conv1"]``); all layers by default. The graph always spans every
            layer, since a layer's spectrum depends on all of its ancestors.
        transform: ``"standard"`` (the causal Fourier transform) or ``"laplacian"``.
        INCL: ``True`` builds the structural graph, which is the same for every input and
            every epoch. ``False`` builds each probe's data-dependent graph (zero weights,
            max-pool argmax and dead ReLU units drop edges); it is rebuilt, with its
            transformer, only when the graph's fingerprint (:func:`nsp.fingerprint`)
            changes, and the rebuild is logged.
        every_n_epochs: record every ``n`` training epochs. Default: every epoch. The
            baseline (record 0) is always taken.
        epochs: record after exactly these numbers of completed epochs (ints ``>= 0``),
            and the baseline; exclusive with ``every_n_epochs``.
        dirpath: the record directory. Default: ``<trainer.log_dir>/spectra``, e.g.
            ``lightning_logs/version_0/spectra``; on resume from a checkpoint, the
            checkpoint's record directory, so that the series continues there.
        log_step: the step logged records are placed at: ``"epoch"`` (the record number)
            or ``"global_step"``.

    Logged metrics (``P`` probes, ``p < P``; ``<layer>`` a recorded layer name):

        - ``nsp/log10_energy/probe_<p>/<layer>``: log10 of the layer's spectral energy
          Σ ŝ², to every logger in ``trainer.loggers``. In TensorBoard a custom-scalars
          chart per probe ("CUSTOM SCALARS" tab) draws all layers together.
          ``-inf`` marks an exactly zero spectrum (TensorBoard draws it as a non-finite
          point).
        - ``nsp/record_seconds``: wall time of the record.
        - ``nsp/graph_rebuilt``: 1 when a graph was rebuilt for this record, else 0
          (``INCL=False`` only).
        - Images, to TensorBoard loggers only: ``nsp/activations/<layer>/probe_<p>`` and
          ``nsp/spectrum/<layer>/probe_<p>``: heatmaps from :mod:`nsp.render`, one pixel
          per value (TensorBoard enlarges them with crisp pixels), channels as tiles, a
          1-D layer as a band of value columns at most 8 times as wide as high; spectra
          on a signed-log scale, since they span hundreds of decades.

    TensorBoard keeps only 10 images per tag (a random sample of the epochs) unless told
    otherwise. To see every epoch, give it a limit above the number of records::

        tensorboard --logdir lightning_logs --samples_per_plugin images=100000

    The test suite checks that value against a running TensorBoard server. Do not use
    ``images=0``: TensorBoard 2.21 then shows no image at all.

    Without a TensorBoard logger the callback warns once and still logs scalars to the
    other loggers and writes records; without any logger it still writes records. Under
    ``fast_dev_run`` it only checks the probe and the layer names and records nothing.

    Raises:
        TypeError: if ``probe`` is none of the accepted types, or another argument has the
            wrong type.
        ValueError: if the probe is empty, or ``layers``, ``transform``, ``every_n_epochs``,
            ``epochs`` or ``log_step`` is invalid. At fit start: if the model cannot run a
            probe input, a layer name is unknown, or the record directory holds a series
            recorded with another configuration.

    Example::

        >>> import torch
        >>> from lightning.pytorch import Trainer
        >>> from nsp_lightning import SpectrumCallback
        >>> probe = torch.rand(2, 1, 8, 8)
        >>> trainer = Trainer(callbacks=[SpectrumCallback(probe)])

    Read the records back with :func:`nsp_lightning.read_records`.
    """

    def __init__(
        self,
        probe: Any,
        *,
        layers: Sequence[str] | None = None,
        transform: Literal["standard", "laplacian"] = "standard",
        INCL: bool = True,
        every_n_epochs: int | None = None,
        epochs: Iterable[int] | None = None,
        dirpath: str | os.PathLike | None = None,
        log_step: Literal["epoch", "global_step"] = "epoch",
    ) -> None:
        self._datamodule: pl.LightningDataModule | None = None
        self._probe: torch.Tensor | None = None
        if isinstance(probe, pl.LightningDataModule):
            self._datamodule = probe
        else:
            self._probe = _probe_tensor(probe)
        self.layers = _check_layers(layers)
        if transform not in _TRANSFORMS:
            raise ValueError(f"SpectrumCallback(transform={transform!r}): expected one of {_TRANSFORMS}")
        self.transform = transform
        if not isinstance(INCL, bool):
            raise TypeError(f"SpectrumCallback(INCL={INCL!r}): expected a bool")
        self.INCL = INCL
        self.every_n_epochs, self.epochs = _check_schedule(every_n_epochs, epochs)
        if dirpath is not None and not isinstance(dirpath, (str, os.PathLike)):
            raise TypeError(f"SpectrumCallback(dirpath={dirpath!r}): expected a path or None")
        self._dirpath_arg = None if dirpath is None else os.fspath(dirpath)
        if log_step not in _LOG_STEPS:
            raise ValueError(f"SpectrumCallback(log_step={log_step!r}): expected one of {_LOG_STEPS}")
        self.log_step = log_step

        self.dirpath: str | None = self._dirpath_arg
        self._checkpoint_dirpath: str | None = None
        self._recorded: set[int] = set()
        self._batch: torch.Tensor | None = None
        self._spectrum = _SpectrumAnalysis(self.layers, self.transform, self.INCL)
        self._store: RecordStore | None = None

    @property
    @override
    def state_key(self) -> str:
        # The schedule is left out so that a resumed run may record at other epochs.
        return self._generate_state_key(
            layers=self.layers, transform=self.transform, INCL=self.INCL, dirpath=self._dirpath_arg
        )

    @property
    def recorded_epochs(self) -> list[int]:
        """The record numbers taken so far in this series, ascending."""
        return sorted(self._recorded)

    def _is_scheduled(self, epoch: int) -> bool:
        if epoch == 0:
            return True
        if self.epochs is not None:
            return epoch in self.epochs
        return epoch % self.every_n_epochs == 0

    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "fit":
            return
        if self._datamodule is not None:
            self._probe = _datamodule_probe(self._datamodule)
        if trainer.fast_dev_run:
            return
        # trainer.log_dir broadcasts: every rank must call it.
        log_dir = trainer.log_dir or trainer.default_root_dir
        if self._dirpath_arg is None:
            self.dirpath = os.path.join(log_dir, "spectra")
        if not any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers):
            scalars = "scalars go to the other loggers and " if trainer.loggers else ""
            rank_zero_warn(
                "SpectrumCallback: the Trainer has no TensorBoardLogger, so no heatmaps are logged;"
                f" {scalars}records are written to {self.dirpath}"
            )

    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        assert self._probe is not None
        device = _module_device(pl_module)
        probe = self._probe.to(device=device, dtype=_probe_dtype(pl_module, self._probe))
        self._batch = probe
        # Checked on every rank so that a bad argument stops all processes alike.
        with _probing(pl_module):
            self._spectrum.check(pl_module, probe)
        if trainer.fast_dev_run:
            rank_zero_info("SpectrumCallback: fast_dev_run checks the probe and layers only; nothing is recorded")
            return
        resuming = trainer.ckpt_path is not None
        if not resuming:
            self._recorded = set()
        if not trainer.is_global_zero:
            # Other ranks only track the schedule, so that every rank saves the same state.
            if not resuming:
                self._recorded.add(0)
            return
        if resuming and self._dirpath_arg is None and self._checkpoint_dirpath:
            if os.path.isdir(self._checkpoint_dirpath):
                self.dirpath = self._checkpoint_dirpath
        assert self.dirpath is not None
        self._store = RecordStore(self.dirpath)
        with _probing(pl_module):
            self._spectrum.build(pl_module, self._batch)
        self._start_series(self._header(pl_module), resuming)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_custom_scalars(self._layout())
        if not resuming:
            self._record(trainer, pl_module, 0)

    @override
    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.fast_dev_run:
            return
        epoch = trainer.current_epoch + 1
        if not self._is_scheduled(epoch) or epoch in self._recorded:
            return
        if trainer.is_global_zero:
            self._record(trainer, pl_module, epoch)
        else:
            self._recorded.add(epoch)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"recorded": sorted(self._recorded), "dirpath": self.dirpath}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._recorded = set(state_dict.get("recorded", self._recorded))
        self._checkpoint_dirpath = state_dict.get("dirpath", self._checkpoint_dirpath)

    def _header(self, pl_module: "pl.LightningModule") -> dict[str, Any]:
        assert self._probe is not None
        return {
            "layernames": self._spectrum.layernames,
            "shapes": self._spectrum.shapes,
            "probes": self._probe.shape[0],
            "probe_shape": list(self._probe.shape),
            "transform": self.transform,
            "INCL": self.INCL,
            "model": type(pl_module).__qualname__,
        }

    def _start_series(self, header: dict[str, Any], resuming: bool) -> None:
        assert self._store is not None
        if not self._store.exists():
            self._store.start(header)
            return
        if resuming:
            if self._store.header != header:
                raise ValueError(
                    f"SpectrumCallback: the records in {self.dirpath} were written with another configuration"
                    f" ({self._store.header}); this run has {header}. Pass another `dirpath`."
                )
            rank_zero_info(f"SpectrumCallback: continuing the record series in {self.dirpath}")
            return
        rank_zero_warn(f"SpectrumCallback: {self.dirpath} already holds records; starting a new series there")
        self._store.start(header)

    def _layout(self) -> dict[str, Any]:
        charts = {
            f"log10 spectral energy, probe {p}": ["Multiline", [rf"^{_PREFIX}/log10_energy/probe_{p}/"]]
            for p in range(self._probe.shape[0])
        }
        return {f"{_PREFIX} spectra": charts}

    def _record(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", epoch: int) -> None:
        start = time.perf_counter()
        with _probing(pl_module):
            result = self._spectrum(pl_module, self._batch)
        if result.rebuilt:
            rank_zero_info(
                f"SpectrumCallback: the graph fingerprint changed at record {epoch}"
                f" (global step {trainer.global_step}); rebuilt the NNGraph and its transformer"
            )
        step = epoch if self.log_step == "epoch" else trainer.global_step
        record = make_record(
            epoch,
            trainer.global_step,
            result.activations,
            result.spectra,
            result.layers,
            result.fingerprints,
            result.rebuilt,
            seconds=0.0,
        )
        self._log_images(trainer, record, step)
        scalars = {
            f"{_PREFIX}/log10_energy/probe_{p}/{name}": float(record.log10_energy[p, l])
            for p in range(record.num_probes)
            for l, name in enumerate(record.layernames)
        }
        if not self.INCL:
            scalars[f"{_PREFIX}/graph_rebuilt"] = float(record.rebuilt)
        seconds = time.perf_counter() - start
        scalars[f"{_PREFIX}/record_seconds"] = seconds
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
        assert self._store is not None
        write_record(self._store, dataclasses.replace(record, seconds=seconds))
        self._recorded.add(epoch)

    def _log_images(self, trainer: "pl.Trainer", record: SpectrumRecord, step: int) -> None:
        writers = [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not writers:
            return
        # Rendered before any is logged: interleaved with the writer's background thread,
        # which checksums each event in pure Python, the same work took 1.4x as long.
        images = {
            f"{_PREFIX}/{kind}/{name}/probe_{p}": _heatmap(values[p][l], kind)
            for p in range(record.num_probes)
            for l, name in enumerate(record.layernames)
            for kind, values in (("activations", record.activations), ("spectrum", record.spectra))
        }
        for writer in writers:
            for tag, image in images.items():
                writer.add_image(tag, image, global_step=step, dataformats="HWC")


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


@dataclasses.dataclass(frozen=True)
class _SpectrumResult:
    activations: list[Any]
    spectra: list[Any]
    layers: list[int]
    fingerprints: list[str]
    rebuilt: bool


class _SpectrumAnalysis:
    """The callback's per-probe analysis: each probe's activations and their spectrum.

    It runs in three steps, each under :func:`_probing`: ``check`` (every rank, fit start),
    ``build`` (rank 0, fit start) and a call per record (rank 0). Further per-probe
    analyses that the callback may schedule (neural-response maps, attributions, linear
    regions) take the same shape.

    The probes are recorded together, in one forward pass (``nsp.Activations.from_batch``).
    Graphs are cached by fingerprint: with INCL=True every probe shares the one structural
    graph; with INCL=False (``nsp.fingerprint``: weight zero patterns, max-pool argmax,
    active units) probes whose fingerprints agree share a graph, and a graph is rebuilt
    only when a probe's fingerprint changes.
    """

    def __init__(self, layers: list[str] | None, transform: str, INCL: bool) -> None:
        self._names = layers
        self.transform = transform
        self.INCL = INCL
        self.layernames: list[str] = []
        self.shapes: list[list[int]] = []
        self._layers: list[int] = []
        self._graphs: dict[str, Any] = {}

    def check(self, model: nn.Module, probe: torch.Tensor) -> None:
        """Run the probe batch and resolve the layer names; raise clearly if either fails."""
        try:
            model(probe)
        except Exception as err:
            raise ValueError(
                f"SpectrumCallback(probe): the model cannot run the probe batch of shape {list(probe.shape)}"
                f" (the first dimension indexes the probe inputs, recorded together as one batch): {err}"
            ) from err
        acts = nsp.Activations(model, probe[:1])
        available = list(acts.layernames)
        if self._names is None:
            self._layers = list(range(len(available)))
        else:
            unknown = [name for name in self._names if name not in available]
            if unknown:
                raise ValueError(
                    f"SpectrumCallback(layers={self._names!r}): unknown layers {unknown}; the model has {available}"
                )
            self._layers = [available.index(name) for name in self._names]
        self.layernames = [available[i] for i in self._layers]
        self.shapes = [list(acts.layeractivations[i].shape) for i in self._layers]

    def build(self, model: nn.Module, probe: torch.Tensor) -> None:
        """Build the graph(s) and transformer(s) for the current model."""
        self._graphs = {}
        self._update(model, probe)

    def __call__(self, model: nn.Module, probe: torch.Tensor) -> _SpectrumResult:
        activations, fingerprints, rebuilt = self._update(model, probe)
        # One vectorised transform per graph rather than one per probe.
        members: dict[str, list[int]] = {}
        for p, fp in enumerate(fingerprints):
            members.setdefault(fp, []).append(p)
        spectra: list[Any] = [None] * len(activations)
        for fp, group in members.items():
            batch = self._graphs[fp].transform([activations[p] for p in group], type=self.transform)
            for p, spectrum in zip(group, batch):
                spectra[p] = spectrum
        return _SpectrumResult(activations, spectra, self._layers, fingerprints, rebuilt)

    def _update(self, model: nn.Module, probe: torch.Tensor) -> tuple[list[Any], list[str], bool]:
        # One forward pass records every probe.
        activations = nsp.Activations.from_batch(model, probe)
        if self.INCL:
            structure = repr([(n, a.shape, d) for n, a, d in zip(activations[0].layernames, activations[0].layeractivations,
                                                                 activations[0].layerdescriptions)])
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


@contextlib.contextmanager
def _probing(model: nn.Module) -> Iterator[None]:
    """Eval mode, no grad, no autocast; every module's train flag restored afterwards."""
    modes = {name: module.training for name, module in model.named_modules()}
    device_type = _module_device(model).type
    try:
        model.eval()
        with torch.no_grad(), torch.autocast(device_type=device_type, enabled=False):
            yield
    finally:
        for name, module in model.named_modules():
            if name in modes:
                module.training = modes[name]


def _module_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _probe_dtype(model: nn.Module, probe: torch.Tensor) -> torch.dtype:
    if not probe.is_floating_point():
        return probe.dtype
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return probe.dtype


def _probe_tensor(probe: Any) -> torch.Tensor:
    source = probe
    if isinstance(probe, DataLoader):
        try:
            probe = next(iter(probe))
        except StopIteration:
            raise ValueError("SpectrumCallback(probe=<DataLoader>): the DataLoader yields no batch") from None
    if isinstance(probe, (tuple, list)):
        if not probe:
            raise ValueError(f"SpectrumCallback(probe): the batch is an empty {type(probe).__name__}")
        probe = probe[0]
    if not isinstance(probe, torch.Tensor):
        raise TypeError(
            "SpectrumCallback(probe): expected a tensor of shape (P, *input_shape), a batch whose first item is one,"
            f" a DataLoader or a LightningDataModule, got {type(source).__name__}"
            + (f" holding {type(probe).__name__}" if probe is not source else "")
        )
    if probe.dim() < 2:
        raise ValueError(
            f"SpectrumCallback(probe): expected a tensor of shape (P, *input_shape), got shape {list(probe.shape)};"
            " the first dimension indexes the probe inputs (one input is x[None])"
        )
    if probe.numel() == 0:
        raise ValueError(f"SpectrumCallback(probe): the probe is empty (shape {list(probe.shape)})")
    return probe.detach()


def _datamodule_probe(datamodule: "pl.LightningDataModule") -> torch.Tensor:
    method = "val_dataloader" if is_overridden("val_dataloader", datamodule) else "train_dataloader"
    try:
        loader = getattr(datamodule, method)()
        batch = next(iter(loader))
    except Exception as err:
        raise ValueError(
            f"SpectrumCallback(probe=<{type(datamodule).__name__}>): could not take a batch from its {method}()"
            f" ({type(err).__name__}: {err}); pass the DataModule given to trainer.fit, or a tensor"
        ) from err
    return _probe_tensor(batch)


def _check_layers(layers: Sequence[str] | None) -> list[str] | None:
    if layers is None:
        return None
    if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
        raise TypeError(f"SpectrumCallback(layers={layers!r}): expected a sequence of layer names or None")
    layers = list(layers)
    if not layers:
        raise ValueError("SpectrumCallback(layers=[]): expected at least one layer name, or None for all layers")
    if len(set(layers)) != len(layers):
        raise ValueError(f"SpectrumCallback(layers={layers!r}): layer names repeat")
    return layers


def _check_schedule(
    every_n_epochs: int | None, epochs: Iterable[int] | None
) -> tuple[int | None, frozenset[int] | None]:
    if every_n_epochs is not None and epochs is not None:
        raise ValueError(
            f"SpectrumCallback(every_n_epochs={every_n_epochs!r}, epochs={epochs!r}): pass one of them, not both"
        )
    if epochs is not None:
        if isinstance(epochs, (str, bytes)) or not isinstance(epochs, Iterable):
            raise TypeError(f"SpectrumCallback(epochs={epochs!r}): expected an iterable of ints >= 0")
        values = list(epochs)
        if not values or not all(isinstance(e, Integral) and not isinstance(e, bool) and e >= 0 for e in values):
            raise ValueError(f"SpectrumCallback(epochs={epochs!r}): expected a non-empty collection of ints >= 0")
        return None, frozenset(int(e) for e in values)
    if every_n_epochs is None:
        return 1, None
    if not isinstance(every_n_epochs, Integral) or isinstance(every_n_epochs, bool) or every_n_epochs < 1:
        raise ValueError(f"SpectrumCallback(every_n_epochs={every_n_epochs!r}): expected an int >= 1")
    return int(every_n_epochs), None
