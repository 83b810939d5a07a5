"""What an analysis logs at a record (:class:`LogSink`) and what every logger's sink shares (:class:`MediaSink`).

:meth:`~nsp_lightning.ProbeAnalysis.log` puts images, figures, histograms, text and
embeddings into a :class:`LogSink`; one :class:`MediaSink` per attached logger writes them
the way that logger takes them. The helpers here turn the values into what every logger
but TensorBoard (which converts them itself) stores: RGB bytes, histogram counts, a table.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

__all__ = ["HISTOGRAM_BINS", "IMAGE_RUN", "KIND_NAMES", "LogSink", "MediaSink", "embedding_rows", "embedding_tsv", "file_name", "histogram_counts",
           "require", "rgb_uint8"]

# How each kind of item is named in messages (plural), in the order they are listed.
KIND_NAMES = {"image": "images", "histogram": "histograms", "text": "text", "embedding": "embeddings",
              "scalars": "charts of several runs"}
# Loggers other than TensorBoard get histograms as counts in this many equal bins.
HISTOGRAM_BINS = 64
# TensorBoard shows the images drawn later in the run ``<prefix>_images`` (written by the drawing helper).
IMAGE_RUN = "images"


class LogSink:
    """Where :meth:`~nsp_lightning.ProbeAnalysis.log` puts images, histograms, text and embeddings for the loggers.

    Tags are relative to the analysis's ``tag_prefix``: ``sink.image("conv/probe_0", x)``
    logs ``<tag_prefix>/conv/probe_0``. Everything is logged at the record's step, to
    every logger of the Trainer that takes media (TensorBoard, Weights & Biases, MLflow,
    CSV: see :mod:`nsp_lightning.probe.sinks`), after ``log`` returns, on a background
    thread. Without such a logger ``enabled`` is False and whatever is put here is
    dropped: check it to skip drawing.

    Attributes
    ----------
    prefix : str
        The analysis's tag prefix.
    step : int
        The step the record is logged at (the record number, or the global step).
    enabled : bool
        Whether a logger will receive what is put here.
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
        """A matplotlib figure, drawn with Agg into an image when it is written (on the writer's thread).

        The figure must not be changed after this call: the writer draws it later.
        """
        if self.enabled:
            self.items.append(("figure", self._tag(tag), figure, {}))

    def image_later(self, tag: str, draw: Callable[..., np.ndarray], *args: Any, **kwargs: Any) -> None:
        """An image drawn when it is written, off the training thread: ``draw(*args, **kwargs)``, uint8 ``(H, W, 3)``.

        What an analysis draws for the loggers only (a card, say) need not hold up training.
        Where ``draw`` is registered with `~nsp_lightning.probe.sinks.drawer.drawable` and its
        arguments are arrays, JSON values and registered dataclasses, it runs
        in the drawing helper process (:mod:`~nsp_lightning.probe.sinks.drawer`), whose
        Python does not hold the GIL training needs; otherwise on the writer's thread.
        ``draw`` runs after ``log`` returns and training has gone on, so its arguments must
        be values that nothing changes afterwards: arrays of the record, or copies, never
        the model's live tensors. An error in ``draw`` is reported as the writer's are (a
        warning at the end of the fit), and that image is missing. TensorBoard shows these
        images in a run of their own, ``<log_dir>/<prefix>_images`` (the prefix's ``/`` as
        ``_``), which the drawing helper writes itself: their PNG never passes through the
        training process.
        """
        if self.enabled:
            self.items.append(("later", self._tag(tag), (draw, args, kwargs), {"dataformats": "HWC"}))

    def histogram(self, tag: str, values: np.ndarray | torch.Tensor, bins: str = "tensorflow") -> None:
        """A histogram of ``values`` (any shape; non-finite values are dropped); ``bins`` is TensorBoard's."""
        if self.enabled:
            array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
            self.items.append(("histogram", self._tag(tag), array[np.isfinite(array)], {"bins": bins}))

    def text(self, tag: str, text: str) -> None:
        """Text, in Markdown (TensorBoard renders it; other loggers keep it as written)."""
        if self.enabled:
            self.items.append(("text", self._tag(tag), str(text), {}))

    def scalars(self, tag: str, values: Mapping[str, float]) -> None:
        """One TensorBoard chart ``<prefix>/<tag>`` with one line per key of ``values`` (a layer, say), each its own run.

        TensorBoard gives each run its own colour and lists the runs beside the charts, so
        the lines are told apart and named. The run of key ``k`` is the directory
        ``<prefix>_<k>`` in the logger's directory, as ``SummaryWriter.add_scalars`` names
        its runs; one directory serves every chart with that key. Non-finite values are
        dropped (TensorBoard cannot chart them). This is a layout of TensorBoard's only:
        other loggers chart every scalar on its own, so put the values in the record's
        scalars as well (which every logger takes), as ``SpectrumAnalysis`` does.
        """
        if not self.enabled:
            return
        bad = [k for k in values
               if not isinstance(k, str) or not k or k in (".", "..", IMAGE_RUN) or "/" in k or os.sep in k]
        if bad:
            raise ValueError(f"LogSink.scalars({tag!r}): run names {bad} are not names of a directory"
                             f" ({IMAGE_RUN!r} is the run of the images drawn later)")
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
        Other loggers get a table: the metadata columns, then ``x0`` ... ``x<D-1>``.
        """
        if self.enabled:
            array = torch.as_tensor(np.asarray(points.detach().cpu() if isinstance(points, torch.Tensor) else points))
            if array.dim() != 2:
                raise ValueError(f"LogSink.embedding: expected points of shape (N, D), got {list(array.shape)}")
            options = {"metadata": metadata, "metadata_header": metadata_header}
            self.items.append(("embedding", self._tag(tag), array, options))


class MediaSink:
    """Writes what a :class:`LogSink` holds to one logger, the kinds it takes (``takes``) and no others.

    Subclasses set ``takes`` and implement :meth:`write_item` (or :meth:`write`, to write a
    record's items at once). They are made on the training thread, where the logger's
    experiment may be touched; :meth:`write` runs on the background thread.

    Parameters
    ----------
    logger : lightning.pytorch.loggers.Logger
        The logger written to.
    """

    takes: frozenset[str] = frozenset()

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.name = type(logger).__name__

    def image_runs(self, sink: LogSink) -> list[str]:
        """The directories where the drawing helper writes ``sink``'s images drawn later, as TensorBoard events.

        None by default: the images are drawn and handed to :meth:`write` with the others.
        A logger that names directories here gets them in :meth:`write` with the option
        ``in_image_runs`` True, written already, and must not write them again.
        """
        return []

    def write(self, sink: LogSink) -> None:
        """Write every item of ``sink`` whose kind this logger takes, at ``sink.step``."""
        for kind, tag, value, options in sink.items:
            if kind in self.takes:
                self.write_item(kind, tag, value, options, sink.step)

    def write_item(self, kind: str, tag: str, value: Any, options: dict[str, Any], step: int) -> None:
        """Write one item (``kind`` in ``takes``) at ``step``."""
        raise NotImplementedError(f"{type(self).__name__}.write_item")

    def close(self) -> None:
        """Release what the sink opened itself (not the logger), once nothing is written any more."""


def rgb_uint8(image: np.ndarray | torch.Tensor, dataformats: str = "HWC") -> np.ndarray:
    """``image`` as TensorBoard stores it: ``(H, W, 3 or 4)`` uint8; floats scaled by 255 and clipped, grey made RGB.

    Parameters
    ----------
    image : array or tensor
        uint8 (0 to 255) or float (0 to 1) values laid out as ``dataformats``.
    dataformats : {"HWC", "CHW", "HW"}
        The layout of ``image``.

    Returns
    -------
    numpy.ndarray
        The image, ``(H, W, C)`` uint8 with ``C`` 3 or 4.
    """
    array = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
    layout = dataformats.upper()
    if layout not in ("HWC", "CHW", "HW") or array.ndim != len(layout):
        raise ValueError(f"rgb_uint8: expected an image laid out as 'HWC', 'CHW' or 'HW', got {dataformats!r} "
                         f"for shape {list(array.shape)}")
    hwc = array.transpose([layout.find(c) for c in "HWC"]) if array.ndim == 3 else array[:, :, None]
    if hwc.shape[2] == 1:
        hwc = np.concatenate([hwc] * 3, axis=2)
    if hwc.dtype == np.uint8:
        # Already what the loggers store: three float32 passes over a card cost more than encoding it.
        return np.ascontiguousarray(hwc)
    # As torch.utils.tensorboard.summary.image: the same bytes in every logger.
    return (hwc.astype(np.float32) * 255).clip(0, 255).astype(np.uint8)


def histogram_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(counts, edges)`` of ``values`` in :data:`HISTOGRAM_BINS` equal bins from their least to their largest value."""
    return np.histogram(values, bins=HISTOGRAM_BINS)


def embedding_rows(points: torch.Tensor, options: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The table of an embedding: its columns (metadata, then ``x0`` ...) and one row per point."""
    metadata, header = options.get("metadata"), options.get("metadata_header")
    coords = points.double().numpy()
    columns = [f"x{d}" for d in range(coords.shape[1])]
    if metadata is None:
        return columns, [list(map(float, row)) for row in coords]
    names = list(header) if header is not None else ["label"]
    labels = [list(m) if header is not None else [m] for m in metadata]
    return names + columns, [[*(str(v) for v in m), *map(float, row)] for m, row in zip(labels, coords)]


def embedding_tsv(points: torch.Tensor, options: Mapping[str, Any]) -> str:
    """The table of an embedding (:func:`embedding_rows`) as tab-separated text, the header first."""
    columns, rows = embedding_rows(points, options)
    return "".join("\t".join(map(str, line)) + "\n" for line in [columns, *rows])


def file_name(tag: str) -> str:
    """``tag`` as a relative path: each ``/``-separated part kept to letters, digits, ``.``, ``-`` and ``_``."""
    parts = [re.sub(r"[^A-Za-z0-9._-]", "_", part) for part in tag.split("/")]
    return "/".join("_" + part if part in ("", ".", "..") else part for part in parts)


def require(module: str, extra: str, who: str) -> Any:
    """Import ``module``, or raise a ModuleNotFoundError that says which nsp-lightning extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ModuleNotFoundError(
            f"nsp_lightning: logging media to {who} needs the package {module!r} ({err}); install it with"
            f" `pip install 'nsp-lightning[{extra}]'`"
        ) from err
