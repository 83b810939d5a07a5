"""The analyses take their choices from nsp's registries: a transform registered with
``nsp.transforms.transformer.register_transform`` is a valid ``SpectrumAnalysis(transform=)``,
and an attribution method registered as a ``LayerAttribution`` gets the analysis's ``layer``."""

from __future__ import annotations

import pytest
import torch
from lightning_helpers import trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl

pytest.importorskip("captum.attr")
pytest.importorskip("sklearn")

from digits_cnn import DigitsCNN, digits  # noqa: E402
from nsp.attribution import GradCam, using_methods  # noqa: E402
from nsp.transforms.transformer import TRANSFORMS, using_transforms  # noqa: E402
from nsp_lightning import ProbeCallback  # noqa: E402
from nsp_lightning.analyses import AttributionAnalysis, SpectrumAnalysis  # noqa: E402


def test_a_registered_transform_is_a_valid_spectrum_transform():
    with pytest.raises(ValueError, match=r"SpectrumAnalysis\(transform='mine'\): expected one of \['standard'"):
        SpectrumAnalysis(transform="mine")
    with using_transforms({"mine": TRANSFORMS["standard"]}):
        assert SpectrumAnalysis(transform="mine").transform == "mine"


class _Module(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = DigitsCNN()

    def forward(self, x):
        return self.net(x)

    def validation_step(self, batch, batch_idx):
        return None


def test_a_registered_layer_method_gets_the_analysis_layer(tmp_path):
    seen: list[nn.Module] = []

    class SpyCam(GradCam):
        name = "spycam"

        def _attribute(self, inputs, target, **options):
            seen.append(self.layer)
            return super()._attribute(inputs, target, **options)

    x, y = digits()
    module = _Module()
    with using_methods({"spycam": SpyCam}):
        # conv1, not the default (the last convolution), so that the layer must have been passed.
        callback = ProbeCallback(x[:2], [AttributionAnalysis(["spycam"], layer="net.conv1", sanity=False)],
                                 dirpath=tmp_path / "records")
        trainer = pl.Trainer(**trainer_kwargs(default_root_dir=tmp_path), callbacks=[callback])
        trainer.validate(module, DataLoader(TensorDataset(x[:8], y[:8]), batch_size=8))
    assert seen and all(layer is module.net.conv1 for layer in seen)
