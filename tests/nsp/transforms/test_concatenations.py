"""nsp.transforms.concatenations: which layers are gathers (every node one parent node), and
the regrouping of masks, against relations written out by hand."""

import numpy as np

from nsp.graph.relations import Relation, Term
from nsp.transforms.concatenations import merge_pieces, single_parents


def _rows(n_out: int, n_in: int, pairs: list[tuple[int, int]]) -> Relation:
    f = np.zeros((n_out, n_in), dtype=bool)
    for o, i in pairs:
        f[o, i] = True
    return Relation.of(Term((f,)))


def test_a_concatenation_is_a_gather_of_slices():
    # 5 nodes: 0-1 from layer 3's nodes 0-1, 2-4 from layer 7's nodes 0-2.
    parents = {3: _rows(5, 2, [(0, 0), (1, 1)]), 7: _rows(5, 3, [(2, 0), (3, 1), (4, 2)])}
    assert single_parents(parents, 5) == [(3, slice(0, 2), slice(0, 2)), (7, slice(2, 5), slice(0, 3))]


def test_a_permutation_is_a_gather_of_index_arrays():
    got = single_parents({1: _rows(3, 3, [(0, 2), (1, 0), (2, 1)])}, 3)
    (layer, rows, nodes), = got
    assert layer == 1 and rows == slice(0, 3)
    np.testing.assert_array_equal(nodes, [2, 0, 1])


def test_nodes_with_two_parents_or_none_are_not_gathers():
    # Node 1 has a parent in both layers and node 2 none: as many pairs as nodes, but not
    # one each.
    assert single_parents({0: _rows(3, 2, [(0, 0), (1, 1)]), 1: _rows(3, 1, [(1, 0)])}, 3) is None
    # A convolution-like row with two parent nodes.
    assert single_parents({0: _rows(2, 3, [(0, 0), (0, 1), (1, 2)])}, 2) is None
    # An addition: every node has one parent node in each of two layers.
    assert single_parents({0: _rows(2, 2, [(0, 0), (1, 1)]), 1: _rows(2, 2, [(0, 0), (1, 1)])}, 2) is None


def test_masks_are_regrouped_so_that_each_layer_is_in_one():
    a, b = _rows(4, 1, [(0, 0)]), _rows(4, 1, [(2, 0)])
    groups = merge_pieces([(a, frozenset({1, 2})), (b, frozenset({2, 3})), (a, frozenset())], lambda x, y: x.union(y))
    got = {ks: m.dense()[:, 0].tolist() for m, ks in groups}
    assert got == {
        frozenset({1}): [True, False, False, False],
        frozenset({2}): [True, False, True, False],
        frozenset({3}): [False, False, True, False],
    }
