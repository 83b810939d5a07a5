"""Axis permutations that ``INCL=True`` keeps aside instead of applying to the relations.

A ``permute``/``transpose``/``movedim`` only changes which logical axis each tensor axis
is (:func:`axis_order`); rules that act axis by axis apply in logical order
(:func:`reorder_aligned`), and only where another op needs the tensor's own order are the
relation's rows reordered (:func:`permute_rows`), merging the factors the permutation
moves or, where that merged factor would be large, relabelling the term's in axes.
"""

from __future__ import annotations

import math

import numpy as np

from nsp.graph.dataflow import Op
from nsp.graph.relations import Relation, StructureError, Term
from nsp.graph.relations.reorder import axes_of, cut, relabel_out
from nsp.graph.rules import unsupported

__all__ = ["PERMUTE_NAMES", "MERGED_PERMUTE_ENTRIES", "axis_order", "permute_rows", "reorder_aligned"]


def _blocks(perm: tuple[int, ...]) -> list[tuple[int, int]]:
    """The finest split of ``range(len(perm))`` into intervals that ``perm`` maps onto themselves."""
    out, start, reach = [], 0, -1
    for j, p in enumerate(perm):
        reach = max(reach, p)
        if reach == j:
            out.append((start, j + 1))
            start = j + 1
    return out


# Largest factor that undoing a permutation merges; beyond it the term is cut instead.
MERGED_PERMUTE_ENTRIES = 1 << 20


def permute_rows(term: Term, logical: tuple[int, ...], perm: tuple[int, ...]) -> list[Term]:
    """``term`` (out side in ``logical`` axis order) with its out side in the order ``perm``.

    Axis ``j`` of the result is logical axis ``perm[j]``. Only the factors of the blocks
    that ``perm`` moves are merged and their rows reordered, so a transpose inside one
    axis group (a channel shuffle) stays as small as that group. Where that merged factor
    would be large (ConvNeXt's and Swin's ``Permute`` layers move channels past both
    spatial axes), the term stays one product with its in axes relabelled instead
    (:func:`~nsp.graph.relations.reorder.relabel_out`).
    """
    blocks = _blocks(perm)
    sizes = [math.prod(logical[a:b]) for a, b in blocks]
    axes = None
    # A merged factor has at most (its rows) × (the term's in size) entries: a channel
    # shuffle's never reach the bound, and only terms that might are split to check.
    if any(b - a > 1 and size * term.n_in > MERGED_PERMUTE_ENTRIES for (a, b), size in zip(blocks, sizes)):
        try:
            axes = term.to_side("out", [d for d in logical if d != 1])
        except StructureError:
            pass  # the out side is not a product along the logical axes: only merging can help
    if axes is not None:
        axis_of = axes_of(axes, logical)
        for a, b in blocks:
            if b - a > 1 and math.prod(f.size for f, x in zip(axes.factors, axis_of)
                                       if x is not None and a <= x < b) > MERGED_PERMUTE_ENTRIES:
                return [relabel_out(axes, logical, perm)]
    if term.in_order is not None:
        # Merging needs the factor order on both sides.
        return [piece for plain in cut(term) for piece in permute_rows(plain, logical, perm)]
    t = term.to_side("out", [s for s in sizes if s != 1])
    factors = list(t.factors)
    k = 0
    for (a, b), size in zip(blocks, sizes):
        if size == 1:
            continue
        while factors[k].shape[0] == 1:
            k += 1
        local = tuple(p - a for p in perm[a:b])
        if local != tuple(range(b - a)):
            rows = np.arange(size).reshape(logical[a:b]).transpose(local).reshape(-1)
            factors[k] = factors[k][rows]
        k += 1
    return [Term(tuple(factors))]


def reorder_aligned(rel: Term | Relation, perm: tuple[int, ...], path: str, label: str) -> Term | Relation:
    """An axis-aligned relation (factor ``j`` maps axis ``j`` to axis ``j``) in logical axis order.

    A term stays a term, so an identity (a channel shuffle's ``contiguous``) is still
    known as one by the interpreter, which then leaves the relations as they are.
    """
    inverse = [perm.index(l) for l in range(len(perm))]
    terms = (rel,) if isinstance(rel, Term) else rel.terms
    out = []
    for t in terms:
        if len(t.factors) != len(perm):
            raise unsupported(path, label, "its rule's relation is not one factor per axis")
        out.append(Term(tuple(t.factors[j] for j in inverse)))
    return out[0] if isinstance(rel, Term) else Relation(tuple(out), out[0].n_out, out[0].n_in)


PERMUTE_NAMES = {"permute", "transpose", "transpose_", "swapaxes", "swapdims", "movedim", "moveaxis"}


def axis_order(op: Op, ndim: int) -> tuple[int, ...] | None:
    """The axis order (``order[j]``: source axis of axis ``j``) a permute-like op applies."""
    args = list(op.args[1:])
    norm = lambda d: d + ndim if d < 0 else d  # noqa: E731
    if op.name == "permute":
        dims = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else (args or op.kwargs.get("dims"))
        return tuple(norm(d) for d in dims)
    if op.name in ("movedim", "moveaxis"):
        src, dst = (args + [op.kwargs.get("source"), op.kwargs.get("destination")])[:2]
        src = [norm(s) for s in (src if isinstance(src, (tuple, list)) else [src])]
        dst = [norm(d) for d in (dst if isinstance(dst, (tuple, list)) else [dst])]
        rest = [a for a in range(ndim) if a not in src]
        order = [None] * ndim
        for s, d in zip(src, dst):
            order[d] = s
        it = iter(rest)
        return tuple(o if o is not None else next(it) for o in order)
    d0, d1 = (args + [op.kwargs.get("dim0"), op.kwargs.get("dim1")])[:2]
    order = list(range(ndim))
    order[norm(d0)], order[norm(d1)] = order[norm(d1)], order[norm(d0)]
    return tuple(order)
