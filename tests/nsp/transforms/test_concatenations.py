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


def _expand(index, n):
    return np.arange(n)[index]


def _slice(start, width, parent_start, parent_channels):
    f = np.zeros((7, parent_channels), dtype=bool)
    f[np.arange(start, start + width), np.arange(parent_start, parent_start + width)] = True
    return f


def test_slices_are_read_from_their_factors_as_the_dense_check_finds_them(monkeypatch):
    # Channel slices (a run of channels of a parent, then the identity over a 2 × 3 map,
    # after a leading 1 × 1 factor), tiling L's 7 channels in a random order or placed at
    # random: the gather found from the factors, listing no pair, against each node's
    # parents read from the dense matrices.
    rng = np.random.default_rng(0)
    eye2, eye3, one = np.eye(2, dtype=bool), np.eye(3, dtype=bool), np.ones((1, 1), bool)
    tiled = 0
    for trial in range(60):
        if trial % 2:
            cuts = np.sort(rng.choice(np.arange(1, 7), size=int(rng.integers(0, 4)), replace=False))
            runs = list(zip([0, *cuts], [*cuts, 7]))
        else:
            runs = [(s, s + int(rng.integers(1, 4))) for s in rng.integers(0, 5, size=int(rng.integers(1, 4)))]
        layers = rng.choice(9, size=len(runs), replace=False)
        parents = {}
        for p, (a, b) in zip(layers, runs):
            at = int(rng.integers(0, 3))
            parents[int(p)] = Relation.of(Term((one, _slice(a, b - a, at, b - a + at + 1), eye2, eye3)))
        parents = dict(sorted(parents.items()))
        dense = {p: e.dense() for p, e in parents.items()}
        counts = sum(d.sum(axis=1) for d in dense.values())
        with monkeypatch.context() as m:
            m.setattr(Term, "edges", None)
            got = single_parents(parents, 42)
        if not (counts == 1).all():
            assert got is None
            continue
        tiled += 1
        assert [p for p, _, _ in got] == list(parents)
        for p, rows, nodes in got:
            want = np.nonzero(dense[p])
            np.testing.assert_array_equal(_expand(rows, 42), want[0])
            np.testing.assert_array_equal(_expand(nodes, dense[p].shape[1]), want[1])
    assert tiled >= 30
