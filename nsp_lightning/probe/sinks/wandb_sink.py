"""Weights & Biases: images as ``wandb.Image``, histograms as ``wandb.Histogram``, text and embeddings as ``wandb.Table``."""

from __future__ import annotations

from typing import Any

from nsp_lightning.probe.sinks.sink import LogSink, MediaSink, embedding_rows, histogram_counts, require, rgb_uint8

__all__ = ["WandbSink"]


class WandbSink(MediaSink):
    """A ``WandbLogger``: each record's items in one ``run.log`` call, at ``trainer/global_step`` = the record's step.

    Lightning's ``WandbLogger`` charts every key against ``trainer/global_step``, so the
    media line up with the scalars. Works offline (``WANDB_MODE=offline``): the media are
    files under the run's ``files/media`` and the history rows are in its ``.wandb`` file.
    """

    takes = frozenset({"image", "histogram", "text", "embedding"})

    def __init__(self, logger: Any) -> None:
        super().__init__(logger)
        self.wandb = require("wandb", "wandb", self.name)
        self.run = logger.experiment

    def write(self, sink: LogSink) -> None:
        wandb = self.wandb
        row: dict[str, Any] = {}
        for kind, tag, value, options in sink.items:
            if kind == "image":
                row[tag] = wandb.Image(rgb_uint8(value, options.get("dataformats", "HWC")))
            elif kind == "histogram":
                row[tag] = wandb.Histogram(np_histogram=histogram_counts(value))
            elif kind == "text":
                row[tag] = wandb.Table(columns=["step", "text"], data=[[sink.step, value]])
            elif kind == "embedding":
                columns, rows = embedding_rows(value, options)
                row[tag] = wandb.Table(columns=columns, data=rows)
        if row:
            self.run.log({**row, "trainer/global_step": sink.step})
