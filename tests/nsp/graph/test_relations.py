"""Product relations against dense boolean matrices (the obviously right reference)."""

import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsp.graph.relations import Relation, StructureError, Term, coarsening, refinement


def _random_factor(rng, p, q, kind):
    if kind == "ones":
        return np.ones((p, q), bool)
    if kind == "eye" and p == q:
        return np.eye(p, dtype=bool)
    return rng.random((p, q)) < 0.5


@st.composite
def terms(draw, out_dims=None, in_dims=None):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 3))
    out_dims = out_dims or tuple(draw(st.integers(1, 4)) for _ in range(n))
    in_dims = in_dims or tuple(draw(st.integers(1, 4)) for _ in range(len(out_dims)))
    kinds = [draw(st.sampled_from(["ones", "eye", "random"])) for _ in out_dims]
    return Term(tuple(_random_factor(rng, p, q, k) for p, q, k in zip(out_dims, in_dims, kinds)))


def _bool_product(a, b):
    return (a.astype(int) @ b.astype(int)) > 0


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_compose_matches_dense_boolean_product(data):
    inner = data.draw(terms())
    # The outer term's in-space is the inner's out-space, factored differently.
    n_mid = inner.n_out
    split = data.draw(st.sampled_from([d for d in range(1, n_mid + 1) if n_mid % d == 0]))
    outer_in = (split, n_mid // split)
    outer = data.draw(terms(out_dims=(data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))), in_dims=outer_in))
    try:
        composed = outer.compose(inner)
    except StructureError:
        return  # refusing is allowed; a wrong answer is not
    np.testing.assert_array_equal(composed.dense(), _bool_product(outer.dense(), inner.dense()))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_union_counts_and_edges_match_dense(data):
    a = data.draw(terms())
    b = data.draw(terms(out_dims=a.out_dims, in_dims=a.in_dims))
    c = data.draw(terms(out_dims=a.out_dims, in_dims=a.in_dims))
    rel = Relation.of(a).union(Relation.of(b)).union(Relation.of(c))
    dense = a.dense() | b.dense() | c.dense()
    assert rel.nnz() == int(dense.sum())
    np.testing.assert_array_equal(rel.dense(), dense)
    out_idx, in_idx = rel.edges()
    rebuilt = np.zeros_like(dense)
    rebuilt[out_idx, in_idx] = True
    np.testing.assert_array_equal(rebuilt, dense)


def test_union_prunes_contained_terms():
    big = Term((np.ones((2, 3), bool), np.eye(4, dtype=bool)))
    small = Term((np.eye(2, 3, dtype=bool), np.eye(4, dtype=bool)))
    assert Relation.of(big).union(Relation.of(small)).terms == (big,)


def test_mixed_radix_helpers():
    assert refinement((8, 2, 2), (32,)) == (8, 2, 2)
    assert refinement((6, 4), (4, 6)) is None
    assert coarsening((6, 4), (4, 6)) == (24,)


def test_flatten_then_linear_keeps_per_axis_factors():
    conv_like = Term((np.ones((3, 2), bool), np.eye(4, dtype=bool), np.eye(5, dtype=bool)))
    linear = Term((np.ones((7, 60), bool),))
    composed = linear.compose(Term.identity((60,)).compose(conv_like))
    assert max(f.size for f in composed.factors) <= 7 * 4 * 5
    np.testing.assert_array_equal(composed.dense(), np.ones((7, 40), bool))


def test_refuses_instead_of_materialising_huge_factors(monkeypatch):
    import nsp.graph.relations.term as term

    monkeypatch.setattr(term, "MAX_FACTOR_ENTRIES", 100)
    a = Term((np.eye(6, dtype=bool)[:, ::-1].copy(), np.eye(4, dtype=bool)))
    b = Term((np.eye(4, dtype=bool)[::-1].copy(), np.eye(6, dtype=bool)))
    with pytest.raises(StructureError, match="entry matrix"):
        a.compose(b)
    assert math.prod(a.in_dims) == math.prod(b.out_dims)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_disjoint_pieces_sum_to_the_union(data):
    # Up to 70 terms: more than one 64-bit word of membership per (out, in) pair.
    first = data.draw(terms())
    n = data.draw(st.sampled_from([2, 5, 12, 70]))
    rel = Relation(
        tuple([first] + [data.draw(terms(out_dims=first.out_dims, in_dims=first.in_dims)) for _ in range(n - 1)]),
        first.n_out, first.n_in,
    )
    total = sum(t.dense().astype(int) for t in rel.disjoint())
    union = np.zeros((rel.n_out, rel.n_in), bool)
    for t in rel.terms:
        union |= t.dense()
    np.testing.assert_array_equal(total, union.astype(int))
    assert rel.nnz() == int(union.sum())


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_disjoint_keeps_terms_that_share_no_pair(data):
    # Inception-like: each branch owns a channel range (axis 0), with its own window, so
    # the terms are pieces already; a last term may overlap them, which needs the cut.
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n = data.draw(st.integers(2, 5))
    width, size = data.draw(st.integers(1, 3)), data.draw(st.integers(2, 6))
    channels = n * width
    found = []
    for i in range(n):
        column = np.zeros((channels, 1), bool)
        column[i * width:(i + 1) * width] = True
        window = np.abs(np.subtract.outer(np.arange(size), np.arange(size))) <= data.draw(st.integers(0, 2))
        found.append(Term((column & (rng.random((1, 4)) < 0.7), window)))
    overlap = data.draw(st.booleans())
    if overlap:
        found.append(Term((rng.random((channels, 4)) < 0.5, rng.random((size, size)) < 0.5)))
    rel = Relation(tuple(found), channels * size, 4 * size)
    union = np.zeros((rel.n_out, rel.n_in), bool)
    for t in rel.terms:
        union |= t.dense()
    pieces = rel.disjoint()
    np.testing.assert_array_equal(sum(t.dense().astype(int) for t in pieces), union.astype(int))
    if not overlap:
        # Terms with equal windows may merge; none is cut.
        assert len(pieces) <= sum(not t.is_empty() for t in found)


def test_union_merges_terms_that_differ_in_one_factor():
    # Concatenated branches: disjoint channel ranges, the same spatial factor.
    spatial = np.eye(5, dtype=bool) | np.eye(5, k=1, dtype=bool)
    branches = [Relation.of(Term((np.eye(17, 3, -i, dtype=bool)[:, :3] | (np.arange(17)[:, None] == i), spatial)))
                for i in range(17)]
    union = branches[0]
    for b in branches[1:]:
        union = union.union(b)
    assert len(union.terms) == 1
    expected = np.zeros((17 * 5, 3 * 5), bool)
    for b in branches:
        expected |= b.dense()
    np.testing.assert_array_equal(union.dense(), expected)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_column_and_row_factors_pair_up_without_changing_the_product(data):
    from nsp.graph.relations import pair_vectors

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shapes = data.draw(st.lists(st.sampled_from(["col", "row", "full"]), min_size=1, max_size=6))
    factors = []
    for kind in shapes:
        n, m = data.draw(st.integers(2, 4)), data.draw(st.integers(2, 4))
        shape = {"col": (n, 1), "row": (1, m), "full": (n, m)}[kind]
        factors.append(np.ones(shape, bool) if data.draw(st.booleans()) else rng.random(shape) < 0.6)
    # A bound of 0 keeps every pair that is not all-ones apart (the path of large channel counts).
    with mock.patch("nsp.graph.relations.term._PAIR_DENSE", data.draw(st.sampled_from([0, 1 << 16]))):
        paired = pair_vectors(factors)
    np.testing.assert_array_equal(Term(paired).dense(), Term(tuple(factors)).dense())
    assert len(paired) <= len(factors) + sum(1 for f in factors if 1 not in f.shape and f.all())


def test_a_window_grown_to_the_whole_map_keeps_the_shapes_of_a_window():
    # ShuffleNet at top level: a 3 × 3 depthwise convolution on a 2 × 2 map after a
    # stride 2 from 4 × 4 relates each output to the whole map, ones(2, 4) per spatial
    # axis. Composed, it came out as columns and rows (1, 4) (1, 4) (2, 1) (2, 1), and
    # every union with the identity half's (2, 4) windows went through a common form.
    from nsp.graph.relations import ones_factor
    from nsp.graph.relations import union as union_module

    c, rng = 3, np.random.default_rng(0)
    window = np.zeros((2, 4), bool)
    window[[0, 0, 1, 1], [0, 1, 2, 3]] = True
    conv = Term((np.eye(c, dtype=bool), ones_factor(2, 2), ones_factor(2, 2)))
    inner = Term((rng.random((c, c)) < 0.5, window, window))
    whole = Relation.of(conv).compose(Relation.of(inner))
    assert [f.shape for t in whole.terms for f in t.factors] == [(c, c), (2, 4), (2, 4)]
    np.testing.assert_array_equal(whole.dense(), (conv.dense().astype(int) @ inner.dense().astype(int)) > 0)
    half = Relation.of(Term((np.eye(c, dtype=bool), window, window)))
    with mock.patch.object(union_module, "_drop_contained", side_effect=AssertionError("common form needed")):
        union = half.union(whole)
    np.testing.assert_array_equal(union.dense(), half.dense() | whole.dense())


@pytest.mark.parametrize("size, paired", [(64, True), (65, False)])
def test_all_ones_columns_and_rows_of_different_sizes_pair_only_up_to_the_axis_bound(size, paired):
    from nsp.graph.relations import ones_factor, pair_vectors

    factors = [ones_factor(1, size), ones_factor(1, 3), ones_factor(2, 1), ones_factor(5, 1), np.eye(2, dtype=bool)]
    out = pair_vectors(factors)
    assert [f.shape for f in out[:-1]] == ([(2, size), (5, 3)] if paired else [(1, size), (1, 3), (2, 1), (5, 1)])
    np.testing.assert_array_equal(Term(out).dense(), Term(tuple(factors)).dense())


def _branch_column(n: int, start: int, stop: int) -> np.ndarray:
    column = np.zeros((n, 1), bool)
    column[start:stop] = True
    return column


@pytest.mark.parametrize("channels, apart", [(512, True), (832, True), (8, False)])
def test_a_branch_column_and_an_all_ones_row_pair_up_only_below_the_dense_bound(channels, apart):
    from nsp.graph.relations import ones_factor, pair_vectors

    column = _branch_column(channels, 0, channels // 4)
    row = ones_factor(1, channels)
    paired = pair_vectors([row, column, np.eye(2, dtype=bool)])
    assert sorted(f.shape for f in paired[:-1]) == ([(1, channels), (channels, 1)] if apart else [(channels, channels)])
    np.testing.assert_array_equal(Term(paired).dense(), Term((row, column, np.eye(2, dtype=bool))).dense())
    # Two all-ones vectors pair into the shared all-ones factor at any size.
    assert pair_vectors([ones_factor(channels, 1), row])[0] is ones_factor(channels, channels)


def test_an_inception_block_with_as_many_channels_in_as_out_stays_in_vectors_and_exact():
    # GoogLeNet's inception 4b at top level: 512 channels in and out on a 2 × 2 map; each
    # branch is "every input channel to the branch's channels, through a window", placed
    # into its range of the concatenation. Composed, a branch's range (a column) and every
    # input channel (an all-ones row) have the same size, 512.
    from nsp.graph.relations import ones_factor

    n, widths, eye2, ones2 = 512, (160, 224, 64, 64), np.eye(2, dtype=bool), np.ones((2, 2), bool)
    stops = np.cumsum((0,) + widths)
    branches = []
    for k, width in enumerate(widths):
        place = np.zeros((n, width), bool)
        place[stops[k]:stops[k + 1]] = np.eye(width, dtype=bool)
        window = eye2 if k == 0 else ones2
        # The convolution after the block's input, as the graph composes it (its all-ones
        # channel factor comes out as a column and a row of different sizes), then placed.
        conv = Relation.of(Term((ones_factor(width, n), window, window))).compose(Relation.identity((n, 2, 2)))
        branch = Relation.of(Term((place, eye2, eye2))).compose(conv)
        assert all(f.shape != (n, n) for t in branch.terms for f in t.factors), [f.shape for f in branch.terms[0].factors]
        expected = (np.kron(np.kron(place, eye2), eye2).astype(int) @ np.kron(np.kron(np.ones((width, n)), window), window)) > 0
        np.testing.assert_array_equal(branch.dense(), expected)
        branches.append(branch)
    union = branches[0].union(*branches[1:])
    expected = np.zeros((4 * n, 4 * n), bool)
    for b in branches:
        expected |= b.dense()
    np.testing.assert_array_equal(union.dense(), expected)
    # The 1×1 branch and the merged windowed branches: two disjoint pieces, no dense channel factor.
    pieces = union.disjoint()
    assert len(pieces) == 2 and all(f.shape != (n, n) for t in pieces for f in t.factors)
    np.testing.assert_array_equal(sum(t.dense().astype(int) for t in pieces), expected.astype(int))


def test_a_gate_broadcast_back_over_its_pooled_axes_stays_one_product():
    # mean over (H, W) then broadcast back: columns (H,1)(W,1) then rows (1,H)(1,W).
    c, h, w = 3, 64, 64
    pooled = Term((np.ones((c, c), bool), np.ones((1, h), bool), np.ones((1, w), bool)))
    spread = Term((np.eye(c, dtype=bool), np.ones((h, 1), bool), np.ones((w, 1), bool)))
    gate = spread.compose(pooled)
    assert [f.shape for f in gate.factors] == [(c, c), (h, h), (w, w)]
    union = Relation.of(gate).union(Relation.identity((c, h, w)))
    assert len(union.terms) == 1 and union.nnz() == c * c * (h * w) ** 2


def test_bool_matmul_over_distinct_rows_matches_dense():
    # Factors large enough for the distinct-row path, with repeated rows and columns (the
    # channel factors of concatenations) and without.
    from nsp.graph.relations.boolean import bool_matmul

    rng = np.random.default_rng(0)
    for repeat in (3, None):
        f = rng.random((150, 120)) < 0.05
        g = rng.random((120, 90)) < 0.05
        if repeat:
            f = f[rng.integers(0, repeat, 150)]
            g = g[:, rng.integers(0, repeat, 90)]
        np.testing.assert_array_equal(bool_matmul(f, g), (f.astype(int) @ g.astype(int)) > 0)


def test_a_permutation_cut_into_terms_merges_back_after_a_channel_mix():
    # ConvNeXt: (C,H,W) -> (H,W,C) cut into one term per (h, w), then LayerNorm over C.
    from nsp.graph.relations import ones_factor

    c, h, w = 6, 3, 4
    cut = []
    for a in range(h):
        for b in range(w):
            col_h, row_h = np.eye(h, dtype=bool)[:, a:a + 1], np.eye(h, dtype=bool)[a:a + 1]
            col_w, row_w = np.eye(w, dtype=bool)[:, b:b + 1], np.eye(w, dtype=bool)[b:b + 1]
            cut.append(Relation.of(Term((col_h, col_w, np.eye(c, dtype=bool), row_h, row_w))))
    permuted = cut[0]
    for t in cut[1:]:
        permuted = permuted.union(t)
    assert len(permuted.terms) == h * w
    norm = Relation.of(Term((np.eye(h, dtype=bool), np.eye(w, dtype=bool), ones_factor(c, c))))
    mixed = norm.compose(permuted)
    assert len(mixed.terms) == 1
    dense = np.zeros((h * w * c, c * h * w), bool)
    for i, j, k in np.ndindex(h, w, c):
        dense[(i * w + j) * c + k, np.arange(c) * h * w + i * w + j] = True
    np.testing.assert_array_equal(mixed.dense(), dense)


def test_union_of_terms_in_different_forms_matches_dense():
    # EfficientNet's stem and SE gate: a window term, and a gate term whose channel column
    # was paired with an input row of the same size (out (4,2,2), in (3,4,4)).
    from nsp.graph.relations import ones_factor

    window = np.zeros((2, 4), bool)
    window[0, :3], window[1, 1:] = True, True
    stem = Term((ones_factor(1, 3), ones_factor(4, 1), window, window))
    gate = Term((ones_factor(1, 3), ones_factor(4, 4), ones_factor(1, 4), ones_factor(2, 1), ones_factor(2, 1)))
    # A permutation cut into one small term per position, contained in the gate term.
    cut = [Term((ones_factor(1, 3), np.eye(4, dtype=bool)[:, a:a + 1], np.eye(4, dtype=bool)[b:b + 1],
                 ones_factor(1, 4), ones_factor(2, 1), ones_factor(2, 1))) for a in range(4) for b in range(4)]
    union = Relation.of(stem)
    for t in [gate] + cut:
        union = union.union(Relation.of(t))
    dense = stem.dense() | gate.dense()
    for t in cut:
        assert not (t.dense() & ~gate.dense()).any()
    np.testing.assert_array_equal(union.dense(), dense)
    assert union.nnz() == int(dense.sum())
    np.testing.assert_array_equal(sum(t.dense().astype(int) for t in union.disjoint()), dense.astype(int))


def _window_or_gate(rng, kind, keep=None):
    """A term over out (3, 2, 2), in (2, 4, 4): windows ``(2, 4) (2, 4)`` or a gate's
    rows and columns ``(1, 4) (1, 4) (2, 1) (2, 1)``; ``keep`` draws a subset of a given one."""
    if kind == "window":
        shapes = [(3, 2), (2, 4), (2, 4)]
    else:
        shapes = [(3, 2), (1, 4), (1, 4), (2, 1), (2, 1)]
    if keep is not None:
        return Term(tuple(f & (rng.random(f.shape) < 0.8) for f in keep.factors))
    return Term(tuple(rng.random(s) < 0.7 for s in shapes))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_containment_across_factor_shapes_matches_dense(data):
    # Small terms in another term's form or its own, contained in a big one or not: terms
    # found contained are dropped, and the union must still be the dense one.
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    big = [_window_or_gate(rng, k) for k in ("window", "gate")]
    small = [_window_or_gate(rng, data.draw(st.sampled_from(["window", "gate"])),
                             keep=data.draw(st.sampled_from([None, *big])))
             for _ in range(data.draw(st.integers(1, 4)))]
    union = Relation.of(big[0])
    for t in big[1:] + small:
        union = union.union(Relation.of(t))
    dense = np.zeros((union.n_out, union.n_in), bool)
    for t in big + small:
        dense |= t.dense()
    np.testing.assert_array_equal(union.dense(), dense)
    np.testing.assert_array_equal(sum(t.dense().astype(int) for t in union.disjoint()), dense.astype(int))


def test_a_gate_term_inside_a_window_term_is_dropped():
    # The gate's columns and rows realise as (2, 4) factors inside the windows: checked
    # factor by factor, without listing pairs; one bit outside keeps it.
    from nsp.graph.relations import ones_factor

    window = np.zeros((2, 4), bool)
    window[0, :3], window[1, 1:] = True, True
    big = Term((ones_factor(3, 2), window, window))
    col, row = np.array([[True], [False]]), np.array([[False, True, True, False]])
    inside = Term((ones_factor(3, 2), row, row, col, col))
    assert Relation.of(big).union(Relation.of(inside)).terms == (big,)
    outside = Term((ones_factor(3, 2), row | np.array([[False, False, False, True]]), row, col, col))
    union = Relation.of(big).union(Relation.of(outside))
    assert len(union.terms) == 2
    np.testing.assert_array_equal(union.dense(), big.dense() | outside.dense())


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_composing_unions_of_many_terms_matches_dense(data):
    # More than 16 pairs of terms: only the pairs whose middle sides meet are composed.
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    mid = (3, 4)

    def sparse_term(out_dims, in_dims):
        # Mostly one-hot factors, so that many pairs of terms do not meet.
        return Term(tuple((rng.random((p, q)) < (0.2 if data.draw(st.booleans()) else 0.6)) for p, q in zip(out_dims, in_dims)))

    outer = [sparse_term((2, 3), mid) for _ in range(data.draw(st.integers(3, 8)))]
    inner = [sparse_term(mid, (2, 2)) for _ in range(data.draw(st.integers(6, 8)))]
    composed = Relation(tuple(outer), 6, 12).compose(Relation(tuple(inner), 12, 4))
    a = np.zeros((6, 12), bool)
    b = np.zeros((12, 4), bool)
    for t in outer:
        a |= t.dense()
    for u in inner:
        b |= u.dense()
    np.testing.assert_array_equal(composed.dense(), _bool_product(a, b))


def test_a_permutation_cut_into_terms_composed_with_its_inverse_is_the_identity():
    # ConvNeXt: (C,H,W) -> (H,W,C) and back, each cut into one term per (h, w); of the
    # 12 × 12 pairs only the 12 that meet are composed.
    c, h, w = 5, 3, 4
    eye_h, eye_w = np.eye(h, dtype=bool), np.eye(w, dtype=bool)
    there = Relation(tuple(Term((eye_h[:, [a]], eye_w[:, [b]], np.eye(c, dtype=bool), eye_h[[a]], eye_w[[b]]))
                           for a in range(h) for b in range(w)), h * w * c, c * h * w)
    back = Relation(tuple(Term((eye_h[[a]], eye_w[[b]], np.eye(c, dtype=bool), eye_h[:, [a]], eye_w[:, [b]]))
                          for a in range(h) for b in range(w)), c * h * w, h * w * c)
    np.testing.assert_array_equal(back.compose(there).dense(), np.eye(c * h * w, dtype=bool))
    np.testing.assert_array_equal(there.compose(back).dense(), np.eye(h * w * c, dtype=bool))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_union_of_two_terms_reduces_as_the_union_of_many_does(data):
    # Two terms are compared factor by factor, not numbered by content (_reduce_two). Factors
    # drawn from a small pool, so that terms are equal, contained or differ in one axis.
    from nsp.graph.relations import ones_factor
    from nsp.graph.relations.union import _reduce

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shapes = [(3, 2), (2, 2), (1, 3)]
    pools = []
    for p, q in shapes:
        f = rng.random((p, q)) < 0.5
        pools.append([ones_factor(p, q), np.ones((p, q), bool), f, f.copy(), f & (rng.random((p, q)) < 0.5),
                      np.zeros((p, q), bool), rng.random((p, q)) < 0.5])
    a, b = (tuple(data.draw(st.sampled_from(pool)) for pool in pools) for _ in range(2))
    reduced = _reduce([a, b])
    dense = Term(a).dense() | Term(b).dense()
    np.testing.assert_array_equal(np.logical_or.reduce([Term(t).dense() for t in reduced]), dense)
    # A third copy of b is dropped in the numbered path: the same terms as two give there.
    numbered = _reduce([a, b, b])
    assert [[f.tobytes() for f in t] for t in reduced] == [[f.tobytes() for f in t] for t in numbered]
