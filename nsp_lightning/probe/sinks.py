"""Where an analysis's pictures go: :class:`LogSink` collects them, :func:`write_to_tensorboard` logs them.

:meth:`~nsp_lightning.ProbeAnalysis.log` puts images, figures, histograms, text and
embeddings into a :class:`LogSink`; the callback then hands them to every TensorBoard
writer of the Trainer at once, after the analysis returned (so that drawing does not
compete with TensorBoard's writer thread). :class:`BackgroundWriter` does that hand-over
on a thread of its own, since encoding the images as PNG is most of a record's cost and
training need not wait for it. :func:`start_hparams`, :func:`log_configuration` and
:func:`write_hparams` give the loggers the module's and the analyses' configuration.

The interface a sink for another logger needs is small: a function ``(sink, writers)``
that reads ``sink.items`` (``(kind, tag, value, options)`` with ``kind`` one of
``"image"``, ``"histogram"``, ``"text"``, ``"embedding"``, ``"scalars"``) and ``sink.step``.
"""

from __future__ import annotations

import queue
import threading
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "BackgroundWriter", "LogSink", "configuration", "log_configuration", "start_hparams", "write_hparams",
    "write_to_tensorboard",
]


class LogSink:
    """Where :meth:`~nsp_lightning.ProbeAnalysis.log` puts images, histograms, text and embeddings for TensorBoard.

    Tags are relative to the analysis's ``tag_prefix``: ``sink.image("conv/probe_0", x)``
    logs ``<tag_prefix>/conv/probe_0``. Everything is logged at the record's step, to
    every TensorBoard logger of the Trainer, after ``log`` returns (so that drawing does
    not compete with TensorBoard's writer thread). Without a TensorBoard logger
    ``enabled`` is False and whatever is put here is dropped: check it to skip drawing.

    Attributes
    ----------
    prefix : str
        The analysis's tag prefix.
    step : int
        The step the record is logged at (the record number, or the global step).
    enabled : bool
        Whether a TensorBoard logger will receive what is put here.
    """

    def __init__(self, prefix: str, step: int, enabled: bool) -> None:
        self.prefix = prefix
        self.step = int(step)
        self.enabled = bool(enabled)
        self.items: list[tuple[str, str, Any, dict[str, Any]]] = []

    def _tag(self, tag: str) -> str:
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"LogSink: expected a non-empty tag, got {tag!r}")
        return f"{self.prefix}/{tag}"

    def image(self, tag: str, image: np.ndarray | torch.Tensor, dataformats: str = "HWC") -> None:
        """An image: uint8 (0 to 255) or float (0 to 1), laid out as ``dataformats`` (``"HWC"``, ``"CHW"``, ``"HW"``)."""
        if self.enabled:
            self.items.append(("image", self._tag(tag), image, {"dataformats": dataformats}))

    def figure(self, tag: str, figure: Any) -> None:
        """A matplotlib figure, drawn with Agg into an image."""
        if self.enabled:
            import nsp.viz.render

            self.image(tag, nsp.render.figure_to_rgb(figure))

    def histogram(self, tag: str, values: np.ndarray | torch.Tensor, bins: str = "tensorflow") -> None:
        """A histogram of ``values`` (any shape; non-finite values are dropped)."""
        if self.enabled:
            array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
            self.items.append(("histogram", self._tag(tag), array[np.isfinite(array)], {"bins": bins}))

    def text(self, tag: str, text: str) -> None:
        """Text (TensorBoard renders it as Markdown)."""
        if self.enabled:
            self.items.append(("text", self._tag(tag), str(text), {}))

    def scalars(self, tag: str, values: Mapping[str, float]) -> None:
        """One chart ``<prefix>/<tag>`` with one line per key of ``values`` (a layer, say), each its own run.

        TensorBoard gives each run its own colour and lists the runs beside the charts, so
        the lines are told apart and named. The run of key ``k`` is the directory
        ``<prefix>_<k>`` in the logger's directory, as ``SummaryWriter.add_scalars`` names
        its runs; one directory serves every chart with that key. Non-finite values are
        dropped (TensorBoard cannot chart them).
        """
        if not self.enabled:
            return
        bad = [k for k in values if not isinstance(k, str) or not k or k in (".", "..") or "/" in k or os.sep in k]
        if bad:
            raise ValueError(f"LogSink.scalars({tag!r}): run names {bad} are not names of a directory")
        finite = {k: float(v) for k, v in values.items() if np.isfinite(v)}
        if finite:
            self.items.append(("scalars", self._tag(tag), finite, {"run_prefix": self.prefix.replace("/", "_")}))

    def embedding(
        self,
        tag: str,
        points: np.ndarray | torch.Tensor,
        metadata: Sequence[Any] | None = None,
        metadata_header: Sequence[str] | None = None,
    ) -> None:
        """Points ``(N, D)`` for TensorBoard's embedding projector, with one metadata row per point.

        ``metadata`` is one label per point, or one list of columns per point with
        ``metadata_header`` naming the columns (as ``SummaryWriter.add_embedding``).
        """
        if self.enabled:
            array = torch.as_tensor(np.asarray(points.detach().cpu() if isinstance(points, torch.Tensor) else points))
            if array.dim() != 2:
                raise ValueError(f"LogSink.embedding: expected points of shape (N, D), got {list(array.shape)}")
            options = {"metadata": metadata, "metadata_header": metadata_header}
            self.items.append(("embedding", self._tag(tag), array, options))


def write_to_tensorboard(sink: LogSink, writers: Sequence[Any]) -> None:
    """Log what ``sink`` holds to every TensorBoard ``SummaryWriter`` in ``writers``, at ``sink.step``.

    Parameters
    ----------
    sink : LogSink
        What an analysis's :meth:`~nsp_lightning.ProbeAnalysis.log` put there.
    writers : sequence of torch.utils.tensorboard.SummaryWriter
        The writers (``TensorBoardLogger.experiment``) of the Trainer's loggers.
    """
    for writer in writers:
        for kind, tag, value, options in sink.items:
            if kind == "image":
                writer.add_image(tag, value, global_step=sink.step, **options)
            elif kind == "histogram":
                writer.add_histogram(tag, value, global_step=sink.step, **options)
            elif kind == "embedding":
                writer.add_embedding(value, tag=tag, global_step=sink.step, **options)
            elif kind == "scalars":
                _write_runs(writer, tag, value, sink.step, options["run_prefix"])
            else:
                writer.add_text(tag, value, global_step=sink.step)


def start_hparams(loggers: Sequence[Any], module_hparams: Mapping[str, Any], analyses: Sequence[Any], step: int) -> None:
    """Write each TensorBoardLogger's HParams session: the module's hyperparameters and the analyses' configuration.

    Called at fit start, before Lightning logs the module's hyperparameters: TensorBoard
    keeps a run's first HParams summary only, so this one, which holds the configuration,
    is the one it shows. It holds no metric value: the HParams table reads each metric
    column from the run's scalars of that tag. Lightning's placeholder metric
    ``hp_metric = -1`` (``TensorBoardLogger(default_hp_metric=True)``) is not written: its
    summary would name ``hp_metric`` as the table's only column. Until the end of
    training (:func:`write_hparams`) TensorBoard lists every scalar of the run as a
    column; from then on, the metrics the module logged.

    Parameters
    ----------
    loggers : sequence of Lightning loggers
        The Trainer's loggers; those that are not TensorBoardLoggers are skipped.
    module_hparams : mapping
        The LightningModule's (and LightningDataModule's) ``hparams_initial``.
    analyses : sequence of ProbeAnalysis
        Their ``hparams()`` are logged as ``<tag_prefix>/<key>``.
    step : int
        The step the summary is written at.
    """
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.tensorboard.summary import hparams

    params = {**module_hparams, **configuration(analyses)}
    for logger in loggers:
        if not isinstance(logger, TensorBoardLogger):
            continue
        logger.hparams.update(params)
        # The placeholder Lightning writes when it logs hyperparameters without metrics, right after on_fit_start.
        logger._default_hp_metric = False
        _, session_start, _ = hparams(_plain(logger.hparams), {})
        logger.experiment._get_file_writer().add_summary(session_start, step)


def configuration(analyses: Sequence[Any]) -> dict[str, Any]:
    """The analyses' ``hparams()``, each key as ``<tag_prefix>/<key>``."""
    return {f"{analysis.prefix}/{k}": v for analysis in analyses for k, v in analysis.hparams().items()}


def log_configuration(loggers: Sequence[Any], analyses: Sequence[Any], step: int) -> None:
    """Give TensorBoard the analyses' ``describe()`` text, and every other logger their configuration.

    Other loggers get the configuration (``hparams()``) as hyperparameters, merged with
    the module's: call it after Lightning logged those (at train start). TensorBoard got
    it at fit start (:func:`start_hparams`).
    """
    from lightning.pytorch.loggers import TensorBoardLogger

    params = configuration(analyses)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            for analysis in analyses:
                text = analysis.describe()
                if text:
                    logger.experiment.add_text(f"{analysis.prefix}/about", text, global_step=step)
        elif params:
            logger.log_hyperparams({**dict(getattr(logger, "hparams", None) or {}), **params})


def write_hparams(loggers: Sequence[Any], metrics: Mapping[str, Any], step: int) -> None:
    """Write each TensorBoardLogger's HParams summary: its ``hparams`` and the scalars ``metrics`` as columns.

    On global rank 0 only; a logger without hparams and metrics is skipped. The HParams
    dashboard reads each metric's value from the run's scalars of that tag: ``metrics``
    (Lightning's ``trainer.logged_metrics``) names tags logged already, and no scalar is
    written here. Where :func:`start_hparams` wrote the session at fit start, TensorBoard
    keeps that one and takes only the columns from this summary.

    Parameters
    ----------
    loggers : sequence of Lightning loggers
        The Trainer's loggers; those that are not TensorBoardLoggers are skipped.
    metrics : mapping
        ``{tag: value}``; the tags of one-value metrics become the table's columns.
    step : int
        The step the summary is written at.

    Notes
    -----
    Nested mappings in ``hparams`` are flattened with ``/`` (``{"a": {"b": 1}}`` is
    ``a/b``), values other than bool, int, float and str are written as text.
    """
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
    from torch.utils.tensorboard.summary import hparams

    if getattr(rank_zero_only, "rank", 0) != 0:
        return
    columns = {tag: 0.0 for tag, value in sorted(metrics.items()) if torch.as_tensor(value).numel() == 1}
    for logger in loggers:
        if not isinstance(logger, TensorBoardLogger):
            continue
        plain = _plain(logger.hparams)
        if not plain and not columns:
            continue
        file_writer = logger.experiment._get_file_writer()
        for summary in hparams(plain, columns):
            file_writer.add_summary(summary, step)


def _plain(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` flattened with ``/``, each value a bool, int, float or str (anything else as its text)."""
    plain: dict[str, Any] = {}
    pending = [("", dict(params or {}))]
    while pending:
        prefix, mapping = pending.pop()
        for key, value in mapping.items():
            if isinstance(value, Mapping):
                pending.append((f"{prefix}{key}/", value))
            else:
                plain[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return plain


def _write_runs(writer: Any, tag: str, values: Mapping[str, float], step: int, run_prefix: str) -> None:
    """``values[k]`` as scalar ``tag`` of the run ``<log_dir>/<run_prefix>_<k>`` (``add_scalars``' runs, another tag)."""
    from torch.utils.tensorboard.summary import scalar
    from torch.utils.tensorboard.writer import FileWriter

    walltime = time.time()
    log_dir = writer._get_file_writer().get_logdir()
    for key, value in values.items():
        run = os.path.join(log_dir, f"{run_prefix}_{key}")
        # SummaryWriter.all_writers is where add_scalars keeps its runs' writers: flush() and close() reach them.
        if run not in writer.all_writers:
            writer.all_writers[run] = FileWriter(run, writer.max_queue, writer.flush_secs, writer.filename_suffix)
        writer.all_writers[run].add_summary(scalar(tag, value), step, walltime)


class BackgroundWriter:
    """Hands sinks to their writers on one background thread, in the order they were submitted.

    :meth:`submit` returns at once unless ``capacity`` sinks are waiting already (then it
    waits for room: a writer slower than training holds training back rather than letting
    images pile up in memory). :meth:`close` waits until everything submitted is written;
    call it before the writers are closed. The thread and its queue are made at the first
    :meth:`submit` and dropped at :meth:`close` (a later :meth:`submit` makes them again),
    so that a closed writer can be pickled, as ``ddp_spawn`` pickles callbacks. The thread runs at
    the lowest priority where the system sets one per thread (Linux).

    Parameters
    ----------
    write : callable, default :func:`write_to_tensorboard`
        ``write(sink, writers)``, called on the background thread.
    capacity : int, default 4
        How many sinks may wait to be written.
    """

    def __init__(self, write: Callable[[LogSink, Sequence[Any]], None] = write_to_tensorboard, capacity: int = 4) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"BackgroundWriter(capacity={capacity!r}): expected an int >= 1")
        self._write = write
        self._capacity = capacity
        self._queue: queue.Queue[tuple[LogSink, Sequence[Any]] | None] | None = None
        self._thread: threading.Thread | None = None
        self._errors: list[str] = []

    def submit(self, sink: LogSink, writers: Sequence[Any]) -> None:
        """Write ``sink`` to ``writers`` on the background thread, after everything submitted before it."""
        if not sink.items or not writers:
            return
        if self._thread is None or self._queue is None or not self._thread.is_alive():
            self._queue = queue.Queue(maxsize=self._capacity)
            # A daemon, so that an interpreter ending without close() is not held up; close() is what
            # guarantees that nothing is lost.
            self._thread = threading.Thread(
                target=self._run, args=(self._queue,), name="nsp-tensorboard-writer", daemon=True
            )
            self._thread.start()
        self._queue.put((sink, list(writers)))

    def close(self) -> list[str]:
        """Wait until every submitted sink is written, end the thread; return what could not be written.

        Returns
        -------
        list of str
            One line per sink whose writing raised (its tag prefix, step and the error), in order.
        """
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
        self._thread = self._queue = None
        errors, self._errors = self._errors, []
        return errors

    def _run(self, jobs: queue.Queue[tuple[LogSink, Sequence[Any]] | None]) -> None:
        # The lowest priority (Linux sets it per thread): encoding takes the CPU time that
        # training leaves, not training's.
        if hasattr(os, "setpriority"):
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            except OSError:
                pass
        while True:
            item = jobs.get()
            if item is None:
                return
            sink, writers = item
            try:
                self._write(sink, writers)
            except Exception as err:  # reported by close(): the training thread decides what to do
                self._errors.append(f"{sink.prefix} at step {sink.step}: {type(err).__name__}: {err}")
