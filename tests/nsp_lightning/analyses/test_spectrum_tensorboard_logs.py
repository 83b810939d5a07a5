"""What a researcher sees in TensorBoard (issue 11): inner layers, change since the baseline, context."""

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning_helpers import TinyNet, image_run, loader, probe, trainer_kwargs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

import nsp
import nsp.transforms.energy
import nsp.viz.render
from nsp_lightning import SpectrumCallback, read_records

LEAVES = ["net.0", "net.1", "net.2", "net.3", "net.4"]


class SequentialNet(TinyNet):
    """TinyNet's layers inside one nn.Sequential, the common layout that hides them at the top level."""

    def __init__(self) -> None:
        pl.LightningModule.__init__(self)
        self.lr = 0.1
        self.net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss, on_epoch=True)
        return loss


def events(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0, "histograms": 0})
    acc.Reload()
    return acc


def fit(callbacks, model, tmp_path, **overrides):
    trainer = pl.Trainer(
        **trainer_kwargs(logger=TensorBoardLogger(tmp_path, name="tb"), **overrides), callbacks=callbacks
    )
    trainer.fit(model, loader())
    return trainer


@pytest.fixture(scope="module")
def leaves_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("leaves")
    cb = SpectrumCallback((probe(2), torch.tensor([2, 0])), layers="leaves")
    trainer = fit([cb], SequentialNet(), tmp_path, max_epochs=2)
    return cb, trainer, events(trainer.log_dir), read_records(cb.dirpath)


def test_leaves_of_a_sequential_are_logged_in_execution_order(leaves_run):
    cb, trainer, _, records = leaves_run
    acc = image_run(trainer.log_dir)  # the cards: in the run the drawing helper writes
    assert records[0].layernames == ("input", *LEAVES)
    expected = [f"spectrum/{i:02d}_{name}/{kind}/probe_0" for i, name in enumerate(["input", *LEAVES])
                for kind in ("activations", "difference", "spectrum")]
    logged = sorted(t for t in acc.Tags()["images"] if t.endswith("/probe_0") and "_change" not in t)
    # TensorBoard sorts tags alphabetically: the index prefix makes that the execution order,
    # with each layer's activations, change since the baseline and spectrum next to each other.
    assert logged == expected
    steps = [r.global_step for r in records]
    assert [e.step for e in acc.Images("spectrum/05_net.4/spectrum/probe_1")] == steps
    # The spectra are nsp's, on the graph of the leaves.
    model_spectra = records[-1].spectra[0]
    assert [s.shape for s in model_spectra] == [(1, 6, 6), (2, 4, 4), (2, 4, 4), (2, 2, 2), (8,), (3,)]


def test_change_since_the_baseline_is_logged_per_layer_and_probe(leaves_run):
    _, trainer, acc, records = leaves_run
    for measure in nsp.energy.CHANGE_MEASURES:
        for p in range(2):
            for l, name in enumerate(["input", *LEAVES]):
                values = [s.value for s in acc.Scalars(f"spectrum/change/{measure}/probe_{p}/{l:02d}_{name}")]
                expected = [nsp.energy.change_since(records[0].spectra[p], r.spectra[p])[measure][l] for r in records]
                np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-12)
    # The baseline is unchanged from itself; the classifier's spectrum moves as it learns.
    assert acc.Scalars("spectrum/change/relative/probe_0/05_net.4")[0].value == 0
    assert acc.Scalars("spectrum/change/relative/probe_0/05_net.4")[-1].value > 1e-3
    chart = image_run(trainer.log_dir).Images("spectrum/00_change/probe_0")
    assert [e.step for e in chart] == [r.global_step for r in records]


def test_change_is_charted_with_one_run_per_layer_so_tensorboard_colours_and_names_the_layers(leaves_run):
    _, trainer, _, records = leaves_run
    runs = sorted(p.name for p in Path(trainer.log_dir).iterdir() if p.name.startswith("spectrum_"))
    # One run per layer, and the run of the cards, which the drawing helper writes.
    assert runs == [f"spectrum_{l:02d}_{name}" for l, name in enumerate(["input", *LEAVES])] + ["spectrum_images"]
    runs.remove("spectrum_images")
    for l, run in enumerate(runs):
        acc = events(Path(trainer.log_dir) / run)
        assert sorted(acc.Tags()["scalars"]) == sorted(
            f"spectrum/00_change/{m}/probe_{p}" for m in nsp.energy.CHANGE_MEASURES for p in range(2)
        )
        for measure in nsp.energy.CHANGE_MEASURES:
            for p in range(2):
                expected = [
                    (r.global_step, nsp.energy.change_since(records[0].spectra[p], r.spectra[p])[measure][l])
                    for r in records
                ]
                expected = [(step, v) for step, v in expected if np.isfinite(v)]
                logged = [(s.step, s.value) for s in acc.Scalars(f"spectrum/00_change/{measure}/probe_{p}")]
                assert [s for s, _ in logged] == [s for s, _ in expected]
                np.testing.assert_allclose([v for _, v in logged], [v for _, v in expected], rtol=1e-6, atol=1e-12)


def test_every_scalar_is_finite_and_every_per_layer_family_sorts_in_execution_order(leaves_run):
    _, trainer, acc, _ = leaves_run
    order = [f"{l:02d}_{name}" for l, name in enumerate(["input", *LEAVES])]
    families = {}
    for tag in acc.Tags()["scalars"]:
        family, _, last = tag.rpartition("/")
        if last in order:
            families.setdefault(family, []).append(last)
    assert {"spectrum/log10_energy/probe_0", "spectrum/change/relative/probe_1"} <= set(families)
    for family, layers in families.items():
        # TensorBoard sorts alphabetically; that is the execution order (flatten's zero energy is not in log10_energy).
        assert sorted(layers) == [name for name in order if name in layers], family
    runs = [acc] + [events(p) for p in Path(trainer.log_dir).iterdir() if p.name.startswith("spectrum_")]
    values = [s.value for run in runs for tag in run.Tags()["scalars"] for s in run.Scalars(tag)]
    assert len(values) > 100 and np.all(np.isfinite(values))


def test_histograms_text_and_hparams_say_what_was_recorded(leaves_run):
    _, _, acc, records = leaves_run
    histogram = acc.Histograms("spectrum/01_net.0/log10_abs_spectrum/probe_0")[-1].histogram_value
    spectrum = records[-1].spectra[0][1]
    assert histogram.num == np.count_nonzero(spectrum)
    assert histogram.min == pytest.approx(np.log10(np.abs(spectrum[spectrum != 0]).min()))
    assert histogram.max == pytest.approx(np.log10(np.abs(spectrum).max()))
    # The flatten layer's spectrum is exactly zero: no coefficient to histogram.
    assert "spectrum/04_net.3/log10_abs_spectrum/probe_0" not in acc.Tags()["histograms"]

    about = acc.Tensors("spectrum/about/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "transform: standard" in about and "| 05 | net.4 | 3 |" in about and "red positive" in about
    predictions = acc.Tensors("spectrum/predictions/text_summary")
    assert len(predictions) == len(records)
    table = predictions[-1].tensor_proto.string_val[0].decode()
    assert "| 0 | 2 |" in table and "| 1 | 0 |" in table  # each probe's label

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert info.hparams["spectrum/transform"].string_value == "standard"
    assert info.hparams["spectrum/INCL"].number_value == 1  # Lightning logs bools as numbers
    assert info.hparams["spectrum/layers"].string_value == ", ".join(["input", *LEAVES])
    assert info.hparams["spectrum/probes"].number_value == 2
    # The metrics the module logged are the table's columns.
    experiment = acc.PluginTagToContent("hparams")["_hparams_/experiment"]
    columns = [m.name.tag for m in plugin_data_pb2.HParamsPluginData.FromString(experiment).experiment.metric_infos]
    assert "train_loss_epoch" in columns
    assert "train_loss_epoch" in acc.Tags()["scalars"]
    assert {h.name for h in plugin_data_pb2.HParamsPluginData.FromString(experiment).experiment.hparam_infos} >= {
        "spectrum/transform", "spectrum/INCL", "spectrum/layers", "spectrum/probes"
    }


def test_a_model_hidden_in_one_container_gets_a_warning_naming_the_inner_layers(tmp_path):
    with pytest.warns(UserWarning, match=r"top level is one Sequential 'net' holding 5 modules.*layers='leaves'"):
        trainer = pl.Trainer(**trainer_kwargs(max_epochs=1), callbacks=[SpectrumCallback(probe(1), dirpath=tmp_path)])
        trainer.fit(SequentialNet(), loader())
    assert read_records(tmp_path)[0].layernames == ("input", "net")


def test_dotted_names_and_predicates_choose_inner_layers(tmp_path):
    cb = SpectrumCallback(probe(1), layers=["net.0", "net.4"], dirpath=tmp_path / "names", epochs=[1])
    pl.Trainer(**trainer_kwargs(max_epochs=1), callbacks=[cb]).fit(SequentialNet(), loader())
    assert read_records(tmp_path / "names")[0].layernames == ("net.0", "net.4")
    convs = SpectrumCallback(
        probe(1), layers=lambda name, m: isinstance(m, nn.Conv2d), dirpath=tmp_path / "predicate", epochs=[1]
    )
    pl.Trainer(**trainer_kwargs(max_epochs=1), callbacks=[convs]).fit(SequentialNet(), loader())
    record = read_records(tmp_path / "predicate")[0]
    assert record.layernames == ("input", "net.0")
    with pytest.raises(ValueError, match=r"unknown layers \['net.9'\]"):
        pl.Trainer(**trainer_kwargs(fast_dev_run=True), callbacks=[SpectrumCallback(probe(1), layers=["net.9"])]).fit(
            SequentialNet(), loader()
        )


def test_a_probe_of_many_inputs_warns(tmp_path):
    with pytest.warns(UserWarning, match=r"the probe holds 32 inputs.*x\[:4\]"):
        SpectrumCallback(torch.zeros(32, 1, 6, 6))


def test_fit_start_says_where_records_go(tmp_path, caplog):
    cb = SpectrumCallback(probe(1), dirpath=tmp_path / "rec", epochs=[1])
    with caplog.at_level("INFO"):
        pl.Trainer(**trainer_kwargs(max_epochs=1), callbacks=[cb]).fit(TinyNet(), loader())
    assert f"SpectrumCallback: records go to {tmp_path / 'rec'}" in caplog.text
