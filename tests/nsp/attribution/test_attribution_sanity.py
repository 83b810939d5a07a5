"""The model-randomisation sanity check (Adebayo et al., 2018) on a trained digits CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

pytest.importorskip("captum.attr")
pytest.importorskip("sklearn")

from digits_cnn import digits, trained  # noqa: E402
from nsp.attribution import attribute, randomize_top_layer, spearman, top_layer  # noqa: E402


def test_spearman_matches_scipy_per_item_with_ties_and_constant_items():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (5, 2, 3, 3), generator=gen).float()  # many ties
    b = torch.randn(5, 2, 3, 3, generator=gen)
    a[4] = 0.0
    ours = spearman(a, b)
    for i in range(4):
        assert ours[i] == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-12)
    assert np.isnan(ours[4])
    assert spearman(b, b) == pytest.approx(np.ones(5))


def test_randomize_top_layer_changes_only_the_top_layer_of_a_copy():
    model, _ = trained()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rand = randomize_top_layer(model, seed=1)
    assert top_layer(model) is model.fc
    for key, value in rand.state_dict().items():
        assert torch.equal(model.state_dict()[key], before[key])
        assert torch.equal(value, before[key]) != key.startswith("fc.")
    assert torch.equal(randomize_top_layer(model, seed=1).fc.weight, rand.fc.weight)
    assert torch.equal(randomize_top_layer(model, "conv2").fc.weight, model.fc.weight)


def test_sanity_check_on_a_trained_digits_cnn():
    model, accuracy = trained()
    assert accuracy > 0.85
    x, _ = digits()
    probes = x[1500:1532]
    rand = randomize_top_layer(model)
    target = model(probes).argmax(1)  # the trained model's classes, for both models

    def median_rho(method: str, **options) -> float:
        same = attribute(model, probes, method, target=target, **options)
        other = attribute(rand, probes, method, target=target, **options)
        return float(np.median(spearman(same, other)))

    # Measured (README): vanilla gradient -0.02, Grad-CAM 0.02: they depend on the top layer.
    assert median_rho("saliency") < 0.5
    assert median_rho("gradcam", layer="conv2") < 0.5
    # Guided backprop barely notices: 0.78 signed, 0.58 absolute. Its ReLU rule discards
    # the negative gradients the top layer sends back, so it mostly reconstructs the
    # input's edges whatever the class weights are (Adebayo et al. saw the same).
    assert median_rho("guided_backprop") > 0.5
    assert median_rho("guided_backprop") > median_rho("saliency") + 0.4


def test_sanity_check_of_captums_menu_on_the_digits_cnn():
    # Measured (README's table): input x gradient 0.01, DeepLift -0.04 and Lime 0.10 pass;
    # deconvolution, like guided backprop, does not (0.71): its rule ignores the forward pass.
    model, _ = trained()
    x, _ = digits()
    probes = x[1500:1532]
    rand = randomize_top_layer(model)
    target = model(probes).argmax(1)

    def median_rho(method: str, **options) -> float:
        same = attribute(model, probes, method, target=target, **options)
        other = attribute(rand, probes, method, target=target, **options)
        return float(np.median(spearman(same, other)))

    for method in ("input_x_gradient", "deeplift", "layer_conductance"):
        assert abs(median_rho(method, **({"layer": "conv2"} if method.startswith("layer") else {}))) < 0.3
    assert median_rho("lime", n_samples=30) < 0.5
    assert median_rho("deconvolution") > 0.5
