r"""
Spectrum Callback
=================

Watch the spectra of a network's activation patterns evolve during training, in
TensorBoard, and keep records of them for offline reports.

"""

from __future__ import annotations

import os
from typing import Any, Iterable, Literal, Sequence

from typing_extensions import override

from nsp_lightning.analyses.spectrum import SpectrumAnalysis
from nsp_lightning.analysis import ProbeAnalysis
from nsp_lightning.probe_callback import ProbeCallback

__all__ = ["SpectrumCallback"]


class SpectrumCallback(ProbeCallback):
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

    ``SpectrumCallback(probe, layers=..., transform=..., INCL=..., ...)`` is
    :class:`~nsp_lightning.ProbeCallback` with one
    :class:`~nsp_lightning.analyses.SpectrumAnalysis`, except that ``dirpath`` is the
    record directory itself. To record spectra alongside other analyses, sharing their
    forward pass, pass ``SpectrumAnalysis(...)`` to a ``ProbeCallback`` instead.
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
        analysis = SpectrumAnalysis(layers, transform, INCL, _caller="SpectrumCallback")
        super().__init__(
            probe, [analysis], every_n_epochs=every_n_epochs, epochs=epochs, dirpath=dirpath, log_step=log_step,
            record_evaluation=False,  # records during fit only, as before analyses were plug-ins
        )
        self.layers = analysis.layers
        self.transform = transform
        self.INCL = INCL

    @property
    @override
    def state_key(self) -> str:
        # As before analyses were plug-ins, so that older checkpoints resume.
        return self._generate_state_key(
            layers=self.layers, transform=self.transform, INCL=self.INCL, dirpath=self._dirpath_arg
        )

    def _record_dir(self, analysis: ProbeAnalysis, dirpath: str) -> str:
        return dirpath

    def _default_dirpath(self, log_dir: str) -> str:
        return os.path.join(log_dir, SpectrumAnalysis.name)
