"""ProbeCallback with the README's own analysis (ChannelMeans), alone and beside spectra."""

import inspect
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from channel_means import ChannelMeans
from lightning_helpers import LAYERS, TinyNet, image_run, loader, probe, trainer_kwargs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_report import SECTIONS, section_ids, table
from torch import nn
from torch.utils.data import DataLoader

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

import nsp
import nsp_lightning.probe.analysis as analysis_module
import nsp_lightning.probe.store as records_module
from nsp.io.storage import RecordStore
from nsp_lightning import AnalysisRecord, ProbeAnalysis, ProbeCallback, ProbeRecord, SpectrumCallback, read_records
from nsp_lightning.analyses import SpectrumAnalysis
from nsp_lightning.report.cli import main
from nsp_lightning.report.html import report

pytestmark = pytest.mark.filterwarnings("ignore:.*the Trainer has no logger that takes images")
README = Path(__file__).parents[3] / "README.md"


def events(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def fit(callbacks, model=None, data=None, ckpt_path=None, **overrides):
    trainer = pl.Trainer(**trainer_kwargs(**overrides), callbacks=callbacks)
    trainer.fit(model if model is not None else TinyNet(), data if data is not None else loader(), ckpt_path=ckpt_path)
    return trainer


def channel_means(model, x):
    """The means of TinyNet's layers computed by hand, as an independent reference."""
    model = model.eval()
    with torch.no_grad():
        conv = model.conv(x)
        relu = torch.relu(conv)
        pool = nn.functional.max_pool2d(relu, 2)
        flat = pool.flatten(1)
        outs = {"input": x, "conv": conv, "relu": relu, "pool": pool, "flatten": flat, "fc": model.fc(flat)}
    return {k: (v.flatten(2).mean(-1) if v.dim() > 2 else v).double().numpy() for k, v in outs.items()}


def test_the_readme_shows_the_tested_analysis():
    source = inspect.getsource(ChannelMeans)
    text = README.read_text(encoding="utf-8")
    assert source in text, "README's ChannelMeans differs from tests/support/channel_means.py"
    assert len(source.strip().splitlines()) <= 30


def test_own_analysis_through_three_epochs_tensorboard_and_report(tmp_path):
    x = probe(2)
    model = TinyNet()
    callback = ProbeCallback(x, [ChannelMeans()])
    trainer = fit([callback], model=model, logger=TensorBoardLogger(tmp_path, name="tb"))
    assert callback.dirpath == trainer.log_dir
    directory = callback.record_dirs["channel_means"]
    assert directory == str(Path(trainer.log_dir) / "channel_means")
    records = read_records(directory)
    assert all(isinstance(r, ProbeRecord) for r in records)
    assert [(r.epoch, r.global_step) for r in records] == [(0, 0), (1, 2), (2, 4), (3, 6)]
    expected = channel_means(model, x)
    for layer in LAYERS:
        np.testing.assert_allclose(records[-1].arrays[layer], expected[layer], rtol=1e-5, atol=1e-6)
    assert records[-1].arrays["conv"].shape == (2, 2) and records[-1].arrays["fc"].shape == (2, 3)

    acc = events(trainer.log_dir)
    for layer in LAYERS:
        scalars = acc.Scalars(f"channel_means/{layer}/mean")
        assert [s.step for s in scalars] == [0, 2, 4, 6]  # the global step, by default
        np.testing.assert_allclose([s.value for s in scalars], [r.scalars[f"{layer}/mean"] for r in records], rtol=1e-6)
        np.testing.assert_allclose(scalars[-1].value, expected[layer].mean(), rtol=1e-5, atol=1e-6)
        histograms = acc.Histograms(f"channel_means/{layer}/channels")
        assert [h.step for h in histograms] == [0, 2, 4, 6]
        assert histograms[-1].histogram_value.num == expected[layer].size
        assert histograms[-1].histogram_value.sum == pytest.approx(expected[layer].sum(), rel=1e-5, abs=1e-6)
    assert [s.step for s in acc.Scalars("channel_means/record_seconds")] == [0, 2, 4, 6]
    assert not [tag for tag in acc.Tags()["scalars"] if tag.startswith("spectrum/")]

    page = report(trainer.log_dir, tmp_path / "r.html").read_text(encoding="utf-8")
    assert section_ids(page) == ["channels"]
    assert "<title>channel_means report</title>" in page
    rows = table(page, "mean activation of the channels")
    assert rows[0] == ["epoch", *LAYERS]
    assert [row[0] for row in rows[1:]] == ["0", "1", "2", "3"]
    assert rows[-1][2] == f"{expected['conv'].mean():.4g}"


@pytest.mark.slow
def test_spectra_and_an_own_analysis_share_one_forward_pass_per_record(tmp_path, monkeypatch):
    passes = []
    real = nsp.Activations.from_batch
    monkeypatch.setattr(nsp.Activations, "from_batch", lambda *a, **k: (passes.append(1), real(*a, **k))[1])
    x = probe(2)
    callback = ProbeCallback(x, [SpectrumAnalysis(), ChannelMeans()], dirpath=tmp_path / "run")
    trainer = fit([callback], logger=TensorBoardLogger(tmp_path, name="tb"))
    assert len(passes) == 4  # one per record: setup's pass is the baseline's
    spectra, means = read_records(tmp_path / "run" / "spectrum"), read_records(tmp_path / "run" / "channel_means")
    assert [r.epoch for r in spectra] == [r.epoch for r in means] == [0, 1, 2, 3]
    for s, m in zip(spectra, means):
        for p in range(2):
            np.testing.assert_allclose(s.activations[p][1].reshape(2, -1).mean(-1), m.arrays["conv"][p], rtol=1e-5, atol=1e-6)
    tags = events(trainer.log_dir).Tags()
    assert "spectrum/log10_energy/probe_1/05_fc" in tags["scalars"]
    assert "spectrum/01_conv/spectrum/probe_0" in image_run(trainer.log_dir).Tags()["images"]
    assert "channel_means/fc/mean" in tags["scalars"] and "channel_means/fc/channels" in tags["histograms"]
    page = report(tmp_path / "run", tmp_path / "r.html").read_text(encoding="utf-8")
    assert section_ids(page) == SECTIONS + ["channels"]
    assert "<title>Probe report: spectrum, channel_means</title>" in page


def test_several_callbacks_write_side_by_side_and_never_into_one_directory(tmp_path):
    spectra = SpectrumCallback(probe(1), layers=["fc"])
    means = ProbeCallback(probe(1), ChannelMeans(), every_n_epochs=2)
    trainer = fit([spectra, means], default_root_dir=tmp_path, max_epochs=2)
    assert spectra.state_key != means.state_key
    assert [r.epoch for r in read_records(spectra.dirpath)] == [0, 1, 2]
    assert [r.epoch for r in read_records(means.record_dirs["channel_means"])] == [0, 2]
    assert section_ids(report(trainer.log_dir, tmp_path / "r.html").read_text(encoding="utf-8")) == SECTIONS + [
        "channels"
    ]
    with pytest.raises(ValueError, match=r"analysis 'spectrum' .* would both write to .*spectrum"):
        fit([SpectrumCallback(probe(1)), ProbeCallback(probe(1), [SpectrumAnalysis()])], default_root_dir=tmp_path)


def test_resume_continues_an_own_analysis_without_duplicates_or_gaps(tmp_path, monkeypatch):
    written = []
    real_write = records_module.write_analysis_record
    monkeypatch.setattr(
        records_module,
        "write_analysis_record",
        lambda store, rec, **kw: (written.append(kw["epoch"]), real_write(store, rec, **kw))[1],
    )

    def run(max_epochs, ckpt_path=None):
        callback = ProbeCallback(probe(1), [ChannelMeans()])
        checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=-1)
        logger = TensorBoardLogger(tmp_path, name="run")
        trainer = fit([callback, checkpoint], ckpt_path=ckpt_path, max_epochs=max_epochs, logger=logger,
                      enable_checkpointing=True)
        return callback, trainer

    first, _ = run(2)
    second, trainer = run(4, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert written == [0, 1, 2, 3, 4]
    assert second.record_dirs == first.record_dirs
    records = read_records(first.record_dirs["channel_means"])
    assert [(r.epoch, r.global_step) for r in records] == [(0, 0), (1, 2), (2, 4), (3, 6), (4, 8)]
    assert RecordStore(first.record_dirs["channel_means"]).names() == [f"epoch-00000{i}" for i in range(5)]
    assert [s.step for s in events(trainer.log_dir).Scalars("channel_means/fc/mean")] == [6, 8]


class _Dropout(TinyNet):
    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.fc(self.drop(self.flatten(self.pool(self.relu(self.conv(x))))))


class _Noisy(ProbeAnalysis):
    """Draws from every random generator, and takes gradients with backward()."""

    name = "noisy"

    def compute(self, model, probes, context):
        noise = torch.rand(3).sum() + np.random.rand() + random.random()
        with context.enable_grad():
            x = probes.clone().requires_grad_(True)
            model(x).sum().backward()
        return AnalysisRecord(arrays={"saliency": x.grad.abs().numpy()}, scalars={"noise": float(noise)})


def test_probing_leaves_training_and_every_random_generator_untouched(tmp_path):
    def train(callbacks):
        pl.seed_everything(0, verbose=False)
        model = _Dropout()
        data = DataLoader(loader().dataset, batch_size=4, shuffle=True)
        fit(callbacks, model=model, data=data, max_epochs=2)
        return model, (torch.rand(1).item(), np.random.rand(), random.random())

    watched, after_watched = train([ProbeCallback(probe(2), [_Noisy()], dirpath=tmp_path)])
    plain, after_plain = train([])
    assert after_watched == after_plain
    for a, b in zip(watched.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)
    # The saliency is the gradient of the eval-mode model's output sum (Dropout off), by autograd.
    x = probe(2).requires_grad_(True)
    (grad,) = torch.autograd.grad(watched.eval()(x).sum(), x)
    np.testing.assert_allclose(read_records(tmp_path / "noisy")[-1].arrays["saliency"], grad.abs().numpy(), rtol=1e-6)


def test_an_analysis_without_its_class_gets_the_default_section(tmp_path, monkeypatch):
    callback = ProbeCallback(probe(1), [ChannelMeans()], dirpath=tmp_path / "run")
    fit([callback], max_epochs=1)
    monkeypatch.delitem(analysis_module._REGISTRY, analysis_module.class_path(ChannelMeans))
    page = report(tmp_path / "run", tmp_path / "r.html").read_text(encoding="utf-8")
    assert re.findall(r'<section id="([^"]+)">', page) == ["channel-means"]
    assert "<title>channel_means report</title>" in page
    assert table(page, "arrays of the record at epoch 1")[1:] == [
        ["input", "1×1", "float64"], ["conv", "1×2", "float64"], ["relu", "1×2", "float64"],
        ["pool", "1×2", "float64"], ["flatten", "1×8", "float64"], ["fc", "1×3", "float64"],
    ]
    assert len(re.findall(r'alt="[^"]*over the records"', page)) == 1  # 6 scalars: one chart
    assert main([str(tmp_path / "run"), "-q", "--import", "no_such_module_here"]) == 1


class _Broken(ProbeAnalysis):
    name = "broken"

    def compute(self, model, probes, context):
        return {"x": np.zeros(1)}


@pytest.mark.parametrize(
    ("analyses", "error", "match"),
    [
        ([], ValueError, r"analyses=\[\]\): expected at least one"),
        ([ChannelMeans(), ChannelMeans()], ValueError, r"the names \['channel_means'\] repeat"),
        (["spectrum"], TypeError, "expected a ProbeAnalysis or a list of them"),
    ],
)
def test_bad_analyses_fail_at_construction(analyses, error, match):
    with pytest.raises(error, match=match):
        ProbeCallback(probe(1), analyses)


def test_a_compute_that_returns_no_record_fails_naming_the_analysis(tmp_path):
    with pytest.raises(TypeError, match=r"_Broken.compute: expected an AnalysisRecord, got dict"):
        fit([ProbeCallback(probe(1), [_Broken()], dirpath=tmp_path)], max_epochs=1)


class _Drawing(ProbeAnalysis):
    name = "drawing"

    def compute(self, model, probes, context):
        return AnalysisRecord(arrays={"out": context.outputs().numpy()})

    def log(self, record, sink):
        from matplotlib.figure import Figure

        sink.image("grey", np.full((2, 3), 0.5), dataformats="HW")
        figure = Figure(figsize=(1, 1), dpi=20)
        figure.add_subplot().plot([0, 1])
        sink.figure("chart", figure)
        sink.text("note", f"record at step {sink.step}")
        sink.embedding("outputs", record.arrays["out"], metadata=[f"probe {p}" for p in range(len(record.arrays["out"]))])


def test_images_figures_text_and_embeddings_reach_tensorboard(tmp_path):
    trainer = fit([ProbeCallback(probe(3), [_Drawing()])], logger=TensorBoardLogger(tmp_path, name="tb"), max_epochs=1)
    acc = events(trainer.log_dir)
    assert [e.step for e in acc.Images("drawing/grey")] == [0, 2]
    assert (acc.Images("drawing/grey")[0].width, acc.Images("drawing/grey")[0].height) == (3, 2)
    assert (acc.Images("drawing/chart")[0].width, acc.Images("drawing/chart")[0].height) == (20, 20)
    texts = acc.Tensors("drawing/note/text_summary")
    assert [t.tensor_proto.string_val[0].decode() for t in texts] == ["record at step 0", "record at step 2"]
    config = (Path(trainer.log_dir) / "projector_config.pbtxt").read_text()
    assert config.count('tensor_name: "drawing/outputs:') == 2


def test_a_probe_callback_keeps_freed_memory_from_fit_start(monkeypatch, tmp_path):
    """Training after a record must not fault in again what the record freed (issue 21, #7)."""
    from nsp.common import memory

    asked = []
    monkeypatch.setattr(memory, "keep_freed", lambda nbytes: asked.append(nbytes))
    fit([SpectrumCallback(probe(1))], default_root_dir=tmp_path, max_epochs=1)
    assert asked and max(asked) >= 32 << 20
