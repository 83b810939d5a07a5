"""One Kronecker product of per-axis 0/1 factors (:class:`Term`) and its algebra.

A term's factor ``i`` maps an *out* axis of size ``p_i`` to an *in* axis of size ``q_i``.
The out sizes are a mixed-radix (row-major) factorisation of the output's flat index,
and the in sizes one of the input's; sizes of 1 are allowed on either side. A term is
re-factorised (split, merged, squeezed) to meet another's axes, and composed with it
factor by factor, so composing relations layer by layer never forms the large matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from nsp.graph.relations.boolean import (
    bool_matmul, distinct_rows, eye_factor, is_ones, is_vector, kron_all, ones_factor, rank_one, split_in, split_out,
)

__all__ = [
    "MAX_FACTOR_ENTRIES", "StructureError", "Unaligned", "Term", "ordered_term", "refinement", "coarsening", "ones_factor", "eye_factor",
    "distinct_rows", "is_vector", "pair_vectors",
]

# Coarsening merges factors by Kronecker product; beyond this many entries the relation
# is not usefully a product and we refuse rather than allocate a near-dense matrix.
MAX_FACTOR_ENTRIES = 1 << 24


class StructureError(NotImplementedError):
    """A network or relation that the structured (product-set) machinery cannot express."""


class Unaligned(StructureError):
    """A term with relabelled in axes met an operation that needs the factor order;
    cutting it into plain terms (:func:`nsp.graph.relations.reorder.cut`) resolves it."""


def _boundaries(dims: Sequence[int]) -> set[int]:
    out, acc = {1}, 1
    for d in reversed(dims):
        acc *= d
        out.add(acc)
    return out


def _dims_from_boundaries(bounds: Sequence[int]) -> tuple[int, ...]:
    b = sorted(bounds)
    return tuple(b[i + 1] // b[i] for i in reversed(range(len(b) - 1)))


def refinement(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...] | None:
    """The coarsest mixed radix refining both ``a`` and ``b`` (no 1s), or None."""
    bounds = sorted(_boundaries(a) | _boundaries(b))
    if any(bounds[i + 1] % bounds[i] for i in range(len(bounds) - 1)):
        return None
    return _dims_from_boundaries(bounds)


def coarsening(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """The finest mixed radix that both ``a`` and ``b`` refine (no 1s)."""
    return _dims_from_boundaries(_boundaries(a) & _boundaries(b))


class _once:
    """A property computed on first use and stored on the instance (a frozen dataclass
    too): ``functools.cached_property`` takes a lock per first use on Python 3.11."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn, self.name = fn, fn.__name__

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


@dataclass(frozen=True)
class Term:
    """A Kronecker product of 0/1 factors (see the module docstring).

    ``in_order`` relabels the in side: in-axis ``k`` (row-major, ``k = 0`` slowest) is
    the in side of factor ``in_order[k]``, while the out axes keep the factor order. A
    permutation of axes (a channels-last ``Permute``) is a product of identities in
    another order, so it stays one term instead of one per position. None is the
    factor order (a plain Kronecker product); a term is built with None wherever its
    in order is the factor order.
    """

    factors: tuple[np.ndarray, ...]
    in_order: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.in_order is not None and list(self.in_order) == sorted(self.in_order):
            object.__setattr__(self, "in_order", None)

    # Computed once per term: a plan asks a term for its sides and emptiness again at every
    # union and composition it enters (GoogLeNet with every leaf: thousands of times).
    @_once
    def out_dims(self) -> tuple[int, ...]:
        return tuple([f.shape[0] for f in self.factors])

    @_once
    def in_dims(self) -> tuple[int, ...]:
        if self.in_order is None:
            return tuple([f.shape[1] for f in self.factors])
        return tuple([self.factors[i].shape[1] for i in self.in_order])

    # The sides without their sizes of 1: what a composition matches up.
    @_once
    def _out_core(self) -> tuple[int, ...]:
        return tuple([d for d in self.out_dims if d != 1])

    @_once
    def _in_core(self) -> tuple[int, ...]:
        return tuple([d for d in self.in_dims if d != 1])

    @property
    def in_sequence(self) -> tuple[int, ...]:
        """The factors in the order of the in axes (``in_order``, or the factor order)."""
        return self.in_order if self.in_order is not None else tuple(range(len(self.factors)))

    @property
    def n_out(self) -> int:
        return math.prod(self.out_dims)

    @property
    def n_in(self) -> int:
        return math.prod(self.in_dims)

    def nnz(self) -> int:
        return self._nnz

    @_once
    def _nnz(self) -> int:
        # A union's containment checks sort and compare its terms by size, again at every union
        # they enter; the shared all-ones factor's count is its size, without a pass.
        return math.prod(f.size if is_ones(f) else int(np.count_nonzero(f)) for f in self.factors)

    def is_empty(self) -> bool:
        return self._empty

    @_once
    def _empty(self) -> bool:
        # A broadcast factor (strides 0: the shared all-ones) holds one value; reading it
        # beats a pass over its virtual entries (a mask's 1 × N_K row of all of K).
        # count_nonzero: a third of the cost of ``any()`` on the small factors of most terms.
        return any(
            f.size == 0 or not (f[0, 0] if f.strides == (0, 0) else np.count_nonzero(f)) for f in self.factors
        )

    @staticmethod
    def identity(dims: Sequence[int]) -> "Term":
        return Term(tuple(eye_factor(d) for d in dims))

    # -- re-factorisation -------------------------------------------------------------
    def _side(self, side: str) -> tuple[int, ...]:
        return self.in_dims if side == "in" else self.out_dims

    def split(self, side: str, target: Sequence[int]) -> "Term | None":
        """Refine ``side`` to the sizes ``target`` (no 1s) by splitting factors."""
        splitter = split_in if side == "in" else split_out
        groups: dict[int, list[np.ndarray]] = {}
        queue = list(target)
        for index in (self.in_sequence if side == "in" else range(len(self.factors))):
            f = self.factors[index]
            out = groups[index] = []
            d = f.shape[1] if side == "in" else f.shape[0]
            if d == 1:
                out.append(f)
                continue
            parts: list[int] = []
            while math.prod(parts) < d:
                parts.append(queue.pop(0))
            if math.prod(parts) != d:
                return None
            current = f
            for size in parts[:-1]:
                rest = (current.shape[1] if side == "in" else current.shape[0]) // size
                pieces = splitter(current, size, rest)
                if pieces is None:
                    return None
                out.append(pieces[0])
                current = pieces[1]
            out.append(current)
        # A factor's pieces follow one another on both sides, so the in order carries over.
        start = np.cumsum([0] + [len(groups[i]) for i in range(len(self.factors))])
        factors = tuple(g for i in range(len(self.factors)) for g in groups[i])
        if self.in_order is None:
            return Term(factors)
        return Term(factors, tuple(int(start[i]) + j for i in self.in_order for j in range(len(groups[i]))))

    def merge(self, side: str, target: Sequence[int]) -> "Term":
        """Coarsen ``side`` to the sizes ``target`` by Kronecker-merging neighbours."""
        self._require_plain("merged")
        groups: list[list[np.ndarray]] = []
        queue = list(target)
        acc = None
        for f in self.factors:
            d = f.shape[1] if side == "in" else f.shape[0]
            if acc is None or (acc == queue[0] and d != 1):
                if acc is not None:
                    queue.pop(0)
                groups.append([])
                acc = 1
            groups[-1].append(f)
            acc *= d
        return Term(tuple(_kron_all(g) for g in groups))

    def squeeze(self, side: str) -> "Term":
        """Merge factors of size 1 on ``side`` into a neighbour, so every factor has size > 1 there."""
        self._require_plain("squeezed")
        groups: list[list[np.ndarray]] = []
        pending: list[np.ndarray] = []
        for f in self.factors:
            d = f.shape[1] if side == "in" else f.shape[0]
            if d == 1:
                (groups[-1] if groups else pending).append(f)
            else:
                groups.append(pending + [f])
                pending = []
        if not groups:
            return Term((_kron_all(pending),))
        return Term(tuple(_kron_all(g) for g in groups))

    def to_side(self, side: str, dims: Sequence[int]) -> "Term":
        """Re-factorise so that ``side`` has the non-1 sizes ``dims`` exactly."""
        current = tuple(d for d in self._side(side) if d != 1)
        if current == tuple(dims):
            return self
        fine = refinement(current, dims)
        if fine == tuple(dims):
            split = self.split(side, dims)
            if split is not None:
                return split
        return self.merge(side, coarsening(current, dims)).split(side, dims) or _raise_product(self, dims)

    def _require_plain(self, what: str) -> None:
        if self.in_order is not None:
            raise Unaligned(f"nsp: a term with relabelled in axes {self.in_order} cannot be {what}")

    # -- algebra ---------------------------------------------------------------------
    def compose(self, inner: "Term") -> "Term":
        """The boolean product ``self ∘ inner`` (``inner`` is applied first).

        Raises :class:`Unaligned` where a term has relabelled in axes and the middle
        axes do not already agree (the caller cuts it into plain terms).
        """
        a, b = self._in_core, inner._out_core
        if self.in_order is not None or inner.in_order is not None:
            if a != b:
                raise Unaligned(f"nsp: middle axes {a} and {b} of relabelled terms differ")
            return _compose_ordered(self, inner)
        if a == b:
            # The middle axes already agree (a layer composed with the next): splitting
            # to them would rebuild both terms unchanged.
            outer_t, inner_t = self, inner
        else:
            mid = refinement(a, b)
            outer_t = self.split("in", mid) if mid is not None else None
            inner_t = inner.split("out", mid) if mid is not None else None
        if outer_t is None or inner_t is None:
            mid = coarsening(a, b)
            outer_t, inner_t = self.merge("in", mid), inner.merge("out", mid)
        # Walk both factor lists; factors of size 1 on the shared side pass through. The
        # result keeps the outer term's out-axis order and the inner term's in-axis order.
        out: list[np.ndarray] = []
        i = j = 0
        fo, fi = outer_t.factors, inner_t.factors
        while i < len(fo) or j < len(fi):
            if i < len(fo) and fo[i].shape[1] == 1:
                out.append(fo[i])
                i += 1
            elif j < len(fi) and fi[j].shape[0] == 1:
                out.append(fi[j])
                j += 1
            else:
                out.append(bool_matmul(fo[i], fi[j]))
                i += 1
                j += 1
        # A true 1×1 factor is the identity of a size-1 axis. Left in, they would pile up
        # along a deep network whose layers reach 1×1 maps (hundreds of axes, more than
        # numpy's 64 dimensions).
        kept = tuple(f for f in out if f.shape != (1, 1) or not f[0, 0])
        return Term(pair_vectors(kept) or (np.ones((1, 1), dtype=bool),))

    def dense(self) -> np.ndarray:
        """The full ``n_out × n_in`` 0/1 matrix (small relations and tests only)."""
        if self.in_order is None:
            return _kron_all(self.factors)
        out = np.zeros((self.n_out, self.n_in), dtype=bool)
        out[self.edges()] = True
        return out

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat (out, in) index arrays of every pair in the relation, out-major."""
        out_idx = np.zeros(1, dtype=np.int64)
        in_idx = np.zeros(1, dtype=np.int64)
        if self.in_order is None:
            for f in self.factors:
                o, i = np.nonzero(f)
                out_idx = (out_idx[:, None] * f.shape[0] + o[None, :]).reshape(-1)
                in_idx = (in_idx[:, None] * f.shape[1] + i[None, :]).reshape(-1)
            return out_idx, in_idx
        # Pairs are listed out-major as above; each factor's in digit gets the stride of
        # its place among the in axes.
        strides = np.ones(len(self.factors), dtype=np.int64)
        for k in range(len(self.in_order) - 2, -1, -1):
            strides[self.in_order[k]] = strides[self.in_order[k + 1]] * self.factors[self.in_order[k + 1]].shape[1]
        for f, stride in zip(self.factors, strides):
            o, i = np.nonzero(f)
            out_idx = (out_idx[:, None] * f.shape[0] + o[None, :]).reshape(-1)
            in_idx = (in_idx[:, None] + stride * i[None, :]).reshape(-1)
        return out_idx, in_idx


# Largest outer product of a column and a row factor that pair_vectors forms; of two
# that are not both all-ones (and so need an array of their own), _PAIR_DENSE.
_PAIR_ENTRIES = 1 << 22
_PAIR_DENSE = 1 << 16
# Largest axis whose all-ones column and row of different sizes pair (:func:`_ones_pairs`).
_PAIR_AXIS = 64


def pair_vectors(factors: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """The same product with columns ``(p, 1)`` merged with rows ``(1, p)`` of their size.

    A column and a row factor commute in a Kronecker product (``a ⊗ bᵀ = bᵀ ⊗ a = a bᵀ``),
    so within a run of such factors only the order of the columns among themselves (the
    out axes) and of the rows among themselves (the in axes) matters. An all-ones factor
    is a column times a row, so it joins the run. Composition leaves matching columns and
    rows apart: an SE gate's "mean over (H, W), then broadcast back" comes out as
    ``(H,1) (W,1) (1,H) (1,W)``, which pairs to ``(H,H) (W,W)``, the form of the gated
    input's identity, so the two paths stay a product; a channels-last LayerNorm after a
    permutation cut into terms (:func:`nsp.graph.relations.reorder.cut`) pairs each term's spatial
    column and row, so the terms differ in one factor at a time and merge back. Columns
    and rows are paired by size, in order (a longest common subsequence of the sizes).

    A column and a row that are not both all-ones stay apart beyond ``_PAIR_DENSE``
    entries: where a block's input and output channels have the same count (GoogLeNet's
    inception 4b, 4c and 5a at top level: 512 and 832), a branch's output channels and
    every input channel would otherwise pair into a dense rank-1 factor of 832 × 832,
    which every later union hashes and compares by content (5 ms for 5a's concatenation
    alone), where as vectors they cost their 832 entries.
    """
    out: list[np.ndarray] = []
    run: list[np.ndarray] = []

    def flush() -> None:
        if not run:
            return
        cols = [f for f in run if f.shape[1] == 1]
        rows = [f for f in run if f.shape[1] != 1]
        run.clear()
        pairs = _matching(cols, rows)
        i = j = 0
        for a, b in pairs + [(len(cols), len(rows))]:
            out.extend(_ones_pairs(rows[j:b], cols[i:a]))
            if a < len(cols):
                c, r = cols[a], rows[b]
                size = c.shape[0] * r.shape[1]
                ones = is_ones(c) and is_ones(r)
                if size > _PAIR_ENTRIES or not ones and size > _PAIR_DENSE:
                    out.extend((c, r))
                elif ones:
                    out.append(ones_factor(c.shape[0], r.shape[1]))
                else:
                    out.append(c & r)
            i, j = a + 1, b + 1

    if not any(is_vector(f) or is_ones(f) for f in factors):
        # No column, row or all-ones factor (the windows and channel mixes of most layers):
        # nothing to pair.
        return tuple(factors)
    for f in factors:
        if f.shape == (1, 1):
            flush()
            out.append(f)
        elif is_vector(f):
            run.append(f)
        elif is_ones(f):
            run.extend((ones_factor(f.shape[0], 1), ones_factor(1, f.shape[1])))
        else:
            flush()
            out.append(f)
    flush()
    return tuple(out)


def ordered_term(factors: Sequence[np.ndarray], in_sequence: Sequence[int]) -> Term:
    """The term with ``factors`` (in the out order) whose in axes come in the order ``in_sequence``.

    True 1×1 factors are dropped. The term is plain (``in_order`` None, vectors paired by
    :func:`pair_vectors`) wherever a plain form exists: a column ``(p, 1)`` has no in
    axis and a row ``(1, q)`` no out axis, so they move freely, and an all-ones or other
    rank-1 factor is a column times a row. What must keep its place are the factors of
    rank above 1, and the term is plain iff those come in the same order on both sides
    (a LayerNorm after a channels-last ``Permute``: ``(H, H) (W, W) ones(C, C)``, with
    C first on the in side, is ``(1, C) (H, H) (W, W) (C, 1)``).

    Parameters
    ----------
    factors : sequence of ndarray
        0/1 factors, in the order of the out axes.
    in_sequence : sequence of int
        ``in_sequence[k]``: the factor whose in side is in-axis ``k`` (a permutation).

    Returns
    -------
    Term
    """
    keep = [i for i, f in enumerate(factors) if f.shape != (1, 1) or not f[0, 0]]
    if not keep:
        return Term((np.ones((1, 1), dtype=bool),))
    new_id = {i: k for k, i in enumerate(keep)}
    kept = [factors[i] for i in keep]
    sequence = [new_id[i] for i in in_sequence if i in new_id]
    if sequence == sorted(sequence):
        return Term(pair_vectors(kept))
    split = [rank_one(f) for f in kept]
    big = [i for i, (f, parts) in enumerate(zip(kept, split)) if parts is None and f.shape[0] > 1 and f.shape[1] > 1]
    big_set = set(big)
    if [i for i in sequence if i in big_set] != big:
        return Term(tuple(kept), tuple(sequence))
    # Between consecutive factors of rank above 1, the rows (in-axis order) and then
    # the columns (out-axis order) of that stretch.
    rows: list[list[np.ndarray]] = [[] for _ in range(len(big) + 1)]
    cols: list[list[np.ndarray]] = [[] for _ in range(len(big) + 1)]
    seen = 0
    for i in sequence:
        if i in big_set:
            seen += 1
        elif split[i] is not None:
            rows[seen].append(split[i][1])
        elif kept[i].shape[0] == 1:
            rows[seen].append(kept[i])
    seen = 0
    for i, f in enumerate(kept):
        if i in big_set:
            seen += 1
        elif split[i] is not None:
            cols[seen].append(split[i][0])
        elif f.shape[0] != 1:
            cols[seen].append(f)
    plain: list[np.ndarray] = []
    for g in range(len(big) + 1):
        plain += rows[g] + cols[g] + ([kept[big[g]]] if g < len(big) else [])
    return Term(pair_vectors(plain) or (np.ones((1, 1), dtype=bool),))


def _compose_ordered(outer: Term, inner: Term) -> Term:
    """``outer ∘ inner`` where a term has relabelled in axes and the middle axes agree: outer's
    factors walked in its in order, inner's in factor order; a factor of size 1 on the middle
    side passes through, next to the factor walked before it on the side where it has no axis."""
    fo, fi = outer.factors, inner.factors
    new: list[np.ndarray] = []
    of_outer: dict[int, int] = {}
    of_inner: dict[int, int] = {}
    i = j = 0
    mid = outer.in_sequence
    while i < len(mid) or j < len(fi):
        if i < len(mid) and fo[mid[i]].shape[1] == 1:
            of_outer[mid[i]] = len(new)
            new.append(fo[mid[i]])
            i += 1
        elif j < len(fi) and fi[j].shape[0] == 1:
            of_inner[j] = len(new)
            new.append(fi[j])
            j += 1
        else:
            of_outer[mid[i]] = of_inner[j] = len(new)
            new.append(bool_matmul(fo[mid[i]], fi[j]))
            i += 1
            j += 1
    out_sequence = _with_strays([of_outer[k] for k in range(len(fo))], len(new))
    in_sequence = _with_strays([of_inner[k] for k in inner.in_sequence], len(new))
    place = {n: k for k, n in enumerate(out_sequence)}
    return ordered_term([new[n] for n in out_sequence], [place[n] for n in in_sequence])


def _with_strays(sequence: list[int], n: int) -> list[int]:
    """``sequence`` with the missing ones of ``range(n)`` each inserted after its predecessor in ``range(n)``."""
    out = list(sequence)
    for m in sorted(set(range(n)) - set(sequence)):
        out.insert(out.index(m - 1) + 1 if m > 0 else 0, m)
    return out


def _ones_pairs(rows: list[np.ndarray], cols: list[np.ndarray]) -> list[np.ndarray]:
    """The unmatched rows and columns between two pairs of :func:`pair_vectors`, with the
    first ones paired in order into all-ones factors where all of them are all-ones.

    Zipping in order keeps the columns' order and the rows' order, so the product is the
    same whatever their sizes. A window that has grown to the whole map, ``ones(2, 4)``
    per spatial axis, would otherwise come out as ``(1, 4) (1, 4) (2, 1) (2, 1)`` and
    every union with a term of ``(2, 4) (2, 4)`` windows would need a common form
    (ShuffleNet's stride-1 blocks at top level: every chunk and concatenation). Only axes
    up to ``_PAIR_AXIS`` pair so: a channel count's all-ones factor stays a column and a
    row, which a later branch placement turns into a column, not a dense square (GoogLeNet).
    """
    k = min(len(rows), len(cols))
    if not k or not all(is_ones(f) and max(f.shape) <= _PAIR_AXIS for f in rows + cols):
        return rows + cols
    return [ones_factor(c.shape[0], r.shape[1]) for c, r in zip(cols, rows)] + rows[k:] + cols[k:]


def _matching(cols: list[np.ndarray], rows: list[np.ndarray]) -> list[tuple[int, int]]:
    """Index pairs (column, row) of equal size, increasing in both, as many as possible."""
    n, m = len(cols), len(rows)
    if not n or not m:
        return []
    if n == m == 1:
        # An all-ones channel factor split in two (most compositions): no table needed.
        return [(0, 0)] if cols[0].shape[0] == rows[0].shape[1] else []
    best = np.zeros((n + 1, m + 1), dtype=np.int64)
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            same = cols[i].shape[0] == rows[j].shape[1]
            best[i, j] = max(best[i + 1, j], best[i, j + 1], best[i + 1, j + 1] + 1 if same else 0)
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        if cols[i].shape[0] == rows[j].shape[1] and best[i, j] == best[i + 1, j + 1] + 1:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif best[i + 1, j] >= best[i, j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def _raise_product(term: Term, dims: Sequence[int]) -> Term:
    raise StructureError(
        f"nsp: a relation with factors {[f.shape for f in term.factors]} cannot be re-expressed "
        f"over axes {tuple(dims)} as a product"
    )


def _kron_all(factors: Sequence[np.ndarray]) -> np.ndarray:
    size = math.prod(f.size for f in factors)
    if size > MAX_FACTOR_ENTRIES:
        raise StructureError(
            f"nsp: merging factors {[f.shape for f in factors]} would need a {size:,}-entry matrix; "
            "the relation is not a product along these axes"
        )
    return kron_all(factors)
