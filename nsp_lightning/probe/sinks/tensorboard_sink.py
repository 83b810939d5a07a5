"""TensorBoard: every kind of item, the HParams summary and the custom-scalars layout."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Mapping, Sequence

import torch

from nsp_lightning.probe.sinks.sink import IMAGE_RUN, LogSink, MediaSink, rgb_uint8

__all__ = [
    "RunWriters", "TensorBoardSink", "add_custom_scalars", "projector_points", "start_hparams", "write_hparams",
    "write_to_tensorboard",
]


class TensorBoardSink(MediaSink):
    """A ``TensorBoardLogger``: images, histograms, text, embeddings (the projector) and charts of several runs."""

    takes = frozenset({"image", "histogram", "text", "embedding", "scalars"})

    def __init__(self, logger: Any) -> None:
        super().__init__(logger)
        self.writer = logger.experiment
        self.runs = RunWriters()

    def image_runs(self, sink: LogSink) -> list[str]:
        """``<log_dir>/<prefix>_images``: the run of the images drawn later, which only the drawing helper writes.

        TensorBoard reads one event file of a run directory at a time, so the logger's own
        writer must not write there too.
        """
        return [os.path.join(self.writer.get_logdir(), f"{sink.prefix.replace('/', '_')}_{IMAGE_RUN}")]

    def write(self, sink: LogSink) -> None:
        write_to_tensorboard(sink, [self.writer], self.runs)
        self.runs.flush()

    def close(self) -> None:
        self.runs.close()


class RunWriters:
    """The event-file writers of the runs that charts of several runs (``LogSink.scalars``) write to.

    ``SummaryWriter.add_scalars`` keeps its runs' writers in the writer's ``all_writers``,
    which ``SummaryWriter.flush()`` and ``close()`` iterate over. Lightning calls those on
    the training thread (``TensorBoardLogger.save()``) while the callback's background
    writer writes the charts: a run added then would change the dict during the iteration
    ("dictionary changed size during iteration"). So the runs' writers are kept here, not
    there, and flushed and closed by their sink. A lock guards them, so that ``close`` may
    come from another thread than the writes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writers: dict[str, Any] = {}

    def add(self, writer: Any, tag: str, values: Mapping[str, float], step: int, run_prefix: str) -> None:
        """``values[k]`` as scalar ``tag`` of the run ``<log_dir>/<run_prefix>_<k>`` of ``writer`` (a ``SummaryWriter``).

        The runs are named and placed as ``add_scalars`` places its runs, with ``writer``'s
        queue size, flush interval and file-name suffix.
        """
        from torch.utils.tensorboard.summary import scalar
        from torch.utils.tensorboard.writer import FileWriter

        walltime = time.time()
        log_dir = writer.get_logdir()
        with self._lock:
            for key, value in values.items():
                run = os.path.join(log_dir, f"{run_prefix}_{key}")
                if run not in self._writers:
                    self._writers[run] = FileWriter(run, writer.max_queue, writer.flush_secs, writer.filename_suffix)
                self._writers[run].add_summary(scalar(tag, value), step, walltime)

    def flush(self) -> None:
        """Write every run's pending events to disk."""
        with self._lock:
            for run_writer in self._writers.values():
                run_writer.flush()

    def close(self) -> None:
        """Flush and close every run's writer; a later :meth:`add` opens new event files."""
        with self._lock:
            writers, self._writers = self._writers, {}
            for run_writer in writers.values():
                run_writer.close()


def write_to_tensorboard(sink: LogSink, writers: Sequence[Any], runs: RunWriters | None = None) -> None:
    """Log what ``sink`` holds to every TensorBoard ``SummaryWriter`` in ``writers``, at ``sink.step``.

    Parameters
    ----------
    sink : LogSink
        What an analysis's :meth:`~nsp_lightning.ProbeAnalysis.log` put there.
    writers : sequence of torch.utils.tensorboard.SummaryWriter
        The writers (``TensorBoardLogger.experiment``) of the Trainer's loggers.
    runs : RunWriters, optional
        Where charts of several runs are written, to be flushed and closed by the caller.
        Without it a :class:`RunWriters` is made and closed before this returns.
    """
    own = runs is None
    runs = RunWriters() if runs is None else runs
    for writer in writers:
        for kind, tag, value, options in sink.items:
            if kind == "image" and options.get("in_image_runs"):
                continue  # written to TensorBoardSink.image_runs by the drawing helper
            if kind == "image":
                _write_image(writer, tag, value, sink.step, options["dataformats"])
            elif kind == "histogram":
                writer.add_histogram(tag, value, global_step=sink.step, **options)
            elif kind == "embedding":
                writer.add_embedding(projector_points(value), tag=tag, global_step=sink.step, **options)
            elif kind == "scalars":
                runs.add(writer, tag, value, sink.step, options["run_prefix"])
            else:
                writer.add_text(tag, value, global_step=sink.step)
    if own:
        runs.close()


def projector_points(points: torch.Tensor) -> torch.Tensor:
    """``points`` ``(N, D)`` as TensorBoard's projector is given them: with zero columns up to 3 where ``D < 3``.

    The projector always opens a 3-D PCA of the tensor (TensorBoard 2.21 has no setting
    for its first view). Of a 2-column tensor it has no third component: it reads "Total
    variance described: NaN%" and draws no point. With a constant third column the third
    component is that column, of zero variance: the projector reads 100 % and shows the
    points in one plane, the 2-D layout (turned by PCA to its principal axes).
    """
    if points.dim() == 2 and points.shape[1] < 3:
        return torch.cat([points, points.new_zeros(points.shape[0], 3 - points.shape[1])], dim=1)
    return points


def _write_image(writer: Any, tag: str, image: Any, step: int, dataformats: str) -> None:
    """``writer.add_image(tag, image, step, dataformats=dataformats)``, with the same pixels, encoded faster.

    ``add_image`` converts every image to float32 and back and Pillow tries every PNG filter
    on every row: most of a spectrum record's cost, for about 100 cards a record.
    `nsp.viz.png.encode_png` writes the same pixels, mostly without holding the GIL.
    """
    from torch.utils.tensorboard.summary import Summary

    from nsp.viz.png import encode_png
    from nsp_lightning.probe.sinks.drawer import EncodedImage

    if isinstance(image, EncodedImage):  # encoded by the drawing helper already
        (height, width, channels), png = image.shape, image.png
    else:
        rgb = rgb_uint8(image, dataformats)
        (height, width, channels), png = rgb.shape, encode_png(rgb)
    encoded = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=encoded)]), step)


def add_custom_scalars(loggers: Sequence[Any], layout: Mapping[str, Any]) -> None:
    """Give every TensorBoardLogger of ``loggers`` the custom-scalars ``layout`` (other loggers have none)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    if layout:
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_custom_scalars(dict(layout))


def start_hparams(
    loggers: Sequence[Any], module_hparams: Mapping[str, Any], configuration: Mapping[str, Any], step: int
) -> None:
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
    configuration : mapping
        The analyses' configuration, ``{"<tag_prefix>/<key>": value}``
        (:func:`~nsp_lightning.probe.sinks.loggers.configuration`).
    step : int
        The step the summary is written at.
    """
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.tensorboard.summary import hparams

    params = {**module_hparams, **configuration}
    for logger in loggers:
        if not isinstance(logger, TensorBoardLogger):
            continue
        logger.hparams.update(params)
        # The placeholder Lightning writes when it logs hyperparameters without metrics, right after on_fit_start.
        logger._default_hp_metric = False
        _, session_start, _ = hparams(_plain(logger.hparams), {})
        logger.experiment._get_file_writer().add_summary(session_start, step)


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
