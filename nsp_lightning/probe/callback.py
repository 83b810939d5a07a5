r"""
Probe Callback
==============

Run probe analyses (spectra, response maps, attributions, linear regions, your own) on a
fixed batch of probe inputs during training: one schedule, one record store, logging to
every logger and a report section for each.

:class:`ProbeCallback` is the Lightning callback: it says, hook by hook, what happens on
which rank. The pieces it puts together are beside it in :mod:`nsp_lightning.probe`:

==============================  ==========================================================
:mod:`~.probe.schedule`         when to record (the baseline, every n epochs, chosen epochs)
:mod:`~.probe.inputs`           the probe batch, on the model's device and dtype
:mod:`~.probe.isolation`        probing without disturbing training (modes, grads, RNG)
:mod:`~.probe.series`           the record directories rank 0 writes (locks, resume)
:mod:`~.probe.handoff`          the state a spawned rank 0 hands back to the launching process
:mod:`~.probe.sinks`            images, histograms and text to each logger that takes them
:mod:`~.probe.progress`         progress lines for steps longer than 2 s
==============================  ==========================================================
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterable, Literal, Sequence

import torch
from typing_extensions import override

import lightning.pytorch as pl
from lightning.pytorch.callbacks.callback import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from nsp.common import memory
from nsp.io.storage import RecordStoreError
from nsp_lightning.probe.analysis import AnalysisRecord, ProbeAnalysis, ProbeContext, check_analyses
from nsp_lightning.probe.handoff import Handoff
from nsp_lightning.probe.inputs import datamodule_probe, on_model, probe_batch
from nsp_lightning.probe.isolation import nonfinite_parameters, probing
from nsp_lightning.probe.progress import Progress
from nsp_lightning.probe.schedule import Schedule
from nsp_lightning.probe.series import RecordSeries
from nsp_lightning.probe.sinks import BackgroundWriter, LoggerSinks, LogSink, add_custom_scalars, configuration
from nsp_lightning.probe.sinks import log_configuration, no_media_warning, start_hparams, write_hparams

__all__ = ["ProbeCallback"]

_LOG_STEPS = ("epoch", "global_step")
_ON_ERROR = ("warn", "raise")


class ProbeCallback(Callback):
    r"""Run probe analyses on fixed probe inputs at chosen points of training.

    At fit start the callback checks every analysis (on every rank), sets them up
    (:meth:`~nsp_lightning.ProbeAnalysis.setup`, rank 0) and takes a *baseline* record
    before any training step. At the end of every chosen training epoch it runs each
    analysis on the probes (:meth:`~nsp_lightning.ProbeAnalysis.compute`), logs what it
    returns, and writes a record per analysis to ``<dirpath>/<analysis.name>``. The
    analyses of one record share a :class:`~nsp_lightning.ProbeContext`, hence one forward
    pass of the probes (``context.activations()``).

    Records are numbered by the training epochs completed: record 0 is the baseline,
    record ``k`` is taken at the end of Lightning's epoch ``k - 1``. On resume from a
    checkpoint (``trainer.fit(..., ckpt_path=...)``) the baseline is not taken again and
    every series continues where the checkpoint left it, without duplicates.

    Probing runs on global rank 0 only, in eval mode, under ``torch.no_grad()``, with
    autocast disabled, on the model's device, with the random state of torch (CPU and the
    model's device), numpy and ``random`` saved and restored; afterwards every module's
    train/eval flag is restored. Gradients, the model's parameters, its outputs and the
    random stream of training are left untouched.

    Several analyses: pass them to one callback, so that they share the schedule and the
    forward pass. Several callbacks (e.g. with different schedules) need different
    ``dirpath``\ s or analyses of different names: two that would write the same record
    directory are refused at setup.

    Args:
        probe: the probe inputs, one of

            - a tensor of shape ``(P, *input_shape)``: P inputs, run together as one
              batch (one input is ``x[None]``);
            - a batch as a DataLoader yields it: a tuple or list whose first item is such
              a tensor, e.g. ``(x, y)``;
            - a :class:`~torch.utils.data.DataLoader`: its first batch, taken at
              construction (use one without shuffling so a resumed run sees the same
              probe);
            - a :class:`~lightning.pytorch.LightningDataModule`: the first batch of its
              ``val_dataloader()`` (``train_dataloader()`` if it has none), taken at fit
              start, after the Trainer has set it up.

            The probe moves to the model's device once per fit; floating-point probes are
            cast to the dtype of the model's parameters. A batch ``(x, y)`` whose ``y``
            holds one label per input gives the probes' labels (``context.labels``). More
            than 16 inputs get a warning: every record analyses, stores and logs each.
        analyses: a :class:`~nsp_lightning.ProbeAnalysis` or a sequence of them, with
            distinct names.
        every_n_epochs: record every ``n`` training epochs. Default: every epoch. The
            baseline (record 0) is always taken.
        epochs: record after exactly these numbers of completed epochs (ints ``>= 0``),
            and the baseline; exclusive with ``every_n_epochs``.
        dirpath: the directory that holds the analyses' record directories. Default:
            ``trainer.log_dir``, e.g. ``lightning_logs/version_0``; on resume from a
            checkpoint, the checkpoint's, so that the series continue there.
        log_step: the step logged records are placed at: ``"global_step"`` (the default,
            so that they line up with the loss and the metrics Lightning logs) or
            ``"epoch"`` (the record number).
        record_evaluation: take one record under ``trainer.validate()`` and
            ``trainer.test()`` (see below).
        on_error: what a record that cannot be taken does (an analysis that raises,
            parameters that became non-finite, or a record file that cannot be written: a
            full disk, any ``OSError``): ``"warn"`` (the default) warns, logs
            ``<prefix>/record_failed``, lists the record as failed in its directory's
            manifest (``nsp-report`` shows it; where the disk refuses that too, it warns
            again and the record is missing) and lets training go on, so that a
            monitoring callback never ends a run (checkpoints are still saved);
            ``"raise"`` stops training with the error. Errors at the baseline, before any
            training step, always raise (nothing is lost yet; the analysis is likely
            misconfigured), and so does a record directory that another run took over
            (see :class:`nsp.io.storage.RecordStore`).

    Logged metrics (``<prefix>`` is an analysis's ``tag_prefix``, by default its name):

        - ``<prefix>/<key>`` for every scalar the analysis returns, to every logger in
          ``trainer.loggers``;
        - ``<prefix>/record_seconds``: wall time of the analysis at the record on the
          training thread (images are drawn and encoded off it, see :mod:`nsp_lightning.probe.sinks`);
        - ``<prefix>/record_failed``: 1 at a record the analysis could not take
          (``on_error="warn"``);
        - images, histograms and text that the analysis logs (``<prefix>/<tag>``), to
          every TensorBoard, Weights & Biases, MLflow and CSV logger (one sink each, see
          :mod:`nsp_lightning.probe.sinks`); another logger is warned about once, naming
          what it skips;
        - hyperparameters: each analysis's ``hparams()`` as ``<prefix>/<key>`` (TensorBoard's HParams
          at fit start, with the module's and the module's metrics as columns; others at train start).

    At fit start the callback says (at INFO level) where the records go. Without a
    logger that takes images it warns once and still logs scalars and writes records
    (without any logger, records only). ``fast_dev_run`` only checks probe and analyses.

    With ``record_evaluation`` (the default), ``trainer.validate()`` and ``trainer.test()``
    take one record each, numbered with the Trainer's ``current_epoch`` (the checkpoint's,
    with ``ckpt_path``), before the evaluation; a record of that number already in the
    directory is kept. Their manifest entries say ``"stage": "validate"`` (or ``"test"``);
    a later ``trainer.fit()`` continues a series that holds only such records (keeping their
    record 0 as its baseline). Lightning runs evaluation in inference mode, so an analysis that
    needs gradients re-enables them with ``context.enable_grad()``. ``SpectrumCallback``
    records during fit only, as it always did.

    Raises:
        TypeError: if ``probe`` is none of the accepted types, or another argument has the
            wrong type.
        ValueError: if the probe is empty, analyses repeat a name, or ``every_n_epochs``,
            ``epochs`` or ``log_step`` is invalid, or ``dirpath`` is a file. At fit start: if the model cannot run
            the probe batch, an analysis's ``check`` fails, two callbacks would write the
            same record directory, or a record directory holds a series recorded with
            another configuration.

    Example::

        >>> import torch
        >>> from lightning.pytorch import Trainer
        >>> from nsp_lightning import ProbeCallback
        >>> from nsp_lightning.analyses import SpectrumAnalysis
        >>> probe = torch.rand(2, 1, 8, 8)
        >>> trainer = Trainer(callbacks=[ProbeCallback(probe, [SpectrumAnalysis()])])

    Read the records back with :func:`nsp_lightning.read_records`, and draw them with
    ``nsp-report``.
    """

    def __init__(
        self,
        probe: Any,
        analyses: ProbeAnalysis | Sequence[ProbeAnalysis],
        *,
        every_n_epochs: int | None = None,
        epochs: Iterable[int] | None = None,
        dirpath: str | os.PathLike | None = None,
        log_step: Literal["epoch", "global_step"] = "global_step",
        record_evaluation: bool = True,
        on_error: Literal["warn", "raise"] = "warn",
    ) -> None:
        who = type(self).__name__
        if not isinstance(record_evaluation, bool):
            raise TypeError(f"{who}(record_evaluation={record_evaluation!r}): expected a bool")
        self.record_evaluation = record_evaluation
        if on_error not in _ON_ERROR:
            raise ValueError(f"{who}(on_error={on_error!r}): expected one of {_ON_ERROR}")
        self.on_error = on_error
        self._failed: dict[str, list[int]] = {}
        self._datamodule: pl.LightningDataModule | None = None
        self._probe: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        if isinstance(probe, pl.LightningDataModule):
            self._datamodule = probe
        else:
            self._probe, self._labels = probe_batch(probe, who)
        self.analyses: list[ProbeAnalysis] = check_analyses(analyses, who)
        schedule = Schedule.from_arguments(every_n_epochs, epochs, who)
        self.every_n_epochs, self.epochs = schedule.every_n_epochs, schedule.epochs
        if dirpath is not None and not isinstance(dirpath, (str, os.PathLike)):
            raise TypeError(f"{who}(dirpath={dirpath!r}): expected a path or None")
        self._dirpath_arg = None if dirpath is None else os.fspath(dirpath)
        if self._dirpath_arg is not None and os.path.exists(self._dirpath_arg) and not os.path.isdir(self._dirpath_arg):
            raise ValueError(f"{who}(dirpath={self._dirpath_arg!r}): it is a file, expected a directory or a new path")
        if log_step not in _LOG_STEPS:
            raise ValueError(f"{who}(log_step={log_step!r}): expected one of {_LOG_STEPS}")
        self.log_step = log_step

        self._dirpath: str | None = self._dirpath_arg
        # Under ddp_spawn (or a fork) rank 0 runs on a copy of this object and hands its state back.
        self._handoff = Handoff()
        self._checkpoint_dirpath: str | None = None
        self._recorded: set[int] = set()
        self._batch: torch.Tensor | None = None
        self._series: RecordSeries | None = None
        self._unstarted: list[ProbeAnalysis] = []
        self._writer = BackgroundWriter()
        self._sinks = LoggerSinks(who)

    @property
    @override
    def state_key(self) -> str:
        # The schedule is left out so that a resumed run may record at other epochs.
        return self._generate_state_key(analyses=[a.name for a in self.analyses], dirpath=self._dirpath_arg)

    @property
    def dirpath(self) -> str | None:
        """The directory that holds the analyses' record directories (known from the Trainer's setup on)."""
        self._adopt_handoff()
        return self._dirpath

    @dirpath.setter
    def dirpath(self, value: str | None) -> None:
        self._dirpath = value

    @property
    def recorded_epochs(self) -> list[int]:
        """The record numbers taken so far in this series, ascending."""
        self._adopt_handoff()
        return sorted(self._recorded)

    def _adopt_handoff(self) -> None:
        """In the launching process: take the state a spawned or forked rank 0 left (see ``teardown``)."""
        state = self._handoff.take()
        if state is None:
            return
        self._dirpath = state.get("dirpath", self._dirpath)
        self._recorded = set(state.get("recorded", []))
        self._failed = {name: list(epochs) for name, epochs in state.get("failed", {}).items()}

    def _hand_off(self, trainer: "pl.Trainer") -> None:
        """On rank 0 in a process other than the launching one: leave the state for the launching process."""
        if not trainer.is_global_zero or self._dirpath is None:
            return
        self._handoff.leave({"dirpath": self._dirpath, "recorded": sorted(self._recorded), "failed": self._failed})

    @property
    def failed_records(self) -> dict[str, list[int]]:
        """The record numbers each analysis could not take (``on_error="warn"``), by name."""
        self._adopt_handoff()
        return {name: sorted(epochs) for name, epochs in self._failed.items()}

    @property
    def record_dirs(self) -> dict[str, str]:
        """Each analysis's record directory, by name (known from the Trainer's setup on)."""
        if self.dirpath is None:
            return {}
        return {a.name: self._record_dir(a, self.dirpath) for a in self.analyses}

    def _record_dir(self, analysis: ProbeAnalysis, dirpath: str) -> str:
        return os.path.join(dirpath, analysis.name)

    def _default_dirpath(self, log_dir: str) -> str:
        return log_dir

    def _is_scheduled(self, epoch: int) -> bool:
        return Schedule(self.every_n_epochs, self.epochs).due(epoch)

    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage not in ("fit", "validate", "test"):
            return
        if self._datamodule is not None:
            self._probe, self._labels = datamodule_probe(self._datamodule, type(self).__name__)
        if trainer.fast_dev_run:
            return
        # trainer.log_dir broadcasts: every rank must call it.
        log_dir = trainer.log_dir or trainer.default_root_dir
        if self._dirpath_arg is None:
            self.dirpath = self._default_dirpath(log_dir)
        self._check_no_shared_directory(trainer, log_dir)
        warning = no_media_warning(trainer.loggers, self.record_dirs.values(), type(self).__name__)
        if warning:
            rank_zero_warn(warning)

    def _check_no_shared_directory(self, trainer: "pl.Trainer", log_dir: str) -> None:
        mine = {os.path.abspath(d): name for name, d in self.record_dirs.items()}
        for other in trainer.callbacks:
            if other is self or not isinstance(other, ProbeCallback):
                continue
            dirpath = other._dirpath_arg or other._default_dirpath(log_dir)
            for analysis in other.analyses:
                shared = os.path.abspath(other._record_dir(analysis, dirpath))
                if shared in mine:
                    raise ValueError(
                        f"{type(self).__name__}: its analysis {mine[shared]!r} and {type(other).__name__}'s analysis"
                        f" {analysis.name!r} would both write to {shared}; give the callbacks different `dirpath`s"
                    )

    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        assert self._probe is not None
        who = type(self).__name__
        probe = on_model(self._probe, pl_module)
        self._batch = probe
        # Checked on every rank so that a bad argument stops all processes alike.
        with probing(pl_module):
            try:
                pl_module(probe)
            except Exception as err:
                raise ValueError(
                    f"{who}(probe): the model cannot run the probe batch of shape {list(probe.shape)}"
                    f" (the first dimension indexes the probe inputs, recorded together as one batch): {err}"
                ) from err
            for analysis in self.analyses:
                analysis.check(pl_module, probe)
        if trainer.fast_dev_run:
            rank_zero_info(f"{who}: fast_dev_run checks the probe and the analyses only; nothing is recorded")
            return
        resuming = trainer.ckpt_path is not None
        self._unstarted = []
        if not resuming:
            self._recorded = set()
        if not trainer.is_global_zero:
            # Other ranks only track the schedule, so that every rank saves the same state.
            if not resuming:
                self._recorded.add(0)
            return
        if resuming and self._dirpath_arg is None and self._checkpoint_dirpath and os.path.isdir(self._checkpoint_dirpath):
            self.dirpath = self._checkpoint_dirpath
        assert self.dirpath is not None
        context = self._context(trainer, pl_module, trainer.current_epoch)
        # Else glibc hands a record's freed MiB back to the kernel, and training faults them in again.
        memory.keep_freed(1 << 25)
        with probing(pl_module):
            for analysis in self.analyses:
                with Progress(f"{who}: setup of {analysis.name!r}"):  # a t-SNE layout takes a minute
                    analysis.setup(pl_module, probe, context)
        # Before Lightning logs the module's hyperparameters (right after this hook): TensorBoard keeps the first.
        hparams = {**(trainer.datamodule.hparams_initial if trainer.datamodule else {}), **pl_module.hparams_initial}
        start_hparams(trainer.loggers, hparams, configuration(self.analyses), trainer.global_step)
        self._series = RecordSeries(self.record_dirs, who)
        layout: dict[str, Any] = {}
        started = []
        for analysis in self.analyses:
            if self._series.start(analysis, resuming):
                started.append(analysis)
            layout.update(analysis.custom_scalars() or {})
        add_custom_scalars(trainer.loggers, layout)
        step = "record number" if self.log_step == "epoch" else "global step"
        rank_zero_info(
            f"{who}: records go to {', '.join(self.record_dirs.values())}; logged at the {step}"
        )
        if not resuming:
            # The model is as setup saw it: the baseline shares its forward pass. Its errors always
            # raise: no training is lost yet, and an analysis that cannot take it is misconfigured.
            # A series continued after trainer.validate() or test() may hold record 0 already: it is kept.
            taken = self._series.recorded(0)
            if taken:
                rank_zero_info(f"{who}: {', '.join(taken)} recorded epoch 0 under evaluation already; it is kept")
            self._record(trainer, pl_module, 0, context, [a for a in self.analyses if a.name not in taken],
                         strict=True)
        else:
            # A checkpoint written without this callback (or whose records are gone) leaves no series to
            # continue: the new one starts with the checkpoint's state at on_train_start (the epoch restored).
            self._unstarted = started

    @override
    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._start_unstarted(trainer, pl_module)
        # After Lightning logged the model's hyperparameters (after on_fit_start), to merge with them.
        if trainer.fast_dev_run or not trainer.is_global_zero or not trainer.loggers:
            return
        sinks = self._sinks.sinks(trainer.loggers)
        for about in log_configuration(trainer.loggers, self.analyses, trainer.global_step):
            self._writer.submit(about, sinks)

    @override
    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        write_hparams(trainer.loggers, trainer.logged_metrics, trainer.global_step)

    def _start_unstarted(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        """The first record of series started on resume (see ``on_fit_start``), now that the epoch is restored."""
        started, self._unstarted = self._unstarted, []
        if not started:
            return
        who, epoch = type(self).__name__, trainer.current_epoch
        rank_zero_warn(
            f"{who}: resuming from a checkpoint with no record series to continue for"
            f" {', '.join(a.name for a in started)} (the checkpoint was written without {who}, or its records"
            f" are not in {self.dirpath}); a new series starts with record {epoch}, the checkpoint's state,"
            " and has no baseline (record 0)"
        )
        self._record(trainer, pl_module, epoch, analyses=started)

    def _context(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", epoch: int) -> ProbeContext:
        assert self._batch is not None
        return ProbeContext(
            pl_module,
            self._batch,
            epoch=epoch,
            global_step=trainer.global_step,
            trainer=trainer,
            labels=self._labels,
            directories=self.record_dirs,
        )

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
    def on_validation_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._record_evaluation(trainer, pl_module)

    @override
    def on_test_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._record_evaluation(trainer, pl_module)

    def _record_evaluation(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        """One record of the model that ``trainer.validate()`` or ``trainer.test()`` evaluates.

        It is numbered with the Trainer's ``current_epoch`` (that of the checkpoint given
        as ``ckpt_path``, else of the last fit) and joins the series in the record
        directory if one exists there with the same configuration; a record of that
        number already there is kept, not overwritten. Lightning runs these hooks in
        inference mode: analyses that need gradients use ``context.enable_grad()``.
        """
        if not self.record_evaluation or trainer.fast_dev_run or self.dirpath is None:
            return
        assert self._probe is not None
        probe = on_model(self._probe, pl_module)
        self._batch = probe
        with probing(pl_module):
            for analysis in self.analyses:
                analysis.check(pl_module, probe)
        epoch = trainer.current_epoch
        if not trainer.is_global_zero:
            return
        series = RecordSeries(self.record_dirs, type(self).__name__, stage=trainer.state.fn.value)
        done = series.recorded(epoch)
        if done:
            rank_zero_info(f"{type(self).__name__}: {', '.join(done)} already recorded epoch {epoch}; nothing recorded")
            return
        context = self._context(trainer, pl_module, epoch)
        with probing(pl_module):
            for analysis in self.analyses:
                with Progress(f"{type(self).__name__}: setup of {analysis.name!r}"):
                    analysis.setup(pl_module, probe, context)
        self._series = series
        try:
            series.start_all(self.analyses)
        except OSError as err:
            # A disk that refuses the manifest (full, read-only): as for a record that cannot be written.
            if self.on_error == "raise":
                raise
            rank_zero_warn(
                f"{type(self).__name__}: the records of epoch {epoch} cannot be written to"
                f" {', '.join(self.record_dirs.values())} ({type(err).__name__}: {err}); nothing is recorded and the"
                " evaluation goes on (on_error='raise' stops it instead)"
            )
            for analysis in self.analyses:
                self._failed.setdefault(analysis.name, []).append(epoch)
            return
        self._record(trainer, pl_module, epoch, context)

    def checkpoint_state(self) -> dict[str, Any]:
        """What checkpoints keep, under ``checkpoint["callbacks"][state_key]``: ``recorded``, ``dirpath``."""
        return {"recorded": sorted(self._recorded), "dirpath": self.dirpath}

    @override
    def on_save_checkpoint(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", checkpoint: dict[str, Any]) -> None:
        # Where Lightning keeps a callback's state_dict(), written here: Lightning refuses two callbacks with a
        # state_dict() and one state_key when the Trainer is built, before setup() can say they would share records.
        checkpoint.setdefault("callbacks", {})[self.state_key] = self.checkpoint_state()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._recorded = set(state_dict.get("recorded", self._recorded))
        self._checkpoint_dirpath = state_dict.get("dirpath", self._checkpoint_dirpath)

    @override
    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        # Every image is with the loggers before Lightning closes them.
        for problem in self._writer.close():
            rank_zero_warn(f"{type(self).__name__}: a logger could not take {problem}")
        self._sinks.clear()
        # Releases the record directories' locks, so that a later fit may continue them.
        if self._series is not None:
            self._series.close()
        self._hand_off(trainer)

    @override
    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)
        self.teardown(trainer, pl_module, "fit")

    def _record(
        self,
        trainer: "pl.Trainer",
        pl_module: "pl.LightningModule",
        epoch: int,
        context: ProbeContext | None = None,
        analyses: Sequence[ProbeAnalysis] | None = None,
        strict: bool = False,
    ) -> None:
        assert self._batch is not None
        if context is None:
            context = self._context(trainer, pl_module, epoch)
        context.epoch = epoch
        step = epoch if self.log_step == "epoch" else trainer.global_step
        writers = self._sinks.sinks(trainer.loggers)
        nonfinite = nonfinite_parameters(pl_module)
        with probing(pl_module):
            for analysis in self.analyses if analyses is None else analyses:
                try:
                    if nonfinite:
                        raise ValueError(
                            f"the model's parameters {nonfinite[:5]}{' and more' if len(nonfinite) > 5 else ''} hold"
                            " non-finite values (nan or inf); training has diverged"
                        )
                    self._record_one(trainer, analysis, epoch, step, context, writers)
                except RecordStoreError:
                    raise  # another run took the directory over: never write on
                except Exception as err:
                    if strict or self.on_error == "raise":
                        raise
                    self._record_failed(trainer, analysis, epoch, step, err)
        self._recorded.add(epoch)

    def _record_one(
        self,
        trainer: "pl.Trainer",
        analysis: ProbeAnalysis,
        epoch: int,
        step: int,
        context: ProbeContext,
        writers: list[Any],
    ) -> None:
        assert self._batch is not None
        start = time.perf_counter()
        with Progress(f"{type(self).__name__}: record {epoch} of {analysis.name!r}"):
            record = analysis.compute(context.model, self._batch, context)
        if not isinstance(record, AnalysisRecord):
            raise TypeError(f"{type(analysis).__name__}.compute: expected an AnalysisRecord, got {type(record).__name__}")
        sink = LogSink(analysis.prefix, step, enabled=bool(writers))
        analysis.log(record, sink)
        self._sinks.warn_skipped(sink, trainer.loggers)
        self._writer.submit(sink, writers)
        scalars = {f"{analysis.prefix}/{key}": float(value) for key, value in record.scalars.items()}
        seconds = time.perf_counter() - start
        scalars[f"{analysis.prefix}/record_seconds"] = seconds
        assert self._series is not None
        self._series.write(analysis, record, epoch=epoch, global_step=trainer.global_step, seconds=seconds)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)

    def _record_failed(
        self, trainer: "pl.Trainer", analysis: ProbeAnalysis, epoch: int, step: int, err: Exception
    ) -> None:
        """A record ``analysis`` could not take (``on_error="warn"``): warn, log, list it as failed; training goes on."""
        reason = f"{type(err).__name__}: {err}"
        rank_zero_warn(
            f"{type(self).__name__}: the analysis {analysis.name!r} could not take record {epoch} ({reason}); the record"
            " is skipped and training goes on (on_error='raise' stops training instead)"
        )
        self._failed.setdefault(analysis.name, []).append(epoch)
        for logger in trainer.loggers:
            logger.log_metrics({f"{analysis.prefix}/record_failed": 1.0}, step=step)
        assert self._series is not None
        problem = self._series.note_failure(analysis, epoch, reason)
        if problem is not None:
            rank_zero_warn(f"{type(self).__name__}: {problem}")

