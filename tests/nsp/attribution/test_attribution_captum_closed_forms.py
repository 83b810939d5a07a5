"""captum's menu against closed forms (issue 24): on a linear model every gradient and
ablation method reduces to weights times (input - baseline), on an additive model Shapley
values are the terms, and on a linear two-layer network the layer and neuron methods
reduce to products of the two weight matrices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("captum.attr")
pytest.importorskip("sklearn")

from nsp.attribution import attribute  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

GEN = torch.Generator().manual_seed(0)
X = torch.randn(3, 5, generator=GEN, dtype=torch.float64)
BASE = torch.randn(1, 5, generator=GEN, dtype=torch.float64)
T = 2
FLOAT32 = ("shapley_value_sampling", "shapley_values", "kernel_shap")


def _linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(5, 4).double().eval()


@pytest.mark.parametrize("name, options", [
    ("input_x_gradient", {}),
    ("deeplift", {"baselines": BASE}),
    ("feature_ablation", {"baselines": BASE}),
    ("shapley_value_sampling", {"baselines": BASE, "n_samples": 2}),
    ("shapley_values", {"baselines": BASE}),
    ("gradient_shap", {"baselines": BASE, "n_samples": 3}),  # one baseline: every path point agrees
    ("deeplift_shap", {"baselines": BASE.repeat(2, 1)}),
    ("kernel_shap", {"baselines": BASE, "n_samples": 200}),
    ("deconvolution", {}),
])
def test_a_linear_model_gives_weight_times_input_minus_baseline(name, options):
    model = _linear()
    w = model.weight[T].detach()
    baseline = options.get("baselines", torch.zeros(1, 5, dtype=torch.float64))[:1]
    expected = w * (X - baseline) if name != "deconvolution" else w.expand_as(X)  # no ReLU: the gradient
    ours = attribute(model, X, name, target=T, **options)
    # captum's Shapley and KernelShap methods return float32 whatever the input; KernelShap
    # also solves a weighted least-squares problem. The others are exact float64 sums.
    tol = 1e-6 if name in FLOAT32 else 1e-12
    torch.testing.assert_close(ours.double(), expected, rtol=tol, atol=tol)


def test_deeplift_shap_averages_over_the_baselines():
    model, baselines = _linear(), torch.randn(6, 5, generator=GEN, dtype=torch.float64)
    ours = attribute(model, X, "deeplift_shap", target=T, baselines=baselines)
    torch.testing.assert_close(ours, model.weight[T].detach() * (X - baselines.mean(0)), rtol=1e-12, atol=1e-12)


class _Additive(nn.Module):
    """f(x) = sum_i c_i tanh(x_i) + x_0 x_0: one term per feature, no interactions."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.linspace(-1.0, 2.0, 5, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        terms = self.c * torch.tanh(x)
        return (terms.sum(1) + x[:, 0] ** 2).unsqueeze(1)


@pytest.mark.parametrize("name", ["shapley_value_sampling", "shapley_values", "kernel_shap"])
def test_shapley_values_of_an_additive_model_are_its_terms(name):
    model = _Additive().eval()
    options = {"n_samples": 300} if name == "kernel_shap" else {}
    ours = attribute(model, X, name, target=0, baselines=BASE, **options)
    terms = model.c.detach() * (torch.tanh(X) - torch.tanh(BASE))
    terms[:, 0] += X[:, 0] ** 2 - BASE[:, 0] ** 2
    torch.testing.assert_close(ours.double(), terms, rtol=1e-6, atol=1e-6)  # float32 results


def _two_layers() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 4, bias=False), nn.Linear(4, 3, bias=False)).double().eval()


def test_layer_methods_on_a_linear_network():
    model = _two_layers()
    u, v = model[0].weight.detach(), model[1].weight.detach()
    hidden, hidden0 = X @ u.T, BASE @ u.T
    exact = {
        "layer_activation": hidden,
        "layer_gradient_x_activation": hidden * v[T],
        "layer_conductance": (hidden - hidden0) * v[T],
        "layer_integrated_gradients": (hidden - hidden0) * v[T],
        "layer_deeplift": (hidden - hidden0) * v[T],
        "layer_feature_ablation": hidden * v[T],  # each hidden unit set to 0
        "internal_influence": v[T].expand_as(hidden),  # the path-averaged gradient, not times anything
        "layer_deeplift_shap": (hidden - hidden0) * v[T],  # the same baseline twice: their mean
        "layer_gradient_shap": (hidden - hidden0) * v[T],
        "layer_lrp": hidden * v[T],  # epsilon rule, bias-free: the output's share per unit
    }
    for name, expected in exact.items():
        options = {} if name in ("layer_activation", "layer_gradient_x_activation", "layer_feature_ablation") \
            else {"baselines": BASE}
        if name == "layer_conductance":
            options["quadrature"] = "riemann_trapezoid"  # the rule that is exact here (below)
        if name == "layer_deeplift_shap":
            options["baselines"] = BASE.repeat(2, 1)
        if name == "layer_lrp":
            options = {}
        target = None if name == "layer_activation" else T
        ours = attribute(model, X, name, target=target, layer="0", **options)
        # Gauss-Legendre weights sum to 1 within 1e-9 (conductance, integrated gradients).
        torch.testing.assert_close(ours, expected, rtol=1e-8, atol=1e-8, msg=name)


def test_layer_conductance_with_captums_default_quadrature_is_off_by_a_tenth_of_a_percent():
    # captum differences the layer's outputs at n_steps + 1 path points; with its default
    # Gauss-Legendre points the differences sum to 0.9989 of the whole on a linear network
    # at 50 steps (0.9999 at 200). nsp keeps captum's default, so it agrees with captum.
    model = _two_layers()
    u, v = model[0].weight.detach(), model[1].weight.detach()
    exact = (X - BASE) @ u.T * v[T]
    for steps, tol in ((50, 2e-3), (200, 2e-4)):
        ours = attribute(model, X, "layer_conductance", target=T, layer="0", baselines=BASE, n_steps=steps)
        assert not torch.allclose(ours, exact, rtol=1e-8, atol=0)
        torch.testing.assert_close(ours, exact, rtol=tol, atol=0)


@pytest.mark.parametrize("name, scaled", [("neuron_gradient", False), ("neuron_guided_backprop", False),
                                          ("neuron_deconvolution", False), ("neuron_integrated_gradients", True),
                                          ("neuron_deeplift", True), ("neuron_feature_ablation", True),
                                          ("neuron_gradient_shap", True), ("neuron_deeplift_shap", True)])
def test_neuron_methods_on_a_linear_layer(name, scaled):
    model, j = _two_layers(), 1
    u = model[0].weight.detach()
    options = {"baselines": BASE.repeat(2, 1) if name == "neuron_deeplift_shap" else BASE} if scaled else {}
    ours = attribute(model, X, name, layer="0", neuron_selector=(j,), **options)
    expected = u[j] * (X - BASE) if scaled else u[j].expand_as(X)
    torch.testing.assert_close(ours, expected, rtol=1e-8, atol=1e-8)


def test_neuron_conductance_splits_the_output_through_one_hidden_unit():
    model, j = _two_layers(), 3
    u, v = model[0].weight.detach(), model[1].weight.detach()
    exact = (X - BASE) * u[j] * v[T, j]
    options = {"target": T, "layer": "0", "neuron_selector": (j,), "baselines": BASE}
    ours = attribute(model, X, "neuron_conductance", quadrature="gausslegendre", **options)
    torch.testing.assert_close(ours, exact, rtol=1e-8, atol=1e-8)
    # captum's default, riemann_trapezoid, counts n_steps - 1 of its n_steps intervals: on a
    # linear network it gives (1 - 1 / n_steps) of the exact value. nsp keeps captum's default.
    for steps in (50, 200):
        ours = attribute(model, X, "neuron_conductance", n_steps=steps, **options)
        torch.testing.assert_close(ours, exact * (1 - 1 / steps), rtol=1e-6, atol=1e-9)


def test_lrp_of_a_bias_free_relu_network_is_gradient_times_input():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 6, bias=False), nn.ReLU(), nn.Linear(6, 3, bias=False)).double().eval()
    x = X.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(x)[:, T].sum(), x)
    # captum's default epsilon rule adds 1e-9 to every denominator.
    torch.testing.assert_close(attribute(model, X, "lrp", target=T), grad * X, rtol=1e-6, atol=1e-9)
