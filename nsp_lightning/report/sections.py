"""Report sections: what a probe analysis shows in ``nsp-report``.

An analysis's :meth:`~nsp_lightning.probe.analysis.ProbeAnalysis.report` returns one
:class:`Section` (or a list of them) built from the blocks below. The report renders every
block to HTML (self-contained: images inline, text escaped) and to PDF; an analysis never
writes HTML itself, so nothing it shows can break the page.

==================  ================================================================
:class:`Text`       a paragraph of plain text
:class:`Facts`      a list of ``(key, value)`` pairs
:class:`Table`      a table with a caption, a header row and rows of :class:`Cell`
                    (or plain strings)
:class:`Image`      an RGB(A) image (``Image.from_rgb``, WebP), one pixel per pixel
:class:`Chart`      a matplotlib figure (``Chart.from_figure``): a PNG in HTML, vector
                    graphics in PDF
:class:`Row`        blocks side by side while the page is wide enough, with an
                    optional heading
:class:`Film`       frames (one :class:`Frame` per record, say) with an epoch slider;
                    the films of one section share it
:class:`Grid`       images in a grid with row and column labels (a layer per row,
                    a record per column, say), for side-by-side comparison
==================  ================================================================

Example::

    from nsp_lightning.report.sections import Chart, Section, Table, Text

    def report(cls, records, header, context):
        rows = [[str(r.epoch), f"{r.scalars['loss']:.3g}"] for r in records]
        return Section("loss", "Probe loss", [Text("The loss of the probes."),
                                               Table("loss per record", ["epoch", "loss"], rows)])
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import numpy as np
from matplotlib.figure import Figure
from PIL import Image as _PILImage

import nsp.viz.render

__all__ = [
    "Cell", "Chart", "Facts", "Film", "Frame", "Grid", "Image", "Row", "Section", "Table", "Text", "integer_ticks",
    "scalar_chart",
]


@dataclass(frozen=True)
class Cell:
    """A table cell.

    Attributes
    ----------
    text : str
        The cell's text (escaped when rendered).
    number : bool
        Right-aligned.
    mono : bool
        In a monospace font (identifiers, fingerprints).
    warn : bool
        Shaded as a warning.
    share : float, optional
        Draws a bar of this fraction (0 to 1) behind the text.
    title : str, optional
        A tooltip.
    """

    text: str
    number: bool = False
    mono: bool = False
    warn: bool = False
    share: float | None = None
    title: str | None = None


@dataclass(frozen=True)
class Facts:
    """``(key, value)`` pairs, shown as a definition list."""

    items: list[tuple[str, str]]


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table: ``rows`` of :class:`Cell` (a plain ``str`` is a plain cell)."""

    caption: str
    headers: list[str]
    rows: list[list[Cell]]

    def __post_init__(self) -> None:
        rows = [[c if isinstance(c, Cell) else Cell(str(c)) for c in row] for row in self.rows]
        object.__setattr__(self, "rows", rows)


@dataclass(frozen=True)
class Image:
    """An encoded image (WebP) with its size in pixels and an alt text."""

    data: bytes
    width: int
    height: int
    alt: str
    format: str = "webp"

    @classmethod
    def from_rgb(cls, rgb: np.ndarray, alt: str, lossy: bool = False) -> "Image":
        """An image from a ``(H, W, 3)`` or ``(H, W, 4)`` uint8 array.

        Parameters
        ----------
        rgb : numpy.ndarray
            The pixels.
        alt : str
            The alt text.
        lossy : bool, default False
            Lossy WebP (quality 90), for smooth pictures whose exact pixel values carry
            nothing (response maps, region rasters): a third of the lossless size.
            Otherwise lossless WebP: every pixel kept (colour scales stay exact), about a
            quarter of a PNG's size for heatmaps.

        Raises
        ------
        ValueError
            If ``rgb`` is not such an array.
        """
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
            raise ValueError(
                f"nsp_lightning.sections.Image.from_rgb: expected a (H, W, 3) or (H, W, 4) uint8 array,"
                f" got {rgb.dtype} of shape {list(rgb.shape)}"
            )
        buffer = io.BytesIO()
        # method=1 with quality=100 compresses heatmaps nearly as well as the slowest setting, 3x faster.
        options = {"quality": 90, "method": 4} if lossy else {"lossless": True, "quality": 100, "method": 1}
        _PILImage.fromarray(rgb).save(buffer, format="WEBP", **options)
        return cls(buffer.getvalue(), rgb.shape[1], rgb.shape[0], alt)


@dataclass(frozen=True)
class Chart:
    """A matplotlib figure and its rendering; in a PDF the figure itself (vector graphics)."""

    figure: Figure
    image: Image

    @classmethod
    def from_figure(cls, figure: Figure, alt: str) -> "Chart":
        """A chart of ``figure`` (drawn with Agg; no pyplot needed)."""
        return cls(figure, Image.from_rgb(nsp.render.figure_to_rgb(figure), alt))


@dataclass(frozen=True)
class Row:
    """Blocks side by side while the page is wide enough, under an optional heading."""

    blocks: list[Any]
    heading: str | None = None


@dataclass(frozen=True)
class Frame:
    """One frame of a :class:`Film`: a label (e.g. ``"epoch 3 (global step 60)"``) and an image."""

    label: str
    image: Image


@dataclass(frozen=True)
class Film:
    """Frames shown one at a time with a slider (all of them, one below the other, in a PDF).

    Every frame shows in a box of the largest frame's size, so images do not jump while
    sliding, and shrinks to the page's column. The films of one section with as many
    frames (say, one per probe) move together: one slider, on the first, sets all of them
    frame by frame; ``group`` splits a section's films into groups with a slider each.
    """

    caption: str
    frames: list[Frame]
    group: str | None = None

    def __post_init__(self) -> None:
        # Refused here, inside the analysis's report(), so that the error names its record directory.
        if not self.frames:
            raise ValueError(f"nsp_lightning.sections.Film({self.caption!r}): a film needs at least one frame")


@dataclass(frozen=True)
class Grid:
    """Images in a grid: ``rows`` of ``(label, images)``, one image per column label.

    An image may be ``None`` (an empty cell). In HTML a table (scrolls sideways when wide);
    in a PDF one page per row.
    """

    caption: str
    columns: list[str]
    rows: list[tuple[str, list["Image | None"]]]

    def __post_init__(self) -> None:
        short = [label for label, images in self.rows if len(images) != len(self.columns)]
        if short:
            raise ValueError(
                f"nsp_lightning.sections.Grid({self.caption!r}): rows {short} do not have one image per column"
                f" ({len(self.columns)})"
            )


Block = Union[Text, Facts, Table, Image, Chart, Row, Film, Grid]


@dataclass
class Section:
    """A section of the report, with an entry in its navigation bar.

    Attributes
    ----------
    id : str
        The HTML anchor: lowercase letters, digits and ``-``; made unique by the report
        if two analyses choose the same.
    title : str
        The heading.
    blocks : list
        :class:`Text`, :class:`Facts`, :class:`Table`, :class:`Image`, :class:`Chart`,
        :class:`Row`, :class:`Film` or :class:`Grid`, in order.
    """

    id: str
    title: str
    blocks: list[Any] = field(default_factory=list)


def sections(value: "Section | Sequence[Section]", who: str) -> list[Section]:
    """``value`` as a list of sections; raise ``TypeError`` naming ``who`` if it is not one."""
    listed = [value] if isinstance(value, Section) else list(value) if isinstance(value, (list, tuple)) else None
    if listed is None or not all(isinstance(s, Section) for s in listed):
        raise TypeError(f"{who}: expected a Section or a list of Sections, got {type(value).__name__}")
    return listed


def scalar_chart(epochs: Sequence[int], series: dict[str, Sequence[float]], title: str) -> Chart:
    """A line chart of scalars over the records: one line per entry of ``series``.

    Parameters
    ----------
    epochs : sequence of int
        The records' epochs (the x axis).
    series : dict of str to sequence of float
        Per label, one value per epoch; non-finite values leave gaps.
    title : str
        The chart's title (and, with the labels, its alt text).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = Figure(figsize=(5.6, 3.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for label, values in series.items():
        values = np.asarray(values, dtype=np.float64)
        ax.plot(epochs, np.where(np.isfinite(values), values, np.nan), marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    integer_ticks(ax)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=7)
    return Chart.from_figure(figure, f"{title}: {', '.join(series)} over the records")


def integer_ticks(ax: Any) -> None:
    """Ticks on whole numbers only on ``ax``'s x axis: epochs have no halves."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
