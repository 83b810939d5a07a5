"""``Activations(..., like=pattern)``: the layers' values without the dataflow (issue 23).

A training callback transforms every record on a graph built once, so it needs each
layer's output, not the dataflow recorder. These tests check that the cheap capture gives
the full capture's layers, names and values, that it really skips the recorder, and that
it records in full instead wherever the network's layers changed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nsp
from nsp.graph import capture


class _Block(nn.Module):
    """A residual block: conv, BatchNorm, an in-place ReLU, and a skip added in forward."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.norm(self.conv(x)) + x)


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), _Block(4), _Block(4),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


class _Token(nn.Module):
    """The parent does work between its children (a class token, as in ViT): not chained."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.token = nn.Parameter(torch.randn(1, 1, 4))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.token.expand(x.shape[0], -1, -1), self.embed(x)], dim=1)
        return self.head(tokens[:, 0] + tokens[:, 1:].mean(dim=1))


class _Reused(nn.Module):
    """One ReLU module called twice (as torchvision blocks do): layers ``act`` and ``act:1``."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.act = nn.Linear(3, 4), nn.Linear(4, 4), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.b(self.act(self.a(x))))


CASES = {
    "resnet, top level": (_resnet, (2, 6, 6), None),
    "resnet, leaves": (_resnet, (2, 6, 6), "leaves"),
    "resnet, names": (_resnet, (2, 6, 6), ["3.conv", "3", "4.norm", "7"]),
    "resnet, predicate": (_resnet, (2, 6, 6), lambda name, module: isinstance(module, nn.Conv2d)),
    "class token, top level": (_Token, (5, 3), None),
    "a module called twice, leaves": (_Reused, (3,), "leaves"),
}


def _equal(a: nsp.Activations, b: nsp.Activations) -> bool:
    return a.layernames == b.layernames and all(
        x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(a.layeractivations, b.layeractivations)
    ) and all(x is y for x, y in zip(a.layerdescriptions[1:], b.layerdescriptions[1:]))


class _NoRecorder:
    def __init__(self, *args, **kwargs) -> None:
        raise AssertionError("the dataflow recorder ran")


@pytest.mark.parametrize("case", list(CASES))
def test_the_cheap_capture_gives_the_full_captures_layers_without_the_recorder(monkeypatch, case):
    make, shape, layers = CASES[case]
    torch.manual_seed(0)
    net = make().eval()
    x = torch.randn(1, *shape)
    full = nsp.Activations(net, x, layers)
    assert full.has_dataflow
    y = torch.randn(1, *shape)
    expected = nsp.Activations(net, y, layers)
    # The same forward pass with the same kernels on the same batch: the values are bit-equal.
    monkeypatch.setattr(capture, "Recorder", _NoRecorder)
    cheap = nsp.Activations(net, y, like=full)
    assert not cheap.has_dataflow
    assert _equal(cheap, expected)
    batch = torch.randn(3, *shape)
    monkeypatch.undo()
    expected_batch = nsp.Activations.from_batch(net, batch, layers)
    monkeypatch.setattr(capture, "Recorder", _NoRecorder)
    cheap_batch = nsp.Activations.from_batch(net, batch, like=full)
    assert all(_equal(c, e) for c, e in zip(cheap_batch, expected_batch))


def test_the_cheap_patterns_transform_as_the_full_ones_on_the_graph_of_the_first():
    net = _resnet()
    full = nsp.Activations(net, torch.randn(1, 2, 6, 6))
    graph = nsp.NNGraph(full)
    x = torch.randn(1, 2, 6, 6)
    cheap, expected = nsp.Activations(net, x, like=full), nsp.Activations(net, x)
    assert np.array_equal(graph.get_transformer().forward(cheap.to_numpy()), graph.get_transformer().forward(expected.to_numpy()))
    assert np.array_equal(graph.transform(cheap).to_numpy(), graph.transform(expected).to_numpy())


def test_a_pattern_without_its_dataflow_cannot_build_a_graph():
    net = _resnet()
    full = nsp.Activations(net, torch.randn(1, 2, 6, 6))
    cheap = nsp.Activations(net, torch.randn(1, 2, 6, 6), like=full)
    with pytest.raises(ValueError, match=r"nsp.NNGraph: .*without the dataflow.*like="):
        nsp.NNGraph(cheap)
    with pytest.raises(ValueError, match=r"nsp.fingerprint: .*without the dataflow"):
        nsp.fingerprint(cheap)


def _changes() -> dict:
    """Ways a network's layers can change after the reference pattern, each ``net -> layers``."""

    def replace_head(net):  # another module, another shape
        net[7] = nn.Linear(4, 5)

    def replace_same_shape(net):  # another module object, the same shapes
        net[7] = nn.Linear(4, 3)

    def add_child(net):
        net.add_module("8", nn.Softmax(dim=1))

    def stride(net):  # the same module, another output shape
        net[0].stride = (2, 2)

    return {"replace_head": replace_head, "replace_same_shape": replace_same_shape, "add_child": add_child,
            "stride": stride}


@pytest.mark.parametrize("layers", [None, "leaves"])
@pytest.mark.parametrize("change", list(_changes()))
def test_a_changed_network_is_recorded_in_full(change, layers):
    net = _resnet()
    reference = nsp.Activations(net, torch.randn(1, 2, 6, 6), layers)
    _changes()[change](net)
    x = torch.randn(1, 2, 6, 6)
    got = nsp.Activations(net, x, like=reference)
    assert got.has_dataflow, "the changed network was recorded without its dataflow"
    assert _equal(got, nsp.Activations(net, x, layers))
    nsp.NNGraph(got)  # and it builds the new graph


def test_a_listed_layer_that_no_longer_runs_is_recorded_in_full_and_refused():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.use_b = nn.Linear(3, 3), nn.Linear(3, 3), True

        def forward(self, x):
            return self.b(self.a(x)) if self.use_b else self.a(x)

    net = Branch()
    reference = nsp.Activations(net, torch.randn(1, 3), ["a", "b"])
    net.use_b = False
    # The full capture names the listed layer that did not run, as without `like`.
    with pytest.raises(ValueError, match=r"chosen layer\(s\) \['b'\] did not run"):
        nsp.Activations(net, torch.randn(1, 3), like=reference)


def test_a_module_run_more_often_is_recorded_in_full():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.twice = nn.Linear(3, 3), False

        def forward(self, x):
            return self.a(self.a(x)) if self.twice else self.a(x)

    net = Twice()
    reference = nsp.Activations(net, torch.randn(1, 3), "leaves")
    net.twice = True
    got = nsp.Activations(net, torch.randn(1, 3), like=reference)
    assert got.has_dataflow and got.layernames == ["input", "a", "a:1"]


def test_like_is_checked():
    net = _resnet()
    full = nsp.Activations(net, torch.randn(1, 2, 6, 6))
    with pytest.raises(ValueError, match=r"nsp.Activations: pass `layers` or `like`"):
        nsp.Activations(net, torch.randn(1, 2, 6, 6), "leaves", like=full)
    with pytest.raises(TypeError, match=r"nsp.Activations.from_batch: expected `like` to be a pattern"):
        nsp.Activations.from_batch(net, torch.randn(2, 2, 6, 6), like=[full])
