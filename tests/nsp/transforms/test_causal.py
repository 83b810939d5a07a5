"""The exact causal transform: correct rounding, streaming, and the operator interface (its integer
limbs are tested in test_limbs.py, its INCL=True kernel in test_product_kernel.py)."""

import logging
import os
import platform
import subprocess
import sys
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import nsp
import reference
import zoo
from nsp.transforms import ancestor_sets, causal


def _operator(name, incl=True):
    net, x, _ = zoo.cached(name, incl)
    acts = nsp.Activations(net, x)
    return nsp.NNGraph(acts, INCL=incl).get_transformer(), acts


@pytest.mark.parametrize("incl", [True, False])
def test_batch_equals_stack_of_singles(incl):
    op, _ = _operator("mnist_tutorial_net", incl)
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((3, op.n)) * np.logspace(-30, 30, op.n)
    out = op.forward(batch)
    for p in range(3):
        np.testing.assert_array_equal(out[p], op.forward(batch[p]))


@pytest.mark.parametrize("name", ["readme_net", "basicblock_downsample", "pruned_cnn"])
@pytest.mark.parametrize("incl", [True, False])
def test_inverse_is_exact_zeta(name, incl):
    _, _, ref = zoo.cached(name, incl)
    op, _ = _operator(name, incl)
    rng = np.random.default_rng(1)
    spectrum = rng.standard_normal(op.n) * 2.0 ** rng.integers(-40, 40, op.n)
    # s = ŝ + Σ over strict ancestors (the reference's own closure), in exact integers.
    scale = max(Fraction(v).denominator for v in spectrum)
    ints = np.array([int(Fraction(v) * scale) for v in spectrum], dtype=object)
    exact = [float(Fraction(int(v), scale)) for v in ints[: ref.edges[0].shape[1]]]
    for anc in reference.ancestor_matrices(ref.edges):
        start = anc.shape[1]
        for x in range(anc.shape[0]):
            total = ints[start + x] + sum(ints[: start][anc[x]], 0)
            exact.append(float(Fraction(int(total), scale)))
    np.testing.assert_array_equal(op.inverse(spectrum), np.array(exact))


def test_forward_is_correctly_rounded_on_a_tiny_net():
    net = nn.Sequential(nn.Linear(2, 1))
    acts = nsp.Activations(net, torch.tensor([[0.1, 1e-30]]))
    s = acts.to_numpy()
    spectrum = nsp.NNGraph(acts).transform(acts).to_numpy()
    exact = Fraction(s[2]) - Fraction(s[0]) - Fraction(s[1])
    assert spectrum[2] == float(exact)
    np.testing.assert_array_equal(spectrum[:2], s[:2])


def test_ancestor_memory_limit_names_the_layer(monkeypatch):
    monkeypatch.setattr(ancestor_sets, "ANCESTOR_MEMORY_LIMIT", 16)
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    acts = nsp.Activations(net, torch.randn(1, 8))
    with pytest.raises(MemoryError, match=r"MiB of ancestor sets \(nsp\.transforms\.ancestor_sets\.ANCESTOR_MEMORY_LIMIT\): .* by layer '0', 1 of 3"):
        nsp.NNGraph(acts, INCL=False).get_transformer()


def test_operator_rejects_bad_signals():
    op, _ = _operator("readme_net")
    with pytest.raises(ValueError, match=r"expected `signal` of shape"):
        op.forward(np.zeros(op.n + 1))
    for value in (np.nan, np.inf, -np.inf):
        bad = np.zeros(op.n)
        bad[-1] = value
        with pytest.raises(ValueError, match=r"1 non-finite values \(first at flat index"):
            op.forward(bad)
    # Finite values whose sum overflows are finite values.
    big = np.full((2, op.n), 1.7e308)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(op._as_batch(big, "signal")[0], big)


@pytest.mark.parametrize("incl", [True, False])
@pytest.mark.parametrize("name", ["tiny_resnet", "pruned_cnn", "wide_range_values", "subnormal_values"])
def test_rounding_groups_do_not_change_the_result(monkeypatch, name, incl):
    op, acts = _operator(name, incl)
    signal = acts.to_numpy()
    grouped = op.forward(signal), op.inverse(signal)
    monkeypatch.setattr(causal, "_ROUND_GROUP", 0)
    for want, got in zip(grouped, (op.forward(signal), op.inverse(signal))):
        np.testing.assert_array_equal(got, want)


def test_long_transforms_report_progress_to_the_nsp_logger(monkeypatch, caplog):
    from nsp.common import progress

    op, acts = _operator("tiny_resnet", False)
    with caplog.at_level(logging.INFO, logger="nsp"):
        op.forward(acts.to_numpy())
        assert not caplog.records
        monkeypatch.setattr(progress, "INTERVAL", 0.0)
        op.forward(acts.to_numpy())
        op.inverse(acts.to_numpy())
        nsp.NNGraph(acts, INCL=False).get_transformer()
    messages = [r.getMessage() for r in caplog.records]
    assert f"nsp: exact transform: layer 2 of {len(acts.layernames)} ('{acts.layernames[1]}') done after" in messages[1]
    assert any(m.startswith("nsp: exact inverse transform: layer") for m in messages)
    assert any(m.startswith("nsp: INCL=False ancestor sets: layer") for m in messages)
    assert any(m.startswith("nsp: INCL=False graph: layer") for m in messages)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="page faults of glibc's malloc")
def test_repeated_transforms_reuse_their_memory_instead_of_faulting_it_in_again():
    # glibc returns a heap top of more than twice its mmap threshold (128 KiB at first) to
    # the kernel: each transform then faulted its few MiB of limbs back in, one zeroed page
    # at a time (1,300 faults, a third of ResNet-18's transform). Measured in a fresh
    # process, where nothing has raised the threshold yet.
    code = (
        "import resource, numpy as np, torch, nsp\n"
        "torch.manual_seed(0)\n"
        "net = torch.nn.Sequential(*[torch.nn.Conv2d(32 if i else 3, 32, 3, padding=1) for i in range(6)]).eval()\n"
        "acts = nsp.Activations(net, torch.randn(1, 3, 32, 32))\n"
        "op, signal = nsp.NNGraph(acts).get_transformer(), acts.to_numpy()\n"
        "op.forward(signal)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5):\n"
        "    op.forward(signal)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)\n"
    )
    faults = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout)
    assert faults < 50, f"{faults} page faults per transform"


def test_layers_rounded_as_one_group_around_copies_land_in_their_own_columns(monkeypatch):
    # Each ReLU's spectrum is its signal less its parent's, converted on its own; the
    # convolutions between them (equal limb counts) are rounded as one group with gaps,
    # through a temporary. Exact against forward substitution in integers.
    from test_product_kernel import _exact_forward

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3),
    ).eval()
    x = torch.randn(1, 2, 4, 4)
    ref = reference.reference(net, x, True)
    acts = nsp.Activations(net, x)
    op = nsp.NNGraph(acts).get_transformer()
    groups = []
    real = causal.CausalTransform._round
    monkeypatch.setattr(causal.CausalTransform, "_round",
                        lambda self, layers, *args: (groups.append(list(layers)), real(self, layers, *args))[1])
    signal = acts.to_numpy()
    np.testing.assert_array_equal(op.forward(signal), _exact_forward(ref, signal))
    assert any(g[-1] - g[0] >= len(g) for g in groups), groups
    # Float64 values over 2^±40 take the general path, where copies are limbs like any layer.
    rng = np.random.default_rng(5)
    signal = rng.standard_normal(op.n) * 2.0 ** rng.integers(-40, 40, op.n)
    np.testing.assert_array_equal(op.forward(signal), _exact_forward(ref, signal))


@given(st.lists(st.integers(0, 40), max_size=12), st.integers(1, 50))
def test_scale_spans_cover_the_layers_in_order_and_group_only_small_ones(sizes, limit):
    # The scale is read from these slices of the signals: together they are every column,
    # each on layer boundaries, and only a single layer is wider than the limit.
    spans = causal._spans(sizes, limit)
    bounds = [int(v) for v in np.cumsum([0] + sizes)]
    assert spans[0][0] == 0 and spans[-1][1] == bounds[-1]
    assert all(z == a for (_, z), (a, _) in zip(spans, spans[1:]))
    for a, z in spans:
        assert a in bounds and z in bounds
        inside = [n for n, lo, hi in zip(sizes, bounds, bounds[1:]) if a <= lo and hi <= z]
        assert z - a <= limit or max(inside) == z - a
    # Not one span per layer: consecutive layers that fit the limit together share one.
    assert len(spans) <= max(1, sum(1 for n in sizes if n))
    if sizes and sum(sizes) <= limit:
        assert spans == [(0, sum(sizes))]


def test_copies_are_rounded_by_one_subtraction_unless_it_could_overflow(monkeypatch):
    # A copy's spectrum s − s_y is rounded by IEEE subtraction itself, never through limbs;
    # its limbs still feed the later layers. Exact against forward substitution in
    # integers for values over 2^±40 (the general path); a difference past the float64
    # range is refused as for any layer.
    from test_product_kernel import _exact_forward, copies_net

    net, x = copies_net()
    ref = reference.reference(net, x, True)
    op = nsp.NNGraph(nsp.Activations(net, x)).get_transformer()
    copies = {i for i, q in enumerate(op._kernel.copy_of) if q is not None}
    rounded = []
    real = causal.CausalTransform._round
    monkeypatch.setattr(causal.CausalTransform, "_round",
                        lambda self, layers, *args: (rounded.extend(layers), real(self, layers, *args))[1])
    rng = np.random.default_rng(7)
    signal = rng.standard_normal(op.n) * 2.0 ** rng.integers(-40, 40, op.n)
    np.testing.assert_array_equal(op.forward(signal), _exact_forward(ref, signal))
    assert copies and rounded and not copies & set(rounded)
    # The first copy's first node and its parent node (the first node of the layer before).
    signal[op.structure.offsets[[min(copies) - 1, min(copies)]]] = -1.5e308, 1.5e308
    with pytest.raises(nsp.graph.relations.StructureError, match="float64 range"):
        op.forward(signal)


class _Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 3, 1)
        self.rest = nn.Sequential(nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 2, 3, padding=1), nn.ReLU())

    def forward(self, x):
        return self.rest(torch.cat([self.a(x), self.b(x)], dim=1))


def test_signals_cut_into_limbs_once_feed_the_copies_and_gathers_that_read_them(monkeypatch):
    # With values wider than 62 bits (cut into limbs in float64), a copy's or gather's parent
    # signals are read from the limbs cut at the parents' turn: a concatenation's BatchNorm
    # gathers from two layers, its ReLU copies the BatchNorm. Exact against forward
    # substitution in integers.
    from test_structure_layers import exact_dag_spectrum, reference_blocks

    torch.manual_seed(0)
    net = _Cat().eval()
    x = torch.randn(1, 2, 4, 4)
    acts = nsp.Activations(net, x, layers="leaves")
    op = nsp.NNGraph(acts).get_transformer()
    blocks = reference_blocks(net, x, acts.layernames[1:], True)
    sizes = [a.numel() for a in acts.layeractivations]
    read = []
    real = causal.CausalTransform._parent_limbs
    monkeypatch.setattr(causal.CausalTransform, "_parent_limbs",
                        lambda self, layer, *args: (read.append(len(self._sources[layer])), real(self, layer, *args))[1])
    rng = np.random.default_rng(9)
    signal = rng.standard_normal(op.n) * 2.0 ** rng.integers(-40, 40, op.n)
    np.testing.assert_array_equal(op.forward(signal), exact_dag_spectrum(signal, blocks, sizes))
    assert 2 in read and 1 in read, read
