"""Where an analysis's pictures go: a :class:`LogSink` collects them, one sink per attached logger writes them.

:meth:`~nsp_lightning.ProbeAnalysis.log` puts images, figures, histograms, text and
embeddings into a :class:`LogSink`; the callback hands it to the sink of every logger of
the Trainer at once, after the analysis returned, on a background thread
(:class:`BackgroundWriter`: encoding images is most of a record's cost and training need
not wait for it). Images an analysis has drawn later (``LogSink.image_later``: the
spectrum's cards) are drawn in a helper process (:mod:`~nsp_lightning.probe.sinks.drawer`),
where their Python does not hold the GIL that training needs; the helper writes them to
TensorBoard itself, in the run ``<prefix>_images`` (:mod:`~nsp_lightning.probe.sinks.events`).

=====================  =====================================  ==============================================
logger                 sink (module)                          what it takes
=====================  =====================================  ==============================================
``TensorBoardLogger``  :class:`TensorBoardSink`               images, histograms, text, embeddings,
                       (``tensorboard_sink``)                 charts of several runs (``LogSink.scalars``)
``WandbLogger``        :class:`WandbSink` (``wandb_sink``)    ``wandb.Image``, ``wandb.Histogram``,
                                                              text and embeddings as ``wandb.Table``
``MLFlowLogger``       :class:`MLflowSink` (``mlflow_sink``)  ``log_image`` (key, step), ``log_text``;
                                                              histograms (JSON) and embeddings (TSV) as
                                                              artifacts
``CSVLogger``          :class:`CSVSink` (``csv_sink``)        files beside ``metrics.csv`` listed in
                                                              ``media.csv``
any other              none                                   nothing: one warning names what is skipped
=====================  =====================================  ==============================================

:class:`LoggerSinks` makes each logger's sink once and warns once per logger that skips
media; :func:`start_hparams` (TensorBoard's HParams session, at fit start),
:func:`log_configuration` and :func:`write_hparams` give the loggers the module's and
the analyses' configuration. A sink for another logger is a :class:`MediaSink` subclass: the
kinds it ``takes`` and ``write_item(kind, tag, value, options, step)``, where ``kind`` is
one of ``"image"``, ``"histogram"``, ``"text"``, ``"embedding"``, ``"scalars"``.
"""

from nsp_lightning.probe.sinks.csv_sink import CSVSink
from nsp_lightning.probe.sinks.loggers import (
    MEDIA_LOGGERS,
    LoggerSinks,
    configuration,
    log_configuration,
    no_media_warning,
)
from nsp_lightning.probe.sinks.mlflow_sink import MLflowSink
from nsp_lightning.probe.sinks.sink import LogSink, MediaSink, require, rgb_uint8
from nsp_lightning.probe.sinks.tensorboard_sink import (
    RunWriters,
    TensorBoardSink,
    add_custom_scalars,
    projector_points,
    start_hparams,
    write_hparams,
    write_to_tensorboard,
)
from nsp_lightning.probe.sinks.wandb_sink import WandbSink
from nsp_lightning.probe.sinks.writer import BackgroundWriter, write_sinks

__all__ = [
    "BackgroundWriter",
    "CSVSink",
    "LogSink",
    "LoggerSinks",
    "MEDIA_LOGGERS",
    "MLflowSink",
    "MediaSink",
    "RunWriters",
    "TensorBoardSink",
    "WandbSink",
    "add_custom_scalars",
    "configuration",
    "log_configuration",
    "no_media_warning",
    "projector_points",
    "require",
    "rgb_uint8",
    "start_hparams",
    "write_hparams",
    "write_sinks",
    "write_to_tensorboard",
]
