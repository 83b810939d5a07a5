"""Operation rules (nsp.rules): the registry, user rules, and rules checked against autograd."""

import numpy as np
import pytest
import torch
from torch import nn

import nsp
import nsp.rules as rules
from test_layers import exact_dag_spectrum, reference_blocks


class Shift(nn.Module):
    """A user module nsp has no rule for: out[i] = x[i - 1] * w (out[0] = 0)."""

    def __init__(self, n):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n))

    def forward(self, x):
        return torch.nn.functional.pad(x[..., :-1], (1, 0)) * self.w


class ShiftRule(rules.Rule):
    aligned = True

    def relations(self, call):
        n = call.in_shape()[-1]
        lead = [np.eye(d, dtype=bool) for d in call.in_shape()[:-1]]
        return [rules.Term(tuple(lead) + (np.eye(n, k=-1, dtype=bool),))]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.ReLU(), Shift(6), nn.Linear(6, 3)).eval(), torch.randn(1, 5)


@pytest.mark.parametrize("incl", [True, False])
def test_user_rule_for_a_module_matches_the_reference(monkeypatch, incl):
    monkeypatch.setattr(rules, "_MODULE_RULES", dict(rules._MODULE_RULES))
    net, x = _net()
    with torch.no_grad():
        net[2].w[3] = 0.0  # a zero weight: INCL=False drops its edge, measured by autograd
    rules.register_rule(Shift, ShiftRule())
    acts = nsp.Activations(net, x, layers="leaves")
    assert acts.layernames == ["input", "0", "1", "2", "3"]  # Shift is recorded whole
    graph = nsp.NNGraph(acts, INCL=incl)
    blocks = reference_blocks(net, x, acts.layernames[1:], incl)
    assert {(l, k) for l, p in enumerate(graph.structure.parents) for k in p} == set(blocks)
    for (l, k), expected in blocks.items():
        rel = graph.structure.parents[l][k]
        np.testing.assert_array_equal(rel.dense() if incl else rel.toarray(), expected)
    exact = exact_dag_spectrum(acts.to_numpy(), blocks, [a.numel() for a in acts.layeractivations])
    np.testing.assert_allclose(graph.transform(acts).to_numpy(), exact, rtol=1e-12, atol=0)


def test_without_a_rule_the_module_is_seen_through_and_named():
    net, x = _net()
    acts = nsp.Activations(net, x, layers="leaves")
    with pytest.raises(nsp.UnsupportedModuleError, match=r"'2' \(\w+ in Shift\): no rule"):
        nsp.NNGraph(acts)


def test_register_rule_validates_its_arguments():
    with pytest.raises(TypeError, match="expected a Rule"):
        rules.register_rule(Shift, object())
    with pytest.raises(TypeError, match="must be an nn.Module subclass, a function or its name"):
        rules.register_rule(3, ShiftRule())
