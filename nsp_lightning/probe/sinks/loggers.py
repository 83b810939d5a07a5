"""One sink per attached logger (:class:`LoggerSinks`), the warnings about what a logger cannot take, the configuration."""

from __future__ import annotations

import importlib
from typing import Any, Iterable, Sequence

from nsp_lightning.probe.sinks.sink import KIND_NAMES, LogSink, MediaSink

__all__ = ["LoggerSinks", "MEDIA_LOGGERS", "configuration", "log_configuration", "no_media_warning"]

# The loggers that take media, by class name, and the sink of each (module, class).
MEDIA_LOGGERS = {
    "TensorBoardLogger": ("nsp_lightning.probe.sinks.tensorboard_sink", "TensorBoardSink"),
    "WandbLogger": ("nsp_lightning.probe.sinks.wandb_sink", "WandbSink"),
    "MLFlowLogger": ("nsp_lightning.probe.sinks.mlflow_sink", "MLflowSink"),
    "CSVLogger": ("nsp_lightning.probe.sinks.csv_sink", "CSVSink"),
}
# The kinds a warning names: a chart of several runs is TensorBoard's layout of scalars that
# every logger gets as scalars anyway (LogSink.scalars), not media that is lost.
_MEDIA = ("image", "histogram", "text", "embedding")
# The kinds the writer draws into images.
_DRAWN = ("figure", "later")
# How many tags a warning lists of each kind.
_LISTED = 8


def _sink_class(logger: Any) -> type[MediaSink] | None:
    """The sink of ``logger``'s class or of the nearest Lightning logger it derives from, or None."""
    for cls in type(logger).__mro__:
        found = MEDIA_LOGGERS.get(cls.__name__)
        if found and cls.__module__.startswith(("lightning.", "pytorch_lightning.")):
            return getattr(importlib.import_module(found[0]), found[1])
    return None


class LoggerSinks:
    """The :class:`MediaSink` of each logger of a Trainer, made once, and the one warning per logger that skips media.

    :meth:`sinks` is called on the training thread at every record (global rank 0): it
    makes a logger's sink the first time it sees the logger. A logger with no sink
    (another kind of Lightning logger, or one whose package is missing) is warned about
    once, at the first record whose media it skips, naming the kinds and their tags.

    Parameters
    ----------
    who : str
        The callback's name, which starts the warnings.
    """

    def __init__(self, who: str) -> None:
        self.who = who
        self._made: list[tuple[Any, MediaSink | None]] = []
        self._why: dict[int, str] = {}
        self._warned: set[int] = set()

    def sinks(self, loggers: Iterable[Any]) -> list[MediaSink]:
        """The sinks of ``loggers`` that take media, in order."""
        found = []
        for logger in loggers:
            made = [sink for seen, sink in self._made if seen is logger]
            if not made:
                made = [self._make(logger)]
                self._made.append((logger, made[0]))
            if made[0] is not None:
                found.append(made[0])
        return found

    def _make(self, logger: Any) -> MediaSink | None:
        cls = _sink_class(logger)
        if cls is None:
            known = ", ".join(MEDIA_LOGGERS)
            self._why[id(logger)] = f"nsp-lightning writes media to {known} only"
            return None
        try:
            return cls(logger)
        except ModuleNotFoundError as err:
            self._why[id(logger)] = str(err)
            return None

    def warn_skipped(self, sink: LogSink, loggers: Iterable[Any]) -> str | None:
        """Warn once per logger of ``loggers`` that skips media ``sink`` holds; return the warning (None if none)."""
        from lightning.pytorch.utilities.rank_zero import rank_zero_warn

        # A figure, or an image drawn later, is an image once the writer has drawn it.
        media = [("image" if kind in _DRAWN else kind, tag) for kind, tag, _, _ in sink.items
                 if kind in _MEDIA or kind in _DRAWN]
        if not media:
            return None
        lines = []
        for logger in loggers:
            if id(logger) not in self._why or id(logger) in self._warned:
                continue
            self._warned.add(id(logger))
            lines.append(f"{type(logger).__name__} ({self._why[id(logger)]})")
        if not lines:
            return None
        listed = []
        for kind in _MEDIA:
            tags = list(dict.fromkeys(tag for k, tag in media if k == kind))
            if tags:
                more = f" and {len(tags) - _LISTED} more" if len(tags) > _LISTED else ""
                listed.append(f"{KIND_NAMES[kind]}: {', '.join(tags[:_LISTED])}{more}")
        message = (
            f"{self.who}: {' and '.join(lines)} cannot take the analyses' images, histograms, text or embeddings;"
            f" for it they are skipped at every record (scalars are logged). Skipped at step {sink.step}: "
            + "; ".join(listed)
        )
        rank_zero_warn(message)
        return message

    def clear(self) -> None:
        """Close the sinks and forget the loggers (at teardown, after the last write: the callback pickles)."""
        for _, made in self._made:
            if made is not None:
                made.close()
        self._made, self._why, self._warned = [], {}, set()


def no_media_warning(loggers: Sequence[Any], where: Iterable[str], who: str) -> str | None:
    """The warning when no logger of ``loggers`` takes media (None when one does)."""
    if any(_sink_class(logger) is not None for logger in loggers):
        return None
    scalars = "scalars go to the loggers and " if loggers else ""
    return (
        f"{who}: the Trainer has no logger that takes images ({', '.join(MEDIA_LOGGERS)}), so no images are"
        f" logged; {scalars}records are written to {', '.join(where)}"
    )


def configuration(analyses: Sequence[Any]) -> dict[str, Any]:
    """The analyses' ``hparams()``, each key as ``<tag_prefix>/<key>``."""
    return {f"{analysis.prefix}/{k}": v for analysis in analyses for k, v in analysis.hparams().items()}


def log_configuration(loggers: Sequence[Any], analyses: Sequence[Any], step: int) -> list[LogSink]:
    """Give every logger but TensorBoard the analyses' configuration (``hparams()``); return their ``describe()`` text.

    Loggers other than TensorBoard get the configuration as hyperparameters, merged with
    the module's: call it after Lightning logged those (at train start). TensorBoard got
    it at fit start, in its HParams session
    (:func:`~nsp_lightning.probe.sinks.tensorboard_sink.start_hparams`).

    Returns
    -------
    list of LogSink
        One per analysis with a description: the text ``<prefix>/about`` at ``step``, for
        the loggers' sinks (written in order with the records, by the callback's writer).
    """
    from lightning.pytorch.loggers import TensorBoardLogger

    params = configuration(analyses)
    for logger in loggers:
        if params and not isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams({**dict(getattr(logger, "hparams", None) or {}), **params})
    texts = []
    for analysis in analyses:
        text = analysis.describe()
        if text:
            texts.append(LogSink(analysis.prefix, step, enabled=True))
            texts[-1].text("about", text)
    return texts
