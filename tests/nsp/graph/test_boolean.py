"""The 0/1 factor helpers of :mod:`nsp.graph.relations.boolean` against numpy's dense
operations (``np.kron``, an integer matrix product), on random shapes and the shared factors."""

import functools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nsp.graph.relations import Term
from nsp.graph.relations.boolean import (
    bool_matmul, distinct_rows, eye_factor, is_identity, is_ones, kron_all, ones_factor, same_entries, split_in,
    split_out,
)


def _factor(data, rng, p, q):
    """A ``p × q`` factor of one of the kinds terms hold: random, all-ones (shared or
    materialised), the shared identity, all zeros, or 0/1 of an integer dtype."""
    kind = data.draw(st.sampled_from(["random", "ones", "shared ones", "eye", "zeros", "uint8"]))
    if kind == "ones":
        return np.ones((p, q), bool)
    if kind == "shared ones":
        return ones_factor(p, q)
    if kind == "eye" and p == q:
        return eye_factor(p)
    if kind == "zeros":
        return np.zeros((p, q), bool)
    f = rng.random((p, q)) < data.draw(st.sampled_from([0.1, 0.5, 0.9]))
    return f.astype(np.uint8) if kind == "uint8" else f


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_kron_all_matches_numpy_kron(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shapes = data.draw(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=0, max_size=4))
    factors = [_factor(data, rng, p, q) for p, q in shapes]
    expected = functools.reduce(np.kron, factors, np.ones((1, 1), dtype=int)).astype(bool)
    out = kron_all(factors)
    assert out.dtype == bool and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)
    # A new array: the callers' factors are shared and must not be written through it.
    assert all(not np.shares_memory(out, f) for f in factors)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_bool_matmul_matches_an_integer_product(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    # Up to 24 per side: products on both sides of the bool-matmul threshold (4,096).
    p, k, q = (data.draw(st.integers(1, 24)) for _ in range(3))
    f, g = _factor(data, rng, p, k), _factor(data, rng, k, q)
    expected = (f.astype(np.int64) @ g.astype(np.int64)) > 0
    out = bool_matmul(f, g)
    if f.dtype == g.dtype == bool:
        # (With a factor of another dtype, a product with the identity is that factor.)
        assert out.dtype == bool
    np.testing.assert_array_equal(out.astype(bool), expected)


def test_bool_matmul_of_square_factors_past_the_threshold_matches_an_integer_product():
    rng = np.random.default_rng(0)
    for n in (15, 16, 17, 40):
        f, g = rng.random((n, n)) < 0.1, rng.random((n, n)) < 0.1
        np.testing.assert_array_equal(bool_matmul(f, g), (f.astype(int) @ g.astype(int)) > 0)


def test_is_ones_knows_the_shared_factor_by_identity_only():
    assert is_ones(ones_factor(3, 5)) and is_ones(ones_factor(1, 7))
    assert not is_ones(np.ones((3, 5), bool))
    # Another broadcast view of a True is not the shared factor.
    assert not is_ones(np.broadcast_to(np.ones((1, 1), bool), (3, 5)))
    assert not is_ones(eye_factor(3))


def test_is_identity_needs_the_count_and_the_diagonal():
    eye = np.eye(4, dtype=bool)
    assert is_identity(eye, 4) and is_identity(eye_factor(4), 4)
    anti = eye[::-1].copy()
    assert not is_identity(anti, 4)
    assert not is_identity(np.ones((4, 4), bool), 16)
    assert not is_identity(np.eye(4, 5, dtype=bool), 4)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_term_is_empty_iff_its_dense_matrix_is(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shapes = data.draw(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=4))
    term = Term(tuple(_factor(data, rng, p, q) for p, q in shapes))
    assert term.is_empty() == (not term.dense().any())


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_same_entries_is_array_equal(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    p, q = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    f = _factor(data, rng, p, q)
    g = data.draw(st.sampled_from([f, f.copy(), ~np.asarray(f, bool), np.ones((p, q), bool), np.ones((q, p), bool)]))
    assert same_entries(f, g) == np.array_equal(f, g)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_split_in_and_out_give_the_factor_back(data):
    # A factor built as a product of two splits (the test's reference is the kron of the parts);
    # a random one splits only where it is a product.
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    p, q1, q2 = (data.draw(st.integers(1, 4)) for _ in range(3))
    kind = data.draw(st.sampled_from(["left", "right", "random", "eye"]))
    if kind == "left":
        f = np.kron(_factor(data, rng, p, q1), np.ones((1, q2), bool)).astype(bool)
    elif kind == "right":
        f = np.kron(np.ones((1, q1), bool), _factor(data, rng, p, q2)).astype(bool)
    elif kind == "eye":
        q1 = q2 = p = 2
        f = np.kron(np.eye(2, dtype=bool), np.eye(2, dtype=bool))
    else:
        f = rng.random((p, q1 * q2)) < 0.5
    parts = split_in(f, q1, q2)
    if kind != "random":
        assert parts is not None
    if parts is not None:
        assert [part.shape[1] for part in parts] == [q1, q2]
        np.testing.assert_array_equal(kron_all(parts), f)
    parts = split_out(f.T, q1, q2)
    if parts is not None:
        np.testing.assert_array_equal(kron_all(parts), f.T)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_distinct_rows_numbers_rows_in_order_of_first_appearance(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n, m = data.draw(st.integers(0, 40)), data.draw(st.integers(0, 20))
    pool = rng.random((data.draw(st.integers(1, 4)), m)) < 0.5
    f = pool[rng.integers(0, len(pool), n)]
    rows, row_of = distinct_rows(f)
    # Reference: walk the rows, numbering each new one.
    seen: list[bytes] = []
    expected = [seen.index(r.tobytes()) if r.tobytes() in seen else seen.append(r.tobytes()) or len(seen) - 1 for r in f]
    assert row_of.dtype == np.int64 and row_of.tolist() == expected
    assert len(rows) == max(len(seen), min(1, n))
    np.testing.assert_array_equal(rows[row_of], f)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_bool_matmul_with_a_selecting_factor_matches_an_integer_product(data):
    """A factor with at most one entry per row (or per column), past the bool-matmul
    threshold: ShuffleNet's channel splits and shuffles, composed as gathers."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    p, k, q = (data.draw(st.integers(17, 60)) for _ in range(3))
    pick = np.zeros((p, k), bool)
    rows = rng.random(p) < data.draw(st.sampled_from([0.3, 0.9, 1.0]))
    pick[np.nonzero(rows)[0], rng.integers(0, k, size=np.count_nonzero(rows))] = True
    other = rng.random((k, q)) < data.draw(st.sampled_from([0.1, 0.5]))
    if data.draw(st.booleans()):
        other = other.astype(np.uint8)
    if data.draw(st.booleans()):
        f, g = pick, other
    else:
        # The same on the other side: at most one entry per column of g.
        f, g = other.T.copy(), pick.T.copy()
    out = bool_matmul(f, g)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, (f.astype(np.int64) @ g.astype(np.int64)) > 0)
    assert all(not np.shares_memory(out, x) for x in (f, g))


def test_bool_matmul_with_the_shared_identity_returns_the_other_factor():
    f = np.random.default_rng(0).random((5, 7)) < 0.5
    assert bool_matmul(f, eye_factor(7)) is f
    assert bool_matmul(eye_factor(5), f) is f
    assert bool_matmul(ones_factor(5, 7), eye_factor(7)) is ones_factor(5, 7)
