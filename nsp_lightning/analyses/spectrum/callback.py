r"""
Spectrum Callback
=================

Watch the spectra of a network's activation patterns evolve during training, in
TensorBoard, and keep records of them for offline reports.

"""

from __future__ import annotations

import os
from typing import Any, Iterable, Literal

from typing_extensions import override

from nsp_lightning.analyses.spectrum.analysis import Layers, SpectrumAnalysis, layers_text
from nsp_lightning.probe.analysis import ProbeAnalysis
from nsp_lightning.probe.callback import ProbeCallback

__all__ = ["SpectrumCallback"]


class SpectrumCallback(ProbeCallback):
    r"""Record the spectra of probe inputs' activation patterns during training.

    At fit start the callback builds the network's :class:`nsp.NNGraph` and its transformer
    once, then takes a *baseline* record before any training step. At the end of every
    chosen training epoch it runs the probes through the model and computes the exact
    spectrum of each probe's activation pattern on that graph. Each record is logged (see
    below) and written to disk (see :mod:`nsp_lightning.probe.store`).

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
        layers: the layers, as :class:`nsp.Activations` takes them: ``None`` (the default:
            the input and the model's top-level children), ``"leaves"`` (every module
            without children), a list of module names at any depth (``["net.0",
            "net.4"]``, and ``"input"``), or a predicate ``(name, module) -> bool``. A list
            of top-level names picks among the default layers, in the list's order, and
            the graph spans every top-level layer; otherwise the graph spans the chosen
            layers. A model whose top level is one container (``self.net =
            nn.Sequential(...)``) gets a warning that says how to reach its inner layers.
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
        dirpath: the record directory. Default: ``<trainer.log_dir>/spectrum``, e.g.
            ``lightning_logs/version_0/spectrum``; on resume from a checkpoint, the
            checkpoint's record directory, so that the series continues there.
        colour_scale: ``"baseline"`` (the default) fixes each layer's colours at the baseline
            record, over all probes: signed log10 in whole decades with 2 decades of
            headroom above the layer's peak, so that equal colours mean equal values at
            every epoch; ``"image"`` gives every card its own range.
        log_step: the step logged records are placed at: ``"global_step"`` (the default,
            so that they line up with the loss and the metrics Lightning logs) or
            ``"epoch"`` (the record number).
        on_error: ``"warn"`` (the default): a record that cannot be taken (e.g. the
            weights became non-finite) is skipped with a warning, logged as
            ``spectrum/record_failed`` and listed as failed in the manifest; training goes on.
            ``"raise"``: stop training instead.

    Logged metrics (``P`` probes, ``p < P``; ``<layer>`` a recorded layer name, ``<ii>``
    its index in execution order, so that TensorBoard's alphabetical order is the
    network's):

        - ``spectrum/change/<measure>/probe_<p>/<ii>_<layer>``: how far the layer's spectrum
          moved since the baseline record (:func:`nsp.energy.change_since`):
          ``relative`` ‖ŝ − ŝ₀‖/‖ŝ₀‖, ``log10_energy`` (decades), ``decades`` (the median
          number of decades a coefficient moved) and ``sign_flips`` (the fraction of
          coefficients whose sign changed). Measures chosen to stay meaningful for
          spectra that span hundreds of decades; they move where log10 energies look flat.
        - ``spectrum/log10_energy/probe_<p>/<ii>_<layer>``: log10 of the layer's spectral energy
          Σ ŝ², to every logger in ``trainer.loggers``; an exactly zero spectrum is logged
          as ``spectrum/energy/probe_<p>/<ii>_<layer>`` = 0 instead (never ±inf or NaN).
        - ``spectrum/record_seconds``: wall time of the record.
        - ``spectrum/record_failed``: 1 at a record that could not be taken (``on_error="warn"``).
        - ``spectrum/graph_rebuilt``: 1 when a graph was rebuilt for this record, else 0
          (``INCL=False`` only).
        - Custom scalars ("CUSTOM SCALARS" tab): the change since the baseline first, one
          chart per measure and probe, then log10 energy. TensorBoard draws the series of
          one run in one colour (told apart by marker), so the image
          ``spectrum/00_change/probe_0`` draws the first probe's relative change and decades
          moved, one coloured line per layer, with a legend of the values at the last
          record (one chart per record: a matplotlib figure costs as much as a hundred
          cards).
        - Images, to every logger that takes them (TensorBoard, W&B, MLflow, CSV):
          ``spectrum/<ii>_<layer>/activations/probe_<p>``,
          ``spectrum/<ii>_<layer>/spectrum/probe_<p>`` and, from the first record after the
          baseline, ``spectrum/<ii>_<layer>/difference/probe_<p>`` (ŝ − ŝ₀, on its own range):
          :func:`nsp.render.render_card` images with a title (layer, probe, label, shape,
          epoch and step), the heatmap enlarged to at least 320 pixels, a colour bar in
          decades (signed log10: red positive, blue negative, white 0), where the range
          comes from, and notes for what colours cannot say (an exactly zero layer, values
          beyond the range, values too close to resolve).
        - Histograms ``spectrum/<ii>_<layer>/log10_abs_spectrum/probe_<p>``: log10|ŝ| over the
          layer's nonzero coefficients.
        - Text ``spectrum/predictions`` (each probe's label, where the probe was a batch
          ``(x, y)``, and the model's prediction and its probability) and ``spectrum/about``
          (the configuration and how to read the images); the configuration also as
          hparams ``spectrum/transform``, ``spectrum/INCL``, ``spectrum/layers``, ... beside
          the model's, written at fit start, with the metrics the module logs as the HParams
          table's columns.

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
        layers: Layers = None,
        transform: Literal["standard", "laplacian"] = "standard",
        INCL: bool = True,
        colour_scale: Literal["baseline", "image"] = "baseline",
        every_n_epochs: int | None = None,
        epochs: Iterable[int] | None = None,
        dirpath: str | os.PathLike | None = None,
        log_step: Literal["epoch", "global_step"] = "global_step",
        on_error: Literal["warn", "raise"] = "warn",
    ) -> None:
        analysis = SpectrumAnalysis(layers, transform, INCL, colour_scale=colour_scale, _caller="SpectrumCallback")
        super().__init__(
            probe, [analysis], every_n_epochs=every_n_epochs, epochs=epochs, dirpath=dirpath, log_step=log_step,
            record_evaluation=False,  # records during fit only, as before analyses were plug-ins
            on_error=on_error,
        )
        self.layers = analysis.layers
        self.transform = transform
        self.INCL = INCL

    @property
    @override
    def state_key(self) -> str:
        # As before analyses were plug-ins, so that older checkpoints resume.
        return self._generate_state_key(
            layers=self.layers if isinstance(self.layers, (list, type(None))) else layers_text(self.layers),
            transform=self.transform,
            INCL=self.INCL,
            dirpath=self._dirpath_arg,
        )

    def _record_dir(self, analysis: ProbeAnalysis, dirpath: str) -> str:
        return dirpath

    def _default_dirpath(self, log_dir: str) -> str:
        return os.path.join(log_dir, SpectrumAnalysis.name)
