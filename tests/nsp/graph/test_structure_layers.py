"""Layers chosen at any depth: edges from the recorded dataflow, against an independent reference.

The reference never looks at nsp's recording. It measures the *direct* dependence of
chosen layer L on chosen layer K with forward hooks: K's output is replaced, every
other chosen layer is frozen at its recorded value, and L is observed.

- INCL=False: autograd through that hooked pass (K's output a leaf requiring grad).
- INCL=True: a positive float64 copy (weights |w|+0.5, zero biases, BatchNorm stats
  0/1, elementwise modules → Identity), probed one position of K at a time.

The exact spectrum then comes from a dense DAG closure and integer Möbius inversion.
"""

import copy
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import chunks
import nsp
import zoo
from nsp.graph.structure import ELEMENTWISE_MODULES


def _layer_modules(net, names):
    modules = dict(net.named_modules())
    return [modules[n.split(":")[0]] for n in names]


def _hooked_outputs(net, x, chosen, replace=None, freeze=None):
    """Run net(x); record each chosen call's output; optionally replace/freeze outputs."""
    outputs, handles, calls = [], [], {}

    def hook(name):
        def fn(module, args, output):
            if not isinstance(output, torch.Tensor):
                # A module returning a tuple (nn.LSTM) gives its first output as the layer.
                first = output[0]
                if replace is not None and len(outputs) == replace[0]:
                    first = replace[1]
                outputs.append(first)
                index = len(outputs) - 1
                if freeze is not None and index in freeze:
                    first = freeze[index].expand_as(first).clone()
                calls[name] = calls.get(name, 0) + 1
                return (first,) + tuple(output[1:])
            calls[name] = calls.get(name, 0) + 1
            key = name if calls[name] == 1 else f"{name}:{calls[name] - 1}"
            index = len(outputs)
            if replace is not None and index == replace[0]:
                output = replace[1]
            outputs.append(output)
            # Later layers see the frozen value, so only direct paths carry a change.
            if freeze is not None and index in freeze:
                return freeze[index].expand_as(output).clone()
            return output

        return fn

    modules = dict(net.named_modules())
    for name in dict.fromkeys(n.split(":")[0] for n in chosen):
        handles.append(modules[name].register_forward_hook(hook(name)))
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    return outputs


def _positive_copy(net):
    net = copy.deepcopy(net).double().eval()
    for name, module in list(net.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, ELEMENTWISE_MODULES):
                setattr(module, child_name, nn.Identity())
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(p.abs() + 0.5)
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    return net


def reference_blocks(net, x, names, incl):
    """{(L, K): bool (N_L, N_K)} direct dependence of layer L on layer K (0 = input).

    INCL=False: autograd's Jacobian at the recorded pass. INCL=True: on the positive
    copy, the union of two probes, each a subset of the structure: which outputs move
    when one position is bumped from the all-zero input (every member of a max-pool
    window counts), and the Jacobian's nonzeros at a random positive input (a product of
    two input-derived values, an SE gate or attention, is zero at zero).
    """
    if not incl:
        return _jacobian_blocks(net, x, names)
    net = _positive_copy(net)
    zero = torch.zeros_like(x, dtype=torch.float64) if x.is_floating_point() else x
    blocks = _bump_blocks(net, zero, names)
    gen = torch.Generator().manual_seed(0)
    positive = torch.rand(x.shape, generator=gen, dtype=torch.float64) + 0.5 if x.is_floating_point() else x
    for key, jac in _jacobian_blocks(net, positive, names).items():
        blocks[key] = blocks[key] | jac if key in blocks else jac
    return blocks


def _bump_blocks(net, x, names):
    blocks = {}
    n = len(names)
    base = [x] + [o.detach() for o in _hooked_outputs(net, x, names)]
    for k in range(n + 1):
        if not base[k].is_floating_point():
            continue
        size_k = base[k][0].numel()
        freeze = {j - 1: base[j] for j in range(1, n + 1) if j != k}
        # One batch item per position of layer K, each bumped by one.
        bump = torch.eye(size_k, dtype=base[k].dtype).reshape((size_k,) + base[k].shape[1:])
        moved = base[k] + bump
        batch = x.expand((size_k,) + x.shape[1:])
        still = base[k].expand_as(moved).clone()
        if k == 0:
            outs = _hooked_outputs(net, moved, names, freeze=freeze)
            # Unbumped, at the same batch size: batched kernels (attention's matmuls) round
            # each batch position their own way, so outputs are compared position by position.
            same = _hooked_outputs(net, still, names, freeze=freeze)
        else:
            outs = _hooked_outputs(net, batch, names, replace=(k - 1, moved), freeze=freeze)
            same = _hooked_outputs(net, batch, names, replace=(k - 1, still), freeze=freeze)
        for l in range(k + 1, n + 1):
            changed = ((outs[l - 1] - same[l - 1]).abs().reshape(size_k, -1) > 0).T.numpy()
            if changed.any():
                blocks[(l, k)] = changed
    return blocks


def _jacobian_blocks(net, x, names):
    blocks = {}
    n = len(names)
    base = [x] + [o.detach() for o in _hooked_outputs(net, x, names)]
    for k in range(n + 1):
        if not base[k].is_floating_point():
            continue
        size_k = base[k][0].numel()
        freeze = {j - 1: base[j] for j in range(1, n + 1) if j != k}
        leaf = base[k].clone().requires_grad_(True)
        if k == 0:
            outs = _hooked_outputs(net, leaf.clone(), names, freeze=freeze)
        else:
            outs = _hooked_outputs(net, x, names, replace=(k - 1, leaf.clone()), freeze=freeze)
        for l in range(k + 1, n + 1):
            out = outs[l - 1].reshape(-1)
            if not out.requires_grad:
                continue
            jac = np.zeros((out.numel(), size_k), bool)
            for row in range(out.numel()):
                (g,) = torch.autograd.grad(out[row], leaf, retain_graph=True, allow_unused=True)
                if g is not None:
                    jac[row] = g.reshape(-1).numpy() != 0
            if jac.any():
                blocks[(l, k)] = jac
    return blocks


def exact_dag_spectrum(values, blocks, sizes):
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n = int(offsets[-1])
    # reach[x, y]: y is a strict ancestor of x. Layers come in a topological order, so a
    # node's ancestors are its parents and their ancestors, complete once x's layer is reached.
    reach = np.zeros((n, n), bool)
    for (l, k), b in sorted(blocks.items()):
        below = reach[offsets[k]:offsets[k + 1]].copy()
        below[:, offsets[k]:offsets[k + 1]] |= np.eye(sizes[k], dtype=bool)
        reach[offsets[l]:offsets[l + 1]] |= (b.astype(np.float32) @ below.astype(np.float32)) > 0
    fractions = [Fraction(float(v)) for v in values]
    scale = max(f.denominator for f in fractions)
    ints = np.array([int(f * scale) for f in fractions], dtype=object)
    spec = np.empty(n, dtype=object)
    for i in range(n):
        spec[i] = ints[i] - sum(spec[:i][reach[i, :i]], 0)
    return np.array([float(Fraction(int(v), scale)) for v in spec])


class _UNet(nn.Module):
    """A one-level U-Net: the skip is concatenated with the upsampled bottleneck."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.mid = nn.Conv2d(2, 2, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.out = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        d = F.relu(self.down(x))
        u = self.up(F.relu(self.mid(self.pool(d))))
        return self.out(torch.cat([d, u], dim=1))


def _cases():
    torch.manual_seed(0)
    tiny = zoo.cached("tiny_resnet", True)
    unet = _UNet().eval()
    return {
        "tiny_resnet-leaves": (tiny[0], tiny[1], "leaves"),
        "tiny_resnet-blocks": (tiny[0], tiny[1], ["conv1", "layer1.0", "layer2.0.conv1", "layer2.0", "fc"]),
        "unet-concat": (unet, torch.randn(1, 1, 4, 4), lambda name, m: isinstance(m, nn.Conv2d)),
        # Functional elementwise ops between chosen layers (F.relu, torch.sigmoid, F.relu(out + identity)).
        "functional_relu-leaves": (*zoo.cached("functional_relu_block", True)[:2], "leaves"),
        "functional_sigmoid-leaves": (*zoo.cached("functional_sigmoid_block", True)[:2], "leaves"),
        "functional_basicblock-leaves": (*zoo.cached("functional_basicblock", True)[:2], "leaves"),
    }


def _check_against_reference(net, x, layers, incl):
    """Edges block by block and the spectrum layer by layer; returns the exact spectrum."""
    acts = nsp.Activations(net, x, layers=layers)
    graph = nsp.NNGraph(acts, INCL=incl)
    blocks = reference_blocks(net, x, acts.layernames[1:], incl)
    got = {(l, k) for l, parents in enumerate(graph.structure.parents) for k in parents}
    assert got == set(blocks)
    for (l, k), expected in blocks.items():
        rel = graph.structure.parents[l][k]
        dense = rel.dense() if incl else rel.toarray()
        np.testing.assert_array_equal(dense, expected, err_msg=f"block {(l, k)}")
    sizes = [a.numel() for a in acts.layeractivations]
    exact = exact_dag_spectrum(acts.to_numpy(), blocks, sizes)
    spectrum = graph.transform(acts).to_numpy()
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    for l in range(len(sizes)):
        a, r = spectrum[offsets[l]:offsets[l + 1]], exact[offsets[l]:offsets[l + 1]]
        assert np.linalg.norm(a - r) <= 1e-9 * np.linalg.norm(r) or np.array_equal(a, r), acts.layernames[l]
    return acts, exact


@pytest.mark.parametrize("incl", [True, False])
@pytest.mark.parametrize("case", list(_cases()))
def test_layers_at_depth_match_reference(case, incl):
    _check_against_reference(*_cases()[case], incl)


@pytest.mark.parametrize("mode", ["sparse", "dense", "alternate"])
@pytest.mark.parametrize("case", list(_cases()))
def test_dag_ancestor_sets_in_every_representation(monkeypatch, case, mode):
    # Skips and merges give layers several parents: their ancestor sets are unions.
    chunks.force(monkeypatch, mode, 5)
    net, x, layers = _cases()[case]
    acts = nsp.Activations(net, x, layers=layers)
    blocks = reference_blocks(net, x, acts.layernames[1:], False)
    exact = exact_dag_spectrum(acts.to_numpy(), blocks, [a.numel() for a in acts.layeractivations])
    spectrum = nsp.NNGraph(acts, INCL=False).transform(acts).to_numpy()
    np.testing.assert_allclose(spectrum, exact, rtol=1e-12, atol=0)


@pytest.mark.slow
def test_resnet50_layout_with_every_leaf_matches_reference():
    # 159 layers deep: bottlenecks, downsampling skips, a ReLU module called three times
    # per block; the spectrum's limbs stream through and sums are shared across layers.
    net, x, _ = zoo.cached("resnet50_narrow", True)
    acts, exact = _check_against_reference(net, x, "leaves", True)
    assert len(acts.layernames) == 159  # the input and 158 leaf calls
    assert np.abs(exact).max() > 1e6  # deep enough for float64 forward substitution to matter


def test_unknown_layer_name_lists_the_modules():
    net, x, _ = zoo.cached("tiny_resnet", True)
    with pytest.raises(ValueError, match=r"unknown layer 'layer9' in `layers`: .* its layers are: conv1, bn1"):
        nsp.Activations(net, x, layers=["conv1", "layer9"])
    with pytest.raises(ValueError, match="chose no module"):
        nsp.Activations(net, x, layers=lambda name, m: False)
    with pytest.raises(TypeError, match="expected `layers`"):
        nsp.Activations(net, x, layers=3)


def test_layer_behind_an_unsupported_op_names_it():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 1)
            self.b = nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return self.b(torch.cumprod(self.a(x), dim=-1))

    acts = nsp.Activations(Gate(), torch.randn(1, 1, 3, 3), layers="leaves")
    with pytest.raises(nsp.UnsupportedModuleError, match=r"cumprod in Gate"):
        nsp.NNGraph(acts)


def test_default_layers_are_unchanged_by_the_new_argument():
    net, x, _ = zoo.cached("tiny_resnet", True)
    a = nsp.Activations(net, x)
    b = nsp.Activations(net, x, layers=None)
    assert a.layernames == b.layernames
    np.testing.assert_array_equal(nsp.NNGraph(a).transform(a).to_numpy(), nsp.NNGraph(b).transform(b).to_numpy())


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 2)

    def forward(self, x):
        hidden = torch.from_numpy(self.a(x).detach().numpy().copy())  # leaves torch's sight
        return self.b(hidden)


def test_dataflow_nsp_cannot_see_is_refused():
    acts = nsp.Activations(_Untraceable(), torch.randn(1, 3), layers="leaves")
    with pytest.raises(nsp.UnsupportedModuleError, match=r"\(numpy in _Untraceable\): it reads values derived from the input into Python or numpy"):
        nsp.NNGraph(acts)
    default = nsp.Activations(nn.Sequential(_Untraceable()), torch.randn(1, 3))
    with pytest.raises(nsp.UnsupportedModuleError, match=r"'0' \(numpy in _Untraceable\): it reads values"):
        nsp.NNGraph(default)


def test_vgg_style_classifier_at_depth():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Flatten(), nn.Linear(8, 4), nn.ReLU(), nn.Dropout(), nn.Linear(4, 3)),
    ).eval()
    x = torch.randn(1, 1, 4, 4)
    for incl in (True, False):
        acts = nsp.Activations(net, x, layers="leaves")
        graph = nsp.NNGraph(acts, INCL=incl)
        blocks = reference_blocks(net, x, acts.layernames[1:], incl)
        assert {(l, k) for l, p in enumerate(graph.structure.parents) for k in p} == set(blocks)
        sizes = [a.numel() for a in acts.layeractivations]
        exact = exact_dag_spectrum(acts.to_numpy(), blocks, sizes)
        np.testing.assert_allclose(graph.transform(acts).to_numpy(), exact, rtol=1e-12, atol=0)
