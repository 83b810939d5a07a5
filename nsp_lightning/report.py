"""Offline report: a run's spectrum records as one self-contained HTML page (and a PDF).

:func:`report` reads what :class:`~nsp_lightning.SpectrumCallback` wrote (with
:func:`~nsp_lightning.read_header` and :func:`~nsp_lightning.read_records`) and writes one
HTML file that needs nothing else: images are inline PNG data URIs, styles and the small
epoch-slider script are inline, and nothing is fetched from the network. The command
``nsp-report`` (:mod:`nsp_lightning.cli`) calls it.

The report has these sections:

- **Run and model**: the model, transform, INCL, probes and recorded epochs, and the
  recorded layers with their shapes and neuron counts (and module descriptions and edge
  counts, where the record header holds them).
- **Spectral energy per layer**: per probe, log10 Σ ŝ² of every layer across all recorded
  epochs, as lines and as a layer × epoch heatmap (:func:`nsp.render.energy_over_epochs`).
- **Share of energy per layer**: per probe, each layer's share of the total spectral
  energy (:func:`nsp.energy.energy_share`) at the selected epochs.
- **Activations and spectra**: per probe, heatmaps of every layer's activations beside its
  spectrum (:func:`nsp.render.render_side_by_side`) at the selected epochs, with an epoch
  slider. At most `HEATMAP_EPOCHS` epochs are selected: the first, the last and evenly
  spaced ones between, so that a run of hundreds of epochs still gives a small page.
- **Graph rebuilds** (INCL=False only): the records at which a probe's data-dependent graph
  changed.
- **Conditioning**, only where the records carry it: each layer's rounding sensitivity
  (:func:`nsp.rounding_sensitivity`, an array of probes × layers per record).
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
import os
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TextIO

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from PIL import Image  # pillow: a dependency of matplotlib

import nsp
import nsp.energy
import nsp.render
from nsp.storage import MANIFEST
from nsp_lightning.records import SpectrumRecord, read_header, read_records

__all__ = ["HEATMAP_EPOCHS", "report"]

HEATMAP_EPOCHS = 8
"""The most epochs whose heatmaps a report shows (the first, the last and some between)."""

_DEFAULT_NAME = "report.html"
# What read_header promises; "modules" (descriptions) and "edges" (an int, or one per layer) are optional.
_HEADER_KEYS = ("layernames", "shapes", "probes", "probe_shape", "transform", "INCL", "model")
_TRANSFORMS = {
    "standard": "standard: the causal (Möbius) Fourier transform",
    "laplacian": "laplacian: the graph-Laplacian Fourier transform",
}
# Rounding sensitivity from which a layer's spectrum has less than one reliable digit.
_SENSITIVE = 0.1
# Above this many epochs the energy heatmap labels every k-th column only.
_MAX_TICKS = 20
_PDF_PAGE = (8.27, 11.69)  # A4, inches
_PDF_LINES = 72
_PDF_COLUMNS = 100


# ---------------------------------------------------------------------------------------
# Content: what a report shows, independent of HTML or PDF
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cell:
    text: str
    number: bool = False  # right-aligned
    mono: bool = False  # identifiers in a monospace font
    warn: bool = False  # shaded as a warning
    share: float | None = None  # draws a bar of this fraction behind the text
    title: str | None = None  # tooltip


def _num(text: str) -> _Cell:
    return _Cell(text, number=True)


@dataclass(frozen=True)
class _Facts:
    items: list[tuple[str, str]]


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _Table:
    caption: str
    headers: list[str]
    rows: list[list[_Cell]]


@dataclass(frozen=True)
class _Image:
    png: bytes
    width: int
    height: int
    alt: str


@dataclass(frozen=True)
class _Chart:
    figure: Figure
    image: _Image


@dataclass(frozen=True)
class _Row:
    """Blocks side by side while the page is wide enough, under an optional heading."""

    blocks: list[Any]
    heading: str | None = None


@dataclass(frozen=True)
class _Frame:
    label: str
    image: _Image


@dataclass(frozen=True)
class _Film:
    caption: str
    frames: list[_Frame]


@dataclass
class _Section:
    id: str
    title: str
    blocks: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class _Document:
    title: str
    subtitle: str
    sections: list[_Section]
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


def _png(rgb: np.ndarray, alt: str) -> _Image:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return _Image(buffer.getvalue(), rgb.shape[1], rgb.shape[0], alt)


def _chart(figure: Figure, alt: str) -> _Chart:
    return _Chart(figure, _png(nsp.render.figure_to_rgb(figure), alt))


def _sample(count: int, most: int) -> list[int]:
    """Up to ``most`` indices out of ``range(count)``: the first, the last and evenly spaced ones."""
    return sorted({int(round(x)) for x in np.linspace(0, count - 1, min(count, most))})


def _epochs_text(epochs: Sequence[int]) -> str:
    """Runs of consecutive epochs as ranges: ``0–3, 5, 10–12``."""
    runs: list[list[int]] = []
    for epoch in epochs:
        if runs and epoch == runs[-1][1] + 1:
            runs[-1][1] = epoch
        else:
            runs.append([epoch, epoch])
    parts = [str(a) if a == b else f"{a}–{b}" for a, b in runs]
    if len(parts) > 12:
        parts = [*parts[:6], "…", *parts[-5:]]
    return ", ".join(parts)


def _count(n: int) -> str:
    return f"{n:,}"


def _share_text(share: float) -> str:
    percent = 100 * share
    if percent == 0:
        return "0"
    return f"{percent:.1f} %" if percent >= 0.1 else f"{percent:.1e} %"


def _log10_text(value: float) -> str:
    return {-math.inf: "energy 0", math.inf: "overflow"}.get(value, f"{value:.2f}")


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(s) for s in shape) or "scalar"


def _run_facts(directory: Path, header: dict[str, Any], records: list[SpectrumRecord]) -> _Facts:
    epochs = [r.epoch for r in records]
    steps = [r.global_step for r in records]
    shapes = header["shapes"]
    seconds = [r.seconds for r in records]
    if header["INCL"] is False:
        graph = "False: each probe's data-dependent graph (Jacobian nonzeros), rebuilt when it changes"
    else:
        graph = "True: the structural graph, the same for every probe and epoch"
    items = [
        ("records", str(directory)),
        ("model", str(header["model"])),
        ("transform", _TRANSFORMS.get(header["transform"], str(header["transform"]))),
        ("INCL", graph),
        ("probes", f"{records[0].num_probes} input(s) of shape {_shape_text(header['probe_shape'][1:])}"),
        (
            "epochs",
            f"{len(records)} record(s) at epochs {_epochs_text(epochs)} (global steps {min(steps)}–{max(steps)});"
            " epoch 0 is the baseline before training",
        ),
        ("recorded layers", f"{len(records[0].layernames)}, {_count(sum(int(np.prod(s)) for s in shapes))} neurons"),
    ]
    edges = header.get("edges")
    if edges is not None:
        items.append(("graph edges", _count(sum(edges) if isinstance(edges, list) else int(edges))))
    items.append(("time per record", f"{np.mean(seconds):.3g} s on average, {max(seconds):.3g} s at most"))
    return _Facts(items)


def _model_table(header: dict[str, Any], layernames: Sequence[str]) -> _Table:
    shapes = header["shapes"]
    modules = header.get("modules")
    edges = header.get("edges")
    per_layer_edges = edges if isinstance(edges, list) and len(edges) == len(layernames) else None
    headers = ["#", "layer"] + (["module"] if modules else []) + ["shape", "neurons"]
    headers += ["edges in"] if per_layer_edges else []
    rows = []
    for i, (name, shape) in enumerate(zip(layernames, shapes)):
        row = [_num(str(i)), _Cell(name)] + ([_Cell(str(modules[i]), mono=True)] if modules else [])
        row += [_num(_shape_text(shape)), _num(_count(int(np.prod(shape))))]
        row += [_num(_count(int(per_layer_edges[i])))] if per_layer_edges else []
        rows.append(row)
    total = [_Cell(""), _Cell("total")] + ([_Cell("")] if modules else [])
    total += [_Cell(""), _num(_count(sum(int(np.prod(s)) for s in shapes)))]
    total += [_num(_count(sum(int(e) for e in per_layer_edges)))] if per_layer_edges else []
    return _Table("Recorded layers, in execution order", headers, rows + [total])


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _energy_charts(records: list[SpectrumRecord], p: int, progress: _Progress) -> _Row:
    epochs = [r.epoch for r in records]
    names = list(records[0].layernames)
    energy = np.stack([r.log10_energy[p] for r in records])
    lines = _figure(5.6, 3.2)
    _, ax = nsp.render.energy_over_epochs(energy, epochs, names, kind="lines", ax=lines.add_subplot())
    ax.set_title("log10 spectral energy per layer", fontsize=10)
    charts = [_chart(lines, f"probe {p}: log10 spectral energy of every layer against the epoch")]
    progress.step(f"energy lines, probe {p}")
    heatmap = _figure(min(11.0, 2.6 + 0.25 * len(epochs)), 1.2 + 0.3 * max(len(names), 2))
    _, ax = nsp.render.energy_over_epochs(energy, epochs, names, kind="heatmap", ax=heatmap.add_subplot())
    if len(epochs) > _MAX_TICKS:
        ticks = list(range(0, len(epochs), math.ceil(len(epochs) / _MAX_TICKS)))
        ax.set_xticks(ticks, [str(epochs[i]) for i in ticks])
    ax.set_title("log10 spectral energy, layer × epoch", fontsize=10)
    charts.append(_chart(heatmap, f"probe {p}: heatmap of log10 spectral energy, layers by epochs"))
    progress.step(f"energy heatmap, probe {p}")
    return _Row(charts, heading=f"probe {p}")


def _share_table(records: list[SpectrumRecord], chosen: list[int], p: int) -> _Table:
    names = records[0].layernames
    shares = [nsp.energy.energy_share(list(records[i].spectra[p])) for i in chosen]
    rows = []
    for l, name in enumerate(names):
        row = [_Cell(name)]
        for i, share in zip(chosen, shares):
            log10 = float(records[i].log10_energy[p, l])
            text = _share_text(float(share[l]))
            row.append(_Cell(text, number=True, share=float(share[l]), title=f"log10 energy {_log10_text(log10)}"))
        rows.append(row)
    headers = ["layer"] + [f"epoch {records[i].epoch}" for i in chosen]
    return _Table(f"probe {p}: share of the total spectral energy", headers, rows)


def _film(records: list[SpectrumRecord], chosen: list[int], p: int, progress: _Progress) -> _Film:
    frames = []
    names = list(records[0].layernames)
    for i in chosen:
        record = records[i]
        rgb = nsp.render.render_side_by_side(list(record.activations[p]), list(record.spectra[p]), names)
        label = f"epoch {record.epoch} (global step {record.global_step})"
        frames.append(_Frame(label, _png(rgb, f"probe {p}, {label}: activations and spectrum of every layer")))
        progress.step(f"heatmaps, probe {p}, epoch {record.epoch}")
    return _Film(f"probe {p}", frames)


def _rebuild_section(records: list[SpectrumRecord]) -> _Section:
    section = _Section("rebuilds", "Graph rebuilds")
    rebuilt = [i for i, r in enumerate(records) if r.rebuilt]
    probes = records[0].num_probes
    distinct = [len({r.fingerprints[p] for r in records}) for p in range(probes)]
    section.blocks.append(
        _Text(
            "With INCL=False each probe's graph depends on the weights' zero pattern and on the probe's activity "
            "(dead ReLU units, max-pool winners). The callback rebuilds a graph and its transformer when its "
            f"fingerprint changes. It did so at {len(rebuilt)} of {len(records)} records; distinct graphs per probe: "
            f"{', '.join(str(d) for d in distinct)}."
        )
    )
    rows = []
    for i in [0, *rebuilt]:
        record = records[i]
        before = records[i - 1].fingerprints if i else None
        changed = [p for p in range(probes) if before is None or record.fingerprints[p] != before[p]]
        what = "initial graphs" if before is None else ", ".join(str(p) for p in changed) or "—"
        rows.append([
            _num(str(record.epoch)),
            _num(str(record.global_step)),
            _Cell(what),
            _Cell(" ".join(record.fingerprints), mono=True),
        ])
    headers = ["epoch", "global step", "probes with a new graph", "fingerprints (one per probe)"]
    section.blocks.append(_Table("Records whose graphs were built anew", headers, rows))
    return section


def _sensitivity(records: list[SpectrumRecord]) -> list[np.ndarray] | None:
    # Shown only where every record carries it: records written without it have no such field.
    values = [getattr(r, "rounding_sensitivity", None) for r in records]
    if any(v is None for v in values):
        return None
    return [np.asarray(v, dtype=np.float64) for v in values]


def _sensitivity_section(records: list[SpectrumRecord], values: list[np.ndarray], chosen: list[int]) -> _Section:
    section = _Section("conditioning", "Conditioning: rounding sensitivity per layer")
    section.blocks.append(
        _Text(
            "Spectra are exact for the recorded activations, but deep layers amplify the activations' own rounding "
            "enormously. κ is the relative change of a layer's spectrum when every activation moves by half a unit "
            "in its last place (nsp.rounding_sensitivity): the spectrum is determined to about −log10 κ digits. "
            f"Shaded cells (κ ≥ {_SENSITIVE:g}) have less than one reliable digit: rounding in the forward pass "
            "dominates them, so compare them with care."
        )
    )
    names = records[0].layernames
    headers = ["layer"] + [f"epoch {records[i].epoch}" for i in chosen]
    tables = []
    for p in range(records[0].num_probes):
        rows = []
        for l, name in enumerate(names):
            row = [_Cell(name)]
            for i in chosen:
                kappa = float(values[i][p, l])
                row.append(_Cell(f"{kappa:.1e}", number=True, warn=not kappa < _SENSITIVE))
            rows.append(row)
        tables.append(_Table(f"probe {p}: rounding sensitivity κ", headers, rows))
    section.blocks.append(_Row(tables))
    return section


def _document(directory: Path, header: dict[str, Any], records: list[SpectrumRecord], progress: _Progress) -> _Document:
    probes = records[0].num_probes
    chosen = _sample(len(records), HEATMAP_EPOCHS)
    chosen_text = ", ".join(str(records[i].epoch) for i in chosen)

    summary = _Row([_run_facts(directory, header, records), _model_table(header, records[0].layernames)])
    run = _Section("run", "Run and model", [summary])

    energy = _Section("energy", "Spectral energy per layer")
    energy.blocks.append(
        _Text(
            "Spectral energy is Σ ŝ² over a layer's spectral coefficients, shown as log10 because it spans hundreds "
            "of decades. Grey heatmap cells and gaps in the lines mark a zero (or non-finite) energy."
        )
    )
    for p in range(probes):
        energy.blocks.append(_energy_charts(records, p, progress))

    share = _Section("share", "Share of energy per layer")
    share.blocks.append(
        _Text(
            f"Each layer's share of the probe's total spectral energy, at epochs {chosen_text}. "
            "Hover over a cell for its log10 energy."
        )
    )
    share.blocks.append(_Row([_share_table(records, chosen, p) for p in range(probes)]))

    heatmaps = _Section("heatmaps", "Activations and spectra")
    heatmaps.blocks.append(
        _Text(
            f"Per probe, every layer's activations (left, linear colour scale per layer) beside its spectrum "
            f"(right, signed log10 per layer, since spectra span hundreds of decades), at epochs {chosen_text}"
            + (f" (selected from {len(records)} records)" if len(chosen) < len(records) else "")
            + ". Use the slider to step through the epochs."
        )
    )
    heatmaps.blocks.append(_Row([_film(records, chosen, p, progress) for p in range(probes)]))

    sections = [run, energy, share, heatmaps]
    if header["INCL"] is False:
        sections.append(_rebuild_section(records))
    sensitivity = _sensitivity(records)
    if sensitivity is not None:
        sections.append(_sensitivity_section(records, sensitivity, chosen))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return _Document(
        title=f"Spectral report: {header['model']}",
        subtitle=str(directory),
        sections=sections,
        footer=f"Written by nsp-lightning {nsp.__version__} (nsp_lightning.report) on {now}.",
    )


# ---------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light; --ink: #1b1f24; --muted: #5b6470; --rule: #d8dde3; --bar: #c9dcf2; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: #f6f7f9; }
header.top { background: #1b1f24; color: #fff; padding: 1.2rem 2rem; }
header.top h1 { margin: 0; font-size: 1.5rem; }
header.top p { margin: .2rem 0 0; color: #aeb6c0; font-family: ui-monospace, monospace; font-size: .85rem;
               word-break: break-all; }
nav { padding: .5rem 2rem; background: #fff; border-bottom: 1px solid var(--rule); position: sticky; top: 0;
      z-index: 1; }
nav a { margin-right: 1.2rem; color: #0b5cad; text-decoration: none; }
main { max-width: 1240px; margin: 0 auto; padding: 0 2rem 2rem; }
section { background: #fff; border: 1px solid var(--rule); border-radius: 6px; margin: 1.2rem 0;
          padding: .4rem 1.4rem 1.2rem; }
h2 { font-size: 1.2rem; margin: .8rem 0 .6rem; }
p.note { color: var(--muted); max-width: 60rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1.2rem; margin: .6rem 0;
           flex: 1 1 30rem; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; }
caption { text-align: left; font-weight: 600; padding-bottom: .3rem; white-space: nowrap; }
th, td { border-bottom: 1px solid var(--rule); padding: .2rem .7rem; text-align: left; white-space: nowrap; }
th { text-align: center; }
td.num { text-align: right; }
td.mono { font-family: ui-monospace, monospace; font-size: .8rem; }
td.warn { background: #f8d7d3; }
td.share { background: linear-gradient(to right, var(--bar) var(--s), transparent var(--s)); min-width: 5.5rem; }
tr:last-child td { border-bottom: none; }
.row { display: flex; flex-wrap: wrap; gap: .5rem 2.5rem; align-items: flex-start; }
h3 { font-size: 1rem; margin: .8rem 0 .3rem; }
img { max-width: 100%; height: auto; display: block; }
.film { margin: .4rem 0 1rem; flex: 1 1 26rem; min-width: 0; }
.film .controls { display: flex; gap: 1rem; align-items: center; margin-bottom: .5rem; flex-wrap: wrap; }
.film input[type=range] { width: 14rem; }
.film output { font-weight: 600; }
.frame { margin: 0 0 1rem; }
.frame figcaption { color: var(--muted); font-size: .85rem; margin-bottom: .2rem; }
.frame img { background: #000; }
[hidden] { display: none !important; }
footer { color: var(--muted); font-size: .8rem; text-align: center; padding: 1rem; }
"""

# Progressive: without script every frame shows (a filmstrip); with it, a slider picks one.
_JS = """
document.querySelectorAll('.film').forEach(function (film) {
  var frames = Array.prototype.slice.call(film.querySelectorAll('.frame'));
  var controls = film.querySelector('.controls');
  var slider = controls.querySelector('input[type=range]');
  var all = controls.querySelector('input[type=checkbox]');
  var output = controls.querySelector('output');
  function show() {
    var i = Number(slider.value);
    frames.forEach(function (frame, j) { frame.hidden = !all.checked && j !== i; });
    output.textContent = frames[i].getAttribute('data-label');
    slider.disabled = all.checked;
  }
  slider.addEventListener('input', show);
  all.addEventListener('change', show);
  controls.hidden = false;
  show();
});
"""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _html_image(image: _Image) -> str:
    data = base64.b64encode(image.png).decode("ascii")
    return (
        f'<img src="data:image/png;base64,{data}" width="{image.width}" height="{image.height}" '
        f'alt="{_esc(image.alt)}">'
    )


def _html_table(table: _Table) -> str:
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


def _html_film(film: _Film, index: int) -> str:
    last = len(film.frames) - 1
    frames = "".join(
        f'<figure class="frame" data-label="{_esc(f.label)}"><figcaption>{_esc(f.label)}</figcaption>'
        f"{_html_image(f.image)}</figure>"
        for f in film.frames
    )
    return (
        f'<div class="film" id="film-{index}"><h3>{_esc(film.caption)}</h3>'
        f'<div class="controls" hidden><input type="range" min="0" max="{last}" step="1" value="{last}" '
        f'aria-label="{_esc(film.caption)}: epoch"><output></output>'
        f'<label><input type="checkbox"> all {len(film.frames)} epochs</label></div>{frames}</div>'
    )


def _html_block(block: Any, films: list[int]) -> str:
    if isinstance(block, _Facts):
        items = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in block.items)
        return f'<dl class="facts">{items}</dl>'
    if isinstance(block, _Text):
        return f'<p class="note">{_esc(block.text)}</p>'
    if isinstance(block, _Table):
        return _html_table(block)
    if isinstance(block, _Chart):
        return _html_image(block.image)
    if isinstance(block, _Row):
        heading = "" if block.heading is None else f"<h3>{_esc(block.heading)}</h3>"
        return f'{heading}<div class="row">{"".join(_html_block(b, films) for b in block.blocks)}</div>'
    films.append(len(films))  # gives every film a unique id
    return _html_film(block, films[-1])


def _html(document: _Document) -> str:
    films: list[int] = []
    parts = [
        f'<section id="{section.id}"><h2>{_esc(section.title)}</h2>'
        f'{"".join(_html_block(block, films) for block in section.blocks)}</section>'
        for section in document.sections
    ]
    nav = "".join(f'<a href="#{s.id}">{_esc(s.title)}</a>' for s in document.sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(document.title)}</title><style>{_CSS}</style></head>\n"
        f'<body><header class="top"><h1>{_esc(document.title)}</h1><p>{_esc(document.subtitle)}</p></header>'
        f"<nav>{nav}</nav><main>\n{chr(10).join(parts)}\n</main>"
        f"<footer>{_esc(document.footer)}</footer><script>{_JS}</script></body></html>\n"
    )


# ---------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------


def _text_table(table: _Table) -> list[str]:
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

    def __init__(self, pdf: PdfPages, progress: _Progress) -> None:
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

    def chart(self, chart: _Chart, what: str) -> None:
        self.flush()
        self.pdf.savefig(chart.figure)
        self.progress.step(what)

    def image(self, image: _Image, caption: str) -> None:
        self.flush()
        rgb = np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB"))
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
        self.progress.step(f"PDF page: {caption}")


def _pdf_block(writer: _PdfWriter, block: Any) -> None:
    if isinstance(block, _Facts):
        width = max(len(k) for k, _ in block.items)
        for key, value in block.items:
            wrapped = textwrap.wrap(value, _PDF_COLUMNS - width - 2) or [""]
            writer.text([f"{key.ljust(width)}  {wrapped[0]}"] + [" " * (width + 2) + w for w in wrapped[1:]])
        writer.text([""])
    elif isinstance(block, _Text):
        writer.text(textwrap.wrap(block.text, _PDF_COLUMNS) + [""])
    elif isinstance(block, _Table):
        writer.text(_text_table(block))
    elif isinstance(block, _Chart):
        writer.chart(block, f"PDF page: {block.image.alt}")
    elif isinstance(block, _Row):
        if block.heading is not None:
            writer.text([block.heading, ""])
        for child in block.blocks:
            _pdf_block(writer, child)
    else:
        for frame in block.frames:
            writer.image(frame.image, f"{block.caption}, {frame.label}")


def _pdf(document: _Document, path: Path, progress: _Progress) -> None:
    with PdfPages(path) as pdf:
        writer = _PdfWriter(pdf, progress)
        writer.text([document.title, document.subtitle, ""])
        for section in document.sections:
            writer.text([section.title.upper(), ""])
            for block in section.blocks:
                _pdf_block(writer, block)
        writer.text(["", document.footer])
        writer.flush()
        pdf.infodict()["Title"] = document.title


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def _record_directory(run_dir: Path) -> Path:
    """The record directory ``run_dir`` is, or the only one inside it."""
    if not run_dir.exists():
        raise FileNotFoundError(f"nsp_lightning.report: {run_dir} does not exist")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"nsp_lightning.report: {run_dir} is not a directory")
    if (run_dir / MANIFEST).is_file():
        return run_dir
    found = sorted(p.parent for p in run_dir.rglob(MANIFEST))
    if not found:
        raise FileNotFoundError(
            f"nsp_lightning.report: no spectrum records in {run_dir}: it holds no {MANIFEST}, nor does any "
            "directory inside it. Pass the directory SpectrumCallback wrote (SpectrumCallback.dirpath, by default "
            "<log_dir>/spectra) or a directory that contains it."
        )
    if len(found) > 1:
        listed = ", ".join(str(p) for p in found[:10]) + (", …" if len(found) > 10 else "")
        raise ValueError(
            f"nsp_lightning.report: {run_dir} holds {len(found)} record directories ({listed}); pass one of them"
        )
    return found[0]


def report(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    pdf: bool = False,
    progress: bool = False,
) -> Path:
    """Write a self-contained HTML report of a run's spectrum records.

    Parameters
    ----------
    run_dir : str or os.PathLike
        The record directory :class:`~nsp_lightning.SpectrumCallback` wrote
        (``SpectrumCallback.dirpath``, by default ``<trainer.log_dir>/spectra``), or a
        directory that contains exactly one, such as ``lightning_logs/version_0``.
    out : str or os.PathLike, optional
        The HTML file to write; an existing directory gets ``report.html`` inside it.
        Default: ``<run_dir>/report.html``. Missing parent directories are created.
    pdf : bool, default False
        Also write a PDF with the same content next to it (``out`` with the suffix
        ``.pdf``): text pages, one page per chart (vector graphics) and per heatmap.
    progress : bool, default False
        Draw a progress bar on stderr.

    Returns
    -------
    pathlib.Path
        The HTML file written.

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` is not a directory, or holds no records.
    ValueError
        If ``run_dir`` holds several record directories, or its manifest or records were
        not written by ``SpectrumCallback``.

    Notes
    -----
    The page embeds everything (PNG data URIs, inline CSS and a few lines of inline
    script for the epoch sliders) and loads nothing from the network, so it opens from
    disk, offline, or as an e-mail attachment. Without script, the heatmaps of all
    selected epochs show one below the other. Energies cover every record; heatmaps and
    energy shares are shown at no more than ``HEATMAP_EPOCHS`` (8) epochs: the first, the
    last and evenly spaced ones between.

    Examples
    --------
    >>> from nsp_lightning.report import report
    >>> report("lightning_logs/version_0/spectra", "report.html", pdf=True)  # doctest: +SKIP
    PosixPath('report.html')
    """
    run_dir = Path(run_dir)
    directory = _record_directory(run_dir)
    records = read_records(directory)
    if not records:
        raise FileNotFoundError(
            f"nsp_lightning.report: no spectrum records in {directory}: its manifest lists none yet"
        )
    header = read_header(directory)
    missing = [key for key in _HEADER_KEYS if key not in header]
    if missing:
        raise ValueError(
            f"nsp_lightning.report: the manifest in {directory} lacks {missing}; it was not written by SpectrumCallback"
        )
    target = run_dir / _DEFAULT_NAME if out is None else Path(out)
    if target.is_dir():
        target = target / _DEFAULT_NAME
    probes = records[0].num_probes
    steps = probes * (2 + len(_sample(len(records), HEATMAP_EPOCHS)))
    bar = _Progress(steps * (2 if pdf else 1), sys.stderr if progress else None)
    try:
        document = _document(directory.resolve(), header, records, bar)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_html(document), encoding="utf-8")
        if pdf:
            _pdf(document, target.with_suffix(".pdf"), bar)
    finally:
        bar.close()
    return target
