"""Concatenations in the ``INCL=True`` kernel: gathers, masks and a gather's parts.

A concatenation's consumer relates to each earlier layer through one part per input.
:class:`~nsp.transforms.product_kernel.ProductKernel` treats three cases without composing
a relation per pair of layers:

- a layer whose every node has one parent node (a concatenation's BatchNorm) is a
  *gather* (:func:`single_parents`): each node reads its parent's signal;
- layers full below some parts are below every node of those parts, a row mask times
  all of K, kept in groups (:func:`merge_pieces`);
- a gather's other relations stay as their parts (:class:`Parts`), composed by its
  children one part at a time.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping

import numpy as np

from nsp.graph.relations import Relation, eye_factor, ones_factor

__all__ = ["Parts", "content_key", "merge_pieces", "single_parents"]


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
        rows = f.any(axis=1)
        a = int(rows.argmax())
        # As many ones as rows with one, in a run of rows: one a row; then the diagonal
        # from the first row's one holds them all.
        if not width or np.count_nonzero(rows) != width or not rows[a:a + width].all():
            return None
        c = int(f[a].argmax())
        if c + width > f.shape[1] or not f[np.arange(a, a + width), np.arange(c, c + width)].all():
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
    # Which pieces hold each layer, as bit columns: one numpy pass instead of a Python loop
    # over every layer of every piece (DenseNet: each concatenated part is full over most
    # of the network).
    member = np.zeros((len(pieces), max(max(ks) for _, ks in pieces) + 1), dtype=bool)
    for i, (_, ks) in enumerate(pieces):
        member[i, np.fromiter(ks, np.int64, len(ks))] = True
    layers = np.flatnonzero(member.any(axis=0))
    columns = np.packbits(member[:, layers], axis=0).T
    _, first, inverse = np.unique(columns, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    out = []
    for c, column in enumerate(first):
        found = np.flatnonzero(member[:, layers[column]])
        # Folded from the last piece: sets of pieces that share their tail (the parts of a
        # concatenation after some layer) share their unions through the caller's memo.
        mask = functools.reduce(union, [pieces[i][0] for i in found[::-1]])
        out.append((mask, frozenset(layers[inverse == c].tolist())))
    return out


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
    if f is ones_factor(*f.shape):
        return ("ones", f.shape)
    if f.shape[0] == f.shape[1] and f is eye_factor(f.shape[0]):
        return ("eye", f.shape[0])
    return (f.shape, f.tobytes())
