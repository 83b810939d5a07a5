"""The spectrum's section of ``nsp-report``: run and model, change since the baseline, energy, heatmaps.

:meth:`SpectrumAnalysis.report <nsp_lightning.analyses.spectrum.SpectrumAnalysis.report>`
calls :func:`report_sections`; the sections are described in :mod:`nsp_lightning.report.html`.
No Lightning.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import nsp
import nsp.transforms.energy
import nsp.viz.render
from nsp_lightning.analyses.spectrum.drawing import (
    CHANGE,
    HEATMAPS,
    TRANSFORM_TEXT,
    change_figure,
    change_since_baseline,
    fixed_range,
    number_text,
    shape_text,
)
from nsp_lightning.analyses.spectrum.records import SpectrumRecord
from nsp_lightning.report.html import HEATMAP_EPOCHS
from nsp_lightning.report.sections import (
    Cell, Chart, Facts, Film, Frame, Grid, Image, Row, Section, Table, Text, integer_ticks,
)

__all__ = ["report_sections", "report_steps"]

# Rounding sensitivity from which a layer's spectrum has less than one reliable digit.
_SENSITIVE = 0.1
# Above this many epochs the energy heatmap labels every k-th column only.
_MAX_TICKS = 20


def report_steps(records: Sequence[SpectrumRecord]) -> int:
    """How many steps :func:`report_sections` reports to its progress callback."""
    return records[0].num_probes * (4 + len(_sample(len(records), HEATMAP_EPOCHS)))


def _num(text: str) -> Cell:
    return Cell(text, number=True)


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
    """A share for people, two significant digits however small: ``99.7 %``, ``0.052 %``, ``3.1e-07 %``.

    Energies span hundreds of decades, so most layers hold a tiny share: a floor such as
    "< 0.001 %" would print the same text for all of them at every epoch.
    """
    percent = 100 * share
    if percent == 0:
        return "0"
    if percent >= 1:
        return f"{percent:.1f} %"
    if percent >= 1e-3:
        return f"{percent:.2g} %"
    return f"{percent:.1e} %"


def _log10_text(value: float) -> str:
    return {-math.inf: "energy 0", math.inf: "overflow"}.get(value, f"{value:.2f}")



def _run_facts(directory: Path, header: dict[str, Any], records: list[SpectrumRecord]) -> Facts:
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
        ("transform", TRANSFORM_TEXT.get(header["transform"], str(header["transform"]))),
        ("INCL", graph),
        ("probes", f"{records[0].num_probes} input(s) of shape {shape_text(header['probe_shape'][1:])}"),
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
    return Facts(items)


def _model_table(header: dict[str, Any], layernames: Sequence[str]) -> Table:
    shapes = header["shapes"]
    modules = header.get("modules")
    edges = header.get("edges")
    per_layer_edges = edges if isinstance(edges, list) and len(edges) == len(layernames) else None
    headers = ["#", "layer"] + (["module"] if modules else []) + ["shape", "neurons"]
    headers += ["edges in"] if per_layer_edges else []
    rows = []
    for i, (name, shape) in enumerate(zip(layernames, shapes)):
        row = [_num(str(i)), Cell(name)] + ([Cell(str(modules[i]), mono=True)] if modules else [])
        row += [_num(shape_text(shape)), _num(_count(int(np.prod(shape))))]
        row += [_num(_count(int(per_layer_edges[i])))] if per_layer_edges else []
        rows.append(row)
    total = [Cell(""), Cell("total")] + ([Cell("")] if modules else [])
    total += [Cell(""), _num(_count(sum(int(np.prod(s)) for s in shapes)))]
    total += [_num(_count(sum(int(e) for e in per_layer_edges)))] if per_layer_edges else []
    return Table("Recorded layers, in execution order", headers, rows + [total])


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _energy_charts(records: list[SpectrumRecord], p: int, progress: Callable[[str], None]) -> Row:
    epochs = [r.epoch for r in records]
    names = list(records[0].layernames)
    energy = np.stack([r.log10_energy[p] for r in records])
    lines = _figure(5.6, 3.2)
    _, ax = nsp.render.energy_over_epochs(energy, epochs, names, kind="lines", ax=lines.add_subplot())
    ax.set_title("log10 spectral energy per layer", fontsize=10)
    integer_ticks(ax)
    charts = [Chart.from_figure(lines, f"probe {p}: log10 spectral energy of every layer against the epoch")]
    progress(f"energy lines, probe {p}")
    heatmap = _figure(min(11.0, 2.6 + 0.25 * len(epochs)), 1.2 + 0.3 * max(len(names), 2))
    _, ax = nsp.render.energy_over_epochs(energy, epochs, names, kind="heatmap", ax=heatmap.add_subplot())
    if len(epochs) > _MAX_TICKS:
        ticks = list(range(0, len(epochs), math.ceil(len(epochs) / _MAX_TICKS)))
        ax.set_xticks(ticks, [str(epochs[i]) for i in ticks])
    ax.set_title("log10 spectral energy, layer × epoch", fontsize=10)
    charts.append(Chart.from_figure(heatmap, f"probe {p}: heatmap of log10 spectral energy, layers by epochs"))
    progress(f"energy heatmap, probe {p}")
    return Row(charts, heading=f"probe {p}")


def _share_table(records: list[SpectrumRecord], chosen: list[int], p: int) -> Table:
    names = records[0].layernames
    shares = [nsp.energy.energy_share(list(records[i].spectra[p])) for i in chosen]
    rows = []
    for l, name in enumerate(names):
        row = [Cell(name)]
        for i, share in zip(chosen, shares):
            log10 = float(records[i].log10_energy[p, l])
            text = _share_text(float(share[l]))
            title = f"{100 * float(share[l]):.3g} % of the energy; log10 energy {_log10_text(log10)}"
            row.append(Cell(text, number=True, share=float(share[l]), title=title))
        rows.append(row)
    headers = ["layer"] + [f"epoch {records[i].epoch}" for i in chosen]
    return Table(f"probe {p}: share of the total spectral energy", headers, rows)


def _run_ranges(records: list[SpectrumRecord], p: int) -> list[dict[str, dict[str, Any]]]:
    """Per layer, the colour range of the whole run for probe ``p``: activations and spectrum.

    Activations: the run's min to max; spectra: ``±`` the run's largest ``|ŝ|``, on a signed
    log10 scale with threshold the run's smallest nonzero ``|ŝ|``. Equal colours then mean
    equal values at every epoch.
    """
    ranges = []
    for l in range(len(records[0].layernames)):
        acts = np.concatenate([np.asarray(r.activations[p][l], dtype=np.float64).ravel() for r in records])
        spec = np.concatenate([np.asarray(r.spectra[p][l], dtype=np.float64).ravel() for r in records])
        ranges.append({"activations": fixed_range(acts, "activations"), "spectrum": fixed_range(spec, "spectrum")})
    return ranges


def _legend(kind: str, options: Mapping[str, Any]) -> list[str]:
    if kind == "activations":
        return ["linear scale, range of the whole run"]
    line = "signed log10: red > 0, blue < 0, white 0"
    if options.get("threshold") is not None:
        line += f"; |ŝ| < {options['threshold']:.3g} near white"
    return [line, "range of the whole run"]


def _frame_image(record: SpectrumRecord, p: int, ranges: list[dict[str, dict[str, Any]]]) -> np.ndarray:
    """Every layer of one record: its activations card beside its spectrum card, layer below layer."""
    rows = []
    for l, name in enumerate(record.layernames):
        cards = []
        for kind, values in (("activations", record.activations[p][l]), ("spectrum", record.spectra[p][l])):
            options = {**HEATMAPS[kind], **ranges[l][kind]}
            title = f"{l}: {name} · {kind} · {shape_text(np.shape(values))}"
            cards.append(nsp.render.render_card(values, title=title, legend=_legend(kind, options), **options))
        rows.append(cards)
    widths = [max(row[k].shape[1] for row in rows) for k in range(2)]
    lines = []
    for cards in rows:
        height = max(c.shape[0] for c in cards)
        padded = [_pad(c, height, w) for c, w in zip(cards, widths)]
        lines.append(np.concatenate([padded[0], np.full((height, 8, 3), 255, np.uint8), padded[1]], axis=1))
    return np.concatenate([np.concatenate([line, np.full((6, line.shape[1], 3), 255, np.uint8)]) for line in lines])


def _pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` on a canvas of ``height`` x ``width`` in its own background colour (its corner's)."""
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = image[0, 0]
    canvas[: image.shape[0], : image.shape[1]] = image
    return canvas


def _film(
    records: list[SpectrumRecord], chosen: list[int], p: int, ranges: list[dict[str, dict[str, Any]]],
    progress: Callable[[str], None],
) -> Film:
    frames = []
    for i in chosen:
        record = records[i]
        label = f"epoch {record.epoch} (global step {record.global_step})"
        rgb = _frame_image(record, p, ranges)
        frames.append(Frame(label, Image.from_rgb(rgb, f"probe {p}, {label}: activations and spectrum of every layer")))
        progress(f"heatmaps, probe {p}, epoch {record.epoch}")
    return Film(f"probe {p}", frames, group="heatmaps")


def _epoch_grid(records: list[SpectrumRecord], p: int, ranges: list[dict[str, dict[str, Any]]]) -> Grid:
    """Every record's spectrum of every layer, side by side: a row per layer, a column per record."""
    rows = []
    for l, name in enumerate(records[0].layernames):
        options = {**HEATMAPS["spectrum"], **ranges[l]["spectrum"]}
        first = np.asarray(records[0].spectra[p][l], dtype=np.float64)
        # About 96 pixels wide, whatever the layer's size, at a whole number of pixels per value.
        upscale = max(1, min(16, 96 // nsp.render.render_layer(first, **options).shape[1]))
        images: list[Image | None] = []
        for record in records:
            values = np.asarray(record.spectra[p][l], dtype=np.float64)
            rgb = nsp.render.render_layer(values, upscale=upscale, **options)
            if values.ndim <= 1:
                rgb = np.repeat(rgb, max(1, 8 // upscale), axis=0)
            images.append(Image.from_rgb(rgb, f"probe {p}, {name}, epoch {record.epoch}: spectrum"))
        shown = f"{l}: {name} ({shape_text(first.shape)})"
        rows.append((shown, images))
    columns = [f"epoch {r.epoch}" for r in records]
    return Grid(f"probe {p}: every record's spectra, a row per layer", columns, rows)


def _change_section(records: list[SpectrumRecord], progress: Callable[[str], None]) -> Section:
    section = Section("change", "Change since the baseline")
    baseline = records[0]
    section.blocks.append(
        Text(
            f"How far each layer's spectrum has moved from the baseline record (epoch {baseline.epoch}), measures"
            " chosen to stay meaningful when coefficients span hundreds of decades (nsp.energy.change_since):"
            " the relative change ‖ŝ − ŝ₀‖ / ‖ŝ₀‖, which follows the layer's dominant coefficients; the median"
            " number of decades a coefficient moved, |log10|ŝ| − log10|ŝ₀||, every coefficient counting alike"
            " whatever its magnitude; the change of log10 spectral energy; and the fraction of coefficients"
            " whose sign flipped. The per-layer energies below can look flat while these move."
        )
    )
    history = [(r.epoch, change_since_baseline(baseline, r)) for r in records]
    names = list(baseline.layernames)
    indices = list(range(len(names)))
    for p in range(baseline.num_probes):
        figure = change_figure(history, names, p, indices)
        for ax in figure.axes:
            integer_ticks(ax)
        chart = Chart.from_figure(
            figure,
            f"probe {p}: relative change and decades moved since the baseline, per layer, against the epoch",
        )
        last = history[-1][1]
        rows = [
            [Cell(f"{l}: {name}")] + [Cell(number_text(float(last[m][p, l])), number=True) for m in CHANGE]
            for l, name in enumerate(names)
        ]
        headers = ["layer", "relative change", "log10 energy change", "median decades moved", "sign flips"]
        table = Table(f"probe {p}: change at the last record (epoch {records[-1].epoch})", headers, rows)
        section.blocks.append(Row([chart, table], heading=f"probe {p}"))
        progress(f"change since the baseline, probe {p}")
    return section


def _rebuild_section(records: list[SpectrumRecord]) -> Section:
    section = Section("rebuilds", "Graph rebuilds")
    rebuilt = [i for i, r in enumerate(records) if r.rebuilt]
    probes = records[0].num_probes
    distinct = [len({r.fingerprints[p] for r in records}) for p in range(probes)]
    section.blocks.append(
        Text(
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
            Cell(what),
            Cell(" ".join(record.fingerprints), mono=True),
        ])
    headers = ["epoch", "global step", "probes with a new graph", "fingerprints (one per probe)"]
    section.blocks.append(Table("Records whose graphs were built anew", headers, rows))
    return section


def _sensitivity(records: list[SpectrumRecord]) -> list[np.ndarray] | None:
    # Shown only where every record carries it: records written without it have no such field.
    values = [getattr(r, "rounding_sensitivity", None) for r in records]
    if any(v is None for v in values):
        return None
    return [np.asarray(v, dtype=np.float64) for v in values]


def _sensitivity_section(records: list[SpectrumRecord], values: list[np.ndarray], chosen: list[int]) -> Section:
    section = Section("conditioning", "Conditioning: rounding sensitivity per layer")
    section.blocks.append(
        Text(
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
            row = [Cell(name)]
            for i in chosen:
                kappa = float(values[i][p, l])
                row.append(Cell(f"{kappa:.1e}", number=True, warn=not kappa < _SENSITIVE))
            rows.append(row)
        tables.append(Table(f"probe {p}: rounding sensitivity κ", headers, rows))
    section.blocks.append(Row(tables))
    return section


def report_sections(
    directory: Path, header: Mapping[str, Any], records: list[SpectrumRecord], progress: Callable[[str], None]
) -> list[Section]:
    """The spectrum's report sections, from a series' header and records (by increasing epoch).

    Parameters
    ----------
    directory : pathlib.Path
        The record directory, shown in the report.
    header : mapping
        The series' header, with every field of ``SpectrumAnalysis.header``.
    records : list of SpectrumRecord
        The records, by increasing epoch; the first is the baseline of the changes.
    progress : callable
        ``progress(what)``, called :func:`report_steps` times.

    Returns
    -------
    list of Section
        Run and model, change since the baseline, energy, share of energy, heatmaps,
        the grid of every record; graph rebuilds (INCL=False) and conditioning where
        the records carry it.
    """
    probes = records[0].num_probes
    chosen = _sample(len(records), HEATMAP_EPOCHS)
    chosen_text = _epochs_text([records[i].epoch for i in chosen])

    summary = Row([_run_facts(directory, header, records), _model_table(header, records[0].layernames)])
    run = Section("run", "Run and model", [summary])

    change = _change_section(records, progress)

    energy = Section("energy", "Spectral energy per layer")
    energy.blocks.append(
        Text(
            "Spectral energy is Σ ŝ² over a layer's spectral coefficients, shown as log10 because it spans hundreds "
            "of decades. Grey heatmap cells and gaps in the lines mark a zero (or non-finite) energy."
        )
    )
    for p in range(probes):
        energy.blocks.append(_energy_charts(records, p, progress))

    share = Section("share", "Share of energy per layer")
    share.blocks.append(
        Text(
            f"Each layer's share of the probe's total spectral energy, at epochs {chosen_text}. "
            "Hover over a cell for its exact share and log10 energy."
        )
    )
    share.blocks.append(Row([_share_table(records, chosen, p) for p in range(probes)]))

    ranges = [_run_ranges(records, p) for p in range(probes)]
    heatmaps = Section("heatmaps", "Activations and spectra")
    selected = (
        f"{len(chosen)} of the {len(records)} records (epochs {chosen_text}; the grid below shows every record)"
        if len(chosen) < len(records)
        else f"every record (epochs {chosen_text})"
    )
    heatmaps.blocks.append(
        Text(
            "Per probe, every layer's activations (left, viridis, linear) beside its spectrum (right, red positive,"
            " blue negative, white 0, on a signed log10 scale, since spectra span hundreds of decades). Each"
            " layer's colour range is fixed over the whole run, so a colour means the same value at every epoch;"
            f" each card's colour bar gives it. The slider steps through {selected}, and moves every probe."
        )
    )
    heatmaps.blocks.append(Row([_film(records, chosen, p, ranges[p], progress) for p in range(probes)]))

    grid = Section("grid", "Spectra of every record, side by side")
    grid.blocks.append(
        Text(
            f"Every record ({len(records)}), a column each, and every layer, a row each, per probe: the spectra on"
            " the colour ranges of the heatmaps above (fixed per layer over the run), so that epochs compare"
            " side by side."
        )
    )
    for p in range(probes):
        grid.blocks.append(_epoch_grid(records, p, ranges[p]))
        progress(f"epoch grid, probe {p}")

    sections = [run, change, energy, share, heatmaps, grid]
    if header["INCL"] is False:
        sections.append(_rebuild_section(records))
    sensitivity = _sensitivity(records)
    if sensitivity is not None:
        sections.append(_sensitivity_section(records, sensitivity, chosen))
    return sections
