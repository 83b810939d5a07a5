"""nsp.transforms.concatenations: which layers are gathers (every node one parent node), and
the regrouping of masks, against relations written out by hand."""

import numpy as np
import pytest

from nsp.graph.relations import Relation, Term, ones_factor
from nsp.transforms.concatenations import MaskGroups, _block_copies, _regroup, merge_pieces, single_parents


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


def _holders(sets):
    """Per layer, the indices of the sets that hold it (the regrouping's definition, by hand)."""
    out = {}
    for i, ks in enumerate(sets):
        for k in ks:
            out.setdefault(k, set()).add(i)
    return out


@pytest.mark.parametrize("nested", [True, False])
def test_regroup_gives_each_layer_the_sets_that_hold_it(nested):
    # Nested sets (a DenseNet concatenation's parts, read as differences) and random ones
    # (bit columns), empty sets among them: every layer in exactly one group, whose
    # indices are the sets holding it, and no two groups with the same indices.
    rng = np.random.default_rng(5)
    for _ in range(40):
        if nested:
            cuts = np.sort(rng.integers(0, 30, size=int(rng.integers(1, 7))))
            sets = [frozenset(range(int(c))) for c in rng.permutation(cuts)]
        else:
            sets = [frozenset(rng.choice(30, size=int(rng.integers(0, 12)), replace=False).tolist())
                    for _ in range(int(rng.integers(1, 7)))]
        got = _regroup(sets)
        holders = _holders(sets)
        assert sorted(k for _, ks in got for k in ks) == sorted(holders)
        for found, ks in got:
            assert list(found) == sorted(found)
            assert all(holders[k] == set(found) for k in ks)
        assert len({tuple(found) for found, _ in got}) == len(got)


def _tiling(rng, parents_at, channels, cuts=None):
    """Channel slices of parent layers ``parents_at`` tiling ``channels`` channels of a
    (channels, 2, 3) layer in order (cut at ``cuts``, else at random), as the structure
    writes a concatenation."""
    if cuts is None:
        cuts = np.sort(rng.choice(np.arange(1, channels), size=len(parents_at) - 1, replace=False))
    runs = list(zip([0, *cuts], [*cuts, channels]))
    eye2, eye3 = np.eye(2, dtype=bool), np.eye(3, dtype=bool)
    parents = {}
    for p, (a, b) in zip(parents_at, runs):
        f = np.zeros((channels, b - a), dtype=bool)
        f[np.arange(a, b), np.arange(b - a)] = True
        parents[p] = Relation.of(Term((f, eye2, eye3)))
    return parents


def _dense_groups(full, groups):
    return {k: "full" for k in full} | {k: tuple(np.flatnonzero(m.dense()[:, 0])) for m, ks in groups for k in ks}


@pytest.mark.parametrize("nested", [True, False])
def test_masks_of_a_concatenation_are_columns_as_the_dense_relations_give_them(nested):
    # A gather of channel slices from 2-4 parents, each with layers full below it (nested
    # as in DenseNet, or random): every such layer is below the rows of L fed by the parts
    # that hold it, all of L when all do. The column path, the relations' path (no gather
    # given) and the dense rows must agree layer by layer.
    rng = np.random.default_rng(6 + nested)
    columns = 0
    for _ in range(30):
        at = sorted(rng.choice(np.arange(10, 20), size=int(rng.integers(2, 5)), replace=False).tolist())
        parents = _tiling(rng, at, 7)
        fulls = [frozenset()] * 20
        for i, p in enumerate(at):
            fulls[p] = frozenset(range(i + int(rng.integers(0, 4)))) if nested else \
                frozenset(rng.choice(10, size=int(rng.integers(0, 6)), replace=False).tolist())
        masks = [[] for _ in range(20)]
        gather = single_parents(parents, 42)
        want = {}
        for p, e in parents.items():
            rows = e.dense().any(axis=1)
            for k in fulls[p]:
                want[k] = want.get(k, np.zeros(42, dtype=bool)) | rows
        want = {k: "full" if v.all() else tuple(np.flatnonzero(v)) for k, v in want.items()}
        for g in (gather, None):
            grouping = MaskGroups(lambda a, b: a.compose(b), lambda a, b: a.union(b), lambda r: bool(r.dense().all()))
            full, groups = grouping.groups((7, 2, 3), parents, fulls, masks, False, g)
            assert _dense_groups(full, groups) == want
            assert sum(len(ks) for _, ks in groups) == len({k for _, ks in groups for k in ks})
            columns += len(grouping.columns)
    assert columns > 30


def test_a_child_finds_masks_full_by_containment_exactly():
    # The column masks of a concatenation of four parts (channels 0-1, 2, 3-4, 5-6), the
    # layers full below its last three parts nested as in DenseNet, then a child of one
    # parent: a 1×1 convolution (all channels at each position) makes every mask full,
    # found with one composition; a child reading channels 2-4 reaches the mask of the
    # second part's suffix entirely, the third's partly and the last's not at all. Both
    # against the dense composition of every mask.
    at = [10, 11, 12, 13]
    parents = _tiling(None, at, 7, cuts=[2, 3, 5])
    fulls = [frozenset()] * 20
    for i, p in enumerate(at):
        fulls[p] = frozenset(range(4 - i, 4))
    grouping = MaskGroups(lambda a, b: a.compose(b), lambda a, b: a.union(b), lambda r: bool(r.dense().all()))
    full, groups = grouping.groups((7, 2, 3), parents, fulls, [[] for _ in range(20)], False, single_parents(parents, 42))
    assert not full and len(groups) == 3 and all(id(m) in grouping.columns for m, _ in groups)
    masks = [[] for _ in range(20)] + [groups]
    fulls = fulls + [frozenset()]
    composed = []

    def compose(a, b):
        composed.append((a, b))
        return a.compose(b)

    eye2, eye3 = np.eye(2, dtype=bool), np.eye(3, dtype=bool)
    conv = Relation.of(Term((ones_factor(5, 7), eye2, eye3)))
    middle = Relation.of(Term((np.eye(3, 7, k=2, dtype=bool), eye2, eye3)))
    for child, n_composed in ((conv, 1), (middle, 3)):
        grouping.compose = compose
        composed.clear()
        full, got = grouping.groups(child.terms[0].out_dims, {20: child}, fulls, masks, False, None)
        assert len(composed) == n_composed
        want = {}
        for m, ks in groups:
            rows = (child.dense().astype(int) @ m.dense().astype(int))[:, 0] > 0
            want |= {k: "full" if rows.all() else tuple(np.flatnonzero(rows)) for k in ks}
        assert _dense_groups(full, got) == want
        assert list(want.values()).count("full") == (3 if child is conv else 1)


def test_a_copied_run_is_found_only_where_the_dense_pairs_are_one():
    # Random 6 × 5 channel factors (shifted identities, cut short by an edge or not, with
    # a one moved, added or removed, anti-diagonals, random sparse ones), then the
    # identity over a 2 × 2 map: a run is reported iff the dense pairs are (a0 + t,
    # b0 + t) for t < n and nothing else, with those runs.
    rng = np.random.default_rng(9)
    eye2 = np.eye(2, dtype=bool)
    found = 0
    for _ in range(300):
        kind = rng.integers(4)
        f = np.zeros((6, 5), dtype=bool)
        a, c, n = int(rng.integers(0, 6)), int(rng.integers(0, 5)), int(rng.integers(1, 6))
        for t in range(n):
            if a + t < 6 and c + t < 5:
                f[a + t, c + t if kind != 1 else max(c - t, 0)] = True
        if kind == 2:
            f[int(rng.integers(0, 6)), int(rng.integers(0, 5))] ^= True
        elif kind == 3:
            f = rng.random((6, 5)) < 0.15
        rel = Relation.of(Term((f, eye2, eye2)))
        got = _block_copies({4: rel})
        o, i = np.nonzero(rel.dense())
        run = o.size > 0 and (np.diff(o) == 1).all() and (np.diff(i) == 1).all()
        if not run:
            assert got is None
            continue
        found += 1
        assert got == [(4, slice(int(o[0]), int(o[-1]) + 1), slice(int(i[0]), int(i[-1]) + 1))]
    assert found > 100
