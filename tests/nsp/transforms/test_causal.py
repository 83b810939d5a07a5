"""The exact causal transform: integer limbs, rounding, and the operator interface."""

import logging
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nsp
import reference
import zoo
from nsp.transforms import ancestor_sets, causal
from nsp.transforms.causal import _decompose, _from_limbs, _general_scale, _normalize, _to_limbs

floats = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True, width=64)


@settings(max_examples=200, deadline=None)
@given(st.lists(floats, min_size=1, max_size=12), st.sampled_from([8, 16, 31, 32]))
def test_limbs_hold_floats_exactly_and_round_back(values, b):
    x = np.array([values])
    # Split into two "layers": the scale is common to all of them.
    emin, bits = _general_scale([x[:, : len(values) // 2], x[:, len(values) // 2:]])
    m, e, neg = _decompose(x)
    k = -(-(bits + 2) // b) + 1
    limbs = _to_limbs(m, e, neg, emin, b, k)
    for j, v in enumerate(values):
        exact = sum(int(limbs[i, 0, j]) << (i * b) for i in range(k))
        assert Fraction(exact) * Fraction(2) ** int(emin[0]) == Fraction(v)
    _normalize(limbs, b)
    np.testing.assert_array_equal(_from_limbs(limbs, b, emin), x)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**300), 2**300), st.integers(-200, 200), st.sampled_from([16, 24, 32]))
def test_from_limbs_rounds_correctly(value, exponent, b):
    k = 300 // b + 3
    limbs = np.array([[[(abs(value) >> (i * b)) & ((1 << b) - 1)]] for i in range(k)], dtype=np.int64)
    if value < 0:
        limbs = -limbs
    _normalize(limbs, b)
    got = _from_limbs(limbs, b, np.array([exponent]))[0, 0]
    assert got == float(Fraction(value) * Fraction(2) ** exponent)


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
    bad = np.zeros(op.n)
    bad[0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        op.forward(bad)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=8),
    st.integers(1, 4),
)
def test_small_integer_path_keeps_signs_for_every_limb_count(values, k):
    from nsp.transforms.causal import _small_scale, _split_int64

    x = np.array([values], dtype=np.float64)
    fast = _small_scale([x[:, :1], x[:, 1:]], 32)
    if fast is None:
        return
    emin, bits = fast
    limbs = _split_int64((x * 2.0 ** -int(emin[0])).astype(np.int64), 32, k)
    if k == 1 and bits > 31:
        return
    for j, v in enumerate(values):
        exact = sum(int(limbs[i, 0, j]) << (32 * i) for i in range(k))
        assert Fraction(exact) * Fraction(2) ** int(emin[0]) == Fraction(v)


@pytest.mark.parametrize("incl", [True, False])
@pytest.mark.parametrize("name", ["tiny_resnet", "pruned_cnn", "wide_range_values", "subnormal_values"])
def test_rounding_groups_do_not_change_the_result(monkeypatch, name, incl):
    op, acts = _operator(name, incl)
    signal = acts.to_numpy()
    grouped = op.forward(signal), op.inverse(signal)
    monkeypatch.setattr(causal, "_ROUND_GROUP", 0)
    for want, got in zip(grouped, (op.forward(signal), op.inverse(signal))):
        np.testing.assert_array_equal(got, want)


def test_layers_are_freed_after_their_last_direct_read():
    # input → conv → relu → conv → relu → conv: a convolution sums all channels of
    # everything below it, so a layer's limbs are needed up to the first convolution that
    # sums them; the channel sums serve the later layers.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3)).eval()
    op = nsp.NNGraph(nsp.Activations(net, torch.randn(1, 2, 9, 9))).get_transformer()
    assert op._kernel.last_read == [1, 3, 3, 5, 5, 5]


def test_sums_are_shared_across_relations_that_cut_a_layer_differently():
    # Deep layers of a ResNet read early layers only through channel and full sums, which
    # their relations express over different axes; with the sums shared, every layer's
    # limbs are freed within its own block instead of lasting to the classifier.
    net, x, _ = zoo.cached("tiny_resnet", True)
    acts = nsp.Activations(net, x, layers="leaves")
    last_read = nsp.NNGraph(acts).get_transformer()._kernel.last_read
    assert len(last_read) == 21
    assert max(last - k for k, last in enumerate(last_read)) <= 8


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
    kernel = op._kernel
    assert [i for i, q in enumerate(kernel.copy_of) if q is not None] == [2, 3, 5, 6, 9, 10]
    assert kernel.full[-1].tolist() == list(range(11)) and kernel.plans[-1] == []
    assert any(len(group) > 1 for plan in kernel.plans for group, _ in plan)
    errors = reference.relative_errors(nsp.NNGraph(acts, INCL=True).transform(acts).layeractivations, ref.spectrum)
    assert max(errors) <= 1e-9
    rng = np.random.default_rng(2)
    spectrum = rng.standard_normal(op.n) * 2.0 ** rng.integers(-40, 40, op.n)
    np.testing.assert_array_equal(op.inverse(spectrum), _exact_inverse(ref, spectrum))
