"""Many concatenated branches (DenseNet, Inception): exact, and no cost exponential in the branching.

Each concatenated branch adds a product term to a relation. Inclusion–exclusion over n
terms needs 2^n − 1 of them; nsp cuts unions into disjoint products instead
(:meth:`nsp.graph.relations.Relation.disjoint`). These networks are checked against the
independent dense references: tests/support/reference.py for top-level children (autograd
Jacobians and one-hot probing), and test_structure_layers' hooked reference for every leaf.
"""

import numpy as np
import pytest
import torch
from torch import nn

import nsp
import reference as R
from nsp.graph.relations import Relation, Term
from test_structure_layers import _check_against_reference


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 2 * growth, 1), nn.BatchNorm2d(2 * growth), nn.ReLU(),
            nn.Conv2d(2 * growth, growth, 3, padding=1),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.body(torch.cat(features, 1))


class DenseBlock(nn.Module):
    """torchvision's DenseNet block: every layer reads the concatenation of all before it."""

    def __init__(self, layers: int, cin: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


def _densenet(blocks: tuple[int, ...], growth: int = 1) -> nn.Module:
    torch.manual_seed(0)
    parts: list[nn.Module] = [nn.Conv2d(2, 3, 3, padding=1)]
    channels = 3
    for i, layers in enumerate(blocks):
        parts.append(DenseBlock(layers, channels, growth))
        channels += layers * growth
        if i + 1 < len(blocks):
            parts.append(nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.AvgPool2d(2)))
    parts += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 3)]
    net = nn.Sequential(*parts)
    _randomize(net)
    return net.eval()


class Inception(nn.Module):
    """GoogLeNet's block: four branches of different reach, concatenated."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(cin, width, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(cin, width, 1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(cin, width, 1), nn.ReLU(), nn.Conv2d(width, width, 5, padding=2), nn.ReLU())
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, width, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


def _inception(blocks: int, width: int = 1) -> nn.Module:
    torch.manual_seed(1)
    parts: list[nn.Module] = [nn.Conv2d(2, 2, 3, padding=1)]
    channels = 2
    for i in range(blocks):
        parts.append(Inception(channels, width))
        channels = 4 * width
        if i == 0:
            parts.append(nn.MaxPool2d(2))
    parts += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 2)]
    return nn.Sequential(*parts).eval()


def _randomize(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)


def _check_top_level(net: nn.Module, x: torch.Tensor, incl: bool) -> nsp.NNGraph:
    ref = R.reference(net, x, incl)
    acts = nsp.Activations(net, x)
    graph = nsp.NNGraph(acts, INCL=incl)
    assert graph.number_of_edges() == ref.number_of_edges
    src, dst = graph.structure.edge_arrays()
    order = np.lexsort((dst, src))
    np.testing.assert_array_equal(np.stack([src[order], dst[order]], 1), R.edge_array(ref.edges))
    errors = R.relative_errors(graph.transform(acts).layeractivations, ref.spectrum)
    assert max(errors) <= 1e-9, dict(zip(ref.capture.names, errors))
    return graph


@pytest.mark.parametrize("incl", [True, False])
def test_densenet_style_blocks_match_reference(incl):
    # A 12-branch block, a transition, an 8-branch block: 2^13 − 1 inclusion–exclusion terms
    # for the first block's output alone.
    graph = _check_top_level(_densenet((12, 8)), torch.randn(1, 2, 6, 6), incl)
    if incl:
        # Branches whose reach is the same differ only in their channel factors and fold
        # into one product: the first block's 13 paths give one per spatial window (6 on
        # a 6×6 map), and no relation needs more disjoint pieces than it has terms.
        for layer, k, rel in graph.structure.blocks():
            assert len(rel.disjoint()) == len(rel.terms) <= 6, graph.structure.names[layer]
        plans = graph.get_transformer()._kernel.plans
        assert max(len(plan) for plan in plans) <= 11


class Prefixes(nn.Module):
    """Concatenations that repeat an earlier one's leading parts, and some that must not reuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 2, 3, padding=1)
        self.b = nn.Conv2d(4, 1, 3, padding=1)
        self.c = nn.Conv2d(5, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        ab = torch.cat([x, a], 1)
        b = self.b(ab)
        abc = torch.cat([x, a, b], dim=-3)  # the same axis, written from the end
        c = self.c(abc)
        outs = [
            torch.cat(tensors=[x, a, b, c], dim=1),  # keywords; nests abc, which nests ab
            torch.cat([x, a, b, x], 1),  # a part read twice
            torch.cat([x, a, a], 2),  # another axis: ab does not apply
            torch.cat([a, x, b], 1),  # another order
            torch.cat([x, a], 1)[:, 1:],
        ]
        return torch.cat([o.flatten(1) for o in outs], 1)


@pytest.mark.parametrize("incl", [True, False])
def test_concatenations_of_earlier_concatenations_parts_match_reference(incl, monkeypatch):
    # With INCL=True a concatenation whose leading parts an earlier one joined (a DenseNet
    # block's, each one part longer) is composed as the concatenation of that one's output
    # and the rest: every union then has at most two parts from the earlier ones.
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 4)
    net = nn.Sequential(Prefixes(), nn.Linear(Prefixes()(x).shape[1], 3)).eval()
    union, sizes = Relation.union, []

    def counted(self, *others):
        sizes.append(1 + len(others))
        return union(self, *others)

    monkeypatch.setattr(Relation, "union", counted)
    _check_top_level(net, x, incl)
    if incl:
        # Unions of the parts before the output's five: of three parts for [a, x, b]
        # alone (unnested, [x, a, b] and [x, a, b, c] gave three and four).
        assert max(sizes[:-1]) <= 3 and sizes.count(3) == 1, sizes


@pytest.mark.parametrize("incl", [True, False])
def test_inception_style_blocks_match_reference(incl):
    _check_top_level(_inception(3, width=2), torch.randn(1, 2, 8, 8), incl)


@pytest.mark.parametrize("layers", ["top", "leaves"])
def test_inception_blocks_with_branch_columns_kept_as_vectors_match_reference(layers, monkeypatch):
    # A bound of 0: every column and row that are not both all-ones stay apart, as a block
    # of 512 channels in and out keeps them (GoogLeNet's inception 4b), here at 8 channels.
    monkeypatch.setattr("nsp.graph.relations.term._PAIR_DENSE", 0)
    net, x = _inception(3, width=2), torch.randn(1, 2, 8, 8)
    if layers == "top":
        _check_top_level(net, x, True)
    else:
        _check_against_reference(net, x, "leaves", True)


def test_densenet_style_leaves_match_reference():
    # Every leaf a layer: each layer reads the concatenation of all earlier ones, so layers
    # have up to 7 parents and their ancestor relations are unions of many paths.
    net = _densenet((6, 3))
    _check_against_reference(net, torch.randn(1, 2, 4, 4), "leaves", True)


def test_inception_style_leaves_match_reference():
    _check_against_reference(_inception(2), torch.randn(1, 2, 4, 4), "leaves", True)


def test_disjoint_pieces_of_many_crossing_windows_stay_polynomial():
    # 30 "crosses" on a 2-D map, window i of radius i + 1 on rows and 30 − i on columns:
    # no term contains another, so inclusion–exclusion would need 2^30 − 1 terms.
    size, n = 32, 30
    rows = np.arange(size)

    def window(radius):
        return np.abs(rows[:, None] - rows[None, :]) <= radius

    terms = [Term((window(i + 1), window(n - i))) for i in range(n)]
    pieces = Relation(tuple(terms), size * size, size * size).disjoint()
    assert len(pieces) <= 2 * n
    total = np.zeros((size * size, size * size), np.int16)
    union = np.zeros((size * size, size * size), bool)
    for p in pieces:
        total += p.dense()
    for t in terms:
        union |= t.dense()
    np.testing.assert_array_equal(total, union)


class ShuffleUnit(nn.Module):
    """ShuffleNet v2's unit: half the channels pass through (or a strided branch), the
    other half through a depthwise branch, concatenated, then the channel shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        half = cout // 2
        self.stride = stride
        self.branch1 = nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin), nn.BatchNorm2d(cin), nn.Conv2d(cin, half, 1), nn.ReLU(),
        ) if stride > 1 else nn.Identity()
        inner = cin if stride > 1 else half
        self.branch2 = nn.Sequential(
            nn.Conv2d(inner, half, 1), nn.ReLU(), nn.Conv2d(half, half, 3, stride, 1, groups=half),
            nn.BatchNorm2d(half), nn.Conv2d(half, half, 1), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        b, c, h, w = out.shape
        return out.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


def _shufflenet() -> nn.Module:
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(3, 2, 1), ShuffleUnit(4, 8, 2), ShuffleUnit(8, 8, 1),
        ShuffleUnit(8, 8, 1), nn.Conv2d(8, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )
    _randomize(net)
    return net.eval()


@pytest.mark.parametrize("incl", [True, False])
def test_shufflenet_style_units_match_reference(incl):
    # The shuffled halves meet again in unions of terms of different factor shapes (a
    # window term and a gate-like term of columns and rows), whose contained terms are
    # found factor by factor.
    _check_top_level(_shufflenet(), torch.randn(1, 2, 8, 8), incl)


def test_shufflenet_style_leaves_match_reference():
    _check_against_reference(_shufflenet(), torch.randn(1, 2, 8, 8), "leaves", True)


def shuffle_stack() -> nn.Module:
    """A stride-2 ShuffleNet unit, then four stride-1 units: the shuffle sends a quarter, an
    eighth, ... of each earlier unit on through the identity halves, until none of a unit's
    channels reaches a later unit's branch (random weights and statistics, eval mode)."""
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), ShuffleUnit(4, 8, 2), *[ShuffleUnit(8, 8, 1) for _ in range(4)],
        nn.Conv2d(8, 3, 1),
    )
    _randomize(net)
    return net.eval()


@pytest.mark.parametrize("incl", [True, False])
def test_shufflenet_style_stacks_of_four_units_match_reference(incl):
    # Where no channel of an earlier unit reaches a later unit's branch any more, the graph
    # has no parent relation (the dense reference has no block).
    _check_against_reference(shuffle_stack(), torch.randn(1, 2, 8, 8), "leaves", incl)
