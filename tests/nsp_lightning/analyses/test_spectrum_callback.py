import copy
import csv
import io
import os

import numpy as np
import pytest
import torch
from lightning_helpers import LAYERS, TinyNet, fresh_spectra, image_run, loader, probe, trainer_kwargs
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

import nsp
import nsp.transforms.energy
import nsp.viz.render
from nsp.io.storage import RecordStoreError
import nsp_lightning.probe.store as records_module
from nsp.io.storage import RecordStore
from nsp_lightning import SpectrumCallback, read_header, read_records

SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")

# Most tests run without a TensorBoard logger on purpose; the tests of that warning catch it explicitly.
pytestmark = pytest.mark.filterwarnings("ignore:SpectrumCallback. the Trainer has no logger that takes images")


def events(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def fit(callbacks, model=None, data=None, **overrides):
    trainer = pl.Trainer(**trainer_kwargs(**overrides), callbacks=callbacks)
    trainer.fit(model if model is not None else TinyNet(), data if data is not None else loader())
    return trainer


@pytest.mark.slow
def test_tensorboard_has_images_and_scalars_for_every_layer_at_every_record(tmp_path):
    cb = SpectrumCallback(probe(2))
    trainer = fit([cb], logger=TensorBoardLogger(tmp_path, name="tb"))
    acc = events(trainer.log_dir)
    cards = image_run(trainer.log_dir)  # written by the drawing helper, in a run of their own
    records = read_records(cb.dirpath)
    assert [r.epoch for r in records] == [0, 1, 2, 3]
    steps = [r.global_step for r in records]
    assert steps == [0, 2, 4, 6]  # scalars and images at the global step, as Lightning's own metrics
    tags = acc.Tags()
    for p in range(2):
        for l, layer in enumerate(LAYERS):
            for kind in ("activations", "spectrum"):
                assert [e.step for e in cards.Images(f"spectrum/{l:02d}_{layer}/{kind}/probe_{p}")] == steps
            # The change since the baseline: from the first record after it.
            assert [e.step for e in cards.Images(f"spectrum/{l:02d}_{layer}/difference/probe_{p}")] == steps[1:]
            if layer == "flatten":
                continue  # an exactly zero spectrum: below
            scalars = acc.Scalars(f"spectrum/log10_energy/probe_{p}/{l:02d}_{layer}")
            assert [s.step for s in scalars] == steps
            np.testing.assert_allclose(
                [s.value for s in scalars], [r.log10_energy[p, l] for r in records], rtol=1e-6
            )
            relative = acc.Scalars(f"spectrum/change/relative/probe_{p}/{l:02d}_{layer}")
            expected = [nsp.energy.change_since(records[0].spectra[p], r.spectra[p])["relative"][l] for r in records]
            np.testing.assert_allclose([s.value for s in relative], expected, rtol=1e-6)
    assert [s.step for s in acc.Scalars("spectrum/record_seconds")] == steps
    assert "spectrum/graph_rebuilt" not in tags["scalars"]
    # The flatten layer's spectrum is exactly 0: each unit just copies its one parent.
    # Its log10 energy is -inf, which TensorBoard cannot chart: its plain energy 0 is logged instead.
    assert "spectrum/log10_energy/probe_0/04_flatten" not in tags["scalars"]
    assert [(s.step, s.value) for s in acc.Scalars("spectrum/energy/probe_0/04_flatten")] == [(t, 0.0) for t in steps]
    # The fc layer's spectrum moves once the network trains.
    assert acc.Scalars("spectrum/change/relative/probe_0/05_fc")[-1].value > 0

    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = [list(chart.multiline.tag) for category in layout.category for chart in category.chart]
    assert [c.title for c in layout.category] == ["spectrum change since the baseline", "spectrum spectral energy"]
    assert charts[:2] == [["^spectrum/change/relative/probe_0/"], ["^spectrum/change/log10_energy/probe_0/"]]
    assert charts[-4:] == [["^spectrum/log10_energy/probe_0/"], ["^spectrum/log10_energy/probe_1/"],
                           ["^spectrum/energy/probe_0/"], ["^spectrum/energy/probe_1/"]]

    # The logged card is what nsp.render.render_card_paletted draws for the recorded spectrum, on the
    # decades fixed at the baseline for the layer over both probes: from the smallest nonzero
    # |ŝ| to its largest, 2 decades of headroom above.
    event = cards.Images("spectrum/01_conv/spectrum/probe_1")[-1]
    image = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    base = np.abs(np.concatenate([records[0].spectra[p][1].ravel() for p in range(2)]))
    top, bottom = int(np.ceil(np.log10(base.max()))) + 2, int(np.floor(np.log10(base[base > 0].min())))
    expected = nsp.render.render_card_paletted(
        records[-1].spectra[1][1],
        title="01_conv · spectrum · probe 1 · 2×4×4 · epoch 3, step 6",
        scale="layersymlog",
        cmap="RdBu_r",
        vrange=(-(10.0 ** top), 10.0 ** top),
        threshold=10.0 ** bottom,
        legend=[
            "red: positive, blue: negative, white: 0",
            f"signed log10 scale; |ŝ| below 10{str(bottom).translate(SUPERSCRIPT)} fades to white",
            "colours fixed per layer at the baseline (epoch 0): its peak + 2 decades",
        ],
    )
    np.testing.assert_array_equal(image, np.asarray(expected))
    assert image.shape[1] >= 320


def test_records_hold_the_exact_spectra_of_the_model_before_and_after_training(tmp_path):
    x = probe(2)
    model = TinyNet()
    initial = copy.deepcopy(model)
    cb = SpectrumCallback(x, dirpath=tmp_path / "rec")
    fit([cb], model=model)
    records = read_records(tmp_path / "rec")
    assert [r.global_step for r in records] == [0, 2, 4, 6]
    assert records[0].layernames == tuple(LAYERS)
    for record, net in ((records[0], initial), (records[-1], model)):
        expected = fresh_spectra(net, x)
        for p in range(2):
            np.testing.assert_array_equal(record.activations[p][0], x[p].numpy())
            for l in range(len(LAYERS)):
                assert record.spectra[p][l].dtype == np.float64
                np.testing.assert_array_equal(record.spectra[p][l], expected[p][l])
            np.testing.assert_array_equal(record.energy[p], nsp.energy.spectral_energy(expected[p]))
    assert not np.array_equal(records[0].spectra[0][5], records[-1].spectra[0][5])
    header = read_header(tmp_path / "rec")
    assert header["layernames"] == LAYERS and header["probes"] == 2 and header["probe_shape"] == [2, 1, 6, 6]
    assert header["shapes"] == [[1, 6, 6], [2, 4, 4], [2, 4, 4], [2, 2, 2], [8], [3]]
    assert len(set(records[0].fingerprints + records[-1].fingerprints)) == 1


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [({}, [0, 1, 2, 3, 4]), ({"every_n_epochs": 2}, [0, 2, 4]), ({"epochs": [1, 4]}, [0, 1, 4])],
)
def test_schedule_chooses_the_recorded_epochs(tmp_path, schedule, expected):
    cb = SpectrumCallback(probe(1), layers=["fc"], dirpath=tmp_path, **schedule)
    fit([cb], max_epochs=4)
    assert [r.epoch for r in read_records(tmp_path)] == expected
    assert cb.recorded_epochs == expected


def test_layers_and_laplacian_pass_through_to_nsp(tmp_path):
    x = probe(1)
    model = TinyNet()
    cb = SpectrumCallback(x, layers=["fc", "conv"], transform="laplacian", dirpath=tmp_path, epochs=[1])
    fit([cb], model=model, max_epochs=1)
    record = read_records(tmp_path)[-1]
    assert record.layernames == ("fc", "conv")
    expected = fresh_spectra(model, x, type="laplacian")[0]
    # Eigenvectors of repeated eigenvalues are not unique: compare the energy of whole layers.
    for got, l in zip(record.spectra[0], (5, 1)):
        np.testing.assert_allclose(np.sum(got**2), np.sum(expected[l] ** 2), rtol=1e-9)
    assert read_header(tmp_path)["transform"] == "laplacian"


def test_without_any_logger_it_warns_once_and_writes_records(tmp_path):
    cb = SpectrumCallback(probe(1))
    with pytest.warns(UserWarning, match="no logger that takes images") as warned:
        fit([cb], default_root_dir=tmp_path, max_epochs=1)
    assert len([w for w in warned if "SpectrumCallback" in str(w.message)]) == 1
    assert cb.dirpath == os.path.join(tmp_path, "spectrum")
    assert [r.epoch for r in read_records(cb.dirpath)] == [0, 1]


def test_scalars_go_to_other_loggers_too(tmp_path):
    cb = SpectrumCallback(probe(1))
    csv_logger = CSVLogger(tmp_path, name="csv")
    fit([cb], logger=csv_logger, max_epochs=2)
    with open(os.path.join(csv_logger.log_dir, "metrics.csv")) as handle:
        rows = list(csv.DictReader(handle))
    energy = [row for row in rows if row.get("spectrum/log10_energy/probe_0/01_conv")]
    assert [int(row["step"]) for row in energy] == [0, 2, 4]
    records = read_records(cb.dirpath)
    assert [float(row["spectrum/log10_energy/probe_0/01_conv"]) for row in energy] == pytest.approx(
        [r.log10_energy[0, 1] for r in records]
    )
    assert cb.dirpath == os.path.join(csv_logger.log_dir, "spectrum")


class _Validated(TinyNet):
    def validation_step(self, batch, batch_idx) -> None:
        self.log("val_loss", torch.nn.functional.cross_entropy(self(batch[0]), batch[1]))


def test_sanity_check_and_validation_add_no_records(tmp_path):
    cb = SpectrumCallback(probe(1), dirpath=tmp_path)
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=2, num_sanity_val_steps=2), callbacks=[cb])
    trainer.fit(_Validated(), loader(), loader())
    assert [(r.epoch, r.global_step) for r in read_records(tmp_path)] == [(0, 0), (1, 2), (2, 4)]


def test_log_step_epoch(tmp_path):
    cb = SpectrumCallback(probe(1), layers=["fc"], log_step="epoch")
    trainer = fit([cb], logger=TensorBoardLogger(tmp_path, name="tb"), max_epochs=2)
    assert [s.step for s in events(trainer.log_dir).Scalars("spectrum/log10_energy/probe_0/05_fc")] == [0, 1, 2]


def test_fast_dev_run_records_nothing_but_checks_arguments(tmp_path):
    cb = SpectrumCallback(probe(1))
    fit([cb], fast_dev_run=True, logger=TensorBoardLogger(tmp_path), default_root_dir=tmp_path)
    assert cb.recorded_epochs == []
    assert not [d for d, _, files in os.walk(tmp_path) if "manifest.json" in files]
    with pytest.raises(ValueError, match=r"unknown layers \['nope'\]"):
        fit([SpectrumCallback(probe(1), layers=["nope"])], fast_dev_run=True)


def test_resume_continues_the_series_without_duplicates(tmp_path, monkeypatch):
    written = []
    real_write = records_module.write_analysis_record
    monkeypatch.setattr(
        records_module,
        "write_analysis_record",
        lambda store, rec, **kw: (written.append(kw["epoch"]), real_write(store, rec, **kw))[1],
    )

    def run(max_epochs, ckpt_path=None):
        cb = SpectrumCallback(probe(1))
        checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=-1)
        trainer = pl.Trainer(
            **trainer_kwargs(
                max_epochs=max_epochs, logger=TensorBoardLogger(tmp_path, name="run"), enable_checkpointing=True
            ),
            callbacks=[cb, checkpoint],
        )
        trainer.fit(TinyNet(), loader(), ckpt_path=ckpt_path)
        return cb, trainer

    first, trainer1 = run(2)
    assert written == [0, 1, 2]
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"][first.state_key]
    assert saved == first.checkpoint_state() == {"recorded": [0, 1, 2], "dirpath": first.dirpath}
    baseline = (tmp_path / "run" / "version_0" / "spectrum" / "epoch-000000.npz").read_bytes()
    second, trainer2 = run(4, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert written == [0, 1, 2, 3, 4]
    assert trainer2.log_dir != trainer1.log_dir
    assert second.dirpath == first.dirpath
    records = read_records(first.dirpath)
    assert [r.epoch for r in records] == [0, 1, 2, 3, 4]
    assert [r.global_step for r in records] == [0, 2, 4, 6, 8]
    assert RecordStore(first.dirpath).names() == [f"epoch-00000{i}" for i in range(5)]
    assert (tmp_path / "run" / "version_0" / "spectrum" / "epoch-000000.npz").read_bytes() == baseline
    # The resumed run's TensorBoard events start where the checkpoint left off, at the global step,
    # and its change since the baseline is measured from the first run's baseline record.
    acc = events(trainer2.log_dir)
    assert [s.step for s in acc.Scalars("spectrum/log10_energy/probe_0/05_fc")] == [6, 8]
    expected = [nsp.energy.change_since(records[0].spectra[0], r.spectra[0])["relative"][5] for r in records[3:]]
    np.testing.assert_allclose([s.value for s in acc.Scalars("spectrum/change/relative/probe_0/05_fc")], expected, rtol=1e-6)


def test_resume_into_a_series_of_another_configuration_fails(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit([SpectrumCallback(probe(1), dirpath=tmp_path / "rec"), checkpoint], max_epochs=1, enable_checkpointing=True)
    trainer = pl.Trainer(
        **trainer_kwargs(max_epochs=2, enable_checkpointing=True),
        callbacks=[SpectrumCallback(probe(2), dirpath=tmp_path / "rec"), ModelCheckpoint(dirpath=tmp_path / "ckpt")],
    )
    with pytest.raises(ValueError, match="written with another configuration"):
        trainer.fit(TinyNet(), loader(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")


class _Watch(TinyNet):
    """Checks, after the callback's epoch-end hook, that it left the module as it found it."""

    def on_train_start(self) -> None:
        self.relu.eval()  # a mixed train/eval state that must survive probing
        self.seen = []

    def on_after_backward(self) -> None:
        self.grads = [p.grad.clone() for p in self.parameters()]

    def on_train_epoch_end(self) -> None:
        flags = {name: m.training for name, m in self.named_modules()}
        grads = [p.grad for p in self.parameters()]
        self.seen.append((flags, torch.is_grad_enabled(), all(torch.equal(a, b) for a, b in zip(grads, self.grads))))


def test_probing_restores_train_flags_and_leaves_grads_and_training_untouched(tmp_path):
    torch.manual_seed(0)
    watched = _Watch()
    plain = copy.deepcopy(watched)
    fit([SpectrumCallback(probe(2), dirpath=tmp_path)], model=watched)
    fit([], model=plain)
    expected = {name: name != "relu" for name, _ in watched.named_modules()}
    assert watched.seen == [(expected, True, True)] * 3
    for a, b in zip(watched.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)


class _LeakyAutocast(TinyNet):
    """Leaves a bfloat16 autocast region open across the callback's epoch-end hook."""

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if batch_idx == 1:
            self._autocast = torch.autocast("cpu", dtype=torch.bfloat16)
            self._autocast.__enter__()

    def on_train_epoch_end(self) -> None:
        self._autocast.__exit__(None, None, None)


def test_mixed_precision_never_reaches_the_spectrum(tmp_path):
    x = probe(1)
    model = _LeakyAutocast()
    fit([SpectrumCallback(x, dirpath=tmp_path)], model=model, precision="bf16-mixed", max_epochs=2)
    record = read_records(tmp_path)[-1]
    expected = fresh_spectra(model, x)[0]
    assert all(a.dtype == np.float32 for a in record.activations[0])
    for got, want in zip(record.spectra[0], expected):
        np.testing.assert_array_equal(got, want)


class _PruneAtSecondEpoch(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            prune.l1_unstructured(pl_module.conv, "weight", amount=0.4)
            prune.l1_unstructured(pl_module.fc, "weight", amount=0.5)


def test_incl_false_rebuilds_exactly_once_after_pruning(tmp_path, monkeypatch):
    builds = []
    real_graph = nsp.NNGraph

    def counting_graph(*args, **kwargs):
        builds.append(kwargs.get("INCL"))
        return real_graph(*args, **kwargs)

    x = probe(2)
    model = TinyNet(lr=0.0)  # only pruning changes the graph
    unpruned = fresh_spectra(model, x, INCL=False)
    monkeypatch.setattr(nsp, "NNGraph", counting_graph)
    cb = SpectrumCallback(x, INCL=False)
    trainer = fit([_PruneAtSecondEpoch(), cb], model=model, logger=TensorBoardLogger(tmp_path, name="tb"))
    records = read_records(cb.dirpath)
    assert [r.rebuilt for r in records] == [False, False, True, False]
    assert [s.value for s in events(trainer.log_dir).Scalars("spectrum/graph_rebuilt")] == [0, 0, 1, 0]
    fingerprints = [r.fingerprints for r in records]
    assert fingerprints[0] == fingerprints[1] != fingerprints[2] == fingerprints[3]
    # One graph per distinct fingerprint: built at fit start, then once more after pruning.
    assert builds == [False] * (len(set(fingerprints[0])) + len(set(fingerprints[2])))

    pruned = fresh_spectra(model, x, INCL=False)
    for p in range(2):
        for l in range(len(LAYERS)):
            np.testing.assert_array_equal(records[1].spectra[p][l], unpruned[p][l])
            np.testing.assert_array_equal(records[2].spectra[p][l], pruned[p][l])
            np.testing.assert_array_equal(records[3].spectra[p][l], pruned[p][l])
    assert not all(np.array_equal(a, b) for a, b in zip(unpruned[0], pruned[0]))


def test_incl_false_without_a_change_builds_once(tmp_path, monkeypatch):
    calls = []
    real_graph = nsp.NNGraph
    monkeypatch.setattr(nsp, "NNGraph", lambda *a, **k: (calls.append(1), real_graph(*a, **k))[1])
    cb = SpectrumCallback(probe(1), INCL=False, dirpath=tmp_path)
    fit([cb], model=TinyNet(lr=0.0))
    assert [r.rebuilt for r in read_records(tmp_path)] == [False] * 4
    assert len(calls) == 1


class _DataModule(pl.LightningDataModule):
    def setup(self, stage: str) -> None:
        self.x = torch.arange(8 * 36, dtype=torch.float32).reshape(8, 1, 6, 6) / 100
        self.y = torch.zeros(8, dtype=torch.long)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=4)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x.flip(0), self.y), batch_size=3)


def test_probe_may_be_a_batch_a_dataloader_or_a_datamodule(tmp_path):
    x = probe(3)
    batches = {
        "tuple": ((x, torch.zeros(3)), x),
        "loader": (DataLoader(TensorDataset(x, torch.zeros(3)), batch_size=2), x[:2]),
    }
    for name, (source, expected) in batches.items():
        cb = SpectrumCallback(source, dirpath=tmp_path / name, epochs=[1])
        fit([cb], max_epochs=1)
        record = read_records(tmp_path / name)[0]
        assert record.num_probes == len(expected)
        for p in range(len(expected)):
            np.testing.assert_array_equal(record.activations[p][0], expected[p].numpy())
    dm = _DataModule()
    cb = SpectrumCallback(dm, dirpath=tmp_path / "dm", epochs=[1])
    pl.Trainer(**trainer_kwargs(max_epochs=1), callbacks=[cb]).fit(TinyNet(), datamodule=dm)
    record = read_records(tmp_path / "dm")[0]
    assert record.num_probes == 3
    np.testing.assert_array_equal(record.activations[0][0], dm.x[-1].numpy())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"probe": torch.empty(0, 1, 6, 6)}, ValueError, r"probe is empty \(shape \[0, 1, 6, 6\]\)"),
        ({"probe": torch.ones(6)}, ValueError, r"shape \(P, \*input_shape\), got shape \[6\]"),
        ({"probe": ()}, ValueError, "empty tuple"),
        ({"probe": DataLoader(TensorDataset(torch.ones(0, 2)))}, ValueError, "yields no batch"),
        ({"probe": "digits"}, TypeError, "got str"),
        ({"probe": {"x": torch.ones(1, 2)}}, TypeError, "got dict"),
        ({"every_n_epochs": 0}, ValueError, r"every_n_epochs=0\): expected an int >= 1"),
        ({"every_n_epochs": 1.5}, ValueError, "every_n_epochs=1.5"),
        ({"every_n_epochs": True}, ValueError, "every_n_epochs=True"),
        ({"epochs": []}, ValueError, r"epochs=\[\]\): expected a non-empty collection"),
        ({"epochs": [2, -1]}, ValueError, r"epochs=\[2, -1\]"),
        ({"epochs": [1.0]}, ValueError, r"epochs=\[1.0\]"),
        ({"epochs": "12"}, TypeError, "epochs='12'"),
        ({"epochs": [1], "every_n_epochs": 2}, ValueError, "not both"),
        ({"layers": "conv"}, TypeError, "layers='conv'"),
        ({"layers": []}, ValueError, "at least one layer name"),
        ({"layers": ["fc", "fc"]}, ValueError, "repeat"),
        ({"transform": "fourier"}, ValueError, "transform='fourier'"),
        ({"INCL": "no"}, TypeError, "INCL='no'"),
        ({"log_step": "batch"}, ValueError, "log_step='batch'"),
        ({"colour_scale": "epoch"}, ValueError, "colour_scale='epoch'"),
        ({"layers": 3}, TypeError, "layers=3"),
        ({"dirpath": 3}, TypeError, "dirpath=3"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, error, match):
    kwargs = {"probe": probe(1), **kwargs}
    with pytest.raises(error, match=match):
        SpectrumCallback(**kwargs)


def test_arguments_that_need_the_model_fail_at_fit_start(tmp_path):
    with pytest.raises(ValueError, match=r"cannot run the probe batch of shape \[2, 1, 5, 5\]"):
        fit([SpectrumCallback(torch.ones(2, 1, 5, 5), dirpath=tmp_path)])
    with pytest.raises(ValueError, match=r"unknown layers \['conv2'\]; the model has \['input', 'conv'"):
        fit([SpectrumCallback(probe(1), layers=["conv", "conv2"], dirpath=tmp_path)])
    assert not os.path.exists(tmp_path / "manifest.json")


def test_an_interrupted_record_leaves_earlier_records_readable(tmp_path, monkeypatch):
    real_savez = np.savez
    calls = []

    def dies_on_third_record(handle, **arrays):
        calls.append(1)
        if len(calls) == 3:
            handle.write(b"PK\x03\x04 half a record")
            raise RuntimeError("power cut")
        real_savez(handle, **arrays)

    monkeypatch.setattr(np, "savez", dies_on_third_record)
    with pytest.raises(RuntimeError, match="power cut"):
        fit([SpectrumCallback(probe(2), dirpath=tmp_path, on_error="raise")])
    monkeypatch.undo()
    records = read_records(tmp_path)
    assert [r.epoch for r in records] == [0, 1]
    assert sorted(os.listdir(tmp_path)) == [".lock", "epoch-000000.npz", "epoch-000001.npz", "manifest.json"]
    assert records[1].spectra[1][5].shape == (3,)


def test_a_fresh_run_into_an_existing_record_directory_is_refused(tmp_path):
    fit([SpectrumCallback(probe(1), dirpath=tmp_path)], max_epochs=2)
    before = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path) if f.endswith(".npz")}
    with pytest.raises(RecordStoreError, match=r"already holds a record series \(3 record\(s\)\)"):
        fit([SpectrumCallback(probe(1), dirpath=tmp_path)], max_epochs=1)
    assert [r.epoch for r in read_records(tmp_path)] == [0, 1, 2]
    assert {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path) if f.endswith(".npz")} == before


def test_state_key_separates_instances():
    a = SpectrumCallback(probe(1), layers=["fc"])
    b = SpectrumCallback(probe(1), layers=["conv"])
    assert a.state_key != b.state_key
    assert a.state_key == SpectrumCallback(probe(1), layers=["fc"], every_n_epochs=3).state_key


def test_bfloat16_model_gets_a_probe_of_its_dtype(tmp_path):
    model = TinyNet().to(torch.bfloat16)
    x = probe(1)
    fit([SpectrumCallback(x, dirpath=tmp_path, epochs=[1])], model=model, max_epochs=1, data=DataLoader(
        TensorDataset(torch.randn(8, 1, 6, 6, dtype=torch.bfloat16), torch.zeros(8, dtype=torch.long)), batch_size=8
    ))
    record = read_records(tmp_path)[-1]
    assert record.activations[0][1].dtype == np.float32  # bfloat16 widened exactly
    expected = fresh_spectra(model, x.to(torch.bfloat16))[0]
    for got, want in zip(record.spectra[0], expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_with_16_bit_mixed_precision_gets_exact_float32_spectra(tmp_path):
    x = probe(2)
    model = TinyNet()
    fit([SpectrumCallback(x, dirpath=tmp_path)], model=model, accelerator="gpu", precision="16-mixed", max_epochs=1)
    assert next(model.parameters()).device.type == "cuda"
    records = read_records(tmp_path)
    expected = fresh_spectra(model, x.cuda())
    assert all(a.dtype == np.float32 for a in records[-1].activations[0])
    for p in range(2):
        for got, want in zip(records[-1].spectra[p], expected[p]):
            np.testing.assert_array_equal(got, want)
