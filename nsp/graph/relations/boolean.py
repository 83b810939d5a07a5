"""0/1 factor matrices: the shared all-ones and identity factors, splitting a factor into
a Kronecker product of two, and the boolean products that composing terms is made of.

A factor is a 2-d bool array, never written to once built: the all-ones and identity
factors are one shared array per shape (:func:`ones_factor`, :func:`eye_factor`) and are
recognised by identity, which spares a pass over their entries wherever they meet.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

__all__ = [
    "ones_factor", "is_ones", "eye_factor", "same_entries", "split_in", "split_out", "is_vector", "rank_one", "kron_all", "bool_matmul",
    "distinct_rows", "is_identity",
]


@functools.lru_cache(maxsize=None)
def ones_factor(p: int, q: int) -> np.ndarray:
    """The all-ones ``p × q`` factor: one shared, read-only array per shape.

    The channel factors of deep layers are almost all all-ones (every channel reaches
    every channel after one convolution); sharing them, and knowing them by identity,
    saved most of the memory and time of building ResNet-50's relations.
    """
    # A broadcast view: a classifier's (4096, 25088) factor costs no memory.
    f = np.broadcast_to(np.ones((1, 1), dtype=bool), (p, q))
    _ONES[id(f)] = f
    return f


# The shared all-ones factors by id. Held here as well as in the cache, so that no other
# array can ever take one's id.
_ONES: dict[int, np.ndarray] = {}


def is_ones(f: np.ndarray) -> bool:
    """Whether ``f`` is the shared all-ones factor of its shape (:func:`ones_factor`).

    The same as ``f is ones_factor(*f.shape)``, at a fifth of the cost: terms ask it of
    every factor they compose, pair or compare.
    """
    return id(f) in _ONES


@functools.lru_cache(maxsize=None)
def eye_factor(n: int) -> np.ndarray:
    """The ``n × n`` identity factor: one shared, read-only array per size."""
    f = np.eye(n, dtype=bool)
    f.flags.writeable = False
    _EYES[id(f)] = f
    return f


# The shared identity factors by id, held as _ONES holds the all-ones ones.
_EYES: dict[int, np.ndarray] = {}


def same_entries(f: np.ndarray, g: np.ndarray) -> bool:
    """Whether ``f`` and ``g`` have the same shape and entries (``np.array_equal``, at a third
    of its cost on small factors)."""
    return f.shape == g.shape and not np.count_nonzero(f != g)


def split_in(f: np.ndarray, q1: int, q2: int) -> list[np.ndarray] | None:
    """Write ``f`` (p × q1·q2) as a Kronecker product of two factors, if it is one."""
    p, q = f.shape
    if is_ones(f):
        return [ones_factor(p, q1), ones_factor(1, q2)]
    if f is eye_factor(p) or (p == q and same_entries(f, eye_factor(p))):
        return [eye_factor(q1), eye_factor(q2)]
    g = f.reshape(p, q1, q2)
    if not np.count_nonzero(g != g[:, :, :1]):
        return [g[:, :, 0].copy(), ones_factor(1, q2)]
    if not np.count_nonzero(g != g[:, :1, :]):
        return [ones_factor(1, q1), g[:, 0, :].copy()]
    return None


def split_out(f: np.ndarray, p1: int, p2: int) -> list[np.ndarray] | None:
    """Write ``f`` (p1·p2 × q) as a Kronecker product of two factors, if it is one."""
    parts = split_in(f.T, p1, p2)
    return None if parts is None else [part.T for part in parts]


def is_vector(f: np.ndarray) -> bool:
    """Whether ``f`` is a column ``(p, 1)`` or a row ``(1, q)`` factor."""
    return f.shape[0] == 1 or f.shape[1] == 1


def rank_one(f: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(column, row)`` whose product is ``f``, for a rank-1 factor with both sides above 1; else None."""
    p, q = f.shape
    if p == 1 or q == 1:
        return None
    if is_ones(f):
        return ones_factor(p, 1), ones_factor(1, q)
    col, row = f.any(axis=1), f.any(axis=0)
    if same_entries(f, col[:, None] & row[None, :]):
        return col[:, None], row[None, :]
    return None


def kron_all(factors: Sequence[np.ndarray]) -> np.ndarray:
    """The Kronecker product of ``factors``, a new bool array (``[[True]]`` for none)."""
    if not factors:
        return np.ones((1, 1), dtype=bool)
    out = np.array(factors[0], dtype=bool)
    for f in factors[1:]:
        # One broadcast AND per factor: numpy's kron, pure Python around several
        # reshapes, cost ten times as much on the small factors that terms hold.
        f = np.asarray(f, dtype=bool)
        (p1, q1), (p2, q2) = out.shape, f.shape
        out = (out[:, None, :, None] & f[None, :, None, :]).reshape(p1 * p2, q1 * q2)
    return out


# Up to this many multiply-adds numpy's bool matmul (OR of ANDs, no BLAS) beats converting
# both factors to float32 for BLAS: 0.6 against 4.3 µs on 2 × 2 factors, even at 16 × 16.
_BOOL_WORK = 1 << 12
_BOOL = np.dtype(bool)


def bool_matmul(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The boolean product of two factors: ``(f @ g) > 0``, shared factors where it is one."""
    # Channel factors are mostly all-ones or the identity; those need no product.
    # The shared identity by id: most of a graph's products (a layer's spatial axes after
    # an elementwise one's), which the checks below would only find after three passes.
    if id(g) in _EYES:
        return f
    if id(f) in _EYES:
        return g
    shape = (f.shape[0], g.shape[1])
    f_ones, g_ones = id(f) in _ONES, id(g) in _ONES
    if f_ones and g_ones:
        # Channels after channels (every convolution of a chain): known without a pass.
        return ones_factor(*shape)
    nf = f.size if f_ones else np.count_nonzero(f)
    ng = g.size if g_ones else np.count_nonzero(g)
    if ng == g.size or nf == f.size:
        if ng == g.size:
            # g all ones: a row of f with any edge reaches every column.
            rows, cols = np.ones(shape[0], bool) if f_ones else f.any(axis=1), np.ones(shape[1], bool)
        else:
            # f all ones: every row reaches the columns that some row of g reaches.
            rows, cols = np.ones(shape[0], bool), g.any(axis=0)
        if np.count_nonzero(rows) == shape[0] and np.count_nonzero(cols) == shape[1]:
            return ones_factor(*shape)
        return rows[:, None] & cols[None, :]
    if is_identity(f, nf):
        return g
    if is_identity(g, ng):
        return f
    work = f.shape[0] * f.shape[1] * g.shape[1]
    if work <= _BOOL_WORK and f.dtype is _BOOL and g.dtype is _BOOL:
        return np.matmul(f, g)
    # A factor that picks at most one column per row (or row per column) is a gather of
    # the other: ShuffleNet's channel splits, shuffles and concatenations, where the
    # products below converted both to float32 (up to 1,024 × 192 × 96 multiply-adds).
    if nf <= f.shape[0]:
        hit = f.any(axis=1)
        if np.count_nonzero(hit) == nf:
            out = g[f.argmax(axis=1)].astype(bool, copy=False)
            out &= hit[:, None]
            return out
    if ng <= g.shape[1]:
        hit = g.any(axis=0)
        if np.count_nonzero(hit) == ng:
            out = f[:, g.argmax(axis=0)].astype(bool, copy=False)
            out &= hit[None, :]
            return out
    if work <= 1 << 20:
        return (f.astype(np.float32) @ g.astype(np.float32)) > 0
    # Channel factors of concatenations repeat rows (one per branch) and columns: the
    # product of the distinct rows and columns only, then gathered (GoogLeNet: 832² factors).
    rows, row_of = distinct_rows(f)
    cols, col_of = distinct_rows(g.T)
    product = (rows.astype(np.float32) @ cols.T.astype(np.float32)) > 0
    return product[row_of][:, col_of]


def distinct_rows(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a 0/1 matrix, and each row's index among them."""
    if f.shape[0] == 0 or f.shape[1] == 0:
        return f[:min(1, f.shape[0])], np.zeros(f.shape[0], dtype=np.int64)
    # Each packed row as one opaque item, so np.unique compares whole rows in one sort.
    packed = np.ascontiguousarray(np.packbits(f, axis=1))
    items = packed.view(np.dtype((np.void, packed.shape[1]))).reshape(-1)
    _, first, inverse = np.unique(items, return_index=True, return_inverse=True)
    # Distinct rows numbered in the order they first appear.
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return f[first[order]], rank[inverse.reshape(-1)].astype(np.int64)


def is_identity(f: np.ndarray, nonzero: int) -> bool:
    """Whether ``f``, with ``nonzero`` entries set, is a square identity."""
    return f.shape[0] == f.shape[1] == nonzero and np.count_nonzero(f.diagonal()) == nonzero
