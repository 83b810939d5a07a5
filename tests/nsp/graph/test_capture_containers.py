"""Containers as top-level children: a ModuleList or ModuleDict that is never called is
expanded into its items, and one with a forward of its own (torchvision's ``_DenseBlock``)
is a layer like any other module (issue 23)."""

from __future__ import annotations

import pytest
import reference as R
import torch
from torch import nn

import nsp
from nsp.graph.capture import top_level

torchvision = pytest.importorskip("torchvision")


class _Summed(nn.ModuleDict):
    def forward(self, x):
        return sum(layer(x) for layer in self.values())


def test_only_containers_that_are_never_called_are_expanded():
    net = nn.Sequential()
    net.add_module("items", nn.ModuleList([nn.ReLU(), nn.Tanh()]))
    net.add_module("called", _Summed({"a": nn.ReLU(), "b": nn.Identity()}))
    assert [name for name, _ in top_level(net)] == ["items.0", "items.1", "called"]


def _randomize(net: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return net.eval()


@pytest.mark.parametrize("incl", [True, False])
def test_torchvision_dense_block_as_a_top_level_child_matches_the_reference(incl):
    torch.manual_seed(0)
    features = torchvision.models.densenet121().features
    net = _randomize(nn.Sequential(features.conv0, features.norm0, features.relu0, features.pool0,
                                   features.denseblock1))
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    acts = nsp.Activations(net, x)
    assert acts.layernames == ["input", "0", "1", "2", "3", "4"]
    ref = R.reference(net, x, incl)
    graph = nsp.NNGraph(acts, INCL=incl)
    assert graph.number_of_edges() == ref.number_of_edges
    errors = R.relative_errors(graph.transform(acts).layeractivations, ref.spectrum)
    assert max(errors) <= 1e-9, dict(zip(ref.capture.names, errors))
