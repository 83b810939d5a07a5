"""Terms with relabelled in axes (``Term.in_order``) against dense boolean matrices.

The reference builds a relabelled term's matrix from first principles: the Kronecker
product of its factors in factor order, with the in axes then transposed into the
relabelled order (numpy's ``kron`` and ``transpose``, no nsp code).
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nsp.graph.relations import Relation, Term, eye_factor, ones_factor
from nsp.graph.relations.reorder import cut, relabel_out


def _reference(term):
    dense = np.ones((1, 1), dtype=bool)
    for f in term.factors:
        dense = np.kron(dense, f).astype(bool)
    order = term.in_order or tuple(range(len(term.factors)))
    split = dense.reshape((dense.shape[0],) + tuple(f.shape[1] for f in term.factors))
    return split.transpose((0,) + tuple(i + 1 for i in order)).reshape(dense.shape[0], -1)


def _factor(rng, p, q, kind):
    if kind == "ones":
        return ones_factor(p, q)
    if kind == "eye" and p == q:
        return eye_factor(p)
    return rng.random((p, q)) < 0.6


@st.composite
def relabelled(draw, out_dims=None, in_dims=None):
    """A term with random factors and a random order of its in axes; ``in_dims`` in that order."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = len(out_dims or in_dims or ()) or draw(st.integers(1, 4))
    order = tuple(draw(st.permutations(range(n))))
    out_dims = out_dims or tuple(draw(st.integers(1, 4)) for _ in range(n))
    q = [0] * n
    for k, i in enumerate(order):
        q[i] = in_dims[k] if in_dims else draw(st.integers(1, 4))
    kinds = [draw(st.sampled_from(["ones", "eye", "random"])) for _ in range(n)]
    return Term(tuple(_factor(rng, p, qi, kind) for p, qi, kind in zip(out_dims, q, kinds)), order)


def _product(a, b):
    return (a.astype(int) @ b.astype(int)) > 0


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_relabelled_terms_match_the_dense_reference(data):
    t = data.draw(relabelled())
    expected = _reference(t)
    assert t.dense().shape == (t.n_out, t.n_in) == expected.shape
    np.testing.assert_array_equal(t.dense(), expected)
    edges = np.zeros_like(expected)
    edges[t.edges()] = True
    np.testing.assert_array_equal(edges, expected)
    assert t.nnz() == Relation.of(t).nnz() == expected.sum()
    pieces = cut(t)
    assert all(p.in_order is None for p in pieces)
    np.testing.assert_array_equal(np.logical_or.reduce([p.dense() for p in pieces]), expected)
    np.testing.assert_array_equal(Relation.of(t).plain().dense(), expected)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_composing_relabelled_terms_matches_the_dense_product(data):
    # Inner and outer relabelled, plain or both; the middle axes agree exactly (a
    # permutation composed with the next layer) or are factored differently (cut first).
    t = data.draw(relabelled())
    inner = data.draw(relabelled(out_dims=t.in_dims))
    if data.draw(st.booleans()):
        inner = Term(inner.factors)
    outer_in = t.out_dims if data.draw(st.booleans()) else (int(np.prod(t.out_dims)),)
    outer = data.draw(relabelled(in_dims=outer_in))
    got = Relation.of(outer).compose(Relation.of(t)).compose(Relation.of(inner))
    expected = _product(_product(_reference(outer), _reference(t)), _reference(inner))
    np.testing.assert_array_equal(got.dense(), expected)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_unions_with_relabelled_terms_match_the_dense_union(data):
    # Same relabelling and shapes (pruned factor by factor), or mixed with plain terms (cut).
    t = data.draw(relabelled())
    same = Term(tuple(np.random.default_rng(data.draw(st.integers(0, 99))).random(f.shape) < 0.6
                      for f in t.factors), t.in_order)
    plain = Term(tuple(np.random.default_rng(1).random((p, 1)) < 0.7 for p in t.out_dims)
                 + tuple(np.ones((1, q), bool) for q in t.in_dims))
    others = [same] + ([plain] if data.draw(st.booleans()) else [])
    union = Relation.of(t).union(*[Relation.of(o) for o in others])
    expected = np.logical_or.reduce([_reference(t)] + [_reference(o) for o in others])
    np.testing.assert_array_equal(union.dense(), expected)
    # Disjoint pieces: their 0/1 matrices sum to the union's indicator, with no overlap.
    np.testing.assert_array_equal(sum(p.dense().astype(int) for p in union.disjoint()), expected.astype(int))


@settings(max_examples=100, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4), data=st.data())
def test_relabelling_the_out_axes_is_a_permutation_of_rows(shape, data):
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    term = Term(tuple(rng.random((d, d)) < 0.6 for d in shape))
    moved = relabel_out(term, tuple(shape), perm)
    rows = np.arange(term.n_out).reshape(shape).transpose(perm).reshape(-1)
    np.testing.assert_array_equal(_reference(moved), term.dense()[rows])


def test_a_channels_last_permute_is_one_term_and_folds_back_after_a_layer_norm():
    # ConvNeXt at 32x32 (8x8 map, 96 channels): the permutation relabels the in axes
    # instead of being cut into 64 terms, and a LayerNorm over channels after it makes
    # the relation plain again (the all-ones channel factor is a column times a row).
    c, h, w = 96, 8, 8
    permute = relabel_out(Term((eye_factor(c), eye_factor(h), eye_factor(w))), (c, h, w), (1, 2, 0))
    assert permute.in_order == (2, 0, 1) and permute.in_dims == (c, h, w) and permute.out_dims == (h, w, c)
    norm = Relation.of(Term((eye_factor(h), eye_factor(w), ones_factor(c, c))))
    after = norm.compose(Relation.of(permute))
    assert len(after.terms) == 1 and after.terms[0].in_order is None
    small = relabel_out(Term((eye_factor(3), eye_factor(2), eye_factor(2))), (3, 2, 2), (1, 2, 0))
    np.testing.assert_array_equal(
        Relation.of(Term((eye_factor(2), eye_factor(2), ones_factor(3, 3)))).compose(Relation.of(small)).dense(),
        _product(np.kron(np.eye(4, dtype=bool), np.ones((3, 3), bool)), _reference(small)))
