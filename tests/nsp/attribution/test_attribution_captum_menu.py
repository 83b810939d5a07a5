"""captum's full menu through attribute(): every table method (and deconvolution) equals
captum called directly, bit for bit, on models where captum is right (issue 24)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

captum_attr = pytest.importorskip("captum.attr")
pytest.importorskip("sklearn")  # Lime's and KernelShap's default interpretable models

from nsp.attribution import CAPTUM_TABLE, METHODS, attribute  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).eval()


def _scalar_mlp() -> nn.Module:
    """One output per input: captum 0.9's LayerFeaturePermutation fails with a target."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1), nn.Flatten(0)).eval()


X = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
BASELINES = torch.randn(5, 6, generator=torch.Generator().manual_seed(2))

# The options each method needs (or that keep it fast); the others run on captum's defaults.
OPTIONS: dict[str, dict] = {
    "deeplift_shap": {"baselines": BASELINES},
    "gradient_shap": {"baselines": BASELINES, "n_samples": 7, "stdevs": 0.1},
    "layer_deeplift_shap": {"baselines": BASELINES},
    "layer_gradient_shap": {"baselines": BASELINES, "n_samples": 7, "stdevs": 0.1},
    "neuron_deeplift_shap": {"baselines": BASELINES},
    "neuron_gradient_shap": {"baselines": BASELINES, "n_samples": 7, "stdevs": 0.1},
    "shapley_value_sampling": {"n_samples": 3},
    "shapley_values": {"feature_mask": torch.tensor([[0, 0, 1, 2, 2, 3]])},
    "lime": {"n_samples": 40},
    "kernel_shap": {"n_samples": 40},
}
SEEDED = {spec.name for spec in CAPTUM_TABLE if spec.seeded}
LAYER = "2"  # Linear(5, 4)


def _ours_and_captums(name: str) -> tuple:
    spec = next((s for s in CAPTUM_TABLE if s.name == name), None)
    family = spec.family if spec else "primary"
    captum_name = spec.captum if spec else "Deconvolution"
    model = _scalar_mlp() if name == "layer_feature_permutation" else _mlp()
    options = dict(OPTIONS.get(name, {}))
    if family == "neuron":
        options["neuron_selector"] = (2,)
    takes_target = METHODS[name].takes_target() if spec else True
    target = 1 if takes_target and name != "layer_feature_permutation" else None
    layer = LAYER if family != "primary" else None
    ours = attribute(model, X, name, target=target, layer=layer, **options)
    cls = getattr(captum_attr, captum_name)
    theirs_method = cls(model) if layer is None else cls(model, model.get_submodule(layer))
    kwargs = dict(options)
    if takes_target:
        kwargs["target"] = target
    state = np.random.get_state()
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")
        torch.manual_seed(0)  # nsp's default seed for the methods that draw random numbers
        np.random.seed(0)
        theirs = theirs_method.attribute(X.clone().requires_grad_(), **kwargs)
    np.random.set_state(state)
    return ours, theirs.detach()


@pytest.mark.parametrize("name", [s.name for s in CAPTUM_TABLE if s.rule != "lrp"] + ["deconvolution"])
def test_each_method_equals_captum_bit_for_bit(name):
    ours, theirs = _ours_and_captums(name)
    assert ours.shape == theirs.shape
    assert torch.equal(ours, theirs), (ours - theirs).abs().max()


@pytest.mark.parametrize("name", ["lrp", "layer_lrp"])
def test_lrp_equals_captum_on_a_network_with_rules_for_every_layer(name):
    ours, theirs = _ours_and_captums(name)
    assert torch.equal(ours, theirs)


def test_every_captum_attribution_class_is_offered_by_name():
    offered = {s.captum for s in CAPTUM_TABLE} | {"Saliency", "GuidedBackprop", "IntegratedGradients",
                                                   "GuidedGradCam", "Occlusion", "Deconvolution",
                                                   "LayerGradCam", "NoiseTunnel"}
    bases = {"Attribution", "GradientAttribution", "PerturbationAttribution", "NeuronAttribution",
             "LayerAttribution"}
    # Not attribution methods of a model's inputs: the base of Lime without its defaults,
    # a data-loader driver, and the LLM and text tools.
    other = {"LimeBase", "DataLoaderAttribution"}
    methods = {n for n in captum_attr.__all__ if isinstance(getattr(captum_attr, n), type)
               and issubclass(getattr(captum_attr, n), captum_attr.Attribution) and "LLM" not in n}
    assert methods - bases - other <= offered, sorted(methods - bases - other - offered)
    for spec in CAPTUM_TABLE:
        assert METHODS[spec.name].__name__ == spec.captum


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_a_seeded_method_repeats_itself_and_leaves_the_callers_rng_alone(name):
    spec = next(s for s in CAPTUM_TABLE if s.name == name)
    model = _scalar_mlp() if name == "layer_feature_permutation" else _mlp()
    options = dict(OPTIONS.get(name, {}))
    if spec.family == "neuron":
        options["neuron_selector"] = (2,)
    layer = LAYER if spec.family != "primary" else None
    target = 1 if METHODS[name].takes_target() and name != "layer_feature_permutation" else None
    torch.manual_seed(5)
    first = attribute(model, X, name, target=target, layer=layer, **options)
    np.random.seed(5)
    after = torch.rand(1), np.random.rand()
    torch.manual_seed(5)
    np.random.seed(5)
    assert torch.equal(attribute(model, X, name, target=target, layer=layer, **options), first)
    assert (torch.rand(1), np.random.rand()) == after
    other = attribute(model, X, name, target=target, layer=layer, seed=1, **options)
    assert not torch.equal(other, first)
