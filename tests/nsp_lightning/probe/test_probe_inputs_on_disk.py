"""Reliability (issue 22, findings 1, 3, 9 and 13): paths built from user input, links, and large manifests.

Part of the reliability suite (``pytest -m reliability``).
"""

import lightning.pytorch as pl
import numpy as np
import pytest
from lightning_helpers import TinyNet, loader, probe, trainer_kwargs

from nsp.io.storage import RecordStore, RecordStoreError, save_json
from nsp_lightning import AnalysisRecord, ProbeAnalysis, ProbeCallback, read_records
from nsp_lightning.analyses import AttributionAnalysis, SpectrumAnalysis
from nsp_lightning.probe.store import read_series_records, write_analysis_record

pytestmark = pytest.mark.reliability

BAD_NAMES = ["../../escaped", "/tmp/abs", "with space", "<b>bold</b>", "UPPER", "", "a" * 65, "a/b", ".."]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_an_instance_name_that_is_not_a_directory_name_is_refused_naming_the_argument(name):
    with pytest.raises(ValueError, match=r"AttributionAnalysis\(name=.*\): expected lowercase letters"):
        AttributionAnalysis(name=name)


class Plain(ProbeAnalysis):
    name = "plain"

    def compute(self, model, probes, context):
        return AnalysisRecord()


def test_a_name_set_on_an_instance_later_is_checked_too():
    analysis = Plain()
    with pytest.raises(ValueError, match=r"Plain\(name='../x'\): expected lowercase letters"):
        analysis.name = "../x"
    analysis.name = "plain-2"
    assert ProbeCallback(probe(1), [analysis, Plain()]).analyses[0].name == "plain-2"


def test_a_manifest_naming_an_analysis_with_a_path_is_refused(tmp_path):
    store = RecordStore(tmp_path)
    store.start({}, analysis={"name": "../../escaped", "class": "x:Y"})
    store.close()
    with pytest.raises(ValueError, match="manifest.json has an invalid analysis entry"):
        read_records(tmp_path)


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "with space"])
def test_record_array_names_that_are_paths_are_refused(tmp_path, name):
    store = RecordStore(tmp_path)
    store.start({})
    with pytest.raises(ValueError, match=r"AnalysisRecord.arrays has the invalid names"):
        write_analysis_record(store, AnalysisRecord(arrays={name: np.zeros(1)}), epoch=0, global_step=0, seconds=0.0)
    store.close()
    assert store.names() == []


def test_a_link_at_the_lock_path_stops_the_fit_naming_it_and_the_target_is_untouched(tmp_path):
    target = tmp_path / "bashrc"
    target.write_text("keep me\n")
    (tmp_path / "logs" / "spectrum").mkdir(parents=True)
    (tmp_path / "logs" / "spectrum" / ".lock").symlink_to(target)
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=1),
                         callbacks=[ProbeCallback(probe(1), [SpectrumAnalysis()], dirpath=tmp_path / "logs")])
    with pytest.raises(RecordStoreError, match=r"ProbeCallback: .*spectrum/\.lock \(the directory's lock file\) is a"
                                               " symbolic link"):
        trainer.fit(TinyNet(), loader())
    assert target.read_text() == "keep me\n"


def test_skip_bad_reads_a_manifest_of_many_missing_records_in_one_pass(tmp_path, monkeypatch):
    n = 20_000
    store = RecordStore(tmp_path)
    store.start({}, analysis={"name": "many", "class": "x:Y"})
    store.close()
    manifest = store.manifest()
    manifest["records"] = [{"name": f"epoch-{i:06d}", "file": f"epoch-{i:06d}.npz"} for i in range(n)]
    save_json(store.manifest_path, manifest)
    passes = []

    class Counted(list):
        def __iter__(self):
            passes.append(1)
            return super().__iter__()

    real = RecordStore.manifest

    def counted(self):
        found = real(self)
        found["records"] = Counted(found["records"])
        return found

    monkeypatch.setattr(RecordStore, "manifest", counted)
    records, problems = read_series_records(tmp_path, skip_bad=True)[3:]
    assert records == [] and len(problems) == n and "epoch-019999.npz is missing" in problems[-1]
    # Before: each record was looked up by name in the manifest, a pass over it per record (quadratic).
    assert len(passes) <= 4


def test_a_dirpath_that_is_a_file_is_refused_naming_it(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match=r"ProbeCallback\(dirpath='.*file\.txt'\): it is a file, expected a directory"):
        ProbeCallback(probe(1), [Plain()], dirpath=tmp_path / "file.txt")
    # Where the store finds out itself (the file appeared later): the OSError says what nsp was doing.
    with pytest.raises(NotADirectoryError, match=r"nsp\.storage: cannot create the record directory .*file\.txt/plain"):
        RecordStore(tmp_path / "file.txt" / "plain").start({})
