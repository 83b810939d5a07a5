"""CSV: images, histograms, text and embeddings as files beside ``metrics.csv``, listed in ``media.csv``."""

from __future__ import annotations

import csv
import os
from typing import Any

from nsp_lightning.probe.sinks.sink import MediaSink, embedding_tsv, file_name, histogram_counts, rgb_uint8

__all__ = ["CSVSink", "INDEX", "MEDIA"]

INDEX = "media.csv"
MEDIA = "media"
_SUFFIX = {"image": ".png", "histogram": ".csv", "text": ".md", "embedding": ".tsv"}


class CSVSink(MediaSink):
    """A ``CSVLogger``: one file per item under ``media/`` in the directory of its ``metrics.csv``.

    - an image: ``media/<tag>/step_<step>.png`` (RGB, as TensorBoard stores it);
    - a histogram: ``media/<tag>/step_<step>.csv`` with columns ``left,right,count``;
    - text: ``media/<tag>/step_<step>.md``;
    - an embedding: ``media/<tag>/step_<step>.tsv``, a header row and a row per point.

    Each file gets a row ``step,kind,tag,path`` in ``media.csv`` beside ``metrics.csv``
    (``path`` relative to that directory, ``tag`` as logged; the file names keep letters,
    digits, ``.``, ``-`` and ``_`` of the tag). An item logged again at a step that already
    has its file (an evaluation record at the fit's last step) gets ``step_<step>-1`` and so on.
    """

    takes = frozenset({"image", "histogram", "text", "embedding"})

    def __init__(self, logger: Any) -> None:
        super().__init__(logger)
        self.directory = os.path.dirname(os.path.abspath(logger.experiment.metrics_file_path))

    def write_item(self, kind: str, tag: str, value: Any, options: dict[str, Any], step: int) -> None:
        stem = os.path.join(MEDIA, *file_name(tag).split("/"), f"step_{step}")
        relative, n = stem + _SUFFIX[kind], 0
        while os.path.exists(os.path.join(self.directory, relative)):
            n += 1
            relative = f"{stem}-{n}{_SUFFIX[kind]}"
        path = os.path.join(self.directory, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind == "image":
            from PIL import Image

            Image.fromarray(rgb_uint8(value, options.get("dataformats", "HWC"))).save(path, format="PNG")
        elif kind == "histogram":
            counts, edges = histogram_counts(value)
            with open(path, "w", newline="", encoding="utf-8") as file:
                rows = csv.writer(file)
                rows.writerow(["left", "right", "count"])
                rows.writerows([float(a), float(b), int(c)] for a, b, c in zip(edges[:-1], edges[1:], counts))
        else:
            with open(path, "w", encoding="utf-8") as file:
                file.write(value if kind == "text" else embedding_tsv(value, options))
        index = os.path.join(self.directory, INDEX)
        new = not os.path.exists(index)
        with open(index, "a", newline="", encoding="utf-8") as file:
            rows = csv.writer(file)
            if new:
                rows.writerow(["step", "kind", "tag", "path"])
            rows.writerow([step, kind, tag, relative.replace(os.sep, "/")])
