"""nsp.transforms.product_kernel: the INCL=True kernel of the exact causal transform, its plan
(copies, full relations, shared relations and sums, when each layer's limbs can go) and its
exactness against the reference."""

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
from nsp.transforms.limbs import small_scale
from nsp.graph.relations import Relation, Term, ones_factor
from nsp.transforms.concatenations import MaskGroups, rows_reached
from nsp.transforms.product_kernel import ProductKernel
from nsp.transforms.product_ops import apply_ops, compile_term
from test_relations_branching import _densenet, _inception
from test_structure_layers import _check_against_reference, exact_dag_spectrum, reference_blocks


def _kernel(net, x, layers=None):
    acts = nsp.Activations(net, x) if layers is None else nsp.Activations(net, x, layers=layers)
    return ProductKernel(nsp.NNGraph(acts, INCL=True).structure)


def test_layers_are_freed_after_their_last_direct_read():
    # input → conv → relu → conv → relu → conv: a convolution sums all channels of
    # everything below it, so a layer's limbs are needed up to the first convolution that
    # sums them; the channel sums serve the later layers.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3)).eval()
    assert _kernel(net, torch.randn(1, 2, 9, 9)).last_read == [1, 3, 3, 5, 5, 5]


def test_sums_are_shared_across_relations_that_cut_a_layer_differently():
    # Deep layers of a ResNet read early layers only through channel and full sums, which
    # their relations express over different axes; with the sums shared, every layer's
    # limbs are freed within its own block instead of lasting to the classifier.
    net, x, _ = zoo.cached("tiny_resnet", True)
    last_read = _kernel(net, x, layers="leaves").last_read
    assert len(last_read) == 21
    assert max(last - k for k, last in enumerate(last_read)) <= 8


def _exact_inverse(ref, spectrum):
    """s = ŝ + Σ over strict ancestors (the reference's own closure), in exact integers."""
    scale = max(Fraction(v).denominator for v in spectrum)
    ints = np.array([int(Fraction(v) * scale) for v in spectrum], dtype=object)
    exact = [float(Fraction(int(v), scale)) for v in ints[: ref.edges[0].shape[1]]]
    for anc in reference.ancestor_matrices(ref.edges):
        start = anc.shape[1]
        for x in range(anc.shape[0]):
            exact.append(float(Fraction(int(ints[start + x] + sum(ints[:start][anc[x]], 0)), scale)))
    return np.array(exact)


def test_product_kernel_shortcuts_are_exact():
    # BatchNorm and ReLU are copies of their parent; the later layers reach every node of
    # the early ones (full relations, read from prefix sums); the two convolutions of a
    # stage share their relation to it through the copies. Forward and inverse against the
    # reference, on values spread over 2^±40.
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3),
        nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 5),
    ).eval()
    x = torch.randn(1, 2, 6, 6)
    ref = reference.reference(net, x, True)
    acts = nsp.Activations(net, x)
    op = nsp.NNGraph(acts, INCL=True).get_transformer()
    kernel = ProductKernel(nsp.NNGraph(acts, INCL=True).structure)
    assert [i for i, q in enumerate(kernel.copy_of) if q is not None] == [2, 3, 5, 6, 9, 10]
    assert kernel.full[-1].tolist() == list(range(11)) and kernel.plans[-1] == []
    assert any(len(group) > 1 for plan in kernel.plans for group, _ in plan)
    errors = reference.relative_errors(nsp.NNGraph(acts, INCL=True).transform(acts).layeractivations, ref.spectrum)
    assert max(errors) <= 1e-9
    rng = np.random.default_rng(2)
    spectrum = rng.standard_normal(op.n) * 2.0 ** rng.integers(-40, 40, op.n)
    np.testing.assert_array_equal(op.inverse(spectrum), _exact_inverse(ref, spectrum))


def _exact_forward(ref, signal):
    """ŝ = s − Σ over strict ancestors of ŝ, by forward substitution in exact integers."""
    scale = max(Fraction(v).denominator for v in signal)
    ints = [int(Fraction(v) * scale) for v in signal]
    start = ref.edges[0].shape[1]
    spectrum = ints[:start]
    for anc in reference.ancestor_matrices(ref.edges):
        for x in range(anc.shape[0]):
            spectrum.append(ints[start + x] - sum(spectrum[k] for k in np.flatnonzero(anc[x])))
        start += anc.shape[0]
    return np.array([float(Fraction(v, scale)) for v in spectrum])


def copies_net() -> tuple[nn.Module, torch.Tensor]:
    """Convolutions and a linear layer between copies (BatchNorm, ReLUs, Flatten), and an input."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(3 * 4 * 4, 4), nn.ReLU(),
    ).eval()
    return net, torch.randn(1, 2, 4, 4)


def test_forward_of_copies_is_the_signal_less_the_parent_signal():
    # The forward transform takes a copy's spectrum (BatchNorm, ReLU) as its signal less its
    # parent's, in int64 where both fit and in limbs otherwise. Exact against forward
    # substitution, for the probe's own float32 values, float32 values whose scaled
    # integers take 62 bits (the difference would not fit: limbs), and float64 values over
    # 2^±40 (the general path).
    net, x = copies_net()
    ref = reference.reference(net, x, True)
    acts = nsp.Activations(net, x)
    op = nsp.NNGraph(acts, INCL=True).get_transformer()
    # BatchNorm, the ReLUs and the Flatten.
    assert [i for i, q in enumerate(_kernel(net, x).copy_of) if q is not None] == [2, 3, 5, 6, 8]
    rng = np.random.default_rng(3)
    magnitudes = rng.uniform(1, 2, op.n) * 2.0 ** rng.integers(-14, 21, op.n) * rng.choice([-1, 1], op.n)
    wide32 = magnitudes.astype(np.float32).astype(np.float64)
    wide32[:2] = [2.0 ** -14, -1.5 * 2.0 ** 23]
    assert small_scale([wide32[None]], op.limb_bits)[1] == 62
    wide64 = rng.standard_normal(op.n) * 2.0 ** rng.integers(-40, 40, op.n)
    for signal in (acts.to_numpy(), wide32, wide64):
        np.testing.assert_array_equal(op.forward(signal), _exact_forward(ref, signal))



@pytest.mark.parametrize("values", ["float32", "float64"])
def test_spectra_that_outgrow_their_first_limbs_stay_exact(values):
    # A layer's limbs are as many as the widest layer it reads (or its own values'), and a
    # sum that outgrows them gets more after the carry pass (limbs.fit). Down a chain of
    # 8-wide linear layers the spectra grow about 7× a layer, from 1 limb to 4 of 32 bits
    # (2^100, while the signal has at most 62 bits): every few layers the sum needs a limb
    # that none of its inputs had. Forward and inverse against exact integers.
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Linear(8, 8) for _ in range(36)]).eval()
    x = torch.randn(1, 8)
    ref = reference.reference(net, x, True)
    op = nsp.NNGraph(nsp.Activations(net, x), INCL=True).get_transformer()
    rng = np.random.default_rng(4)
    signal = rng.integers(-(1 << 20), 1 << 20, op.n).astype(np.float64)
    if values == "float64":
        signal *= 2.0 ** rng.integers(-20, 20, op.n)
    spectrum = op.forward(signal)
    np.testing.assert_array_equal(spectrum, _exact_forward(ref, signal))
    assert np.abs(spectrum).max() / np.abs(signal[signal != 0]).min() > 2.0 ** 100
    np.testing.assert_array_equal(op.inverse(spectrum), _exact_inverse(ref, spectrum))


def test_terms_shrink_axes_before_growing_others():
    # ConvNeXt's channels-last permutes relate a layer to earlier ones through terms whose
    # axes grow on one side (1 → 8) and shrink on the other (8 → 1); applied in axis order,
    # the grown intermediates went through every cumulative sum (ConvNeXt-T's transform
    # took 10 s instead of 0.4 s). The plan orders the per-axis operations by growth.
    grow = np.repeat(np.eye(2, dtype=bool), 4, axis=0)  # 2 → 8, intervals
    shrink = grow.T.copy()  # 8 → 2
    dense = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=bool)  # 3 → 3, not intervals
    _, _, (ones, rest), _ = compile_term(Term((grow, dense, shrink)))
    assert ones == ()
    assert [(axis, kind) for axis, kind, _ in rest] == [(2, "intervals"), (1, "dense"), (0, "intervals")]
    x = np.arange(2 * 3 * 8).reshape(1, 2, 3, 8)
    want = np.einsum("ai,bj,ck,pijk->pabc", grow.astype(int), dense.astype(int), shrink.astype(int), x)
    np.testing.assert_array_equal(apply_ops(x, rest), want)


def test_factors_equal_in_content_are_compiled_once(monkeypatch):
    # A plan's disjoint pieces are new arrays of a few contents: the memo knows a factor by
    # its content too, so an equal copy reuses the operation, and an array with the same
    # bytes in another shape does not.
    import nsp.transforms.product_ops as ops

    a = np.array([[1, 0, 1], [0, 1, 1]], dtype=bool)  # dense
    b = a.reshape(3, 2).copy()  # the same bytes: intervals
    calls = []
    monkeypatch.setattr(ops, "factor_op", lambda f, op=ops.factor_op: calls.append(f) or op(f))
    memo: dict = {}
    for factors in [(a,), (a.copy(),), (b,), (a.copy(), b.copy()), (b, a)]:
        term = Term(factors)
        in_dims, out_dims, (summed, rest), _ = compile_term(term, memo)
        assert summed == ()
        x = np.arange(term.n_in).reshape(1, *in_dims)
        want = (term.dense().astype(int) @ x.reshape(-1)).reshape(1, *out_dims)
        np.testing.assert_array_equal(apply_ops(x, rest), want)
    assert len(calls) == 2


def test_rows_reached_are_the_rows_of_the_dense_relation_with_a_pair():
    # The masks' covers, read factor by factor: unions of terms over the same axes with
    # random, all-ones, empty and 1 × 1 factors against the dense relation's nonempty rows.
    rng = np.random.default_rng(3)
    shapes = [(1, 1), (3, 2), (1, 4), (2, 2)]
    for _ in range(50):
        terms = []
        for _ in range(int(rng.integers(1, 4))):
            factors = []
            for p, q in shapes:
                kind = rng.integers(4)
                f = ones_factor(p, q) if kind == 0 else np.zeros((p, q), bool) if kind == 1 and rng.random() < 0.3 \
                    else rng.random((p, q)) < 0.4
                factors.append(f)
            terms.append(Term(tuple(factors)))
        rel = Relation(tuple(terms), 3 * 2, 2 * 4 * 2)
        got = rows_reached(rel)
        assert (got.n_out, got.n_in) == (rel.n_out, 1)
        np.testing.assert_array_equal(got.dense()[:, 0], rel.dense().any(axis=1))


def test_equal_relations_are_composed_once_per_distance(monkeypatch):
    # Eight 3×3 convolutions of one shape on a 10×10 map, none full below another: layer
    # i reaches layer j through a window of i − j, whoever i is. The structure writes
    # each layer's relation anew; read as one object per content, the plan composes each
    # distance once (7), not each pair (28). The exact spectrum against the reference.
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Conv2d(2, 2, 3, padding=1) for _ in range(8)]).eval()
    acts, _ = _check_against_reference(net, torch.randn(1, 2, 10, 10), None, True)
    structure = nsp.NNGraph(acts, INCL=True).structure
    composed = []
    compose = Relation.compose
    monkeypatch.setattr(Relation, "compose", lambda self, inner: composed.append(1) or compose(self, inner))
    ProductKernel(structure)
    assert len(composed) == 7


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_concatenations_are_gathers_and_masks_exactly(monkeypatch, seed):
    # DenseNet-like networks of random block counts, depths, growth rates and map sizes,
    # every leaf a layer: each dense layer's BatchNorm reads the concatenation of all earlier
    # outputs, so every node has one parent node (a gather: no relation applied), and the
    # layers full below some of the concatenated parts are carried as masks (some nodes of
    # L above all of K) until the next convolution makes them full. Forward against the
    # DAG's exact spectrum (hooked reference, Fractions); the inverse against the forward.
    rng = np.random.default_rng(seed)
    blocks = tuple(int(b) for b in rng.integers(2, 6, size=int(rng.integers(1, 4))))
    net = _densenet(blocks, growth=int(rng.integers(1, 3)))
    side = int(rng.choice([4, 6]))
    x = torch.randn(1, 2, side, side)
    acts, _ = _check_against_reference(net, x, "leaves", True)
    graph = nsp.NNGraph(acts, INCL=True)
    columns = []
    column_groups = MaskGroups._column_groups
    monkeypatch.setattr(MaskGroups, "_column_groups", lambda self, *a: columns.append(a) or column_groups(self, *a))
    kernel = ProductKernel(graph.structure)
    # The BatchNorm of every concatenation of two or more parts: in each dense layer but a
    # block's first (which reads its block's input alone, a copy) and in each transition;
    # the last concatenation's average pool too, on a 1×1 map. The masks of every gather
    # of several parts are columns over the channels.
    last_side = side >> (len(blocks) - 1)
    assert sum(g is not None for g in kernel.gathers) == sum(blocks) - 1 + (last_side == 1)
    assert len(columns) == sum(g is not None and len(g) > 1 for g in kernel.gathers) >= sum(blocks) - 1
    _check_inverse(graph)


def _check_inverse(graph):
    # Integer spectra have integer signals, exact in float64: the forward transform, checked
    # against the reference, must give them back bit for bit.
    op = graph.get_transformer()
    spectrum = np.random.default_rng(4).integers(-1000, 1000, op.n).astype(np.float64)
    np.testing.assert_array_equal(op.forward(op.inverse(spectrum)), spectrum)


@pytest.mark.parametrize("width", [1, 2])
def test_masks_of_concatenated_parts_are_summed_exactly(width):
    # A max-pool after an Inception block's concatenation mixes no channels: a layer full
    # below one branch is below that branch's channels of the pool entirely and below no
    # other channel, a mask that the plan applies as the layer's total spread over it.
    acts, _ = _check_against_reference(_inception(2, width), torch.randn(1, 2, 4, 4), "leaves", True)
    graph = nsp.NNGraph(acts, INCL=True)
    masked = ProductKernel(graph.structure).masked
    assert any(masked)
    _check_inverse(graph)


@pytest.mark.parametrize("layers", [None, "leaves"])
def test_inception_branches_are_disjoint_pieces_exactly(monkeypatch, layers):
    # GoogLeNet-like: each branch of a concatenation owns its channel range, so a relation
    # through an Inception block is a union of terms that share no pair, which the plan
    # applies as they are (no class table). The exact spectrum against the hooked reference.
    from nsp.graph.relations import union

    found = []
    pairwise_disjoint = union._pairwise_disjoint

    def spy(terms):
        found.append(pairwise_disjoint(terms))
        return found[-1]

    monkeypatch.setattr(union, "_pairwise_disjoint", spy)
    acts, _ = _check_against_reference(_inception(2, 2), torch.randn(1, 2, 6, 6), layers, True)
    assert any(found)
    _check_inverse(nsp.NNGraph(acts, INCL=True))


def test_relations_equal_in_content_are_composed_and_compiled_once():
    # Five identical conv → ReLU stages: a layer's relation to the stage j below it is the
    # same stencil power at every depth, composed from different parent objects. Interned
    # by content (the single parents, then the compositions), each is composed and compiled
    # once and the plans share it; the spectrum stays exact.
    torch.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(5) for m in (nn.Conv2d(2, 2, 3, padding=1), nn.ReLU())]).eval()
    x = torch.randn(1, 2, 16, 16)
    plans = [dict(plan) for plan in _kernel(net, x).plans]
    assert plans[5][(3, 4)] is plans[7][(5, 6)] is plans[9][(7, 8)]
    assert plans[7][(3, 4)] is plans[9][(5, 6)]
    assert plans[3][(0,)] is plans[5][(1, 2)]
    _check_against_reference(net, x, None, True)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(2, 2, 3, padding=1), nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x)) + x


def test_unions_equal_in_content_are_interned_across_residual_units():
    # Identical residual units: a layer's relation to a unit below it is a union of
    # compositions through the skip and through the convolution, made anew at every depth.
    # Interned by content, the unions of equal content are one object, compiled once.
    torch.manual_seed(0)
    net = nn.Sequential(*[_Residual() for _ in range(5)]).eval()
    x = torch.randn(1, 2, 16, 16)
    plans = [dict(plan) for plan in _kernel(net, x, layers="leaves").plans]
    assert plans[5][(1, 2)] is plans[7][(3, 4)] is plans[9][(5, 6)]
    _check_against_reference(net, x, "leaves", True)


def test_empty_parent_relations_are_not_composed(monkeypatch):
    # Four stride-1 ShuffleNet units: the identity halves reach the next concatenation
    # through no layer, so a unit's first convolution has a parent layer per earlier unit,
    # and the shuffle leaves some of those relations empty (no channel of that layer
    # reaches it any more). The graph drops such a parent: nothing is composed through it,
    # and the spectrum stays exact against the dense reference.
    from test_relations_branching import shuffle_stack

    net = shuffle_stack()
    x = torch.randn(1, 2, 8, 8)
    acts = nsp.Activations(net, x, layers="leaves")
    graph = nsp.NNGraph(acts, INCL=True)
    parents = graph.structure.parents
    assert all(rel.dense().any() for ps in parents for rel in ps.values()) and max(len(ps) for ps in parents) >= 4
    composed = []
    compose = Relation.compose
    monkeypatch.setattr(Relation, "compose", lambda self, inner: composed.append(compose(self, inner)) or composed[-1])
    ProductKernel(graph.structure)
    assert composed and not any(all(t.is_empty() for t in rel.terms) for rel in composed)
    monkeypatch.undo()
    blocks = reference_blocks(net, x, acts.layernames[1:], True)
    assert {(l, k) for l, ps in enumerate(parents) for k in ps} == set(blocks)
    sizes = [a.numel() for a in acts.layeractivations]
    exact = exact_dag_spectrum(acts.to_numpy(), blocks, sizes)
    spectrum = graph.transform(acts).to_numpy()
    assert np.linalg.norm(spectrum - exact) <= 1e-9 * np.linalg.norm(exact)


def test_limb_arrays_of_different_counts_sum_without_touching_their_inputs():
    # The kernel sums a group's layers, their axis sums and runs of prefix sums whose limb
    # counts differ; the sum is a new array (or the one input itself) and the inputs stay.
    from nsp.transforms.product_kernel import _sum_limbs

    rng = np.random.default_rng(0)
    parts = [rng.integers(-50, 50, (k, 2, 3)) for k in (2, 3, 1, 3)]
    kept = [p.copy() for p in parts]
    value = lambda x: sum(x[j].astype(object) * 2 ** (8 * j) for j in range(x.shape[0]))  # noqa: E731
    got = _sum_limbs(parts)
    assert got.shape == (3, 2, 3) and all(got is not p for p in parts)
    np.testing.assert_array_equal(value(got), sum(value(p) for p in parts))
    assert all(np.array_equal(p, k) for p, k in zip(parts, kept))
    assert _sum_limbs(parts[:1]) is parts[0]
    np.testing.assert_array_equal(value(_sum_limbs(parts[:2])), value(parts[0]) + value(parts[1]))


@given(st.sets(st.integers(0, 40), max_size=30))
def test_runs_are_the_maximal_runs_of_consecutive_layers(layers):
    # The kernel reads full layers and masks as runs of prefix sums: a run split or merged
    # wrongly sums a layer twice or not at all.
    from nsp.transforms.product_kernel import _runs

    runs = _runs(np.array(sorted(layers), dtype=np.int64))
    assert [k for a, b in runs for k in range(a, b)] == sorted(layers)
    assert all(b < c for (_, b), (c, _) in zip(runs, runs[1:]))
    assert all(isinstance(k, int) for run in runs for k in run)


@given(st.one_of(st.just(-np.inf), st.floats(-60, 60)), st.one_of(st.just(-np.inf), st.floats(-60, 60)))
def test_log2_add_is_numpys_logaddexp2(a, b):
    # The growth bound sizes the limbs: it is numpy's logaddexp2 pair by pair in Python floats.
    from nsp.transforms.product_kernel import _log2_add

    got = _log2_add(a, b)
    assert isinstance(got, float) and got == pytest.approx(float(np.logaddexp2(a, b)), rel=1e-12, abs=1e-12)
