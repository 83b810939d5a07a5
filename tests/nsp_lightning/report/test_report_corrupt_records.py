"""Reliability (issue 10, problems 8 and 9): corrupt or contradictory record files give errors that name them.

Part of the reliability suite (``pytest -m reliability``). Every case here gave a raw
traceback from ``nsp-report`` (problem 8), or was read and reported as if it were part of
the run (problem 9), before the fix.
"""

import json
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_report import synthetic_run

from nsp.io.storage import load_json, load_npz, save_npz
from nsp_lightning import read_records
from nsp_lightning.report.cli import main
from nsp_lightning.report.html import report

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return synthetic_run(tmp_path_factory.mktemp("base") / "spectrum", 3)


def copy(base: Path, where: Path) -> Path:
    shutil.copytree(base, where)
    return where


def edit_manifest(directory, change):
    manifest = load_json(directory / "manifest.json")
    change(manifest)
    # Python's json writes NaN and Infinity, which a crafted file may hold; nsp writes strict JSON.
    (directory / "manifest.json").write_text(json.dumps(manifest))


def edit_record(directory, change, name="epoch-000001"):
    path = directory / f"{name}.npz"
    arrays, meta = load_npz(path)
    change(arrays, meta)
    with open(path, "wb") as handle:
        np.savez(handle, __meta__=np.asarray(json.dumps(meta)), **arrays)


def raw_meta(directory, text, name="epoch-000001"):
    path = directory / f"{name}.npz"
    arrays, _ = load_npz(path)
    with open(path, "wb") as handle:
        np.savez(handle, __meta__=np.asarray(text), **arrays)


def header(key, value):
    return lambda d: edit_manifest(d, lambda m: m["header"].__setitem__(key, value))


def meta(key, value):
    return lambda d: edit_record(d, lambda a, m: m.__setitem__(key, value))


def array(key, value):
    return lambda d: edit_record(d, lambda a, m: a.__setitem__(key, value))


MANIFEST, RECORD = "manifest.json", "epoch-000001.npz"
# (corruption, the file the error must name, what it must say). Each raised a raw
# UFuncTypeError, TypeError, IndexError or KeyError, or gave a report, before the fix.
CASES = {
    "records null": (lambda d: edit_manifest(d, lambda m: m.__setitem__("records", None)), MANIFEST, "records null"),
    "header missing": (lambda d: edit_manifest(d, lambda m: m.pop("header")), MANIFEST, "header null"),
    "shapes 'x'": (header("shapes", "x"), MANIFEST, "shapes 'x'"),
    "shapes of strings": (header("shapes", ["x", "y", "z"]), MANIFEST, "expected a list of shapes"),
    "probe_shape 5": (header("probe_shape", 5), MANIFEST, "probe_shape 5"),
    "edges ['x']": (header("edges", ["x"]), MANIFEST, "edges ['x']"),
    "modules 5": (header("modules", 5), MANIFEST, "modules 5"),
    "transform []": (header("transform", []), MANIFEST, "transform []"),
    "INCL 'x'": (header("INCL", "x"), MANIFEST, "INCL 'x'"),
    "100,000-deep JSON": (lambda d: (d / MANIFEST).write_text("[" * 100_000 + "]" * 100_000), MANIFEST, "RecursionError"),
    "analysis class 5": (lambda d: edit_manifest(d, lambda m: m.__setitem__("analysis", {"name": "spectra", "class": 5})),
                         MANIFEST, "invalid analysis entry"),
    "record file missing": (lambda d: (d / RECORD).unlink(), RECORD, "is missing"),
    "non-JSON __meta__": (lambda d: raw_meta(d, "{not json"), RECORD, "is not valid JSON"),
    "epoch 'x'": (meta("epoch", "x"), RECORD, "epoch 'x'"),
    "global_step []": (meta("global_step", []), RECORD, "global_step []"),
    "seconds 'x'": (meta("seconds", "x"), RECORD, "seconds 'x'"),
    "fingerprints null": (meta("fingerprints", None), RECORD, "fingerprints None"),
    "layernames 'x'": (meta("layernames", "x"), RECORD, "layernames 'x'"),
    "complex log10_energy": (array("log10_energy", np.zeros((2, 3), complex)), RECORD, "complex128"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_nsp_report_names_the_file_and_what_is_wrong(base, tmp_path, capsys, case):
    corrupt, file, what = CASES[case]
    run = copy(base, tmp_path / "spectrum")
    corrupt(run)
    assert main([str(run), "-q", "-o", str(tmp_path / "r.html")]) == 1  # before: a raw traceback for most
    err = capsys.readouterr().err
    assert err.startswith("nsp-report: error: ") and "Traceback" not in err
    assert str(run / file) in err and what in err, err
    assert "--skip-bad" in err if file == RECORD else True


def test_skip_bad_reports_the_rest_of_the_run_and_lists_what_it_left_out(base, tmp_path, capsys):
    run = copy(base, tmp_path / "spectrum")
    raw_meta(run, "{not json")
    out = tmp_path / "r.html"
    assert main([str(run), "-q", "--skip-bad", "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.index('<section id="problems">') < page.index('<section id="run">')
    assert f"{run / RECORD}" in page and "is not valid JSON" in page
    assert "2 record(s) at epochs 0, 2" in page
    with pytest.warns(UserWarning, match="epoch-000001.npz.*the record is left out"):
        assert [r.epoch for r in read_records(run, skip_bad=True)] == [0, 2]


def test_skip_bad_leaves_out_a_whole_corrupt_record_directory(base, tmp_path):
    run = tmp_path / "version_0"
    copy(base, run / "spectrum")
    other = synthetic_run(run / "other", 2)
    edit_manifest(other, lambda m: m.update(analysis={"name": "other", "class": "nsp_lightning.analyses.spectrum:SpectrumAnalysis"}))
    (run / "spectrum" / MANIFEST).write_text("{")
    with pytest.raises(ValueError, match="manifest.json is not valid JSON"):
        report(run, tmp_path / "strict.html")
    page = report(run, tmp_path / "r.html", skip_bad=True).read_text(encoding="utf-8")
    assert str(run / "spectrum" / MANIFEST) in page and "2 record(s) at epochs 0–1" in page


# -- 9: records that contradict their header or their series --------------------------------
def test_a_record_of_another_network_with_as_many_layers_is_refused(base, tmp_path):
    run = copy(base, tmp_path / "spectrum")
    other = synthetic_run(tmp_path / "other", 2)
    edit_manifest(other, lambda m: m["header"].update(shapes=[[1, 5, 5], [2, 4, 4], [3]]))
    edit_record(other, lambda a, m: a.update({f"activations.{l}": np.zeros((2, *s), np.float32) for l, s in
                                              enumerate([(1, 5, 5), (2, 4, 4), (3,)])}), "epoch-000000")
    # The other run's epoch 1, with its layer names, copied over this run's; series ids left out, as old files and
    # manifests have none (a manifest with a series id refuses a file without it before looking inside).
    edit_manifest(run, lambda m: m.pop("series"))
    arrays, m = load_npz(other / "epoch-000000.npz")
    m.pop("__series__")
    m["epoch"] = 1
    arrays["spectrum.0"] = np.zeros((2, 1, 5, 5))
    save_npz(run / RECORD, arrays, m)
    with pytest.raises(ValueError, match=rf"{RECORD} holds activations of layer 'input' of shape \[1, 5, 5\].*another network"):
        read_records(run)  # before: read and reported as epoch 1 of this run


def test_a_record_copied_in_from_another_run_is_refused_by_its_series_id(base, tmp_path):
    run = copy(base, tmp_path / "spectrum")
    other = synthetic_run(tmp_path / "other", 2)  # the same network: only the series tells the files apart
    shutil.copy(other / RECORD, run / RECORD)
    with pytest.raises(ValueError, match=rf"{RECORD} belongs to another record series"):
        read_records(run)


def test_a_duplicated_or_renamed_record_is_refused(base, tmp_path):
    run = copy(base, tmp_path / "spectrum")
    edit_manifest(run, lambda m: m["records"].insert(2, dict(m["records"][1])))
    with pytest.raises(ValueError, match="lists the record 'epoch-000001' twice"):
        read_records(run)  # before: epochs [0, 1, 1, 2]
    run = copy(base, tmp_path / "renamed")
    shutil.copy(run / "epoch-000001.npz", run / "epoch-000003.npz")
    edit_manifest(run, lambda m: m["records"].append({"name": "epoch-000003", "file": "epoch-000003.npz"}))
    with pytest.raises(ValueError, match=r"epoch-000003.npz has epoch 1 \(the manifest lists it as 'epoch-000003'\)"):
        read_records(run)


def test_a_shapes_list_shorter_than_the_layers_is_refused(base, tmp_path):
    run = copy(base, tmp_path / "spectrum")
    edit_manifest(run, lambda m: m["header"]["shapes"].pop())
    with pytest.raises(ValueError, match=rf"{MANIFEST} has 2 shapes for 3 layers"):
        read_records(run)  # before: read; the report zipped the layers with the shorter list


def test_a_record_with_another_number_of_probes_is_refused(base, tmp_path):
    run = copy(base, tmp_path / "spectrum")
    edit_manifest(run, lambda m: m["header"].update(probes=3, probe_shape=[3, 1, 4, 4]))
    with pytest.raises(ValueError, match="holds 2 probe\\(s\\) and 2 fingerprint\\(s\\), but its series has 3"):
        read_records(run)


# -- fuzz: crafted and corrupted files never crash the reader or the report ----------------
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
_ARRAYS = st.builds(
    lambda dtype, shape, fill: np.full(shape, fill).astype(dtype),
    st.sampled_from(["float64", "float32", "int64", "uint8", "bool", "complex128", "float16"]),
    st.lists(st.integers(0, 4), max_size=4).map(tuple),
    st.integers(-2, 2),
)


def _mutate(directory: Path, data) -> None:
    kind = data.draw(st.sampled_from(["header", "manifest", "meta", "array", "bytes"]))
    name = data.draw(st.sampled_from(["epoch-000000", "epoch-000001"]))
    if kind == "header":
        key = data.draw(st.sampled_from(["layernames", "shapes", "probes", "probe_shape", "transform", "INCL",
                                         "model", "edges", "modules"]))
        edit_manifest(directory, lambda m: m["header"].__setitem__(key, data.draw(_JSON)))
    elif kind == "manifest":
        key = data.draw(st.sampled_from(["records", "header", "analysis", "series", "failed", "format"]))
        edit_manifest(directory, lambda m: m.__setitem__(key, data.draw(_JSON)))
    elif kind == "meta":
        key = data.draw(st.sampled_from(["epoch", "global_step", "seconds", "probes", "layernames", "fingerprints",
                                         "rebuilt", "__series__"]))
        edit_record(directory, lambda a, m: m.__setitem__(key, data.draw(_JSON)), name)
    elif kind == "array":
        key = data.draw(st.sampled_from(["energy", "log10_energy", "activations.0", "spectrum.1", "spectrum.2"]))
        edit_record(directory, lambda a, m: a.__setitem__(key, data.draw(_ARRAYS)), name)
    else:
        path = directory / data.draw(st.sampled_from([MANIFEST, f"{name}.npz"]))
        raw = bytearray(path.read_bytes())
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at : at + 4] = data.draw(st.binary(min_size=0, max_size=4))
        path.write_bytes(bytes(raw))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_read_records_reads_or_names_the_file(base, data):
    with tempfile.TemporaryDirectory() as tmp:
        run = copy(base, Path(tmp) / "spectrum")
        _mutate(run, data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                read_records(run, skip_bad=data.draw(st.booleans()))
        except (ValueError, FileNotFoundError) as err:
            assert str(run) in str(err), err


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_nsp_report_writes_a_report_or_an_error_naming_the_file(base, data, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        run = copy(base, Path(tmp) / "spectrum")
        _mutate(run, data)
        flags = ["--skip-bad"] if data.draw(st.booleans()) else []
        capsys.readouterr()
        code = main([str(run), "-q", "-o", str(Path(tmp) / "r.html"), *flags])
        err = capsys.readouterr().err
        assert code in (0, 1)
        if code == 1:
            # The temporary directory's random name may itself contain "bug", so look for the CLI's own wording.
            assert err.startswith("nsp-report: error: ") and str(run) in err and "an nsp-report bug" not in err, err


def _probe_record(kind):
    """A small valid record of each analysis, and the same record corrupted where its report would index."""
    u8 = lambda *s: np.zeros(s, np.uint8)  # noqa: E731
    f = lambda *s: np.zeros(s)  # noqa: E731
    if kind == "linear_regions":
        arrays = {"regions": np.array([3, 4]), "density": f(2), "boundary_distance": f(2), "images": u8(2, 8, 8, 3)}
        return arrays, {}, ("density", f(1)), "'density' with 1 rows, expected 2"
    if kind == "response_map":
        arrays = {"layout": f(5, 2), "maps": f(2, 4, 4), "responses": f(2, 5),
                  "neuron_layer": np.array([0, 0, 1, 1, 1], np.int32), "neuron_index": np.arange(5)}
        return arrays, {"layers": ["a", "b"]}, ("neuron_layer", np.array([0, 0, 1, 1, 7], np.int32)), "outside 0..1"
    if kind == "attribution":
        arrays = {"probes": f(2, 1, 4, 4).astype(np.float32), "saliency": f(2, 1, 4, 4), "target": np.arange(2)}
        return arrays, {"methods": ["saliency"]}, ("saliency", f(1, 1, 4, 4)), "'saliency' with 1 rows, expected 2"
    arrays = {"images": u8(2, 1, 4, 4), "values": f(2), "initial_values": f(2)}
    return arrays, {"labels": ["a", "b"]}, ("values", f(3)), "'values' with 3 rows, expected 2"


@pytest.mark.parametrize("kind, cls", [
    ("linear_regions", "nsp_lightning.analyses.linear_regions:LinearRegionsAnalysis"),
    ("response_map", "nsp_lightning.analyses.response_map:ResponseMapAnalysis"),
    ("attribution", "nsp_lightning.analyses.attribution:AttributionAnalysis"),
    ("feature_vis", "nsp_lightning.analyses.feature_vis:FeatureVisAnalysis"),
])
def test_every_analysis_checks_the_arrays_its_report_reads(tmp_path, kind, cls):
    from nsp.io.storage import RecordStore
    from nsp_lightning import AnalysisRecord
    from nsp_lightning.probe.store import write_analysis_record

    arrays, meta, (name, bad), message = _probe_record(kind)
    store = RecordStore(tmp_path)
    store.start({}, analysis={"name": kind, "class": cls})
    write_analysis_record(store, AnalysisRecord(arrays=arrays, meta=meta), epoch=0, global_step=0, seconds=0.0)
    write_analysis_record(store, AnalysisRecord(arrays={**arrays, name: bad}, meta=meta), epoch=1, global_step=1,
                          seconds=0.0)
    store.close()
    with pytest.raises(ValueError, match=rf"the record {tmp_path / 'epoch-000001.npz'} has .*{re.escape(message)}"):
        read_records(tmp_path)  # before: read, and the report failed with a raw IndexError or drew garbage
    with pytest.warns(UserWarning, match="epoch-000001.npz"):
        assert [r.epoch for r in read_records(tmp_path, skip_bad=True)] == [0]


@pytest.mark.slow
def test_the_installed_command_prints_one_line_naming_the_file_no_traceback(base, tmp_path):
    import shutil as sh
    import subprocess
    import sys

    run = copy(base, tmp_path / "spectrum")
    header("shapes", "x")(run)  # before: a raw UFuncTypeError traceback
    script = sh.which("nsp-report", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "nsp_lightning.report.cli"]
    result = subprocess.run([*command, str(run), "-q"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"nsp-report: error: nsp_lightning.read_records: the manifest {run / MANIFEST} has shapes 'x', expected a list"
        " of shapes (lists of ints >= 0) in its header (--skip-bad reports the rest of the run)"
    ]


def test_a_record_that_is_not_a_regular_file_is_refused_not_read(base, tmp_path):
    import os

    run = copy(base, tmp_path / "spectrum")
    (run / RECORD).unlink()
    os.mkfifo(run / RECORD)  # before: the reader blocked forever on the pipe
    with pytest.raises(ValueError, match=rf"{RECORD} is not a regular file"):
        read_records(run)
