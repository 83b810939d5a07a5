"""Axis permutations that ``INCL=True`` keeps aside instead of applying to the relations.

A ``permute``/``transpose``/``movedim`` only changes which logical axis each tensor axis
is (:func:`axis_order`); rules that act axis by axis apply in logical order
(:func:`reorder_aligned`), and only where another op needs the tensor's own order are the
relation's rows reordered (:func:`permute_rows`), merging the factors the permutation
moves or, where that merged factor would be large, cutting the term into a union.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from nsp.graph.dataflow import Op
from nsp.graph.relations import Relation, StructureError, Term, ones_factor
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
    spatial axes), the term is cut into a union instead (:func:`_permute_by_rows`).
    """
    blocks = _blocks(perm)
    sizes = [math.prod(logical[a:b]) for a, b in blocks]
    axes = None
    if any(b - a > 1 for a, b in blocks):
        try:
            axes = term.to_side("out", [d for d in logical if d != 1])
        except StructureError:
            pass  # the out side is not a product along the logical axes: only merging can help
    if axes is not None:
        axis_of = _axes_of(axes, logical)
        for a, b in blocks:
            if b - a > 1 and math.prod(f.size for f, x in zip(axes.factors, axis_of)
                                       if x is not None and a <= x < b) > MERGED_PERMUTE_ENTRIES:
                return _permute_by_rows(axes, logical, perm)
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


def _axes_of(term: Term, logical: tuple[int, ...]) -> list[int | None]:
    """The logical axis of each factor of ``term`` (one factor per non-1 logical out axis); None for rows ``(1, q)``."""
    nonone = iter(a for a, d in enumerate(logical) if d != 1)
    return [None if f.shape[0] == 1 else next(nonone) for f in term.factors]


def _permute_by_rows(term: Term, logical: tuple[int, ...], perm: tuple[int, ...]) -> list[Term]:
    """``term`` with its out axes reordered by ``perm``, as a union of products.

    ``term`` has one factor per non-1 logical out axis (and row factors ``(1, q)``).
    A Kronecker product keeps one order for both sides, so factors keep their place
    only if they form an increasing run of the new order; the heaviest such run stays.
    Every other factor ``F`` is written as ``Σ_u col_u ⊗ u`` over its distinct rows
    ``u`` (``col_u`` marks the rows equal to ``u``): the column ``(p, 1)`` goes to the
    axis's new place among the out axes, the row ``(1, q)`` stays at its place among
    the in axes, and columns and rows commute. A channels-last ``Permute`` after a
    depthwise convolution becomes one term per channel (or per position, whichever
    axis is smaller), and composing with the next LayerNorm folds them back into one.
    """
    # An all-ones factor is a column times a row, and those move freely.
    term = Term(tuple(g for f in term.factors for g in (
        (ones_factor(f.shape[0], 1), ones_factor(1, f.shape[1])) if 1 not in f.shape and f is ones_factor(*f.shape)
        else (f,))))
    axis_of = _axes_of(term, logical)
    new_place = {a: j for j, a in enumerate(perm)}
    full = [i for i, f in enumerate(term.factors) if axis_of[i] is not None and f.shape[1] != 1]
    # Heaviest increasing run of new places among full factors (weight: log of rows kept aside).
    best: dict[int, tuple[float, list[int]]] = {}
    for i in full:
        prev = [best[j] for j in full if j < i and j in best and new_place[axis_of[j]] < new_place[axis_of[i]]]
        w, run = max(prev, key=lambda b: b[0], default=(0.0, []))
        best[i] = (w + math.log(term.factors[i].shape[0]), run + [i])
    kept = max(best.values(), key=lambda b: b[0], default=(0.0, []))[1]
    cut = [i for i in full if i not in kept]
    choices = []
    for i in cut:
        f = term.factors[i]
        rows, inverse = np.unique(f, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        choices.append([(inverse[:, None] == u, rows[u][None, :]) for u in range(len(rows)) if rows[u].any()])
    out: list[Term] = []
    for pick in itertools.product(*choices):
        cols = {i: c for i, (c, _) in zip(cut, pick)}
        rows_of = {i: r for i, (_, r) in zip(cut, pick)}
        # The out sequence (new order) and the in sequence (old order) meet at the kept factors.
        out_seq = sorted((i for i, a in enumerate(axis_of) if a is not None and i not in kept),
                         key=lambda i: new_place[axis_of[i]])
        factors: list[np.ndarray] = []
        pending_in: list[np.ndarray] = []
        for i, f in enumerate(term.factors):
            if i in kept:
                limit = new_place[axis_of[i]]
                factors += [cols.get(j, term.factors[j]) for j in out_seq if new_place[axis_of[j]] < limit]
                out_seq = [j for j in out_seq if new_place[axis_of[j]] > limit]
                factors += pending_in + [f]
                pending_in = []
            elif i in rows_of:
                pending_in.append(rows_of[i])
            elif axis_of[i] is None:
                pending_in.append(f)
        factors += [cols.get(j, term.factors[j]) for j in out_seq] + pending_in
        out.append(Term(tuple(factors)))
    return out


def reorder_aligned(rel: Term | Relation, perm: tuple[int, ...], path: str, label: str) -> Relation:
    """An axis-aligned relation (factor ``j`` maps axis ``j`` to axis ``j``) in logical axis order."""
    inverse = [perm.index(l) for l in range(len(perm))]
    terms = (rel,) if isinstance(rel, Term) else rel.terms
    out = []
    for t in terms:
        if len(t.factors) != len(perm):
            raise unsupported(path, label, "its rule's relation is not one factor per axis")
        out.append(Term(tuple(t.factors[j] for j in inverse)))
    return Relation(tuple(out), out[0].n_out, out[0].n_in)


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
