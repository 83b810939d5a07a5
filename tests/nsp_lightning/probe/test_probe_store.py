import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nsp
from nsp.io.storage import RecordStore
from nsp_lightning import read_header, read_records
from nsp_lightning.analyses.spectrum.records import make_record, write_record
from nsp_lightning.probe.store import record_name


def patterns():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0]]))
        net[0].bias.zero_()
    acts = [nsp.Activations(net, torch.tensor([[1.0, 1.0]])), nsp.Activations(net, torch.tensor([[0.5, -2.0]]))]
    graph = nsp.NNGraph(acts[0])
    return acts, [graph.transform(a) for a in acts]


def test_make_record_keeps_the_chosen_layers_and_exact_energies():
    acts, spectra = patterns()
    record = make_record(4, 40, acts, spectra, layers=[2, 1], fingerprints=["f", "f"], rebuilt=False, seconds=0.5)
    assert record.layernames == ("1", "0")
    assert record.num_probes == 2
    # Probe 0: input (1, 1), Linear -> (3, -1), ReLU -> (3, 0).
    # Linear spectrum: s - sum of all ancestors' spectra = (3 - 2, -1 - 2) = (1, -3).
    np.testing.assert_array_equal(record.spectra[0][1], [1.0, -3.0])
    np.testing.assert_array_equal(record.activations[0][0], np.array([3.0, 0.0], dtype=np.float32))
    assert record.activations[0][0].dtype == np.float32
    np.testing.assert_array_equal(record.energy[0, 1], 10.0)
    assert record.log10_energy[0, 1] == pytest.approx(1.0)
    assert record.energy.shape == record.log10_energy.shape == (2, 2)


def test_write_then_read_round_trips_every_field(tmp_path):
    acts, spectra = patterns()
    store = RecordStore(tmp_path)
    store.start({"layernames": ["input", "0", "1"]})
    for epoch in (2, 0, 1):
        write_record(store, make_record(epoch, 10 * epoch, acts, spectra, [0, 1, 2], ["a", "b"], epoch == 1, 0.25))
    records = read_records(tmp_path)
    assert [r.epoch for r in records] == [0, 1, 2]
    assert [r.rebuilt for r in records] == [False, True, False]
    r = records[1]
    assert (r.global_step, r.fingerprints, r.seconds, r.layernames) == (10, ("a", "b"), 0.25, ("input", "0", "1"))
    for p in range(2):
        for l in range(3):
            np.testing.assert_array_equal(r.spectra[p][l], spectra[p].layeractivations[l].numpy())
            np.testing.assert_array_equal(r.activations[p][l], acts[p].layeractivations[l].numpy())
    assert read_header(tmp_path) == {"layernames": ["input", "0", "1"]}
    assert store.names() == [record_name(2), record_name(0), record_name(1)]


def test_an_all_zero_layer_has_log10_energy_minus_infinity(tmp_path):
    acts, spectra = patterns()
    spectra[0].layeractivations[2] = torch.zeros(2, dtype=torch.float64)
    record = make_record(0, 0, acts, spectra, [2], ["x", "x"], False, 0.0)
    assert record.energy[0, 0] == 0.0 and math.isinf(record.log10_energy[0, 0]) and record.log10_energy[0, 0] < 0
    store = RecordStore(tmp_path)
    store.start({})
    write_record(store, record)
    assert np.isneginf(read_records(tmp_path)[0].log10_energy[0, 0])


def test_make_record_needs_one_spectrum_and_fingerprint_per_pattern():
    acts, spectra = patterns()
    with pytest.raises(ValueError, match="2 patterns, 1 spectra, 2 fingerprints"):
        make_record(0, 0, acts, spectra[:1], [0], ["a", "b"], False, 0.0)


def test_reading_a_directory_that_is_not_a_record_directory_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        read_records(tmp_path)
    store = RecordStore(tmp_path)
    store.start({})
    store.write("epoch-000000", {"x": np.zeros(1)}, {"epoch": 0})
    with pytest.raises(ValueError, match="epoch-000000.npz lacks 'probes'; it is not a spectrum record"):
        read_records(tmp_path)


def test_record_name_sorts_by_epoch():
    assert record_name(3) == "epoch-000003" < record_name(12)


def test_a_record_file_holds_one_array_per_layer_with_a_row_per_probe(tmp_path):
    acts, spectra = patterns()
    store = RecordStore(tmp_path)
    store.start({})
    write_record(store, make_record(3, 30, acts, spectra, [1, 2], ["a", "b"], False, 0.0))
    arrays, meta = store.read(record_name(3))
    assert sorted(arrays) == ["activations.0", "activations.1", "energy", "log10_energy", "spectrum.0", "spectrum.1"]
    np.testing.assert_array_equal(arrays["activations.0"], [[3.0, -1.0], [-3.5, 2.0]])
    np.testing.assert_array_equal(arrays["spectrum.1"][0], [0.0, 1.0])
    assert arrays["activations.0"].dtype == np.float32 and arrays["spectrum.1"].dtype == np.float64
    assert meta["probes"] == 2 and meta["layernames"] == ["0", "1"]

    arrays["spectrum.1"] = arrays["spectrum.1"][:1]
    store.write(record_name(3), arrays, meta)
    with pytest.raises(ValueError, match=r"\['spectrum.1'\] do not hold one row per probe \(2\)"):
        read_records(tmp_path)


def test_the_old_module_path_still_imports_the_record_names():
    from nsp_lightning.analyses.spectrum import records as spectrum_records
    from nsp_lightning.probe import store
    from nsp_lightning.records import SpectrumRecord, make_record as old_make_record, read_header as old_read_header
    from nsp_lightning.records import read_records as old_read_records, write_record as old_write_record

    assert SpectrumRecord is spectrum_records.SpectrumRecord
    assert (old_make_record, old_write_record) == (spectrum_records.make_record, spectrum_records.write_record)
    assert (old_read_records, old_read_header) == (store.read_records, store.read_header)


def test_the_probe_core_imports_no_analysis_at_module_level():
    # The core reads any analysis's records through the registry (legacy spectra included).
    core = Path(__file__).parents[3] / "nsp_lightning" / "probe"
    for path in sorted(core.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module or "" for node in tree.body if isinstance(node, ast.ImportFrom)]
        assert not [n for n in names if n.startswith("nsp_lightning.analyses")], path.name
