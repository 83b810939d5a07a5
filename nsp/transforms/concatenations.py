"""Concatenations in the ``INCL=True`` kernel: gathers, masks and a gather's parts.

A concatenation's consumer relates to each earlier layer through one part per input.
:class:`~nsp.transforms.product_kernel.ProductKernel` treats three cases without composing
a relation per pair of layers:

- a layer whose every node has one parent node (a concatenation's BatchNorm) is a
  *gather* (:func:`single_parents`): each node reads its parent's signal;
- layers full below some parts are below every node of those parts, a row mask times
  all of K, kept in groups (:class:`MaskGroups`, :func:`merge_pieces`);
- a gather's other relations stay as their parts (:class:`Parts`), composed by its
  children one part at a time.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Any, Callable, Mapping

import numpy as np

from nsp.graph.relations import Relation, Term, eye_factor, ones_factor
from nsp.graph.relations.boolean import is_ones

__all__ = ["MaskGroups", "Parts", "content_key", "covers_rows", "merge_pieces", "rows_reached", "single_parents"]


def _as_slice(index: np.ndarray) -> np.ndarray | slice:
    """``index`` as a slice when it is a run of consecutive integers (a view, not a copy)."""
    if index.size and index[-1] - index[0] == index.size - 1 and (index.size == 1 or (np.diff(index) == 1).all()):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def single_parents(parents: Mapping[int, Relation], n_out: int) -> list[tuple[int, Any, Any]] | None:
    """Per parent layer P, ``(P, rows, nodes)``: the nodes of L with their one parent node in P.

    Terms with more than one node per row are ruled out from their factors, before any
    pair is listed.

    Parameters
    ----------
    parents : mapping of int to Relation
        Layer L's relation to each parent layer.
    n_out : int
        The number of nodes of L.

    Returns
    -------
    list of (int, slice or ndarray, slice or ndarray) or None
        None unless every node of L has exactly one parent node among all its parent
        layers (a concatenation, a slice, a permutation); ``rows`` and ``nodes`` are
        slices where they are runs.
    """
    blocks = _block_copies(parents)
    if blocks is not None:
        # Blocks that tile L in order: every node once, with no pair listed.
        stop = 0
        for _, rows, _ in sorted(blocks, key=lambda b: b[1].start):
            if rows.start != stop:
                return None
            stop = rows.stop
        return blocks if stop == n_out else None
    for e in parents.values():
        for t in e.terms:
            if any(f.shape[1] > 1 and (f is ones_factor(*f.shape) or f.sum(axis=1).max() > 1) for f in t.factors):
                return None
    if sum(t.nnz() for e in parents.values() for t in e.terms) != n_out:
        return None
    pairs = {}
    for p, e in parents.items():
        # The terms' own pairs: overlapping terms repeat a node, which the count below refuses.
        found = [t.edges() for t in e.terms]
        out, inn = np.concatenate([o for o, _ in found]), np.concatenate([i for _, i in found])
        order = np.argsort(out, kind="stable")
        pairs[p] = (out[order], inn[order])
    rows = np.concatenate([out for out, _ in pairs.values()])
    if rows.size != n_out:
        return None
    # n_out pairs that reach every node: each node once (no sort).
    seen = np.zeros(n_out, dtype=bool)
    seen[rows] = True
    if not seen.all():
        return None
    return [(p, _as_slice(out), _as_slice(inn)) for p, (out, inn) in pairs.items() if out.size]


def _block_copies(parents: Mapping[int, Relation]) -> list[tuple[int, slice, slice]] | None:
    """Per parent layer, ``(P, rows, nodes)`` where each relation is one run of nodes of L
    copying one run of nodes of P in order; None where some relation is not.

    So is a concatenation's slice: a shifted identity block on the concatenated axis and
    the identity after it. Read from the factors, it costs no pass over the nodes (the
    pairs of DenseNet-121's 58 gathers were a fifth of its plan with every leaf).
    """
    out = []
    for p, e in parents.items():
        # A relabelled term (a permutation of axes) is not a copy in order.
        if len(e.terms) != 1 or e.terms[0].in_order is not None:
            return None
        factors = e.terms[0].factors
        lead = 0
        while lead < len(factors) and factors[lead].shape == (1, 1) and factors[lead][0, 0]:
            lead += 1
        if lead == len(factors):
            return None
        rest = factors[lead + 1:]
        if not all(g.shape[0] == g.shape[1] and (g is eye_factor(g.shape[0]) or np.array_equal(g, eye_factor(g.shape[0])))
                   for g in rest):
            return None
        f = factors[lead]
        width = int(np.count_nonzero(f))
        # The first one (row-major) starts the diagonal; a diagonal of ``width`` ones
        # from it then holds every one. Three numpy calls: this runs for every part of
        # every concatenation (DenseNet-121: 593 parts).
        a, c = divmod(int(f.argmax()), f.shape[1])
        if not width or f[a:a + width, c:c + width].diagonal().sum() != width:
            return None
        size = math.prod(g.shape[0] for g in rest)
        out.append((p, slice(a * size, (a + width) * size), slice(c * size, (c + width) * size)))
    return out


def merge_pieces(
    pieces: list[tuple[Relation, frozenset[int]]], union: Callable[[Relation, Relation], Relation]
) -> list[tuple[Relation, frozenset[int]]]:
    """Regroup ``(mask, layers)`` pieces so that each layer is in one.

    A layer in several pieces is below the union of their masks. One union per distinct
    set of pieces, taken with ``union`` (the caller's memoised union).

    Parameters
    ----------
    pieces : list of (Relation, frozenset of int)
        N_L × 1 masks and the layers below all of each mask's nodes.
    union : callable
        ``union(a, b)`` of two relations.

    Returns
    -------
    list of (Relation, frozenset of int)
        Masks and disjoint sets of layers.
    """
    pieces = [(m, ks) for m, ks in pieces if ks]
    if len(pieces) <= 1:
        return pieces
    # Folded from the last piece: sets of pieces that share their tail (the parts of a
    # concatenation after some layer) share their unions through the caller's memo.
    return [
        (functools.reduce(union, [pieces[i][0] for i in found[::-1]]), ks)
        for found, ks in _regroup([ks for _, ks in pieces])
    ]


def _regroup(sets: list[frozenset[int]]) -> list[tuple[Any, frozenset[int]]]:
    """Per distinct set of ``sets`` holding some layer: ``(their indices, ascending; those layers)``.

    Nested sets (the parts of a DenseNet concatenation: a layer full below one part is
    full below every later one) are differences of consecutive ones. Otherwise which sets
    hold each layer is read as bit columns, in one numpy pass instead of a Python loop
    over every layer of every set.
    """
    order = sorted((i for i, ks in enumerate(sets) if ks), key=lambda i: len(sets[i]))
    if not order:
        return []
    if all(sets[a] <= sets[b] for a, b in zip(order, order[1:])):
        out, before = [], frozenset()
        for k, i in enumerate(order):
            if len(sets[i]) > len(before):
                out.append((sorted(order[k:]), sets[i] - before))
            before = sets[i]
        return out
    member = np.zeros((len(sets), max(max(sets[i]) for i in order) + 1), dtype=bool)
    for i in order:
        member[i, np.fromiter(sets[i], np.int64, len(sets[i]))] = True
    layers = np.flatnonzero(member.any(axis=0))
    columns = np.packbits(member[:, layers], axis=0).T
    _, first, inverse = np.unique(columns, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    return [
        (np.flatnonzero(member[:, layers[column]]).tolist(), frozenset(layers[inverse == c].tolist()))
        for c, column in enumerate(first)
    ]


class Parts:
    """A gather's relation to an earlier layer K, ``∪ outer ∘ inner`` over its parts, not
    composed: ``outer`` is the gather's relation to one parent P (a slice of a
    concatenation), ``inner`` P's relation to K (None when K is P).

    Composed and unioned at the gather, a DenseNet block's parts were composed once per
    concatenation that holds them (O(L²) relations per block, for a 1×1 convolution to
    mix the channels right after). A child composes each part instead, with its own
    relation to P first, and those are the same for every concatenation of the block.
    """

    __slots__ = ("parts",)

    def __init__(self, parts: tuple[tuple[Relation, Relation | None], ...]) -> None:
        self.parts = parts


def content_key(f: np.ndarray) -> Any:
    """A hashable key equal for factors of equal content.

    The shared all-ones and identity factors go by name: a classifier's all-ones factor
    has 10^8 entries.
    """
    # Known by id, without a cache call per factor: a plan keys every relation it holds.
    if is_ones(f):
        return ("ones", f.shape)
    p, q = f.shape
    if p == q and f is eye_factor(p):
        return ("eye", p)
    return (f.shape, f.tobytes())


def covers_rows(rel: Relation) -> bool:
    """Whether some term of ``rel`` gives every output node at least one input node."""
    return any(all(f is ones_factor(*f.shape) or f.any(axis=1).all() for f in t.factors) for t in rel.terms)


def rows_reached(rel: Relation) -> Relation:
    """``rel`` composed with the all-ones column of its in side: each term's rows with a
    pair, factor by factor, without splitting the column to the term's axes."""
    if not rel.terms:
        return Relation((), rel.n_out, 1)
    terms = []
    for t in rel.terms:
        kept = tuple(
            ones_factor(f.shape[0], 1) if f is ones_factor(*f.shape) else f.any(axis=1, keepdims=True)
            for f in t.factors if f.shape[0] > 1 or not f.any()
        )
        terms.append(Term(kept or (np.ones((1, 1), dtype=bool),)))
    return Relation.of(terms[0]).union(*(Relation.of(t) for t in terms[1:]))


def _column_split(shape: tuple[int, ...], gather: list[tuple[int, Any, Any]]) -> tuple[int, tuple[int, ...]] | None:
    """``(n, rest)`` where L's nodes are ``n`` runs of ``prod(rest)`` nodes (its first axis
    longer than 1, then the others) and every slice of ``gather`` is a run of such runs;
    None where some part is not (an index array, a slice within the runs)."""
    dims = [d for d in shape if d != 1]
    if not dims:
        return None
    rest = tuple(dims[1:])
    size = math.prod(rest)
    for _, rows, _ in gather:
        if not isinstance(rows, slice) or rows.start % size or rows.stop % size:
            return None
    return dims[0], rest


class MaskGroups:
    """Per layer L, which earlier layers are full below L and which are below some nodes
    of L entirely, in groups sharing one N_L × 1 mask (see the module docstring).

    A concatenation's part P feeds a run of L's first axis, and a layer full below P is
    below all of it. At a gather of such parts each group's mask is a column over that
    axis times all of the others, so the masks of a k-part concatenation (a DenseNet
    block's) are k columns and their ``or``, one term each, not unions of relations. The
    columns are kept: a mask holding the column of one whose composition with a child's
    relation is full is full there too, and is not composed.

    Parameters
    ----------
    compose, union : callable
        The caller's memoised ``compose(a, b)`` (``a ∘ b``) and ``union(a, b)``.
    full_of : callable
        Whether a relation is full (every node reaches every node).
    """

    def __init__(
        self,
        compose: Callable[[Relation, Relation], Relation],
        union: Callable[[Relation, Relation], Relation],
        full_of: Callable[[Relation], bool],
    ) -> None:
        self.compose, self.union, self.full_of = compose, union, full_of
        self.covers: dict[int, tuple[Relation, Relation]] = {}
        # id of a mask built from columns -> (the mask, (axis length, other axes), its
        # column as the bits of an int, their count); the mask is kept, so that its id
        # stays its own. Python ints: a child tests containment once per mask.
        self.columns: dict[int, tuple[Relation, tuple[int, tuple[int, ...]], int, int]] = {}

    def cover_of(self, e: Relation) -> Relation:
        """``e ∘ (all of its parent layer)``: which nodes of L have a parent there (an N_L × 1 relation)."""
        if id(e) not in self.covers:
            self.covers[id(e)] = (e, rows_reached(e))
        return self.covers[id(e)][1]

    def groups(
        self,
        shape: tuple[int, ...],
        parents: Mapping[int, Relation],
        fulls: list[frozenset[int]],
        masks: list[list[tuple[Relation, frozenset[int]]]],
        copy: bool,
        gather: list[tuple[int, Any, Any]] | None,
    ) -> tuple[set[int], list[tuple[Relation, frozenset[int]]]]:
        """The layers full below L, and the others below whole masks of L.

        Parameters
        ----------
        shape : tuple of int
            L's shape.
        parents : mapping of int to Relation
            L's relation to each parent layer.
        fulls, masks : list
            Per earlier layer K, the layers full below K, and K's groups ``(mask, layers)``.
        copy : bool
            Whether L is its one parent through the identity.
        gather : list or None
            :func:`single_parents` of L.

        Returns
        -------
        (set of int, list of (Relation, frozenset of int))
            The full layers, and masks (none full) with disjoint sets of layers.
        """
        if copy:
            # The identity keeps every mask as it is, each already apart from the full layers.
            (p,) = parents
            return set(fulls[p]), list(masks[p])
        if gather is not None and len(gather) > 1 and not any(masks[p] for p in parents):
            split = _column_split(shape, gather)
            if split is not None:
                return self._column_groups(split, gather, fulls)
        covering = {p for p, e in parents.items() if covers_rows(e)}
        full: set[int] = set().union(*(fulls[p] for p in covering))
        if len(parents) == 1:
            (p, e), = parents.items()
            return full, self._one_parent(full, e, frozenset() if p in covering else fulls[p], masks[p])
        pieces: list[tuple[Relation, frozenset[int]]] = []
        for p, e in parents.items():
            if p not in covering and fulls[p]:
                pieces.append((self.cover_of(e), fulls[p] - full))
            pieces += [(self.compose(e, m), ks - full) for m, ks in masks[p]]
        groups = []
        for mask, ks in merge_pieces(pieces, self.union):
            if self.full_of(mask):
                full.update(ks)
            else:
                groups.append((mask, ks))
        return full, groups

    def _one_parent(
        self, full: set[int], e: Relation, below: frozenset[int], masks: list[tuple[Relation, frozenset[int]]]
    ) -> list[tuple[Relation, frozenset[int]]]:
        """The groups of a layer with one parent (``e``): its cover over the layers full
        below the parent (``below``, unless it covers every row), and each mask of the
        parent composed with ``e``. They hold disjoint layers, so nothing is regrouped.

        ``e ∘ m`` grows with ``m``, so a column mask holding the column of one whose
        composition is full is full too, and is not composed: the nested masks of a
        DenseNet concatenation, all made full by the 1×1 convolution after it, cost one
        composition instead of one per part. Layers of full masks go to ``full``.
        """
        groups = []
        if below:
            cover = self.cover_of(e)
            if self.full_of(cover):
                full.update(below)
            else:
                groups.append((cover, below))
        # Smaller columns first, so that the larger ones are found full by containment.
        ordered = sorted(masks, key=lambda mk: self.columns[id(mk[0])][3] if id(mk[0]) in self.columns else 0)
        done: list[tuple[tuple[int, tuple[int, ...]], int]] = []
        for m, ks in ordered:
            column = self.columns.get(id(m))
            if column is not None and any(split == column[1] and not c & ~column[2] for split, c in done):
                full.update(ks)
                continue
            mask = self.compose(e, m)
            if not self.full_of(mask):
                groups.append((mask, ks))
                continue
            full.update(ks)
            if column is not None:
                done.append((column[1], column[2]))
        return groups

    def _column_groups(
        self, split: tuple[int, tuple[int, ...]], gather: list[tuple[int, Any, Any]], fulls: list[frozenset[int]]
    ) -> tuple[set[int], list[tuple[Relation, frozenset[int]]]]:
        """:func:`merge_pieces` of the parts' covers, as columns over L's first axis: the
        layers below every part (then full below L), and the groups."""
        n, rest = split
        size = math.prod(rest)
        columns = np.zeros((len(gather), n), dtype=bool)
        bits = []
        for i, (_, rows, _) in enumerate(gather):
            columns[i, rows.start // size: rows.stop // size] = True
            bits.append(((1 << (rows.stop - rows.start) // size) - 1) << rows.start // size)
        full: set[int] = set()
        groups = []
        for found, ks in _regroup([fulls[p] for p, _, _ in gather]):
            held = functools.reduce(operator.or_, [bits[i] for i in found])
            if held == (1 << n) - 1:
                full.update(ks)
                continue
            column = columns[found].any(axis=0)
            mask = Relation.of(Term((column[:, None],) + tuple(ones_factor(d, 1) for d in rest)))
            self.columns[id(mask)] = (mask, split, held, held.bit_count())
            groups.append((mask, ks))
        return full, groups
