"""MLflow: images with ``log_image`` (a key and a step), text with ``log_text``, histograms and embeddings as artifacts."""

from __future__ import annotations

from typing import Any

from nsp_lightning.probe.sinks.sink import MediaSink, embedding_tsv, file_name, histogram_counts, require, rgb_uint8

__all__ = ["MLflowSink"]


class MLflowSink(MediaSink):
    """An ``MLFlowLogger``: artifacts of its run, readable through ``mlflow.MlflowClient(...).list_artifacts``.

    - an image: ``client.log_image(run_id, image, key=tag, step=step)`` (MLflow's image
      series: ``images/<tag with ~ for />+step+<step>+...png``);
    - text: ``text/<tag>/step_<step>.md``;
    - a histogram (MLflow has no histogram view): ``histograms/<tag>/step_<step>.json``
      with the bin ``edges`` and ``counts``;
    - an embedding: ``embeddings/<tag>/step_<step>.tsv``, a header row and a row per point.

    Tags are made file names by :func:`~nsp_lightning.probe.sinks.sink.file_name`.
    """

    takes = frozenset({"image", "histogram", "text", "embedding"})

    def __init__(self, logger: Any) -> None:
        super().__init__(logger)
        require("mlflow", "mlflow", self.name)
        self.client = logger.experiment
        self.run_id = logger.run_id

    def write_item(self, kind: str, tag: str, value: Any, options: dict[str, Any], step: int) -> None:
        where = f"{file_name(tag)}/step_{step}"
        if kind == "image":
            self.client.log_image(self.run_id, rgb_uint8(value, options.get("dataformats", "HWC")), key=tag, step=step)
        elif kind == "text":
            self.client.log_text(self.run_id, value, f"text/{where}.md")
        elif kind == "histogram":
            counts, edges = histogram_counts(value)
            self.client.log_dict(self.run_id, {"tag": tag, "step": step, "edges": edges.tolist(),
                                               "counts": counts.tolist()}, f"histograms/{where}.json")
        else:
            self.client.log_text(self.run_id, embedding_tsv(value, options), f"embeddings/{where}.tsv")
