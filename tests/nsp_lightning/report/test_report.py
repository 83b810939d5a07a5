import base64
import dataclasses
import fnmatch
import html
import importlib
import io
import re
import shutil
import subprocess
import sys
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from lightning_helpers import TinyNet, loader, probe, trainer_kwargs
from PIL import Image

import lightning.pytorch as pl

import nsp.transforms.energy
import nsp.viz.render
from nsp.io.storage import RecordStore, load_json, save_json
from nsp_lightning import SpectrumCallback, read_records
from nsp_lightning.report.cli import main
from nsp_lightning.analyses.spectrum.records import SpectrumRecord, write_record
from nsp_lightning.report.html import HEATMAP_EPOCHS, report

SECTIONS = ["run", "change", "energy", "share", "heatmaps", "grid"]
IMAGE = re.compile(r'<img src="data:image/(?:png|webp);base64,([A-Za-z0-9+/=]+)" width="(\d+)" height="(\d+)" alt="([^"]*)">')


def train(directory: Path, INCL: bool = True, epochs: int = 2) -> Path:
    """A demo-like run: TinyNet trained for ``epochs`` epochs with the callback; returns its record directory."""
    pl.seed_everything(0, verbose=False)
    records = directory / "spectrum"
    callback = SpectrumCallback(probe(2), INCL=INCL, dirpath=records)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pl.Trainer(**trainer_kwargs(max_epochs=epochs, default_root_dir=directory), callbacks=[callback]).fit(
            TinyNet(), loader()
        )
    return records


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("run"))


def synthetic_run(
    directory: Path,
    epochs: int,
    *,
    probes: int = 2,
    INCL: bool = True,
    rebuilt_at: dict[int, list[int]] | None = None,
    header: dict | None = None,
) -> Path:
    """Records written through the records API: random activations and spectra spanning many decades.

    ``rebuilt_at`` maps an epoch to the probes whose graph changes there.
    """
    rng = np.random.default_rng(0)
    names, shapes = ["input", "conv", "fc"], [(1, 4, 4), (2, 3, 3), (3,)]
    store = RecordStore(directory)
    store.start({
        "layernames": names,
        "shapes": [list(s) for s in shapes],
        "probes": probes,
        "probe_shape": [probes, 1, 4, 4],
        "transform": "standard",
        "INCL": INCL,
        "model": "Synthetic",
        **(header or {}),
    })
    fingerprints = [f"graph-{p}-0" for p in range(probes)]
    for epoch in range(epochs):
        changed = (rebuilt_at or {}).get(epoch, [])
        for p in changed:
            fingerprints[p] = f"graph-{p}-{epoch}"
        acts = tuple(tuple(rng.standard_normal(s).astype(np.float32) for s in shapes) for _ in range(probes))
        specs = tuple(
            tuple(rng.standard_normal(s) * 10.0 ** rng.integers(-30, 30, s) for s in shapes) for _ in range(probes)
        )
        write_record(
            store,
            SpectrumRecord(
                epoch=epoch,
                global_step=10 * epoch,
                layernames=tuple(names),
                activations=acts,
                spectra=specs,
                energy=np.stack([nsp.energy.spectral_energy(list(s)) for s in specs]),
                log10_energy=np.stack([nsp.energy.log10_energy(list(s)) for s in specs]),
                fingerprints=tuple(fingerprints),
                rebuilt=bool(changed) and epoch > 0,
                seconds=0.01,
            ),
        )
    return directory


def images(page: str) -> list[tuple[np.ndarray, str]]:
    """Every inline image, decoded, with its alt text; checks the declared size."""
    out = []
    for data, width, height, alt in IMAGE.findall(page):
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(data, validate=True))))
        assert pixels.shape[:2] == (int(height), int(width)), alt
        out.append((pixels, html.unescape(alt)))
    assert page.count("<img") == len(out), "an <img> is not an inline PNG"
    return out


def table(page: str, caption: str) -> list[list[str]]:
    """The cell texts of the table with this caption, header row first."""
    match = re.search(rf"<table><caption>{re.escape(html.escape(caption))}</caption>(.*?)</table>", page)
    assert match, f"no table {caption!r}"
    rows = re.findall(r"<tr>(.*?)</tr>", match.group(1))
    return [[html.unescape(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)] for row in rows]


def section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', page)


def frame_labels(page: str) -> list[list[str]]:
    films = [part.split("</section>")[0] for part in page.split('<div class="film" ')[1:]]
    return [[html.unescape(x) for x in re.findall(r'<figure class="frame" data-label="([^"]*)">', f)] for f in films]


@pytest.mark.slow
def test_report_of_a_trained_run_has_every_section_and_every_image_decodes(run, tmp_path):
    out = report(run, tmp_path / "report.html")
    assert out == tmp_path / "report.html"
    page = out.read_text(encoding="utf-8")
    assert section_ids(page) == SECTIONS  # INCL=True, no conditioning: no rebuild or conditioning section
    records = read_records(run)
    assert [r.epoch for r in records] == [0, 1, 2]
    decoded = images(page)
    # Per probe: the change chart, energy lines and heatmap, one frame per record, and the
    # epoch grid: every layer (6) at every record (3).
    assert len(decoded) == 2 * (3 + 3 + 6 * 3)
    for pixels, alt in decoded:
        assert pixels.ndim == 3 and pixels.shape[2] in (3, 4), alt
        if "every layer" in alt or "against" in alt:
            assert min(pixels.shape[:2]) > 50, alt
        if not alt.endswith(("flatten, epoch 0: spectrum", "flatten, epoch 1: spectrum", "flatten, epoch 2: spectrum")):
            assert pixels[..., :3].std() > 0, alt
    labels = [f"epoch {r.epoch} (global step {r.global_step})" for r in records]
    assert frame_labels(page) == [labels, labels]
    frames = {alt: pixels for pixels, alt in decoded if "activations and spectrum" in alt}
    assert len(frames) == 6
    # Each frame holds nsp.render's card of every layer, for each probe and record (PNG is
    # lossless), on the colour range of the whole run: equal colours, equal values.
    for record in records:
        for p in range(2):
            label = f"probe {p}, epoch {record.epoch} (global step {record.global_step})"
            frame = frames[f"{label}: activations and spectrum of every layer"]
            for l, name in enumerate(record.layernames):
                acts = np.concatenate([np.ravel(r.activations[p][l]) for r in records]).astype(np.float64)
                card = nsp.render.render_card(
                    record.activations[p][l],
                    title=f"{l}: {name} · activations · {'×'.join(map(str, record.activations[p][l].shape))}",
                    vrange=(acts.min(), acts.max()),
                    legend=["linear scale, range of the whole run"],
                )
                assert contains(frame, card), (p, record.epoch, name)
            # The grid shows this record's spectra on the same ranges.
            spec = np.abs(np.concatenate([np.ravel(r.spectra[p][1]) for r in records]))
            cell = next(px for px, alt in decoded if alt == f"probe {p}, conv, epoch {record.epoch}: spectrum")
            options = dict(scale="layersymlog", cmap="RdBu_r", vrange=(-spec.max(), spec.max()), threshold=spec[spec > 0].min())
            # About 96 pixels wide: 2 tiles of 4 values and a separator, 10 pixels a value.
            assert nsp.render.render_layer(record.spectra[p][1], **options).shape[1] == 9
            expected = nsp.render.render_layer(record.spectra[p][1], upscale=10, **options)
            np.testing.assert_array_equal(cell[..., :3], expected)


def contains(image: np.ndarray, part: np.ndarray) -> bool:
    """Whether ``part`` appears in ``image`` pixel for pixel."""
    h, w = part.shape[:2]
    rows, cols = image.shape[0] - h + 1, image.shape[1] - w + 1
    if rows < 1 or cols < 1:
        return False
    # Only places where five spread-out pixels already match are compared in full: a card
    # on a white page would otherwise leave every white pixel as a candidate.
    candidate = np.ones((rows, cols), dtype=bool)
    for dy, dx in ((0, 0), (h - 1, w - 1), (h // 2, w // 2), (0, w - 1), (h - 1, 0)):
        candidate &= (image[dy : dy + rows, dx : dx + cols, :3] == part[dy, dx]).all(axis=2)
    ys, xs = np.nonzero(candidate)
    return any(np.array_equal(image[y : y + h, x : x + w, :3], part) for y, x in zip(ys, xs))


def test_header_shows_the_run_and_the_model_summary(run, tmp_path):
    page = report(run, tmp_path / "r.html").read_text(encoding="utf-8")
    facts = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", page))
    assert facts["model"] == "TinyNet"
    assert facts["transform"].startswith("standard")
    assert facts["INCL"].startswith("True")
    assert facts["probes"] == "2 input(s) of shape 1×6×6"
    assert facts["epochs"].startswith("3 record(s) at epochs 0–2 (global steps 0–4)")
    assert facts["recorded layers"] == "6, 119 neurons"
    rows = table(page, "Recorded layers, in execution order")
    assert rows[0] == ["#", "layer", "shape", "neurons"]
    # TinyNet on 1×6×6: conv 3×3 with 2 channels -> 2×4×4, max-pool 2 -> 2×2×2, flatten 8, fc 3.
    assert rows[1:] == [
        ["0", "input", "1×6×6", "36"],
        ["1", "conv", "2×4×4", "32"],
        ["2", "relu", "2×4×4", "32"],
        ["3", "pool", "2×2×2", "8"],
        ["4", "flatten", "8", "8"],
        ["5", "fc", "3", "3"],
        ["", "total", "", "119"],
    ]


def test_energy_shares_match_an_independent_computation(run, tmp_path):
    page = report(run, tmp_path / "r.html").read_text(encoding="utf-8")
    records = read_records(run)
    for p in range(2):
        rows = table(page, f"probe {p}: share of the total spectral energy")
        assert rows[0] == ["layer", "epoch 0", "epoch 1", "epoch 2"]
        assert [r[0] for r in rows[1:]] == list(records[0].layernames)
        for column, record in enumerate(records, start=1):
            energy = np.array([float(np.sum(np.asarray(s, dtype=np.float64) ** 2)) for s in record.spectra[p]])
            share = energy / energy.sum()
            for row, expected in zip(rows[1:], share):
                text = row[column]
                if expected == 0:
                    assert text == "0"
                    continue
                shown = float(text.removesuffix(" %")) / 100
                # One decimal from 1 %, two significant digits below (0.052 %, not 5.2e-02 %), and
                # below 0.001 % in scientific notation (3.1e-07 %).
                assert ("e" in text) == (expected < 1e-5)
                tolerance = 5e-4 if expected >= 1e-2 else 0.06 * expected
                assert shown == pytest.approx(expected, abs=tolerance), (p, record.epoch, row[0])


def test_tiny_energy_shares_keep_two_significant_digits(tmp_path):
    # Spectra spanning 10^-30 to 10^30: most layers hold a tiny share, which must still read differently.
    run = synthetic_run(tmp_path / "spectrum", 3)
    page = report(run, tmp_path / "r.html").read_text(encoding="utf-8")
    records = read_records(run)
    tiny = 0
    for p in range(2):
        rows = table(page, f"probe {p}: share of the total spectral energy")[1:]
        for column, record in enumerate(records, start=1):
            energy = np.array([float(np.sum(np.asarray(s, dtype=np.float64) ** 2)) for s in record.spectra[p]])
            for row, expected in zip(rows, energy / energy.sum()):
                shown = float(row[column].removesuffix(" %")) / 100
                assert shown == pytest.approx(expected, rel=0.06), (p, record.epoch, row[0])
                tiny += expected < 1e-5
    assert tiny > 0  # the case a floor like "< 0.001 %" would hide


@pytest.mark.slow
def test_a_hundred_epochs_give_at_most_twelve_heatmap_epochs_and_a_grid_of_all(tmp_path):
    records = synthetic_run(tmp_path / "spectrum", 100)
    page = report(records, tmp_path / "r.html").read_text(encoding="utf-8")
    films = frame_labels(page)
    assert len(films) == 2
    for labels in films:
        epochs = [int(re.match(r"epoch (\d+) ", label).group(1)) for label in labels]
        assert len(epochs) == HEATMAP_EPOCHS == 12
        assert epochs[0] == 0 and epochs[-1] == 99 and epochs == sorted(set(epochs))
        assert max(np.diff(epochs)) - min(np.diff(epochs)) <= 1  # evenly spaced
    assert len(images(page)) == 2 * 3 + 2 * 12 + 2 * 3 * 100  # charts, frames, the grid of every record
    assert table(page, "probe 0: share of the total spectral energy")[0][1:] == [f"epoch {e}" for e in epochs]
    assert "100 record(s) at epochs 0–99" in page
    assert len(page) < 3_000_000


@pytest.mark.slow
def test_rebuild_section_lists_the_records_whose_graph_changed(tmp_path):
    records = synthetic_run(tmp_path / "spectrum", 10, INCL=False, rebuilt_at={3: [1], 7: [0, 1]})
    page = report(records, tmp_path / "r.html").read_text(encoding="utf-8")
    assert section_ids(page) == SECTIONS + ["rebuilds"]
    assert "at 2 of 10 records; distinct graphs per probe: 2, 3." in page
    rows = table(page, "Records whose graphs were built anew")
    assert [r[:3] for r in rows] == [
        ["epoch", "global step", "probes with a new graph"],
        ["0", "0", "initial graphs"],
        ["3", "30", "1"],
        ["7", "70", "0, 1"],
    ]
    assert rows[3][3] == "graph-0-7 graph-1-7"


def test_rebuild_section_of_a_trained_incl_false_run(tmp_path):
    records = train(tmp_path, INCL=False)
    page = report(records, tmp_path / "r.html").read_text(encoding="utf-8")
    assert section_ids(page) == SECTIONS + ["rebuilds"]
    history = read_records(records)
    rows = table(page, "Records whose graphs were built anew")
    expected = []
    for before, record in zip(history, history[1:]):
        if record.rebuilt:
            changed = [str(p) for p in range(2) if record.fingerprints[p] != before.fingerprints[p]]
            expected.append([str(record.epoch), str(record.global_step), ", ".join(changed)])
    assert expected, "the run should have rebuilt a graph"
    assert [row[:3] for row in rows[2:]] == expected
    assert facts_value(page, "INCL").startswith("False")


def facts_value(page: str, key: str) -> str:
    return dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", page))[key]


def test_module_descriptions_and_edge_counts_show_when_the_header_has_them(tmp_path):
    header = {"modules": ["Input[1, 4, 4]", "Conv2d(1, 2, kernel_size=(2, 2))", "Linear(18, 3)"], "edges": [0, 72, 54]}
    records = synthetic_run(tmp_path / "spectrum", 2, header=header)
    page = report(records, tmp_path / "r.html").read_text(encoding="utf-8")
    rows = table(page, "Recorded layers, in execution order")
    assert rows[0] == ["#", "layer", "module", "shape", "neurons", "edges in"]
    assert rows[2] == ["1", "conv", "Conv2d(1, 2, kernel_size=(2, 2))", "2×3×3", "18", "72"]
    assert rows[-1] == ["", "total", "", "", "37", "126"]
    assert facts_value(page, "graph edges") == "126"


def test_conditioning_section_shows_only_where_records_carry_it(tmp_path, monkeypatch):
    records = synthetic_run(tmp_path / "spectrum", 3)
    page = report(records, tmp_path / "plain.html").read_text(encoding="utf-8")
    assert "conditioning" not in section_ids(page)

    @dataclasses.dataclass(frozen=True)
    class SensitiveRecord(SpectrumRecord):
        rounding_sensitivity: np.ndarray | None = None

    module = importlib.import_module("nsp_lightning.report.html")
    read = module.read_series_records

    def read_with_sensitivity(directory, **options):
        kappa = np.array([[1e-7, 0.05, 0.1], [2e-7, 3.0, np.inf]])
        name, cls, header, records, problems = read(directory, **options)
        records = [SensitiveRecord(**vars(r), rounding_sensitivity=kappa * (r.epoch + 1)) for r in records]
        return name, cls, header, records, problems

    monkeypatch.setattr(module, "read_series_records", read_with_sensitivity)
    page = report(records, tmp_path / "conditioned.html").read_text(encoding="utf-8")
    assert section_ids(page) == SECTIONS + ["conditioning"]
    assert table(page, "probe 1: rounding sensitivity κ") == [
        ["layer", "epoch 0", "epoch 1", "epoch 2"],
        ["input", "2.0e-07", "4.0e-07", "6.0e-07"],
        ["conv", "3.0e+00", "6.0e+00", "9.0e+00"],
        ["fc", "inf", "inf", "inf"],
    ]
    # Cells from kappa = 0.1 up are shaded: probe 0's conv from epoch 1 (0.05 * 2), its fc always.
    probe0 = re.search(r"<caption>probe 0: rounding sensitivity κ</caption>(.*?)</table>", page).group(1)
    warned = [re.findall(r"<td([^>]*)>", row)[1:] for row in re.findall(r"<tr>(.*?)</tr>", probe0)[1:]]
    assert [["warn" in cell for cell in row] for row in warned] == [
        [False, False, False],
        [False, True, True],
        [True, True, True],
    ]


def test_the_page_is_self_contained(run, tmp_path):
    page = report(run, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "//" not in re.sub(r"data:[^\"]*", "", page)
    assert "<link" not in page and "<script src" not in page and "@import" not in page and "url(" not in page
    assert page.count("<script>") == 1


@pytest.mark.slow
def test_the_styles_and_script_are_package_data_that_every_page_embeds(run, tmp_path):
    static = resources.files("nsp_lightning.report") / "static"
    css, js = ((static / name).read_text(encoding="utf-8") for name in ("report.css", "report.js"))
    assert "font:" in css and "function showFrame" in js
    page = report(run, tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"<style>\n{css}</style>" in page and f"<script>\n{js}</script>" in page
    # What a wheel holds: pyproject.toml declares every file of static/ as package data.
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["nsp_lightning.report"]
    names = sorted(item.name for item in static.iterdir())
    assert names == ["report.css", "report.js"]
    assert all(any(fnmatch.fnmatch(f"static/{name}", pattern) for pattern in patterns) for name in names)


def test_a_log_directory_with_one_record_directory_is_enough(run):
    out = report(run.parent)
    assert out == run.parent / "report.html"
    assert section_ids(out.read_text(encoding="utf-8")) == SECTIONS


@pytest.mark.slow
def test_an_output_directory_gets_report_html(run, tmp_path):
    assert report(run, tmp_path) == tmp_path / "report.html"
    assert report(run, tmp_path / "new" / "dir" / "x.html").is_file()


def test_clear_errors_for_directories_without_records(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'missing'} does not exist")):
        report(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(f"no spectrum records in {empty}")):
        report(empty)
    started = tmp_path / "started"
    RecordStore(started).start({"layernames": ["input"]})
    message = f"no spectrum records in {started}: its manifest lists none"
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        report(started)
    for name in ("a", "b"):
        synthetic_run(tmp_path / "two" / name, 1)
    with pytest.raises(ValueError, match="holds 2 record directories .*two/a, .*two/b"):
        report(tmp_path / "two")


@pytest.mark.slow
def test_cli_writes_html_and_pdf_and_draws_progress(run, tmp_path, capsys):
    out = tmp_path / "cli" / "report.html"
    assert main([str(run), "-o", str(out), "--pdf"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out), str(out.with_suffix(".pdf"))]
    # HTML: per probe, change and energy charts, heatmaps of 3 records, the grid; PDF: a page per
    # chart, heatmap and grid row.
    steps = 2 * (1 + 2 + 3 + 1) + 2 * (3 + 3 + 6)
    assert f"nsp-report [{'#' * 30}] {steps}/{steps}" in captured.err
    assert section_ids(out.read_text(encoding="utf-8")) == SECTIONS
    pdf = out.with_suffix(".pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type /Page\b", pdf))
    assert pages >= 1 + 2 * 2 + 2 * 3  # text, a page per chart and per heatmap
    assert b"Spectral report: TinyNet" in pdf


def test_cli_quiet_draws_no_progress(run, tmp_path, capsys):
    assert main([str(run), "-o", str(tmp_path / "r.html"), "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: nsp-report [-h] [-o OUT] [--pdf] [-q] [--skip-bad] RUN_DIR" in text
    assert "--pdf" in text and "RUN_DIR" in text
    # The help states the number of heatmap epochs the code selects (issue 21, #10: it said 8 for 12).
    assert f"heatmaps at up to {HEATMAP_EPOCHS} selected epochs" in " ".join(text.split())


def test_cli_error_names_the_directory(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nsp-report: error: ") and f"no spectrum records in {tmp_path}" in err


def test_installed_command_exits_non_zero_for_a_directory_without_records(tmp_path):
    script = shutil.which("nsp-report", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "nsp_lightning.report.cli"]
    result = subprocess.run([*command, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"nsp-report: error: nsp_lightning.report: no spectrum records in {tmp_path}" in result.stderr


def test_a_manifest_without_the_callback_header_is_refused(tmp_path):
    synthetic_run(tmp_path, 1)
    manifest = load_json(tmp_path / "manifest.json")
    del manifest["header"]["model"], manifest["header"]["INCL"]
    save_json(tmp_path / "manifest.json", manifest)
    with pytest.raises(ValueError, match=re.escape(f"the manifest in {tmp_path} lacks ['INCL', 'model']")):
        report(tmp_path)
