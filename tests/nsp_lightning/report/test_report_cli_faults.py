"""Reliability (issue 22, findings 8 and 9): nsp-report names the directory of a section it cannot draw, and
``--skip-bad`` reports the rest; a manifest of many missing records is read in one pass.

Part of the reliability suite (``pytest -m reliability``).
"""

import numpy as np
import pytest

from nsp.io.storage import RecordStore, save_json
from nsp_lightning import AnalysisRecord, ProbeAnalysis
from nsp_lightning.probe.analysis import class_path
from nsp_lightning.probe.store import write_analysis_record
from nsp_lightning.report.cli import main
from nsp_lightning.report.sections import Film, Section, Text

pytestmark = pytest.mark.reliability


class EmptyFilm(ProbeAnalysis):
    """Draws a film of no frames."""

    name = "empty-film"

    def compute(self, model, probes, context):
        return AnalysisRecord()

    @classmethod
    def report(cls, records, header, context):
        return Section("empty", "Empty", [Film("nothing to show", [])])


class Fine(ProbeAnalysis):
    name = "fine"

    def compute(self, model, probes, context):
        return AnalysisRecord()

    @classmethod
    def report(cls, records, header, context):
        return Section("fine", "Fine", [Text(f"{len(records)} record(s)")])


def series(directory, cls, epochs=(0,)):
    store = RecordStore(directory)
    store.start({}, analysis={"name": cls.name, "class": class_path(cls)})
    for epoch in epochs:
        write_analysis_record(store, AnalysisRecord(arrays={"x": np.zeros(1)}), epoch=epoch, global_step=epoch,
                              seconds=0.0)
    store.close()
    return store


def test_a_film_with_no_frames_is_an_error_naming_the_directory_and_skip_bad_reports_the_rest(tmp_path, capsys):
    series(tmp_path / "run" / "empty-film", EmptyFilm)
    series(tmp_path / "run" / "fine", Fine)
    assert main([str(tmp_path / "run"), "-q", "-o", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    # Before: "max() arg is an empty sequence", naming nothing, with --skip-bad too.
    assert "EmptyFilm.report could not draw the records in" in err and "run/empty-film" in err
    assert "a film needs at least one frame" in err
    assert main([str(tmp_path / "run"), "-q", "--skip-bad", "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "1 record(s)" in page and "a film needs at least one frame" in page


def test_skip_bad_with_many_missing_records_reports_the_readable_ones(tmp_path, capsys):
    store = series(tmp_path / "fine", Fine, epochs=(0,))
    manifest = store.manifest()
    manifest["records"] += [{"name": f"epoch-{i:06d}", "file": f"epoch-{i:06d}.npz"} for i in range(1, 20_001)]
    save_json(store.manifest_path, manifest)
    assert main([str(tmp_path / "fine"), "-q", "--skip-bad", "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "1 record(s)" in page and "epoch-020000.npz is missing" in page
