"""Per-axis operations that apply one product term to a tensor (the compiled plan of
:class:`~nsp.transforms.product_kernel.ProductKernel`).

A term ``f_1 ⊗ … ⊗ f_d`` of 0/1 factors acts on a tensor shaped by its in-dims axis by
axis: an all-ones factor is a sum over its axis, a factor whose rows are runs of ones is
a difference of prefix sums, any other factor a small dense product, and the identity
nothing. :func:`compile_term` picks each factor's operation once per plan;
:func:`apply_ops` runs them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nsp.graph.relations import Term, ones_factor
from nsp.graph.relations.boolean import is_ones

__all__ = ["apply_ops", "compile_term", "factor_op", "summed_mask"]


def compile_term(term: Term, memo: dict[Any, tuple[np.ndarray, str | None, Any, float]] | None = None) -> tuple[
    tuple[int, ...], tuple[int, ...], Any, float
]:
    """Per-axis operations that apply ``term`` to a tensor shaped by its in-dims, in its in order.

    A relabelled term's input is summed over its all-ones axes as it comes, then viewed in
    factor order.

    Parameters
    ----------
    term : Term
        A product of 0/1 factors.
    memo : dict, optional
        Each factor's operation by ``id`` (a plan's terms share their factors), the factor
        kept with it so that its id stays its own; and by content, for factors of up to
        ``_KEYED_ENTRIES`` entries.

    Returns
    -------
    tuple
        The in-dims, the out-dims, ``(axes to sum, remaining per-axis operations)`` for
        :func:`apply_ops`, and log2 of the largest row count (for the majorant).
    """
    ops: list[tuple[int, str, Any]] = []
    row_bits = 0.0
    for axis, f in enumerate(term.factors):
        _, kind, data, bits = (f,) + factor_op(f) if memo is None else _factor_op_once(f, memo)
        row_bits += bits
        if kind is not None:
            ops.append((axis, kind, data))
    place = {factor: k + 1 for k, factor in enumerate(term.in_sequence)}
    ones = tuple(place[axis] for axis, kind, _ in ops if kind == "ones")
    # Axes that shrink first, those that grow last: the other order made ConvNeXt's permuted layers pass
    # 8×8-times-larger intermediates through every cumulative sum. Within a growth, intervals before dense products.
    rest = sorted(
        (op for op in ops if op[1] != "ones"),
        key=lambda op: (term.factors[op[0]].shape[0] / term.factors[op[0]].shape[1], op[1] != "intervals"),
    )
    if term.in_order is not None:
        rest = [(-1, "transpose", (0,) + tuple(place[i] for i in range(len(term.factors))))] + rest
    return term.in_dims, term.out_dims, (ones, rest), row_bits


# Factors of up to this many entries are also known by content in compile_term's memo.
_KEYED_ENTRIES = 1 << 16


def _factor_op_once(f: np.ndarray, memo: dict[Any, tuple[np.ndarray, str | None, Any, float]]) -> tuple[
    np.ndarray, str | None, Any, float
]:
    found = memo.get(id(f))
    if found is None:
        # The disjoint pieces of a plan's unions are new arrays of a few distinct contents
        # (ShuffleNet with every leaf: 243 factors compiled, 115 distinct).
        key = (f.shape, f.dtype.str, f.tobytes()) if f.size <= _KEYED_ENTRIES and not is_ones(f) else None
        found = memo.get(key) if key is not None else None
        if found is None:
            found = (f,) + factor_op(f)
            if key is not None:
                memo[key] = found
        # The factor is kept with its operation, so its id stays its own.
        found = memo[id(f)] = (f,) + found[1:]
    return found


def factor_op(f: np.ndarray) -> tuple[str | None, Any, float]:
    """One factor's operation in :func:`compile_term`.

    Parameters
    ----------
    f : numpy.ndarray
        A 0/1 factor, ``(out, in)``.

    Returns
    -------
    tuple of (str or None, Any, float)
        ``'ones'`` (a sum over the axis), ``'intervals'`` with each row's ``(lo, hi)``,
        ``'dense'`` with the factor as int64, or None for the identity and a 1 × 1
        factor; then log2 of the largest row count.
    """
    p, q = f.shape
    nonzero = f.size if f is ones_factor(p, q) else np.count_nonzero(f)
    if nonzero == f.size:
        return (None if p == q == 1 else "ones"), None, math.log2(q)
    if p == q == nonzero and f.diagonal().all():
        return None, None, 0.0
    lo = np.argmax(f, axis=1)
    count = f.sum(axis=1)
    bits = math.log2(max(1, int(count.max())))
    hi = lo + count
    # A row is an interval iff at most one run of ones starts in it.
    starts = f[:, 0] + np.count_nonzero(f[:, 1:] & ~f[:, :-1], axis=1)
    if starts.max() <= 1:
        # A row without ones has argmax 0 and count 0, so its interval is [0, 0) already.
        return "intervals", (lo, hi), bits
    return "dense", f.astype(np.int64), bits


def summed_mask(natural: tuple[int, ...], in_dims: tuple[int, ...], ones: tuple[int, ...]) -> tuple[bool, ...] | None:
    """Which axes of a layer's own shape a sum over ``ones`` of ``in_dims`` covers.

    Parameters
    ----------
    natural : tuple of int
        The layer's own shape, sizes 1 dropped.
    in_dims : tuple of int
        A term's in-dims over the layer.
    ones : tuple of int
        The summed axes of ``in_dims``, counted from 1 as in :func:`compile_term`.

    Returns
    -------
    tuple of bool or None
        Per axis of ``natural``, whether the sum covers it; None unless every axis of
        ``in_dims`` is a run of whole axes of ``natural`` (a coarsening).
    """
    mask: list[bool] = []
    i = 0
    for axis, d in enumerate(in_dims, start=1):
        if d == 1:
            continue
        size, start = 1, i
        while size < d and i < len(natural):
            size *= natural[i]
            i += 1
        if size != d:
            return None
        mask += [axis in ones] * (i - start)
    return tuple(mask) if i == len(natural) else None


def apply_ops(x: np.ndarray, ops: list[tuple[int, str, Any]]) -> np.ndarray:
    """Apply the per-axis operations of :func:`compile_term` to ``x``.

    Parameters
    ----------
    x : numpy.ndarray
        ``(batch, *in_dims)``, summed axes of size 1.
    ops : list of (int, str, Any)
        ``(axis, kind, data)`` as :func:`compile_term` returns them, in order.

    Returns
    -------
    numpy.ndarray
        ``(batch, *out_dims)``.
    """
    for axis, kind, data in ops:
        ax = axis + 1
        if kind == "transpose":
            x = x.transpose(data)
        elif kind == "intervals":
            lo, hi = data
            shape = list(x.shape)
            shape[ax] += 1
            cum = np.zeros(shape, dtype=x.dtype)
            # The methods, not numpy's module functions: their Python wrappers cost as much as a small array's pass.
            x.cumsum(axis=ax, out=cum[(slice(None),) * ax + (slice(1, None),)])
            x = cum.take(hi, axis=ax) - cum.take(lo, axis=ax)
        else:
            x = np.moveaxis(np.tensordot(x, data.astype(x.dtype), axes=([ax], [1])), -1, ax)
    return x
