"""AttributionAnalysis on the models attribute() takes and refuses, with layers that never run,
and records whose probe count differs from their series' (issue 22: 4, 5, 13)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning_helpers import TinyNet, loader, probe, trainer_kwargs
from torch import nn

import lightning.pytorch as pl

pytest.importorskip("captum.attr")

from nsp_lightning import ProbeCallback, read_records  # noqa: E402
from nsp_lightning.analyses import AttributionAnalysis  # noqa: E402

pytestmark = pytest.mark.reliability


class _Scalar(TinyNet):
    """One value per input (a regression head)."""

    def forward(self, x):
        return super().forward(x)[:, 0]

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y.float())


class _Pair(TinyNet):
    def forward(self, x):
        return super().forward(x), x.flatten(1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x)[0], y)


class _Spare(TinyNet):
    def __init__(self) -> None:
        super().__init__()
        self.spare = nn.Linear(3, 3)


def _fit(tmp_path: Path, model: nn.Module, analysis: AttributionAnalysis) -> Path:
    callback = ProbeCallback(probe(2), [analysis], dirpath=tmp_path / "records")
    pl.Trainer(**trainer_kwargs(default_root_dir=tmp_path, max_epochs=1), callbacks=[callback]).fit(model, loader())
    return tmp_path / "records" / analysis.name


def test_a_model_with_one_value_per_probe_is_explained_without_a_class(tmp_path):
    records = read_records(_fit(tmp_path, _Scalar(), AttributionAnalysis(["saliency"], sanity=False)))
    assert len(records) == 2
    assert (records[-1].arrays["target"] == -1).all()
    assert np.isfinite(records[-1].arrays["saliency"]).all() and np.abs(records[-1].arrays["saliency"]).max() > 0


def test_a_model_returning_a_tuple_is_refused_at_fit_start_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"AttributionAnalysis: the model \(_Pair\) returns tuple for 2 probes; "
                                         r"attribution explains one output tensor"):
        _fit(tmp_path, _Pair(), AttributionAnalysis(["saliency"], sanity=False))


@pytest.mark.parametrize("argname", ["layer", "sanity_layer"])
def test_a_named_layer_that_never_runs_is_refused_at_fit_start(tmp_path, argname):
    with pytest.raises(ValueError, match=rf"AttributionAnalysis\({argname}='spare'\): 'spare' never runs in the "
                                         r"model's forward pass on the probes; the modules that run are: conv, relu"):
        _fit(tmp_path, _Spare(), AttributionAnalysis(["gradcam"], **{argname: "spare"}))


def test_a_record_whose_probe_count_differs_from_its_series_is_refused():
    record = SimpleNamespace(arrays={"probes": np.zeros((3, 1, 6, 6), np.float32),
                                     "saliency": np.zeros((3, 1, 6, 6), np.float32)}, meta={"methods": ["saliency"]})
    AttributionAnalysis.check_record(record, {"probes": 3}, Path("epoch-000001.npz"))
    with pytest.raises(ValueError, match=r"the record epoch-000001.npz holds 3 probe\(s\), but its series has 2"):
        AttributionAnalysis.check_record(record, {"probes": 2}, Path("epoch-000001.npz"))
    with pytest.raises(ValueError, match=r"has probes 0, expected an int >= 1"):
        AttributionAnalysis.check_header({"methods": {}, "probes": 0}, Path("manifest.json"))


def test_layers_may_be_given_as_modules_and_are_recorded_by_name(tmp_path):
    from nsp_lightning import read_header

    model = TinyNet()
    analysis = AttributionAnalysis(["gradcam"], layer=model.conv, sanity_layer=model.fc)
    header = read_header(_fit(tmp_path, model, analysis))
    assert (header["layer"], header["sanity_layer"]) == ("conv", "fc")


def test_captums_table_methods_run_over_training(tmp_path):
    # Methods of captum's menu that explain a class on the input (issue 24), with their options.
    from nsp.attribution import attribute

    methods = {"input_x_gradient": {}, "deeplift": {}, "feature_ablation": {}, "deconvolution": {}}
    model = TinyNet()
    records = read_records(_fit(tmp_path, model, AttributionAnalysis(methods, sanity=False)))
    model.eval()
    probes = torch.from_numpy(records[-1].arrays["probes"])
    target = torch.from_numpy(records[-1].arrays["target"])
    for method in methods:
        expected = attribute(model, probes, method, target=target)
        np.testing.assert_allclose(records[-1].arrays[method], expected.numpy(), rtol=1e-5, atol=1e-7)
