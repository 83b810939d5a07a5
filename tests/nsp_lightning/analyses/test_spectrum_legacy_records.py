"""Spectrum records written by nsp-lightning 0.1.0 (tests/data/spectra-v0.1.0) still read and report."""

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
from lightning_helpers import LAYERS, TinyNet, loader, probe, trainer_kwargs
from test_report import SECTIONS, section_ids, table

import lightning.pytorch as pl

import nsp.transforms.energy
from nsp.io.storage import RecordStore, load_json, load_npz
from nsp_lightning import SpectrumCallback, SpectrumRecord, read_header, read_records, report
from nsp_lightning.probe.store import read_series

LEGACY = Path(__file__).parents[2] / "data" / "spectra-v0.1.0"


def test_records_of_the_previous_release_read_back():
    assert RecordStore(LEGACY).analysis is None  # written before the manifest named its analysis
    assert read_series(LEGACY)[0] == "spectra"
    records = read_records(LEGACY)
    assert all(isinstance(r, SpectrumRecord) for r in records)
    assert [(r.epoch, r.global_step, r.rebuilt) for r in records] == [(0, 0, False), (1, 2, True), (2, 4, True)]
    header = read_header(LEGACY)
    assert header["layernames"] == LAYERS and header["INCL"] is False and header["model"] == "TinyNet"
    for record in records:
        assert record.layernames == tuple(LAYERS) and record.num_probes == 2
        for p in range(2):
            assert [a.shape for a in record.activations[p]] == [tuple(s) for s in header["shapes"]]
            np.testing.assert_array_equal(record.energy[p], nsp.energy.spectral_energy(list(record.spectra[p])))
            # Stored by the writer: numpy's log10 may differ in the last ulp across builds.
            np.testing.assert_allclose(
                record.log10_energy[p], nsp.energy.log10_energy(list(record.spectra[p])), rtol=1e-14, atol=0
            )
    # The stored input is the probe the old release drew; torch.randn's vectorised kernels
    # (AVX-512, AVX2, scalar) round its last bits differently, so a redraw matches to float32 rounding only.
    np.testing.assert_allclose(records[0].activations[1][0], probe(2)[1].numpy(), rtol=1e-5, atol=1e-6)


def test_records_of_the_previous_release_report_with_every_section(tmp_path):
    run = tmp_path / "version_0"
    shutil.copytree(LEGACY, run / "spectra")
    page = report(run, tmp_path / "r.html").read_text(encoding="utf-8")
    assert section_ids(page) == SECTIONS + ["rebuilds"]
    assert "<title>Spectral report: TinyNet</title>" in page
    rows = table(page, "Records whose graphs were built anew")
    assert [r[:3] for r in rows[1:]] == [["0", "0", "initial graphs"], ["1", "2", "1"], ["2", "4", "0, 1"]]


def test_this_version_writes_the_format_of_the_previous_release(tmp_path):
    # The run that wrote tests/data/spectra-v0.1.0 (see its README), with this version.
    pl.seed_everything(0, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        callback = SpectrumCallback(probe(2), INCL=False, dirpath=tmp_path / "spectra")
        pl.Trainer(**trainer_kwargs(max_epochs=2, default_root_dir=tmp_path), callbacks=[callback]).fit(
            TinyNet(), loader()
        )
    old, new = load_json(LEGACY / "manifest.json"), load_json(tmp_path / "spectra" / "manifest.json")
    assert new.pop("analysis") == {"name": "spectrum", "class": "nsp_lightning.analyses.spectrum:SpectrumAnalysis"}
    series = new.pop("series")
    assert len(series) == 32  # the writer's series id (reliability: no mixed series)
    assert new == old
    for entry in old["records"]:
        old_arrays, old_meta = load_npz(LEGACY / entry["file"])
        new_arrays, new_meta = load_npz(tmp_path / "spectra" / entry["file"])
        assert new_meta.pop("__series__") == series  # each record names its series; older readers ignore it
        assert sorted(new_meta) == sorted(old_meta)
        assert {k: v for k, v in new_meta.items() if k != "seconds"} == {
            k: v for k, v in old_meta.items() if k != "seconds"
        }
        assert {k: (a.dtype, a.shape) for k, a in new_arrays.items()} == {
            k: (a.dtype, a.shape) for k, a in old_arrays.items()
        }
        # Another CPU may round the forward pass differently; spectra magnify that, activations do not.
        for key in (k for k in old_arrays if re.fullmatch(r"activations\.\d+", k)):
            np.testing.assert_allclose(new_arrays[key], old_arrays[key], rtol=1e-5, atol=1e-6)


def test_a_run_recorded_before_the_analysis_was_renamed_still_reads_and_reports_spectra_first(tmp_path):
    """Before issue 21 the spectrum analysis was named `spectra` (its folder) and logged `nsp/` tags."""
    from channel_means import ChannelMeans

    from nsp_lightning import ProbeCallback
    from nsp_lightning.analyses import SpectrumAnalysis

    means = ChannelMeans()
    means.name = "activity"  # sorts before either name of the spectrum's folder
    callback = ProbeCallback(probe(1), [SpectrumAnalysis(), means], dirpath=tmp_path / "run", epochs=[1])
    pl.Trainer(**trainer_kwargs(max_epochs=1), callbacks=[callback]).fit(TinyNet(), loader())
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["activity", "spectrum"]
    new_page = report(tmp_path / "run", tmp_path / "new.html").read_text(encoding="utf-8")
    assert section_ids(new_page) == SECTIONS + ["channels"]
    # The same run as the previous version wrote it: the folder and the manifest's analysis named `spectra`.
    (tmp_path / "run" / "spectrum").rename(tmp_path / "run" / "spectra")
    manifest = load_json(tmp_path / "run" / "spectra" / "manifest.json")
    manifest["analysis"]["name"] = "spectra"
    (tmp_path / "run" / "spectra" / "manifest.json").write_text(json.dumps(manifest))
    assert read_series(tmp_path / "run" / "spectra") == ("spectra", SpectrumAnalysis)
    assert [r.epoch for r in read_records(tmp_path / "run" / "spectra")] == [0, 1]
    page = report(tmp_path / "run", tmp_path / "old.html").read_text(encoding="utf-8")
    assert section_ids(page) == SECTIONS + ["channels"]
