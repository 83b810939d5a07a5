"""INCL=False patterns measured by autograd (nsp.graph.rules.jacobian) against the dense reference.

Attention and LayerNorm have dense Jacobians: they are measured in batches of backward
passes, returned as their structural product where every pair is nonzero, and once
every position reaches all of an earlier layer or none of it, only the reached rows are
measured (a directional derivative, then one backward pass per row it finds zero).
Each path is checked against the reference's autograd Jacobian of the whole network,
with dead rows (zeroed weights) so that the rows it must find empty are there.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

import nsp
from nsp.graph.relations import Term
from nsp.graph.rules import Call, rule_for_module
from nsp.graph.rules.jacobian import jacobian_patterns, jacobian_reached_rows, jacobian_relations
from test_rules_modern_networks import check


class _Attention(nn.Module):
    """Self-attention without a residual, so a zero output row of ``out_proj`` stays dead."""

    def __init__(self, d, heads=2):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


class _Block(nn.Module):
    """A pre-norm transformer block, as torchvision's ViT encoder block."""

    def __init__(self, d, heads=2):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


def _net(kind, d=8, seed=0):
    torch.manual_seed(seed)
    if kind == "blocks":
        body = nn.Sequential(_Block(d), _Block(d))
    else:
        body = nn.Sequential(_Attention(d), nn.LayerNorm(d), _Attention(d))
        with torch.no_grad():
            body[2].attn.out_proj.weight[3] = 0  # output channel 3 of the last attention is constant
            body[1].weight[5] = 0  # so is channel 5 of the LayerNorm: its rows reach nothing
    net = nn.Sequential(nn.Linear(d, d), body, nn.Linear(d, 4)).eval()
    x = torch.randn(1, 3, d, generator=torch.Generator().manual_seed(seed + 1))
    return net, x


@pytest.mark.parametrize("kind", ["blocks", "dead rows"])
@pytest.mark.parametrize("layers", ["top", "leaves"])
def test_attention_networks_match_the_reference(kind, layers):
    net, x = _net(kind)
    check(net, x, None if layers == "top" else "leaves", False)


def test_dead_rows_are_found_empty():
    net, x = _net("dead rows")
    graph = nsp.NNGraph(nsp.Activations(net, x), INCL=False)
    body = graph.structure.parents[2][1].toarray().reshape(3, 8, 3 * 8)
    assert not body[:, 3].any() and body[:, [0, 1, 2, 4, 5, 6, 7]].all()


def _attention_call(net, x):
    m = net.attn
    out = m(x, x, x, need_weights=False)[0]
    return Call(m, (x, x, x), {"need_weights": False}, [x], out, "attn", "MultiheadAttention", values=True)


def test_a_jacobian_nonzero_on_every_pair_comes_back_as_its_product():
    net, x = _net("dead rows")
    attention = net[1][0]
    call = _attention_call(attention, x)
    rule = rule_for_module(attention.attn)
    (whole,) = jacobian_relations(call, rule.relations(call))
    assert isinstance(whole, Term)
    (pattern,) = jacobian_patterns(call, rule.relations(call))
    np.testing.assert_array_equal(pattern.toarray(), whole.dense())
    dead = _attention_call(net[1][2], x)
    (measured,) = jacobian_relations(dead, rule.relations(dead))
    assert sp.issparse(measured) and measured.nnz == pattern.nnz * 7 // 8


def test_reached_rows_equal_the_rows_of_the_jacobian():
    net, x = _net("dead rows")
    call = _attention_call(net[1][2], x)
    rule = rule_for_module(net[1][2].attn)
    jac = torch.autograd.functional.jacobian(lambda t: call.run(t), x).reshape(24, 24) != 0
    for marked in (np.ones(24, dtype=bool), np.arange(24) % 8 == 1, np.zeros(24, dtype=bool)):
        reached = jacobian_reached_rows(call, rule.relations(call), [marked])
        np.testing.assert_array_equal(reached, jac[:, torch.as_tensor(marked)].any(dim=1).numpy())


def _residual_cnn():
    torch.manual_seed(2)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            with torch.no_grad():
                self.conv2.weight[1, 2] = 0  # a zero weight: some rows lose part of their window

        def forward(self, x):
            return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))

    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), Block(), nn.MaxPool2d(2), Block()).eval()
    return net, torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("make", [lambda: _net("blocks"), lambda: _net("dead rows"), _residual_cnn])
def test_row_classes_of_the_structure_hold_equal_rows(make):
    net, x = make()
    structure = nsp.NNGraph(nsp.Activations(net, x), INCL=False).structure
    assert structure.row_classes is not None
    for layer, parents in enumerate(structure.parents):
        assert set(structure.row_classes[layer]) == set(parents)
        for k, e in parents.items():
            classes, dense = structure.row_classes[layer][k], e.toarray()
            for c in np.unique(classes):
                rows = dense[classes == c]
                assert (rows == rows[:1]).all(), (layer, k, c)
