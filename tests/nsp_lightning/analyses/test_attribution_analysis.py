"""AttributionAnalysis through training: TensorBoard images and scalars, records, report;
under trainer.fit, trainer.validate() and trainer.test() (inference mode)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from lightning_helpers import trainer_kwargs
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

pytest.importorskip("captum.attr")
pytest.importorskip("sklearn")

from digits_cnn import DigitsCNN, digits  # noqa: E402
from image_text import has_text  # noqa: E402
from nsp.attribution import attribute, randomize_top_layer, spearman  # noqa: E402
from nsp.attribution.plot import overlay_card  # noqa: E402
from nsp_lightning import ProbeCallback, read_records, report  # noqa: E402
from nsp_lightning.analyses import AttributionAnalysis  # noqa: E402

METHODS = ["saliency", "gradcam", "guided_backprop"]


class DigitsModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = DigitsCNN()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def test_step(self, batch, batch_idx):
        self.validation_step(batch, batch_idx)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def _loader(start: int, stop: int) -> DataLoader:
    x, y = digits()
    return DataLoader(TensorDataset(x[start:stop], y[start:stop]), batch_size=64)


def _probes() -> torch.Tensor:
    return digits()[0][1500:1503]


def _events(log_dir) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_attributions_over_training_in_tensorboard_records_and_report(tmp_path):
    model = DigitsModule()
    probes, labels = _probes(), digits()[1][1500:1503]
    analysis = AttributionAnalysis(METHODS, layer="net.conv2")
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=2, logger=logger, limit_val_batches=0),
                         callbacks=[ProbeCallback((probes, labels), [analysis])])
    trainer.fit(model, _loader(0, 512))

    records = read_records(tmp_path / "run" / "version_0" / "attribution")
    assert [r.epoch for r in records] == [0, 1, 2]
    # The last record is the trained model's attribution, computed here independently.
    model.eval()
    with torch.no_grad():
        probability, target = torch.softmax(model(probes).double(), 1).max(1)
    assert np.array_equal(records[-1].arrays["target"], target.numpy())
    for method in METHODS:
        layer = "net.conv2" if method == "gradcam" else None
        expected = attribute(model, probes, method, target=target, layer=layer)
        np.testing.assert_allclose(records[-1].arrays[method], expected.numpy(), rtol=1e-5, atol=1e-7)
    expected_sanity = spearman(torch.from_numpy(records[-1].arrays["saliency"]),
                               attribute(randomize_top_layer(model), probes, "saliency", target=target))
    expected_drift = spearman(torch.from_numpy(records[-1].arrays["saliency"]),
                              torch.from_numpy(records[0].arrays["saliency"]))

    acc = _events(logger.log_dir)
    tags = acc.Tags()
    steps = [r.global_step for r in records]  # logged at Lightning's global step
    assert steps == sorted(set(steps))
    for method in METHODS:
        for p in range(3):
            images = acc.Images(f"attribution/{method}/probe_{p}")
            assert [e.step for e in images] == steps
            for event, record in zip(images, records):
                pixels = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
                # Legible at TensorBoard's card width: the 8x8 input and its overlay, 160 px each.
                assert pixels.shape[0] >= 200 and pixels.shape[1] >= 320
                explained = int(record.arrays["target"][p])
                at = " · layer net.conv2" if method == "gradcam" else ""
                for line in (f"{method} · epoch {record.epoch} · step {record.global_step}",
                             f"explains class {explained} · signed{at}", "input", "signed", "0"):
                    assert has_text(pixels, line), (method, p, record.epoch, line)
                assert has_text(pixels, f"probe {p} · label {int(labels[p])} · predicted {explained} (p ")
            # The last record's card, drawn here from the trained model's own prediction.
            title = [f"{method} · epoch 2 · step {records[-1].global_step}",
                     f"probe {p} · label {int(labels[p])} · predicted {int(target[p])} (p {float(probability[p]):.3f})",
                     f"explains class {int(target[p])} · signed{at}"]
            assert np.array_equal(pixels, overlay_card(records[-1].arrays["probes"][p], records[-1].arrays[method][p],
                                                       title=title))
            baseline = acc.Scalars(f"attribution/{method}/probe_{p}/baseline_rho")
            sanity = acc.Scalars(f"attribution/{method}/probe_{p}/sanity_rho")
            assert [e.step for e in baseline] == steps and [e.step for e in sanity] == steps
            assert baseline[0].value == pytest.approx(1.0)
    for p in range(3):
        assert acc.Scalars(f"attribution/saliency/probe_{p}/sanity_rho")[-1].value == pytest.approx(expected_sanity[p], abs=1e-6)
        assert acc.Scalars(f"attribution/saliency/probe_{p}/baseline_rho")[-1].value == pytest.approx(expected_drift[p], abs=1e-6)
    assert "attribution/record_seconds" in tags["scalars"]

    html = report(tmp_path / "run" / "version_0").read_text()
    assert "Overlays per epoch" in html
    for method in METHODS:
        assert f"{method}: probes 0..2" in html
    for epoch in range(3):
        assert f"epoch {epoch} (global step" in html
    assert len(re.findall(r"epoch \d+ \(global step", html)) >= 3 * len(METHODS)


class _ModeSpy(AttributionAnalysis):
    """Records whether Lightning ran the analysis in inference mode."""

    def compute(self, model, probes, context):
        self.inference_mode = torch.is_inference_mode_enabled()
        return super().compute(model, probes, context)


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_records_under_validate_and_test_despite_inference_mode(tmp_path, stage):
    model = DigitsModule()
    probes = _probes()
    analysis = _ModeSpy(["saliency", "gradcam"], layer="net.conv2")
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = pl.Trainer(**trainer_kwargs(logger=logger), callbacks=[ProbeCallback(probes, [analysis])])
    getattr(trainer, stage)(model, _loader(1500, 1564))
    assert analysis.inference_mode  # the trap: captum alone fails here

    (record,) = read_records(tmp_path / "run" / "version_0" / "attribution")
    assert record.epoch == 0
    model.eval()
    target = model(probes).argmax(1)
    for method in ("saliency", "gradcam"):
        layer = "net.conv2" if method == "gradcam" else None
        expected = attribute(model, probes, method, target=target, layer=layer)
        np.testing.assert_allclose(record.arrays[method], expected.numpy(), rtol=1e-5, atol=1e-7)
        assert np.isfinite(record.scalars[f"{method}/probe_0/sanity_rho"])
    acc = _events(logger.log_dir)
    assert [e.step for e in acc.Images("attribution/gradcam/probe_2")] == [0]
    assert acc.Scalars("attribution/saliency/probe_1/baseline_rho")[0].value == pytest.approx(1.0)
    assert any(tag.endswith("val_loss") for tag in acc.Tags()["scalars"])

    # The same Trainer again: that record number exists, so nothing is overwritten.
    getattr(trainer, stage)(model, _loader(1500, 1564))
    assert len(read_records(tmp_path / "run" / "version_0" / "attribution")) == 1


def test_a_resumed_run_compares_with_the_first_runs_baseline(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(max_epochs, ckpt_path=None):
        callback = ProbeCallback(_probes(), [AttributionAnalysis(["saliency"], sanity=False)])
        trainer = pl.Trainer(
            **trainer_kwargs(max_epochs=max_epochs, logger=TensorBoardLogger(tmp_path, name="run"),
                             enable_checkpointing=True, limit_val_batches=0),
            callbacks=[callback, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])
        trainer.fit(DigitsModule(), _loader(0, 128), ckpt_path=ckpt_path)
        return callback, trainer

    first, _ = run(1)
    _, trainer = run(2, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    records = read_records(first.record_dirs["attribution"])
    assert [r.epoch for r in records] == [0, 1, 2]
    expected = spearman(torch.from_numpy(records[2].arrays["saliency"]), torch.from_numpy(records[0].arrays["saliency"]))
    assert not np.allclose(expected, 1.0)
    for p in range(3):
        assert records[2].scalars[f"saliency/probe_{p}/baseline_rho"] == pytest.approx(expected[p], abs=1e-6)
        assert "saliency/probe_0/sanity_rho" not in records[2].scalars


def test_arguments_are_checked_early():
    with pytest.raises(ValueError, match=r"AttributionAnalysis\(methods\): unknown method 'gradient'"):
        AttributionAnalysis(["gradient"])
    with pytest.raises(ValueError, match=r"unknown option\(s\) sample of 'smoothgrad'; it takes samples"):
        AttributionAnalysis({"smoothgrad": {"sample": 3}})
    with pytest.raises(TypeError, match=r"options must be JSON values"):
        AttributionAnalysis({"integrated_gradients": {"baseline": torch.zeros(1)}})
    with pytest.raises(ValueError, match=r"mode='both'"):
        AttributionAnalysis(mode="both")
    with pytest.raises(TypeError, match=r"target=1.5"):
        AttributionAnalysis(target=1.5)
    model = DigitsModule()
    with pytest.raises(ValueError, match=r"AttributionAnalysis\(layer\): unknown layer 'conv2' in `layer`: the model "
                                         r"\(DigitsModule\) has no submodule of that name \(did you mean 'net.conv2'"):
        AttributionAnalysis(layer="conv2").check(model, _probes())
    with pytest.raises(ValueError, match=r"target=\[0, 10\].*each in 0..9"):
        AttributionAnalysis(target=[0, 10]).check(model, _probes()[:2])


def test_evaluation_records_can_be_turned_off_and_spectrum_callback_keeps_fit_only(tmp_path):
    from lightning_helpers import TinyNet, loader, probe

    from nsp_lightning import SpectrumCallback

    callback = ProbeCallback(_probes(), [AttributionAnalysis(["saliency"])], record_evaluation=False)
    trainer = pl.Trainer(**trainer_kwargs(default_root_dir=tmp_path / "a"), callbacks=[callback])
    trainer.validate(DigitsModule(), _loader(1500, 1564))
    assert not (tmp_path / "a" / "attribution").exists()
    class Validated(TinyNet):
        def validation_step(self, batch, batch_idx):
            return None

    spectra = SpectrumCallback(probe(1), dirpath=tmp_path / "spectrum")
    trainer = pl.Trainer(**trainer_kwargs(default_root_dir=tmp_path / "b"), callbacks=[spectra])
    trainer.validate(Validated(), loader())
    assert not (tmp_path / "spectrum").exists()
    with pytest.raises(TypeError, match=r"record_evaluation='yes'"):
        ProbeCallback(_probes(), [AttributionAnalysis()], record_evaluation="yes")
