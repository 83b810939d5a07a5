"""FeatureVisAnalysis through training: image grids and objective scalars read back from
TensorBoard, records, the report's per-epoch grids, and argument checks."""

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

pytest.importorskip("sklearn")

from digits_cnn import DigitsCNN, digits  # noqa: E402
from nsp import optvis  # noqa: E402
from nsp.optvis.optimize import make_param  # noqa: E402
from nsp_lightning import ProbeCallback, read_records, report  # noqa: E402
from nsp_lightning.analyses import FeatureVisAnalysis  # noqa: E402
from image_text import find, has_text  # noqa: E402
from nsp.viz.text import LABEL_PT, label_palette, text_line  # noqa: E402
from nsp_lightning.analyses.feature_vis.analysis import feature_mosaic  # noqa: E402

CHANNELS = {"net.relu2": [0, 4, 7]}
CLASSES = [0, 3]
STEPS = 12


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

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def _loader() -> DataLoader:
    x, y = digits()
    return DataLoader(TensorDataset(x[:256], y[:256]), batch_size=64)


def test_feature_visualisations_over_training_in_tensorboard_records_and_report(tmp_path):
    model = DigitsModule()
    probes = digits()[0][1500:1501]
    analysis = FeatureVisAnalysis(CHANNELS, CLASSES, steps=STEPS, size=16)
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=2, logger=logger, limit_val_batches=0),
                         callbacks=[ProbeCallback(probes, [analysis])])
    trainer.fit(model, _loader())

    records = read_records(tmp_path / "run" / "version_0" / "feature_vis")
    assert [r.epoch for r in records] == [0, 1, 2]
    labels = ["net.relu2/channel_0", "net.relu2/channel_4", "net.relu2/channel_7", "class_0", "class_3"]
    assert records[-1].meta["labels"] == labels
    assert records[-1].arrays["images"].shape == (5, 1, 16, 16) and records[-1].arrays["images"].dtype == np.uint8
    # The last record is the trained model's render, redone here one target at a time:
    # the same seed and starting image give the same picture as the batched render.
    model.eval()
    net = optvis.normalized(model, size=(8, 8))
    objectives = [optvis.channel("net.relu2", c) for c in CHANNELS["net.relu2"]]
    objectives += [optvis.class_log_probability(k) for k in CLASSES]
    start = make_param("fourier", (1, 1, 16, 16), 0)().detach()
    for t, objective in enumerate(objectives):
        alone = optvis.render(net, objective, steps=STEPS, size=16, channels=1, seed=0)
        expected = np.round(alone.image[0].numpy() * 255).astype(np.uint8)
        assert np.abs(records[-1].arrays["images"][t].astype(int) - expected).max() <= 1
        assert records[-1].scalars[f"{labels[t]}/objective"] == pytest.approx(float(alone.value[0]), rel=1e-3, abs=1e-4)
        # Every record starts from the same image: its objective under the last model is the recorded start.
        assert records[-1].arrays["initial_values"][t] == pytest.approx(
            float(optvis.evaluate(net, objective, start)[0]), rel=1e-5, abs=1e-6)
    assert not np.array_equal(records[0].arrays["images"], records[-1].arrays["images"])

    acc = EventAccumulator(str(logger.log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    for tag, part in (("feature_vis/channels", slice(0, 3)), ("feature_vis/classes", slice(3, None))):
        events = acc.Images(tag)
        assert [e.step for e in events] == [r.global_step for r in records] == [0, 4, 8]
        kind = tag.rpartition("/")[2]
        for event, record in zip(events, records):
            pixels = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
            assert has_text(pixels, f"feature_vis · {kind} · epoch {record.epoch} · step {record.global_step}")
            images, values = record.arrays["images"][part], record.arrays["values"][part]
            places = []
            for k, name in enumerate(labels[part]):
                # Each tile is the record's image enlarged 6× (16 → 96 pixels), its name and objective above it.
                tile = np.repeat(np.kron(images[k, 0], np.ones((6, 6), dtype=np.uint8))[..., None], 3, axis=2)
                assert find(pixels, tile) is not None, (tag, record.epoch, name)
                if kind == "channels":
                    lines = ["net.relu2", f"channel {CHANNELS['net.relu2'][k]}", f"mean {values[k]:.3g}"]
                else:
                    lines = [f"class {CLASSES[k]}", f"p {np.exp(values[k]):.3f}"]
                for line in lines:
                    assert has_text(pixels, line), (tag, record.epoch, line)
                places.append(find(pixels, text_line(lines[-2], label_palette(), LABEL_PT)))
            assert [x for _, x in places] == sorted(x for _, x in places)  # left to right, in the order given
    for label in labels:
        scalars = acc.Scalars(f"feature_vis/{label}/objective")
        assert [e.step for e in scalars] == [0, 4, 8]
        for event, record in zip(scalars, records):
            assert event.value == pytest.approx(record.scalars[f"{label}/objective"], rel=1e-6)
    # Training makes class 3's picture more class-3-like than at the start.
    assert records[-1].scalars["class_3/objective"] > records[-1].arrays["initial_values"][4]

    # The report's and the example's mosaic: a row per epoch, a column per target, both named.
    mosaic = feature_mosaic(records, labels)
    for line in ["epoch 0", "epoch 1", "epoch 2", "relu2:0", "relu2:4", "relu2:7", "class 0", "class 3"]:
        assert has_text(mosaic, line), line

    html = report(tmp_path / "run" / "version_0").read_text()
    assert "Grids per epoch" in html and "How the features form" in html
    assert "channels: net.relu2/channel_0, net.relu2/channel_4, net.relu2/channel_7" in html
    assert "classes: class_0, class_3" in html
    assert len(re.findall(r"epoch \d \(global step \d+\)", html)) >= 6
    assert "12 steps of a batch of 5 image(s) of 16×16 pixels per record" in html


def test_arguments_are_checked_early():
    with pytest.raises(ValueError, match=r"choose at least one channel or class"):
        FeatureVisAnalysis()
    with pytest.raises(TypeError, match=r"expected \(layer name, channel >= 0\) pairs, got \('net.conv2', -1\)"):
        FeatureVisAnalysis([("net.conv2", -1)])
    with pytest.raises(ValueError, match=r"steps=0"):
        FeatureVisAnalysis(classes=[1], steps=0)
    with pytest.raises(ValueError, match=r"transforms='lucid'"):
        FeatureVisAnalysis(classes=[1], transforms="lucid")
    model, probes = DigitsModule().eval(), digits()[0][:2]
    with pytest.raises(ValueError, match=r"FeatureVisAnalysis: unknown layer 'conv2' in `layer`: the model "
                                         r"\(DigitsModule\) has no submodule of that name \(did you mean 'net.conv2'"):
        FeatureVisAnalysis({"conv2": [0]}).check(model, probes)
    with pytest.raises(ValueError, match=r"channel 16 out of range: layer 'net.conv2' has 16 channels"):
        FeatureVisAnalysis({"net.conv2": [16]}).check(model, probes)
    with pytest.raises(ValueError, match=r"class 10 out of range: the model has 10 classes"):
        FeatureVisAnalysis(classes=[10]).check(model, probes)
    with pytest.raises(ValueError, match=r"mean=\[0.1, 0.2\]"):
        FeatureVisAnalysis(classes=[1], mean=[0.1, 0.2]).check(model, probes)


def test_a_record_under_validate_despite_inference_mode(tmp_path):
    class Validated(DigitsModule):
        def validation_step(self, batch, batch_idx):
            return None

    model = Validated()
    analysis = FeatureVisAnalysis({"net.relu2": [7]}, [3], steps=4)
    trainer = pl.Trainer(**trainer_kwargs(logger=TensorBoardLogger(tmp_path, name="run")),
                         callbacks=[ProbeCallback(digits()[0][:1], [analysis])])
    trainer.validate(model, _loader())
    (record,) = read_records(tmp_path / "run" / "version_0" / "feature_vis")
    assert record.epoch == 0 and record.arrays["images"].shape == (2, 1, 8, 8)
    assert record.scalars["class_3/objective"] > record.arrays["initial_values"][1]
