"""The report as a PDF (``nsp-report --pdf``): the HTML report's sections on A4 pages.

:func:`~nsp_lightning.report.html.report` writes it beside the HTML page when asked.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from PIL import Image as _PILImage

from nsp_lightning.report.sections import Chart, Facts, Film, Grid, Image, Row, Section, Table, Text

__all__ = ["count_pages", "write_pdf"]

_PDF_PAGE = (8.27, 11.69)  # A4, inches
_PDF_LINES = 72
_PDF_COLUMNS = 100


def count_pages(blocks: Sequence[Any]) -> int:
    """The image pages a PDF of ``blocks`` has: one per chart, image and frame."""
    pages = 0
    for block in blocks:
        if isinstance(block, (Chart, Image)):
            pages += 1
        elif isinstance(block, Row):
            pages += count_pages(block.blocks)
        elif isinstance(block, Film):
            pages += len(block.frames)
        elif isinstance(block, Grid):
            pages += len(block.rows)
    return pages


def _text_table(table: Table) -> list[str]:
    cells = [table.headers] + [[c.text for c in row] for row in table.rows]
    widths = [max(len(row[j]) for row in cells) for j in range(len(table.headers))]
    lines = [table.caption]
    for k, row in enumerate(cells):
        lines.append("  ".join(t.ljust(w) if j == 0 else t.rjust(w) for j, (t, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines + [""]


class _PdfWriter:
    """Text flows onto A4 pages in a monospace font; every chart and heatmap gets a page of its own."""

    def __init__(self, pdf: PdfPages, progress: Callable[[str], None]) -> None:
        self.pdf, self.progress = pdf, progress
        self.lines: list[str] = []

    def text(self, lines: list[str]) -> None:
        for line in lines:
            if len(self.lines) >= _PDF_LINES:
                self.flush()
            self.lines.append(line)

    def flush(self) -> None:
        if not self.lines:
            return
        figure = Figure(figsize=_PDF_PAGE)
        figure.text(0.06, 0.96, "\n".join(self.lines), family="monospace", fontsize=7.5, va="top", linespacing=1.3)
        self.pdf.savefig(figure)
        self.lines = []

    def chart(self, chart: Chart, what: str) -> None:
        self.flush()
        self.pdf.savefig(chart.figure)
        self.progress(what)

    def image(self, image: Image, caption: str) -> None:
        self.flush()
        rgb = np.asarray(_PILImage.open(io.BytesIO(image.data)).convert("RGB"))
        # One image pixel per point, a margin and a caption line; viewers fit the page to the window.
        width, height = rgb.shape[1] / 72, rgb.shape[0] / 72
        margin, top = 0.3, 0.5
        page_w, page_h = width + 2 * margin, height + margin + top
        figure = Figure(figsize=(page_w, page_h), dpi=72)
        ax = figure.add_axes((margin / page_w, margin / page_h, width / page_w, height / page_h))
        ax.imshow(rgb, interpolation="none")
        ax.set_axis_off()
        figure.text(0.5, 1 - 0.2 / page_h, caption, ha="center", va="top", fontsize=10)
        self.pdf.savefig(figure)
        self.progress(f"PDF page: {caption}")


def _pdf_block(writer: _PdfWriter, block: Any) -> None:
    if isinstance(block, Facts):
        width = max(len(k) for k, _ in block.items)
        for key, value in block.items:
            wrapped = textwrap.wrap(value, _PDF_COLUMNS - width - 2) or [""]
            writer.text([f"{key.ljust(width)}  {wrapped[0]}"] + [" " * (width + 2) + w for w in wrapped[1:]])
        writer.text([""])
    elif isinstance(block, Text):
        writer.text(textwrap.wrap(block.text, _PDF_COLUMNS) + [""])
    elif isinstance(block, Table):
        writer.text(_text_table(block))
    elif isinstance(block, Chart):
        writer.chart(block, f"PDF page: {block.image.alt}")
    elif isinstance(block, Image):
        writer.image(block, block.alt)
    elif isinstance(block, Row):
        if block.heading is not None:
            writer.text([block.heading, ""])
        for child in block.blocks:
            _pdf_block(writer, child)
    elif isinstance(block, Grid):
        for label, images in block.rows:
            writer.image(_grid_row(images), f"{block.caption}, {label}: {', '.join(block.columns)}")
    else:
        for frame in block.frames:
            writer.image(frame.image, f"{block.caption}, {frame.label}")


def _grid_row(images: Sequence[Image | None]) -> Image:
    """One row of a grid as one image: the cells side by side, 4 white pixels apart."""
    pixels = [np.asarray(_PILImage.open(io.BytesIO(im.data)).convert("RGB")) for im in images if im is not None]
    height = max(p.shape[0] for p in pixels)
    canvas = np.full((height, sum(p.shape[1] + 4 for p in pixels) - 4, 3), 255, dtype=np.uint8)
    x = 0
    for p in pixels:
        canvas[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + 4
    return Image.from_rgb(canvas, "grid row")


def write_pdf(
    title: str, subtitle: str, sections: Sequence[Section], footer: str, path: Path, progress: Callable[[str], None]
) -> None:
    """Write the report's ``sections`` to ``path`` as a PDF, under ``title`` and ``subtitle``, ending with ``footer``.

    Text flows onto A4 pages in a monospace font; every chart, image, film frame and
    grid row gets a page of its own, and ``progress(what)`` is called once per such page
    (:func:`count_pages` times).
    """
    with PdfPages(path) as pdf:
        writer = _PdfWriter(pdf, progress)
        writer.text([title, subtitle, ""])
        for section in sections:
            writer.text([section.title.upper(), ""])
            for block in section.blocks:
                _pdf_block(writer, block)
        writer.text(["", footer])
        writer.flush()
        pdf.infodict()["Title"] = title
