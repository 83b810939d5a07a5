"""Boolean products over distinct rows (nsp.patterns) against dense numpy."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from nsp.graph import sparse_products as patterns
from nsp.graph.sparse_products import RowClasses, bool_product, unique_rows


def _random(rng, m, n, density, repeat):
    """A 0/1 matrix whose rows repeat (``repeat`` distinct rows at most), as a dense array."""
    base = rng.random((repeat, n)) < density
    return base[rng.integers(0, repeat, m)]


matrices = st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 12), st.floats(0, 1),
                     st.integers(1, 6), st.integers(0, 2**32 - 1))


@settings(max_examples=60, deadline=None)
@given(matrices)
def test_product_union_and_classes_match_dense(case):
    m, k, n, density, repeat, seed = case
    rng = np.random.default_rng(seed)
    a, b = _random(rng, m, k, density, repeat), _random(rng, k, n, density, repeat)
    c = _random(rng, m, n, density, repeat)
    expected = (a.astype(int) @ b.astype(int)) > 0
    np.testing.assert_array_equal(bool_product(sp.csr_matrix(a), sp.csr_matrix(b)).toarray(), expected)
    classes = RowClasses.of(sp.csr_matrix(b)).after(sp.csr_matrix(a))
    np.testing.assert_array_equal(classes.to_csr().toarray(), expected)
    union = classes.union(RowClasses.of(sp.csr_matrix(c)))
    np.testing.assert_array_equal(union.to_csr().toarray(), expected | c)
    rows, inverse = unique_rows(sp.csr_matrix(a))
    assert rows.shape[0] == len({r.tobytes() for r in a})
    np.testing.assert_array_equal(rows.toarray()[inverse], a)


def test_a_hash_collision_never_merges_different_rows(monkeypatch):
    # Every row hashes alike: rows are told apart by comparing them.
    monkeypatch.setattr(patterns, "_mix", lambda v: np.zeros(v.shape, dtype=np.uint64))
    a = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=bool)
    rows, inverse = unique_rows(sp.csr_matrix(a))
    np.testing.assert_array_equal(rows.toarray()[inverse], a)
    assert rows.shape[0] == 4


@pytest.mark.parametrize("stored_zeros", [True, False])
def test_explicit_zeros_are_not_entries(stored_zeros):
    # SciPy keeps explicitly stored False entries in some results (issue 17, finding 1).
    a = sp.csr_matrix((np.array([True, False, True]), np.array([0, 1, 2]), np.array([0, 2, 3])), shape=(2, 3))
    if not stored_zeros:
        a.eliminate_zeros()
    b = sp.identity(3, dtype=bool, format="csr")
    np.testing.assert_array_equal(bool_product(a, b).toarray(), [[1, 0, 0], [0, 0, 1]])
    assert bool_product(a, b).nnz == 2


def test_a_few_zero_weights_inside_a_child_match_the_reference():
    # Most rows of the convolution and of the classifier keep their whole structural row
    # and are composed as a product; the rows under a zero weight are listed (after_pruned).
    import torch
    from torch import nn

    import nsp
    import reference as R

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3, padding=1)

        def forward(self, x):
            return torch.tanh(self.conv(x))

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 5 * 5, 4)

        def forward(self, x):
            return torch.tanh(self.fc(x.flatten(1)))

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 1), Block(), Head()).eval()
    with torch.no_grad():
        net[1].conv.weight[1, 0, 2, 2] = 0.0
        net[2].fc.weight[3, 7] = 0.0
    x = torch.randn(1, 1, 5, 5)
    ref = R.reference(net, x, False)
    acts = nsp.Activations(net, x)
    graph = nsp.NNGraph(acts, INCL=False)
    # 1×1 conv: 50 pairs; 3×3 conv with padding 1 on 5×5: 13 taps per axis and channel pair,
    # less the 16 outputs whose (+1, +1) tap is the zero weight; the classifier less one.
    assert graph.number_of_edges() == ref.number_of_edges == 50 + (3 * 2 * 13 * 13 - 16) + (4 * 75 - 1)
    src, dst = graph.structure.edge_arrays()
    order = np.lexsort((dst, src))
    np.testing.assert_array_equal(np.stack([src[order], dst[order]], 1), R.edge_array(ref.edges))
    assert max(R.relative_errors(graph.transform(acts).layeractivations, ref.spectrum)) <= 1e-9


@pytest.mark.parametrize("every", [1, 3])
def test_a_union_with_rows_that_hold_every_column_matches_dense(every):
    rng = np.random.default_rng(every)
    a, b = _random(rng, 30, 7, 0.4, 30), _random(rng, 30, 7, 0.4, 30)
    a[::every] = True
    b[1::5] = True
    union = RowClasses.of(sp.csr_matrix(a)).union(RowClasses.of(sp.csr_matrix(b)))
    np.testing.assert_array_equal(union.to_csr().toarray(), a | b)
    whole = RowClasses.all_or_nothing(a.all(axis=1), 7)
    np.testing.assert_array_equal(whole.to_csr().toarray(), a.all(axis=1)[:, None] & np.ones((1, 7), dtype=bool))
