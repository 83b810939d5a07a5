"""Terms with relabelled axes: reordering a term's out axes, and cutting it into plain terms.

A permutation of axes is a product of identities in another order. :func:`relabel_out`
reorders a term's out axes by relabelling its in side (:attr:`Term.in_order`), so a
channels-last ``Permute`` stays one term. Where an operation needs the factor order on
both sides (a union with terms in another order, a reshape across the relabelled axes),
:func:`cut` writes the term as a union of plain products (:func:`permute_by_rows`).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from nsp.graph.relations.boolean import ones_factor
from nsp.graph.relations.term import Term, ordered_term

__all__ = ["axes_of", "cut", "permute_by_rows", "relabel_out"]


def cut(term: Term) -> list[Term]:
    """``term`` as a union of plain terms (itself if it is plain).

    The factors taken in the in order form a plain term whose out axes are in that
    order; reordering them to the factor order (:func:`permute_by_rows`) gives the term.
    """
    if term.in_order is None:
        return [term]
    sequence = term.in_order
    logical = tuple(term.factors[i].shape[0] for i in sequence)
    perm = tuple(sequence.index(j) for j in range(len(sequence)))
    return permute_by_rows(Term(tuple(term.factors[i] for i in sequence)), logical, perm)


def relabel_out(term: Term, logical: tuple[int, ...], perm: tuple[int, ...]) -> Term:
    """``term`` (one factor per non-1 logical out axis, plus rows ``(1, q)``) with its
    out side in the order ``perm`` (axis ``j`` is logical axis ``perm[j]``), as one term.

    The factors are reordered to the new out order and the in side is relabelled to
    stay where it was; rows have no out axis and go last.
    """
    axis_of = axes_of(term, logical)
    factor_of = {a: i for i, a in enumerate(axis_of) if a is not None}
    order = [factor_of[a] for a in perm if a in factor_of] + [i for i, a in enumerate(axis_of) if a is None]
    place = {i: k for k, i in enumerate(order)}
    return ordered_term([term.factors[i] for i in order], [place[i] for i in term.in_sequence])


def axes_of(term: Term, logical: tuple[int, ...]) -> list[int | None]:
    """The logical axis of each factor of ``term`` (one factor per non-1 logical out axis); None for rows ``(1, q)``."""
    nonone = iter(a for a, d in enumerate(logical) if d != 1)
    return [None if f.shape[0] == 1 else next(nonone) for f in term.factors]


def permute_by_rows(term: Term, logical: tuple[int, ...], perm: tuple[int, ...]) -> list[Term]:
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
    axis_of = axes_of(term, logical)
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
