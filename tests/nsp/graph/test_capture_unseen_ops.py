"""Reliability (issue 10, problems 1 and 2): no wrong graph from operations the recorder cannot see.

Part of the reliability suite (``pytest -m reliability``). The reference is a perturbation
check of our own: output ``i`` depends on input ``j`` when changing input ``j`` alone
changes output ``i``. It sees Python scalars and numpy round trips, which autograd does not.
"""

import numpy as np
import pytest
import torch
from torch import nn

import nsp
from nsp.graph import rules

pytestmark = pytest.mark.reliability


class SetItem(nn.Module):
    def forward(self, x):
        y = x.clone()
        y[:, :, 0] = y[:, :, 5]
        return y


class SliceIadd(nn.Module):
    def forward(self, x):
        y = x.clone()
        y[:, :, 0] += y[:, :, 5]
        return y


class NumpyRoundTrip(nn.Module):
    def forward(self, x):
        return torch.from_numpy(x.numpy()[:, :, ::-1].copy()) + x


class PythonScalar(nn.Module):
    def forward(self, x):
        return x * float(x[0, 0, 5])


class Untracked(nn.Module):
    def forward(self, x):
        z = torch.zeros_like(x)
        z[:, 0] = x[:, 1]
        return z + x


class UntrackedNewZeros(nn.Module):
    def forward(self, x):
        z = x.new_zeros(x.shape)
        z[:, 0] = x[:, 1]
        return z + x


class ConstantMask(nn.Module):
    """Swin's shifted-window mask: item assignment into x.new_zeros, a constant of the input."""

    def forward(self, x):
        mask = x.new_zeros(x.shape[1:])
        mask[:, :3] = 1.0
        mask[1, 5] += 2.0
        return x * torch.ones_like(x) + mask


class WholeTensorInPlace(nn.Module):
    """In-place operations on whole tensors are recorded like any others."""

    def forward(self, x):
        y = x.clone()
        y.add_(1)
        y += x * 2
        return torch.relu_(y)


class Detached(nn.Module):
    def forward(self, x):
        return torch.relu(x.detach()) * 2


def _net(block):
    return nn.Sequential(nn.Unflatten(1, (2, 8)), block).double()


def _dependence(module, x):
    """Perturbation reference: (n_out, n_in) boolean, True where output i changes with input j."""
    with torch.no_grad():
        base = module(x.clone()).reshape(-1)
        out = np.zeros((base.numel(), x.numel()), dtype=bool)
        for j in range(x.numel()):
            moved = x.clone().reshape(-1)
            moved[j] += 0.75
            out[:, j] = (module(moved.reshape(x.shape)).reshape(-1) != base).numpy()
    return out


def _block_edges(graph, layer):
    s = graph.structure
    src, dst = s.edge_arrays()
    keep = (dst >= s.offsets[layer]) & (dst < s.offsets[layer + 1])
    out = np.zeros((int(s.sizes[layer]), int(s.sizes[layer - 1])), dtype=bool)
    out[dst[keep] - s.offsets[layer], src[keep] - s.offsets[layer - 1]] = True
    return out


@pytest.mark.parametrize(
    "block, op",
    [(SetItem, "__setitem__"), (SliceIadd, "add_"), (NumpyRoundTrip, "numpy"), (PythonScalar, "__float__"),
     (Untracked, "__setitem__"), (UntrackedNewZeros, "__setitem__")],
)
@pytest.mark.parametrize("incl", [True, False])
def test_unseen_dataflow_is_refused_by_name_never_a_wrong_graph(block, op, incl):
    net = _net(block())
    x = torch.randn(1, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    acts = nsp.Activations(net, x)  # recording still works: only the graph is refused
    hidden = net[0](x)
    truth = _dependence(net[1], hidden)
    try:
        graph = nsp.NNGraph(acts, INCL=incl)
    except nsp.UnsupportedModuleError as err:
        assert f"'1' ({op} in {block.__name__})" in str(err)
        return
    # Before the fix: accepted, with every one of these blocks taken as elementwise.
    edges = _block_edges(graph, 2)
    missing = truth & ~edges
    pytest.fail(f"a wrong graph: {int(missing.sum())} dependences missing")


def test_the_recorded_dataflow_refuses_too():
    net = _net(SetItem())
    acts = nsp.Activations(net, torch.randn(1, 16, dtype=torch.float64), layers="leaves")
    with pytest.raises(nsp.UnsupportedModuleError, match=r"__setitem__ in SetItem"):
        nsp.NNGraph(acts)


@pytest.mark.parametrize("incl", [True, False])
def test_whole_tensor_in_place_ops_give_the_exact_dependence(incl):
    net = _net(WholeTensorInPlace())
    x = torch.randn(1, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    graph = nsp.NNGraph(nsp.Activations(net, x), INCL=incl)
    truth = _dependence(net[1], net[0](x))
    edges = _block_edges(graph, 2)
    if incl:
        assert not (truth & ~edges).any()
    else:
        # INCL=False keeps the Jacobian's nonzeros at this input (a dead unit has none).
        jacobian = torch.autograd.functional.jacobian(net[1], net[0](x)).reshape(16, 16) != 0
        np.testing.assert_array_equal(edges, jacobian.numpy())


@pytest.mark.parametrize("incl", [True, False])
def test_writes_into_a_constant_of_the_input_are_allowed(incl):
    net = _net(ConstantMask())
    x = torch.randn(1, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    graph = nsp.NNGraph(nsp.Activations(net, x), INCL=incl)
    # Before: refused as __setitem__; the mask is a constant, so the block is the identity.
    np.testing.assert_array_equal(_block_edges(graph, 2), _dependence(net[1], net[0](x)))
    np.testing.assert_array_equal(_block_edges(graph, 2), np.eye(16, dtype=bool))


# -- 2: .detach() inside a child ---------------------------------------------------------
def test_detach_is_the_identity_in_both_modes_and_in_fingerprints():
    net = _net(Detached())
    x = torch.randn(1, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    acts = nsp.Activations(net, x)
    truth = _dependence(net[1], net[0](x))
    strict = nsp.NNGraph(acts, INCL=False)  # before: autograd's "element 0 of tensors does not require grad"
    # INCL=False: the Jacobian of relu(x) * 2 with detach as the identity, a live unit's diagonal.
    np.testing.assert_array_equal(_block_edges(strict, 2), np.diag(net[0](x).reshape(-1).numpy() > 0))
    assert not (truth & ~_block_edges(nsp.NNGraph(acts), 2)).any()
    assert nsp.fingerprint(acts) == nsp.fingerprint(nsp.Activations(net, x))
    strict.transform(acts)


def test_a_module_autograd_cannot_differentiate_is_refused_by_name():
    class Frozen(nn.Module):
        def forward(self, x):
            with torch.no_grad():
                return x @ torch.ones(4, 3, dtype=x.dtype)

    class Dense(rules.Rule):
        def relations(self, call):
            return [rules.Term((np.ones((3, 4), dtype=bool),))]

    net = nn.Sequential(nn.Linear(4, 4), Frozen())
    with rules.using({Frozen: Dense()}):
        acts = nsp.Activations(net, torch.randn(1, 4))
        # Before: an empty Jacobian pattern, so a graph without the block's 12 edges.
        with pytest.raises(nsp.UnsupportedModuleError, match=r"'1' \(Frozen\).*output does not require grad"):
            nsp.NNGraph(acts, INCL=False)
        assert nsp.NNGraph(acts).number_of_edges() == 16 + 12
