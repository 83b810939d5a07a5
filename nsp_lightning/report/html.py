"""Offline report: a run's probe records as one self-contained HTML page (and a PDF, :mod:`~nsp_lightning.report.pdf`).

:func:`report` finds the record directories of a run (every ``manifest.json`` under it),
reads each with :func:`~nsp_lightning.read_records`, and asks the analysis that wrote it
(:meth:`~nsp_lightning.ProbeAnalysis.report`) for its sections, which it renders into one
HTML file that needs nothing else: images are inline WebP data URIs, styles and the small
epoch-slider script are inline, and nothing is fetched from the network. The command
``nsp-report`` (:mod:`nsp_lightning.report.cli`) calls it.

The spectra of :class:`~nsp_lightning.SpectrumCallback` have these sections
(:mod:`nsp_lightning.analyses.spectrum.report`):

- **Run and model**: the model, transform, INCL, probes and recorded epochs, and the
  recorded layers with their shapes and neuron counts (and module descriptions and edge
  counts, where the record header holds them).
- **Change since the baseline**: per probe, each layer's change of the spectrum since the
  baseline record (:func:`nsp.energy.change_since`: relative change, median decades a
  coefficient moved, change of log10 energy, sign flips) as a chart over the records and
  a table of the values at the last record.
- **Spectral energy per layer**: per probe, log10 Σ ŝ² of every layer across all recorded
  epochs, as lines and as a layer × epoch heatmap (:func:`nsp.render.energy_over_epochs`).
- **Share of energy per layer**: per probe, each layer's share of the total spectral
  energy (:func:`nsp.energy.energy_share`) at the selected epochs.
- **Activations and spectra**: per probe, every layer's activation and spectrum cards
  (:func:`nsp.render.render_card`) at the selected epochs, on colour ranges fixed per layer
  over the whole run, with one slider that moves every probe. At most `HEATMAP_EPOCHS`
  epochs are selected: the first, the last and evenly spaced ones between, so that a run
  of hundreds of epochs still gives a small page; the text says which.
- **Spectra of every record, side by side**: per probe, a grid with a row per layer and a
  column per record, on the same colour ranges.
- **Graph rebuilds** (INCL=False only): the records at which a probe's data-dependent graph
  changed.
- **Conditioning**, only where the records carry it: each layer's rounding sensitivity
  (:func:`nsp.rounding_sensitivity`, an array of probes × layers per record).

Other analyses add their own sections after them. An analysis whose class is not
available (a user's, not imported) still gets a section: its stored scalars over the
records and its arrays (:meth:`nsp_lightning.ProbeAnalysis.report`).

This module does not import Lightning.
"""

from __future__ import annotations

import base64
import datetime
import html
import importlib
import os
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence, TextIO

import nsp
from nsp.io.storage import MANIFEST, RecordStore
from nsp_lightning.probe.analysis import ProbeAnalysis, ReportContext
from nsp_lightning.probe.store import read_series_records
from nsp_lightning.report.pdf import count_pages, write_pdf
from nsp_lightning.report.sections import Chart, Facts, Film, Grid, Image, Row, Section, Table, Text, sections

__all__ = ["HEATMAP_EPOCHS", "report"]

HEATMAP_EPOCHS = 12
"""The most epochs whose heatmaps a report shows (the first, the last and some between)."""

_DEFAULT_NAME = "report.html"


@dataclass(frozen=True)
class _Document:
    title: str
    subtitle: str
    sections: list[Section]
    footer: str


class _Progress:
    """A progress bar on a text stream: redrawn in place on a terminal, every 10 % otherwise."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total, self.done, self.stream = max(total, 1), 0, stream
        self._tty = stream is not None and stream.isatty()
        self._printed = -1

    def step(self, what: str) -> None:
        self.done += 1
        if self.stream is None:
            return
        tenth = 10 * self.done // self.total
        if not self._tty and tenth == self._printed:
            return
        self._printed = tenth
        filled = 30 * self.done // self.total
        line = f"nsp-report [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {what}"
        if self._tty:
            self.stream.write(f"\r{line[:110]:<110}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self._tty:
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------


def _static(name: str) -> str:
    """A file of the report's package data (``nsp_lightning/report/static``), as text."""
    return resources.files("nsp_lightning.report").joinpath("static", name).read_text(encoding="utf-8")


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _html_image(image: Image) -> str:
    data = base64.b64encode(image.data).decode("ascii")
    return (
        f'<img src="data:image/{image.format};base64,{data}" width="{image.width}" height="{image.height}" '
        f'alt="{_esc(image.alt)}">'
    )


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in table.headers)
    body = []
    for row in table.rows:
        cells = []
        for cell in row:
            flags = (("num", cell.number), ("mono", cell.mono), ("warn", cell.warn), ("share", cell.share is not None))
            classes = [name for name, on in flags if on]
            attrs = f' class="{" ".join(classes)}"' if classes else ""
            if cell.share is not None:
                attrs += f' style="--s:{100 * cell.share:.2f}%"'
            if cell.title:
                attrs += f' title="{_esc(cell.title)}"'
            cells.append(f"<td{attrs}>{_esc(cell.text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    caption = f"<caption>{_esc(table.caption)}</caption>"
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_film(film: Film, index: int, group: str, controls: bool) -> str:
    last = len(film.frames) - 1
    # Every frame in a box of the largest frame's size, shrunk to the column with its aspect
    # ratio kept: images neither jump while sliding nor overflow the page.
    width = max(f.image.width for f in film.frames)
    height = max(f.image.height for f in film.frames)
    frames = "".join(
        f'<figure class="frame" data-label="{_esc(f.label)}"><figcaption>{_esc(f.label)}</figcaption>'
        f'<div class="box" style="width:{width}px;aspect-ratio:{width}/{height}">{_html_image(f.image)}</div></figure>'
        for f in film.frames
    )
    slider = (
        f'<div class="controls" hidden><input type="range" min="0" max="{last}" step="1" value="{last}" '
        f'aria-label="{_esc(film.caption)}: epoch"><output></output>'
        f'<span class="count">{len(film.frames)} frames</span></div>'
        if controls
        else ""
    )
    return (
        f'<div class="film" id="film-{index}" data-group="{_esc(group)}"><h3>{_esc(film.caption)}</h3>'
        f"{slider}{frames}</div>"
    )


def _html_grid(grid: Grid) -> str:
    head = "".join(f'<th scope="col">{_esc(c)}</th>' for c in grid.columns)
    rows = "".join(
        f'<tr><th scope="row">{_esc(label)}</th>'
        + "".join(f"<td>{'' if im is None else _html_image(im)}</td>" for im in images)
        + "</tr>"
        for label, images in grid.rows
    )
    return (
        f'<div class="grid"><table><caption>{_esc(grid.caption)}</caption>'
        f"<thead><tr><th></th>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _html_block(block: Any, films: list[str], section: str) -> str:
    if isinstance(block, Facts):
        items = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in block.items)
        return f'<dl class="facts">{items}</dl>'
    if isinstance(block, Text):
        return f'<p class="note">{_esc(block.text)}</p>'
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Chart):
        return _html_image(block.image)
    if isinstance(block, Image):
        return _html_image(block)
    if isinstance(block, Row):
        heading = "" if block.heading is None else f"<h3>{_esc(block.heading)}</h3>"
        return f'{heading}<div class="row">{"".join(_html_block(b, films, section) for b in block.blocks)}</div>'
    if isinstance(block, Grid):
        return _html_grid(block)
    # One slider per section: its films (an analysis's probes or methods) move together, frame
    # by frame, unless they name a group of their own; films of another length get their own.
    group = f"{section}/{block.group or ''}/{len(block.frames)}"
    controls = group not in films
    films.append(group)  # its length gives every film a unique id
    return _html_film(block, len(films) - 1, group, controls)


def _html(document: _Document) -> str:
    films: list[str] = []
    parts = [
        f'<section id="{section.id}"><h2>{_esc(section.title)}</h2>'
        f'{"".join(_html_block(block, films, section.id) for block in section.blocks)}</section>'
        for section in document.sections
    ]
    nav = "".join(f'<a href="#{s.id}">{_esc(s.title)}</a>' for s in document.sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(document.title)}</title><style>\n{_static('report.css')}</style></head>\n"
        f'<body><header class="top"><h1>{_esc(document.title)}</h1><p>{_esc(document.subtitle)}</p></header>'
        f"<nav>{nav}</nav><main>\n{chr(10).join(parts)}\n</main>"
        f"<footer>{_esc(document.footer)}</footer><script>\n{_static('report.js')}</script></body></html>\n"
    )


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    directory: Path
    name: str
    cls: type[ProbeAnalysis]
    header: dict[str, Any]
    records: list[Any]


def _record_directories(run_dir: Path) -> list[Path]:
    """The record directory ``run_dir`` is, or every one inside it (one per analysis)."""
    if not run_dir.exists():
        raise FileNotFoundError(f"nsp_lightning.report: {run_dir} does not exist")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"nsp_lightning.report: {run_dir} is not a directory")
    if (run_dir / MANIFEST).is_file():
        return [run_dir]
    found = sorted(p.parent for p in run_dir.rglob(MANIFEST))
    if not found:
        raise FileNotFoundError(
            f"nsp_lightning.report: no spectrum records in {run_dir} (nor records of any other probe analysis):"
            f" it holds no {MANIFEST}, nor does any directory inside it. Pass the run directory (e.g."
            " lightning_logs/version_0) or a record directory a callback wrote (SpectrumCallback.dirpath, by default"
            " <log_dir>/spectrum)."
        )
    return found


def _check_one_directory_per_analysis(run_dir: Path, series: Sequence[_Series]) -> None:
    by_name: dict[str, list[Path]] = {}
    for s in series:
        by_name.setdefault(s.name, []).append(s.directory)
    for name, directories in by_name.items():
        if len(directories) > 1:
            listed = ", ".join(str(p) for p in directories[:10]) + (", …" if len(directories) > 10 else "")
            raise ValueError(
                f"nsp_lightning.report: {run_dir} holds {len(directories)} record directories of the analysis"
                f" {name!r} ({listed}); pass one of them"
            )


def _series(directory: Path, skip_bad: bool, problems: list[str]) -> _Series:
    """A record directory's analysis, header and checked records; what was left out goes to ``problems``."""
    name, cls, header, records, skipped = read_series_records(directory, skip_bad=skip_bad)
    problems += skipped
    problems += [
        f"{directory / (f['name'] + '.npz')} was not recorded: {f['error']}" for f in RecordStore(directory).failures()
    ]
    return _Series(directory, name, cls, header, records)


def _problems_section(problems: Sequence[str]) -> Section:
    return Section(
        "problems",
        "Left out of this report",
        [
            Text(
                f"{len(problems)} record(s) or record directories of this run could not be read or were not recorded,"
                " and are left out of the sections below. Each line names the file and what is wrong."
            ),
            Table("what is left out, and why", ["problem"], [[p] for p in problems]),
        ],
    )


def _unique_ids(parts: list[Section]) -> None:
    seen: set[str] = set()
    for section in parts:
        base = re.sub(r"[^a-z0-9-]+", "-", section.id.lower()).strip("-") or "section"
        candidate, k = base, 2
        while candidate in seen:
            candidate, k = f"{base}-{k}", k + 1
        seen.add(candidate)
        section.id = candidate


def report(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    pdf: bool = False,
    progress: bool = False,
    skip_bad: bool = False,
) -> Path:
    """Write a self-contained HTML report of a run's probe records: a section per analysis.

    Parameters
    ----------
    run_dir : str or os.PathLike
        A run directory such as ``lightning_logs/version_0``: every record directory
        inside it is reported, one analysis after the other (spectra first). Or one
        record directory (``SpectrumCallback.dirpath``, by default
        ``<trainer.log_dir>/spectrum``).
    out : str or os.PathLike, optional
        The HTML file to write; an existing directory gets ``report.html`` inside it.
        Default: ``<run_dir>/report.html``. Missing parent directories are created.
    pdf : bool, default False
        Also write a PDF with the same content next to it (``out`` with the suffix
        ``.pdf``): text pages, one page per chart (vector graphics) and per heatmap.
    progress : bool, default False
        Draw a progress bar on stderr.
    skip_bad : bool, default False
        Report the rest of the run when a record, a record directory or an analysis's
        section cannot be read or drawn: the page then begins with a section "Left out
        of this report" that names each file and what is wrong. By default the first
        such problem raises ``ValueError``, naming the file.

    Returns
    -------
    pathlib.Path
        The HTML file written.

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` is not a directory, or holds no records.
    ValueError
        If ``run_dir`` holds several record directories of one analysis, or (unless
        ``skip_bad``) a manifest or record is not readable, contradicts its series'
        header, or cannot be drawn; the message names the file and what is wrong.

    Notes
    -----
    Records listed as not taken (a callback with ``on_error="warn"`` whose analysis
    failed at that record) are shown in "Left out of this report" too.

    The page embeds everything (WebP data URIs, inline CSS and a few lines of inline
    script for the epoch sliders) and loads nothing from the network, so it opens from
    disk, offline, or as an e-mail attachment. Without script, the heatmaps of all
    selected epochs show one below the other. Spectral energies cover every record;
    heatmaps and energy shares are shown at no more than ``HEATMAP_EPOCHS`` (12) epochs:
    the first, the last and evenly spaced ones between.

    An analysis is drawn by the :class:`~nsp_lightning.ProbeAnalysis` subclass its
    manifest names, if it is defined or imported in this process (``nsp-report --import
    MODULE``) or lives in nsp_lightning; otherwise by the default section (its scalars
    and arrays).

    Examples
    --------
    >>> from nsp_lightning.report.html import report
    >>> report("lightning_logs/version_0", "report.html", pdf=True)  # doctest: +SKIP
    PosixPath('report.html')
    """
    run_dir = Path(run_dir)
    directories = _record_directories(run_dir)
    problems: list[str] = []
    found: list[_Series] = []
    for directory in directories:
        try:
            found.append(_series(directory, skip_bad, problems))
        except (OSError, ValueError) as err:
            if not skip_bad:
                raise
            problems.append(str(err))
    _check_one_directory_per_analysis(run_dir, found)
    series = [s for s in found if s.records]
    if not series:
        if problems:
            raise ValueError(
                f"nsp_lightning.report: no readable records in {run_dir}: " + "; ".join(problems[:5])
                + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            )
        first = found[0]
        raise FileNotFoundError(
            f"nsp_lightning.report: no {first.cls.title or 'probe'} records in {first.directory}:"
            " its manifest lists none yet"
        )
    # Spectra first, as the report has always begun (in `spectra/` before the analysis was renamed); then the
    # others by directory.
    series.sort(key=lambda s: (s.name not in ("spectrum", "spectra"), str(s.directory)))
    target = run_dir / _DEFAULT_NAME if out is None else Path(out)
    if target.is_dir():
        target = target / _DEFAULT_NAME
    estimate = sum(_report_steps(s) for s in series)
    bar = _Progress(estimate * (2 if pdf else 1), sys.stderr if progress else None)
    try:
        parts: list[Section] = []
        for s in series:
            before = bar.done
            # The directory as given (relative when the run was): the page shows no more of the disk than asked.
            context = ReportContext(s.directory, s.name, bar.step)
            who = f"{s.cls.__qualname__}.report"
            try:
                parts += sections(s.cls.report(s.records, s.header, context), who)
            except Exception as err:
                # Records passed their checks, so this is a record the analysis cannot draw: name the directory.
                message = (
                    f"nsp_lightning.report: {who} could not draw the records in {s.directory}"
                    f" ({type(err).__name__}: {str(err)[:500]})"
                )
                if not skip_bad:
                    raise ValueError(message) from err
                problems.append(message)
            if bar.done == before:
                bar.step(f"section {s.name}")
        if not parts:
            raise ValueError("nsp_lightning.report: no section could be drawn: " + "; ".join(problems[:5]))
        if problems:
            parts.insert(0, _problems_section(problems))
        _unique_ids(parts)
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        if len(series) == 1:
            only = series[0]
            title = only.cls.document_title(only.header) if only.cls is not ProbeAnalysis else f"{only.name} report"
            subtitle = str(only.directory)
        else:
            title, subtitle = "Probe report: " + ", ".join(s.name for s in series), str(run_dir)
        document = _Document(
            title=title,
            subtitle=subtitle,
            sections=parts,
            footer=f"Written by nsp-lightning {nsp.__version__} (nsp_lightning.report) on {now}.",
        )
        if pdf:
            bar.total = max(bar.done + sum(count_pages(s.blocks) for s in parts), 1)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_html(document), encoding="utf-8")
        if pdf:
            write_pdf(document.title, document.subtitle, document.sections, document.footer,
                      target.with_suffix(".pdf"), bar.step)
    finally:
        bar.close()
    return target


def _report_steps(s: _Series) -> int:
    try:
        return max(int(s.cls.report_steps(s.records, s.header)), 1)
    except Exception:
        # Only the progress bar's length depends on it; report() names whatever is wrong.
        return 1


def import_analyses(modules: Sequence[str]) -> None:
    """Import the modules that define analyses, so that :func:`report` draws their sections.

    Raises
    ------
    ImportError
        If a module cannot be imported; the message names it.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ImportError(f"nsp_lightning.report: cannot import {module!r} ({err})") from err
