"""The INCL=False growth bound: an upper bound on the majorant G, found before the ancestor sets.

The dense reference computes G exactly from the ancestor matrices of ``reference.py``:
``G(x) = 1 + Σ_{y<x} G(y)``.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from torch import nn

import nsp
import reference as R
import zoo
from nsp.transforms.ancestor_sets import AncestorSets
from nsp.transforms.growth import growth_bound

NETWORKS = ["conv_relu_maxpool2d", "pruned_cnn", "pruned_mlp", "dead_relu", "maxpool2d_ceil_pad_dilation",
            "conv2d_groups", "act_relu_in_block", "basicblock_downsample", "pruned_resnet", "readme_net"]


def _dense_growth(edges: list[np.ndarray]) -> list[float]:
    """Per layer, 1 + log2 max G, from the dense ancestor matrices."""
    g = [np.ones(edges[0].shape[1])]
    for anc in R.ancestor_matrices(edges):
        g.append(1 + anc.astype(np.float64) @ np.concatenate(g))
    return [float(np.log2(v.max())) + 1 for v in g]


def _bound(net, x):
    return growth_bound(nsp.NNGraph(nsp.Activations(net, x), INCL=False).structure)


@pytest.mark.parametrize("name", NETWORKS)
def test_bound_is_at_least_the_exact_growth(name):
    net, x, ref = zoo.cached(name, False)
    bound, exact = _bound(net, x), _dense_growth(ref.edges)
    assert np.all(bound >= np.array(exact) - 1e-9), (bound, exact)


@settings(max_examples=15, deadline=None)
@given(zoo.random_networks())
def test_bound_is_at_least_the_exact_growth_on_random_networks(case):
    _, net, x = case
    bound, exact = _bound(net, x), _dense_growth(R.reference(net, x, incl=False).edges)
    assert np.all(bound >= np.array(exact) - 1e-9), (bound, exact)


def test_bound_is_exact_where_ancestors_fill_whole_layers():
    # Dense layers without dead units: every ancestor set is every earlier layer, which is
    # what the bound's second term assumes; one-parent units (Tanh) are exact anyway.
    torch.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(5, 5), nn.Tanh())]).eval()
    x = torch.randn(1, 5)
    bound, exact = _bound(net, x), _dense_growth(R.reference(net, x, incl=False).edges)
    np.testing.assert_allclose(bound, exact, rtol=1e-12)


def test_bound_is_strictly_above_exact_growth_of_local_receptive_fields():
    # Not a vacuous equality: a conv chain's ancestors cover part of each layer, and the
    # bound counts whole layers there.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 1, 3, padding=1), nn.Tanh(), nn.Conv1d(1, 1, 3, padding=1)).eval()
    x = torch.randn(1, 1, 16)
    bound, exact = _bound(net, x), _dense_growth(R.reference(net, x, incl=False).edges)
    assert bound[-1] > exact[-1] + 0.1
    np.testing.assert_allclose(bound[:3], exact[:3], rtol=1e-12)


class _DenseLayer(nn.Module):
    """DenseNet-like: new features from all current ones, concatenated (the oldest dropped)."""

    def __init__(self, width: int, growth: int) -> None:
        super().__init__()
        self.growth = growth
        self.linear = nn.Linear(width, growth)

    def forward(self, x):
        return torch.cat([x[:, self.growth:], torch.tanh(self.linear(x))], 1)


def test_deep_densenet_like_net_is_refused_before_its_ancestor_sets(monkeypatch):
    # G gains about 5 bits a layer and leaves the float64 range at layer 199 of 230, which
    # main's exact growth pass found only after building every ancestor set (20 s).
    torch.manual_seed(0)
    net = nn.Sequential(*[_DenseLayer(64, 32) for _ in range(230)]).eval()
    graph = nsp.NNGraph(nsp.Activations(net, torch.randn(1, 64)), INCL=False)

    def build(*args, **kwargs):
        raise AssertionError("the ancestor sets were built before the refusal")

    monkeypatch.setattr(AncestorSets, "__init__", build)
    with pytest.raises(nsp.StructureError, match=r"spectra of layer '199' \(200 of 230\) may exceed 1e308 .*"
                       r"before building the INCL=False ancestor sets.* Use INCL=True"):
        graph.get_transformer()
