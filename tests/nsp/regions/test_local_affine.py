"""nsp.local_affine: W(x) x' + b(x) = f(x') on x's linear region, against dense autograd Jacobians."""

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import zoo
from region_models import mlp, residual_cnn
from nsp.regions.local_affine import NotPiecewiseLinearError, activation_patterns, local_affine, same_region

# Smooth (or discontinuous) functions the zoo uses; a rejection must name one of them.
NON_PL_OPS = ("elu", "selu", "celu", "gelu", "sigmoid", "tanh", "hardsigmoid", "hardswish", "silu", "mish",
              "softplus", "softsign", "tanhshrink", "log_sigmoid", "softshrink", "hardshrink", "threshold", "rrelu")


def _dense_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reference: one autograd Jacobian per input, with torch.autograd.functional (no torch.func)."""
    rows = []
    for xi in x:
        rows.append(torch.autograd.functional.jacobian(lambda v: model(v.unsqueeze(0)).squeeze(0), xi))
    return torch.stack(rows)


def _check_exact_in_region(model: nn.Module, x: torch.Tensor, scale: float = 1e-6) -> None:
    la = local_affine(model, x)
    torch.testing.assert_close(la.weight, _dense_jacobian(model, x), rtol=0, atol=1e-10)
    # Nearby points in the same region (checked by pattern) lie on the same affine piece.
    gen = torch.Generator().manual_seed(0)
    x2 = x + scale * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    same = same_region(model, x, x2)
    assert same.any()
    with torch.no_grad():
        fx2 = model(x2)
    err = (la(x2) - fx2).reshape(len(x), -1).abs().amax(dim=1)
    assert (err[same] < 1e-10).all(), err


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 4), width=st.integers(2, 24), d_in=st.integers(1, 6))
def test_random_relu_mlps_exact_in_region_and_not_across(seed, depth, width, d_in):
    net = mlp(seed, [d_in] + [width] * depth + [3])
    x = torch.randn(6, d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    _check_exact_in_region(net, x)
    # Far away (another region, where the map changes) the affine map of x no longer holds.
    la = local_affine(net, x)
    far = x + 50 * torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    other = ~same_region(net, x, far)
    with torch.no_grad():
        err = (la(far) - net(far)).abs().amax(dim=1)
    changed = other & (local_affine(net, far).weight - la.weight).abs().amax(dim=(1, 2)).gt(1e-9)
    assert (err[changed] > 1e-8).all()


def test_cnn_with_maxpool_residual_concat_exact_in_region():
    net = residual_cnn()
    x = torch.randn(5, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _check_exact_in_region(net, x, scale=1e-7)
    la = local_affine(net, x)
    assert la.weight.shape == (5, 3, 2, 8, 8) and la.bias.shape == (5, 3)
    assert {k.split(":")[1] for k in la.patterns} >= {"relu", "max_pool2d", "leaky_relu"}
    assert la.patterns["2:max_pool2d"].dtype == torch.int64  # argmax indices of the max-pool


@pytest.mark.parametrize("name", [n for n, e in zoo.ZOO.items() if not e.slow])
def test_zoo_networks_exact_or_rejected(name):
    _, net, x = zoo.build(name)
    net = net.double()
    x = x.double()
    try:
        la = local_affine(net, x)
    except NotPiecewiseLinearError as e:
        assert re.search(r"calls _?(%s)_?, which" % "|".join(NON_PL_OPS), str(e)), str(e)
        return
    torch.testing.assert_close(la.weight, _dense_jacobian(net, x), rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        torch.testing.assert_close(la(x), net(x), rtol=1e-9, atol=1e-9)


class TorchaysTestNet(nn.Module):
    """The network of torchays's README (graphDemo.py), with ordinary torch layers."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels=3, out_channels=8, kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(num_features=8)
        self.conv2 = nn.Conv2d(in_channels=8, out_channels=16, kernel_size=3, stride=2, padding=1)
        self.avg = nn.AvgPool2d(2, 1)
        self.linear = nn.Linear(16, 2)
        self.flatten = nn.Flatten(1)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.avg(self.conv2(x))
        return self.linear(self.flatten(x))


def test_torchays_readme_network_and_check():
    torch.manual_seed(5)
    net = TorchaysTestNet().eval()
    data = torch.randn(2, 3, 8, 8)
    la = local_affine(net, data)
    weight_graph, bias_graph = la.weight, la.bias
    assert weight_graph.shape == (2, 2, 3, 8, 8) and bias_graph.shape == (2, 2)
    with torch.no_grad():
        output = net(data)
    for i in range(output.size(0)):
        # torchays's own check, from its README.
        torch.testing.assert_close((weight_graph[i] * data[i]).sum(dim=(1, 2, 3)) + bias_graph[i], output[i])


def test_torchvision_resnet18_small_input():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    net = resnet18(num_classes=4).double().eval()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    la = local_affine(net, x)
    with torch.no_grad():
        torch.testing.assert_close(la(x), net(x), rtol=1e-9, atol=1e-9)
    assert any("maxpool" in k for k in la.patterns)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 1, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)

    def forward(self, x):
        return self.a(x) * self.b(x)


@pytest.mark.parametrize("net, match", [
    (nn.Sequential(nn.Linear(3, 3), nn.Tanh()), r"'1' \(Tanh\) calls tanh"),
    (nn.Sequential(nn.Linear(3, 3), nn.GELU()), r"'1' \(GELU\) calls gelu"),
    (nn.Sequential(nn.Linear(3, 3), nn.Softmax(dim=1)), r"'1' \(Softmax\) calls softmax"),
    (nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), r"\(LayerNorm\) calls layer_norm"),
    (Gate(), r"'Gate' \(Gate\) calls mul, which multiplies two input-dependent"),
    (nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).train(), r"\(BatchNorm1d\) calls batch_norm, which runs in training"),
    (nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)).train(), r"\(Dropout\) calls dropout, which runs in training"),
])
def test_non_piecewise_linear_modules_are_named(net, match):
    with pytest.raises(NotPiecewiseLinearError, match=match):
        local_affine(net, torch.randn(4, 3))


def test_attention_is_rejected():
    with pytest.raises(NotPiecewiseLinearError, match=r"'attn' \(MultiheadAttention\)"):
        local_affine(Attention().eval(), torch.randn(2, 5, 4))


def test_linearise_returns_jacobian_with_warning():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x = torch.randn(3, 3, dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"not piecewise linear.*'1' \(Tanh\) calls tanh"):
        la = local_affine(net, x, linearise=True)
    torch.testing.assert_close(la.weight, _dense_jacobian(net, x))


def test_same_region_and_patterns():
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net[0].bias.zero_()
    x1 = torch.tensor([[1.0], [1.0], [-2.0]], dtype=torch.float64)
    x2 = torch.tensor([[3.0], [-1.0], [-0.5]], dtype=torch.float64)
    assert same_region(net, x1, x2).tolist() == [True, False, True]
    _, patterns = activation_patterns(net, x1)
    assert patterns["1:relu"].tolist() == [[True, False], [True, False], [False, True]]
