"""0/1 relations between the index spaces of two layers, as unions of Kronecker products.

With INCL=True the dependence of a neuron on an earlier layer is a product set,
(channel set) × (row set) × (column set), for convolutions of any stride, padding,
dilation and groups, pooling, Linear, flatten and elementwise layers; a union of products
over product-shaped parent sets is again a product. A :class:`Term` stores such
a relation as small per-axis 0/1 factors whose Kronecker product is the full relation,
so composing relations layer by layer never forms the large matrix.

A term's factor ``i`` maps an *out* axis of size ``p_i`` to an *in* axis of size ``q_i``.
The out sizes are a mixed-radix (row-major) factorisation of the output's flat index,
and the in sizes one of the input's; sizes of 1 are allowed on either side. A
:class:`Relation` is a union of terms (a residual block gives main path ∪ skip path).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

__all__ = ["StructureError", "Term", "Relation"]

# Coarsening merges factors by Kronecker product; beyond this many entries the relation
# is not usefully a product and we refuse rather than allocate a near-dense matrix.
MAX_FACTOR_ENTRIES = 1 << 24


class StructureError(NotImplementedError):
    """A network or relation that the structured (product-set) machinery cannot express."""


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


@functools.lru_cache(maxsize=None)
def ones_factor(p: int, q: int) -> np.ndarray:
    """The all-ones ``p × q`` factor: one shared, read-only array per shape.

    The channel factors of deep layers are almost all all-ones (every channel reaches
    every channel after one convolution); sharing them, and knowing them by identity,
    saved most of the memory and time of building ResNet-50's relations.
    """
    # A broadcast view: a classifier's (4096, 25088) factor costs no memory.
    return np.broadcast_to(np.ones((1, 1), dtype=bool), (p, q))


@functools.lru_cache(maxsize=None)
def eye_factor(n: int) -> np.ndarray:
    """The ``n × n`` identity factor: one shared, read-only array per size."""
    f = np.eye(n, dtype=bool)
    f.flags.writeable = False
    return f


def _split_in(f: np.ndarray, q1: int, q2: int) -> list[np.ndarray] | None:
    """Write ``f`` (p × q1·q2) as a Kronecker product of two factors, if it is one."""
    p, q = f.shape
    if f is ones_factor(p, q):
        return [ones_factor(p, q1), ones_factor(1, q2)]
    if f is eye_factor(p) or (p == q and np.array_equal(f, eye_factor(p))):
        return [eye_factor(q1), eye_factor(q2)]
    g = f.reshape(p, q1, q2)
    if (g == g[:, :, :1]).all():
        return [g[:, :, 0].copy(), ones_factor(1, q2)]
    if (g == g[:, :1, :]).all():
        return [ones_factor(1, q1), g[:, 0, :].copy()]
    return None


def _split_out(f: np.ndarray, p1: int, p2: int) -> list[np.ndarray] | None:
    parts = _split_in(f.T, p1, p2)
    return None if parts is None else [part.T for part in parts]


@dataclass(frozen=True)
class Term:
    """A Kronecker product of 0/1 factors (see the module docstring)."""

    factors: tuple[np.ndarray, ...]

    @property
    def out_dims(self) -> tuple[int, ...]:
        return tuple(f.shape[0] for f in self.factors)

    @property
    def in_dims(self) -> tuple[int, ...]:
        return tuple(f.shape[1] for f in self.factors)

    @property
    def n_out(self) -> int:
        return math.prod(self.out_dims)

    @property
    def n_in(self) -> int:
        return math.prod(self.in_dims)

    def nnz(self) -> int:
        return math.prod(int(f.sum()) for f in self.factors)

    def is_empty(self) -> bool:
        return any(not f.any() for f in self.factors)

    @staticmethod
    def identity(dims: Sequence[int]) -> "Term":
        return Term(tuple(eye_factor(d) for d in dims))

    # -- re-factorisation -------------------------------------------------------------
    def _side(self, side: str) -> tuple[int, ...]:
        return self.in_dims if side == "in" else self.out_dims

    def split(self, side: str, target: Sequence[int]) -> "Term | None":
        """Refine ``side`` to the sizes ``target`` (no 1s) by splitting factors."""
        splitter = _split_in if side == "in" else _split_out
        out: list[np.ndarray] = []
        queue = list(target)
        for f in self.factors:
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
        return Term(tuple(out))

    def merge(self, side: str, target: Sequence[int]) -> "Term":
        """Coarsen ``side`` to the sizes ``target`` by Kronecker-merging neighbours."""
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

    # -- algebra ---------------------------------------------------------------------
    def compose(self, inner: "Term") -> "Term":
        """The boolean product ``self ∘ inner`` (``inner`` is applied first)."""
        a = tuple(d for d in self.in_dims if d != 1)
        b = tuple(d for d in inner.out_dims if d != 1)
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
                out.append(_bool_matmul(fo[i], fi[j]))
                i += 1
                j += 1
        # A true 1×1 factor is the identity of a size-1 axis. Left in, they would pile up
        # along a deep network whose layers reach 1×1 maps (hundreds of axes, more than
        # numpy's 64 dimensions).
        kept = tuple(f for f in out if f.shape != (1, 1) or not f[0, 0])
        return Term(_pair_vectors(kept) or (np.ones((1, 1), dtype=bool),))

    def dense(self) -> np.ndarray:
        """The full ``n_out × n_in`` 0/1 matrix (small relations and tests only)."""
        return _kron_all(self.factors)

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat (out, in) index arrays of every pair in the relation, out-major."""
        out_idx = np.zeros(1, dtype=np.int64)
        in_idx = np.zeros(1, dtype=np.int64)
        for f in self.factors:
            o, i = np.nonzero(f)
            out_idx = (out_idx[:, None] * f.shape[0] + o[None, :]).reshape(-1)
            in_idx = (in_idx[:, None] * f.shape[1] + i[None, :]).reshape(-1)
        return out_idx, in_idx


# Largest outer product of a column and a row factor that _pair_vectors forms.
_PAIR_ENTRIES = 1 << 22


def _is_vector(f: np.ndarray) -> bool:
    return f.shape[0] == 1 or f.shape[1] == 1


def _pair_vectors(factors: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """The same product with columns ``(p, 1)`` merged with rows ``(1, p)`` of their size.

    A column and a row factor commute in a Kronecker product (``a ⊗ bᵀ = bᵀ ⊗ a = a bᵀ``),
    so within a run of such factors only the order of the columns among themselves (the
    out axes) and of the rows among themselves (the in axes) matters. An all-ones factor
    is a column times a row, so it joins the run. Composition leaves matching columns and
    rows apart: an SE gate's "mean over (H, W), then broadcast back" comes out as
    ``(H,1) (W,1) (1,H) (1,W)``, which pairs to ``(H,H) (W,W)``, the form of the gated
    input's identity, so the two paths stay a product; a channels-last LayerNorm after a
    permutation cut into terms (``structure._permute_by_rows``) pairs each term's spatial
    column and row, so the terms differ in one factor at a time and merge back. Columns
    and rows are paired by size, in order (a longest common subsequence of the sizes).
    """
    out: list[np.ndarray] = []
    run: list[np.ndarray] = []

    def flush() -> None:
        cols = [f for f in run if f.shape[1] == 1]
        rows = [f for f in run if f.shape[1] != 1]
        run.clear()
        pairs = _matching(cols, rows)
        i = j = 0
        for a, b in pairs + [(len(cols), len(rows))]:
            out.extend(rows[j:b] + cols[i:a])
            if a < len(cols):
                c, r = cols[a], rows[b]
                if c.shape[0] * r.shape[1] > _PAIR_ENTRIES:
                    out.extend((c, r))
                elif c is ones_factor(*c.shape) and r is ones_factor(*r.shape):
                    out.append(ones_factor(c.shape[0], r.shape[1]))
                else:
                    out.append(c & r)
            i, j = a + 1, b + 1

    for f in factors:
        if f.shape == (1, 1):
            flush()
            out.append(f)
        elif _is_vector(f):
            run.append(f)
        elif f is ones_factor(*f.shape):
            run.extend((ones_factor(f.shape[0], 1), ones_factor(1, f.shape[1])))
        else:
            flush()
            out.append(f)
    flush()
    return tuple(out)


def _matching(cols: list[np.ndarray], rows: list[np.ndarray]) -> list[tuple[int, int]]:
    """Index pairs (column, row) of equal size, increasing in both, as many as possible."""
    n, m = len(cols), len(rows)
    if not n or not m:
        return []
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
    out = np.ones((1, 1), dtype=bool)
    for f in factors:
        out = np.kron(out, f).astype(bool)
    return out


def _bool_matmul(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    # Channel factors are mostly all-ones or the identity; those need no product.
    shape = (f.shape[0], g.shape[1])
    f_ones, g_ones = f is ones_factor(*f.shape), g is ones_factor(*g.shape)
    nf = f.size if f_ones else np.count_nonzero(f)
    ng = g.size if g_ones else np.count_nonzero(g)
    if ng == g.size or nf == f.size:
        if ng == g.size:
            # g all ones: a row of f with any edge reaches every column.
            rows, cols = np.ones(shape[0], bool) if f_ones else f.any(axis=1), np.ones(shape[1], bool)
        else:
            # f all ones: every row reaches the columns that some row of g reaches.
            rows, cols = np.ones(shape[0], bool), g.any(axis=0)
        if rows.all() and cols.all():
            return ones_factor(*shape)
        return rows[:, None] & cols[None, :]
    if _is_identity(f, nf):
        return g
    if _is_identity(g, ng):
        return f
    if f.shape[0] * f.shape[1] * g.shape[1] <= 1 << 20:
        return (f.astype(np.float32) @ g.astype(np.float32)) > 0
    # Channel factors of concatenations repeat rows (one per branch) and columns: the
    # product of the distinct rows and columns only, then gathered (GoogLeNet: 832² factors).
    rows, row_of = distinct_rows(f)
    cols, col_of = distinct_rows(g.T)
    product = (rows.astype(np.float32) @ cols.T.astype(np.float32)) > 0
    return product[row_of][:, col_of]


def distinct_rows(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a 0/1 matrix, and each row's index among them."""
    seen: dict[bytes, int] = {}
    packed = np.packbits(f, axis=1)
    row_of = np.array([seen.setdefault(row.tobytes(), len(seen)) for row in packed], dtype=np.int64)
    first = np.zeros(len(seen), dtype=np.int64)
    first[row_of[::-1]] = np.arange(f.shape[0])[::-1]
    return f[first], row_of


def _is_identity(f: np.ndarray, nonzero: int) -> bool:
    return f.shape[0] == f.shape[1] == nonzero and bool(f.diagonal().all())


def _common_forms(terms: Sequence[Term]) -> list[Term]:
    """Re-factorise terms over the same spaces so their factors pair up one to one."""
    terms = list(terms)
    for side in ("out", "in"):
        dims = [tuple(d for d in t._side(side) if d != 1) for t in terms]
        if all(d == dims[0] for d in dims):
            continue
        fine = functools.reduce(lambda a, b: None if a is None else refinement(a, b), dims)
        split = [t.split(side, fine) for t in terms] if fine is not None else [None]
        if any(t is None for t in split):
            coarse = functools.reduce(coarsening, dims)
            split = [t.merge(side, coarse) for t in terms]
        terms = split
    if _same_shapes(terms):
        return terms
    terms = _drop_contained(terms)
    if len(terms) == 1 or _same_shapes(terms):
        return terms
    vectors = [_vector_form(t) for t in terms]
    if _same_shapes(vectors):
        return vectors
    for target in sorted({tuple(f.shape for f in t.factors) for t in terms + vectors}, key=len):
        realised = [_realise(Term(tuple(_expanded(t))), target) for t in terms]
        if all(t is not None for t in realised):
            return realised
    terms = [t.squeeze("out").squeeze("in") for t in terms]
    if _same_shapes(terms):
        return terms
    return [Term((t.dense(),)) for t in terms]


def _vector_form(term: Term) -> Term:
    """``term`` with every rank-1 factor split into a column and a row, then paired by
    :func:`_pair_vectors`: terms whose columns and rows have the same sizes, however
    they were interleaved or paired, come out with the same factor shapes."""
    return Term(_pair_vectors(_expanded(term)))


def _expanded(term: Term) -> list[np.ndarray]:
    """The factors of ``term`` with every rank-1 factor split into a column and a row."""
    factors: list[np.ndarray] = []
    for f in term.factors:
        if 1 in f.shape:
            factors.append(f)
            continue
        if f is ones_factor(*f.shape):
            factors += [ones_factor(f.shape[0], 1), ones_factor(1, f.shape[1])]
            continue
        col, row = f.any(axis=1), f.any(axis=0)
        if np.array_equal(f, col[:, None] & row[None, :]):
            factors += [col[:, None], row[None, :]]
        else:
            factors.append(f)
    return factors


# Terms with at most this many pairs are checked pair by pair for containment in another.
_CONTAINED_PAIRS = 1 << 16


def _drop_contained(terms: list[Term]) -> list[Term]:
    """``terms`` without the small ones contained in another (of any factor shapes).

    A permutation of axes cut into terms (``structure._permute_by_rows``) gives one small
    term per position; a path through a channel mix usually contains them all, and only
    then do the remaining terms share a form.
    """
    order = sorted(range(len(terms)), key=lambda k: terms[k].nnz())
    dropped: set[int] = set()
    for k in order:
        if terms[k].nnz() > _CONTAINED_PAIRS:
            break
        if any(j != k and j not in dropped and _contains(terms[j], terms[k]) for j in order[::-1]):
            dropped.add(k)
    return [t for k, t in enumerate(terms) if k not in dropped]


def _contains(big: Term, small: Term) -> bool:
    """Whether every pair of ``small`` is in ``big`` (same spaces, any factorisations)."""
    if big.nnz() < small.nnz():
        return False
    out_idx, in_idx = small.edges()
    ok = np.ones(out_idx.size, dtype=bool)
    out_digits, in_digits = _digits(out_idx, big.out_dims), _digits(in_idx, big.in_dims)
    for f, a, b in zip(big.factors, out_digits, in_digits):
        ok &= f[a, b]
        if not ok.any():
            return False
    return bool(ok.all())


def _digits(index: np.ndarray, dims: Sequence[int]) -> list[np.ndarray]:
    # numpy's unravel_index: one compiled pass instead of a division per axis.
    return list(np.unravel_index(index, tuple(dims))) if len(dims) else []


def _realise(term: Term, target: Sequence[tuple[int, int]]) -> Term | None:
    """``term`` with factors of the shapes ``target``, or None.

    Within a run of columns and rows only their orders among themselves matter, so a
    column ``(p, 1)`` and a row ``(1, q)`` of one run may become one ``(p, q)`` factor;
    a factor with both sides above 1 is kept as it is, and no vector moves past it.
    """
    items = [f for f in term.factors if f.shape != (1, 1) or not f[0, 0]]
    cols: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    i = 0
    out: list[np.ndarray] = []

    def pull(want_col: bool, want_row: bool) -> None:
        nonlocal i
        while (want_col and not cols or want_row and not rows) and i < len(items) and _is_vector(items[i]) \
                and items[i].shape != (1, 1):
            (cols if items[i].shape[1] == 1 else rows).append(items[i])
            i += 1

    for p, q in target:
        if p > 1 and q > 1:
            if not cols and not rows and i < len(items) and items[i].shape == (p, q):
                out.append(items[i])
                i += 1
                continue
            pull(True, True)
            if not (cols and rows and cols[0].shape[0] == p and rows[0].shape[1] == q):
                return None
            c, r = cols.pop(0), rows.pop(0)
            both = c is ones_factor(*c.shape) and r is ones_factor(*r.shape)
            out.append(ones_factor(p, q) if both else c & r)
        elif (p, q) == (1, 1):
            if i < len(items) and items[i].shape == (1, 1):
                out.append(items[i])
                i += 1
            else:
                out.append(np.ones((1, 1), dtype=bool))
        elif q == 1:
            pull(True, False)
            if not cols or cols[0].shape[0] != p:
                return None
            out.append(cols.pop(0))
        else:
            pull(False, True)
            if not rows or rows[0].shape[1] != q:
                return None
            out.append(rows.pop(0))
    if cols or rows or i < len(items):
        return None
    return Term(tuple(out))


def _same_shapes(terms: Sequence[Term]) -> bool:
    shapes = [f.shape for f in terms[0].factors]
    return all([f.shape for f in t.factors] == shapes for t in terms[1:])


@dataclass(frozen=True)
class Relation:
    """A union of :class:`Term` s between the same two index spaces."""

    terms: tuple[Term, ...]
    n_out: int
    n_in: int

    @staticmethod
    def of(term: Term) -> "Relation":
        return Relation((term,), term.n_out, term.n_in)

    @staticmethod
    def identity(dims: Sequence[int]) -> "Relation":
        return Relation.of(Term.identity(dims))

    def union(self, other: "Relation") -> "Relation":
        if (self.n_out, self.n_in) != (other.n_out, other.n_in):
            raise StructureError(
                f"nsp: cannot add relations of shapes {(self.n_out, self.n_in)} and {(other.n_out, other.n_in)}"
            )
        return Relation(_prune(self.terms + other.terms), self.n_out, self.n_in)

    def compose(self, inner: "Relation") -> "Relation":
        """``self ∘ inner``: pairs (x, z) with x related to some y related to z."""
        terms = tuple(t.compose(u) for t in self.terms for u in inner.terms)
        return Relation(_prune(terms), self.n_out, inner.n_in)

    def disjoint(self) -> list[Term]:
        """Pairwise disjoint terms whose sum is the indicator of the union.

        Inclusion–exclusion over the union's n terms would need 2^n − 1 of them, and every
        concatenated branch of a network adds a term (DenseNet-121: 17). Instead the
        terms are cut along one axis at a time (:func:`_disjoint`): a union of products
        whose factors nest, as windows of different widths and disjoint channel ranges
        do, splits into a few pieces per axis.
        """
        terms = [t for t in self.terms if not t.is_empty()]
        if len(terms) <= 1:
            return terms
        return [Term(f) for f in _disjoint([t.factors for t in _common_forms(terms)])]

    def nnz(self) -> int:
        return sum(term.nnz() for term in self.disjoint())

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat (out, in) index arrays of the union, sorted out-major without duplicates."""
        pairs = [t.edges() for t in self.terms]
        if not pairs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        out = np.concatenate([p[0] for p in pairs])
        inn = np.concatenate([p[1] for p in pairs])
        keys = np.unique(out * self.n_in + inn)
        return keys // self.n_in, keys % self.n_in

    def dense(self) -> np.ndarray:
        out = np.zeros((self.n_out, self.n_in), dtype=bool)
        for t in self.terms:
            out |= t.dense()
        return out

    def __iter__(self) -> Iterator[Term]:
        return iter(self.terms)


def _prune(terms: Sequence[Term]) -> tuple[Term, ...]:
    """The union of ``terms`` with as few terms as cheap rules give.

    Empty and contained terms are dropped, and terms equal on all axes but one are
    merged into one (``A⊗B ∪ A'⊗B = (A ∪ A')⊗B``): the branches of a channel
    concatenation differ only in their channel factors, so a DenseNet block's many
    paths fold back into a few terms.
    """
    terms = [t for t in terms if not t.is_empty()]
    if len(terms) <= 1:
        return tuple(terms)
    return tuple(Term(f) for f in _reduce([t.factors for t in _common_forms(terms)]))


def _same(f: np.ndarray, g: np.ndarray) -> bool:
    return f is g or np.array_equal(f, g)


def _reduce(terms: list[tuple[np.ndarray, ...]]) -> list[tuple[np.ndarray, ...]]:
    """Drop contained terms and merge terms that differ in one factor only (same factor shapes)."""
    kept: list[tuple[np.ndarray, ...]] = []
    queue = list(terms)
    while queue:
        t = queue.pop(0)
        if any(all(not (g & ~f).any() for f, g in zip(k, t)) for k in kept):
            continue
        kept = [k for k in kept if not all(not (g & ~f).any() for f, g in zip(t, k))]
        for i, k in enumerate(kept):
            differ = [a for a, (f, g) in enumerate(zip(k, t)) if not _same(f, g)]
            if len(differ) == 1:
                a = differ[0]
                merged = k[a] | t[a]
                if merged.all():
                    merged = ones_factor(*merged.shape)
                # The merged term may now contain or merge with others: process it again.
                del kept[i]
                queue.insert(0, k[:a] + (merged,) + k[a + 1:])
                break
        else:
            kept.append(t)
    return kept


def _classes(stack: np.ndarray) -> tuple[list[tuple[np.ndarray, int]], np.ndarray]:
    """Group the (out, in) pairs of one axis by the set of terms whose factor holds them.

    ``stack`` is ``(n, p, q)``. Returns, per nonempty set, its members (bool ``(n,)``)
    and a class label, and the label of every pair (flat).
    """
    n = stack.shape[0]
    words = -(-n // 64)
    keys = np.zeros((stack[0].size, words), dtype=np.uint64)
    for i, f in enumerate(stack):
        keys[:, i // 64] |= f.reshape(-1).astype(np.uint64) << np.uint64(i % 64)
    if words == 1:
        labels, inverse = np.unique(keys[:, 0], return_inverse=True)
        labels = labels[:, None]
    else:
        labels, inverse = np.unique(keys, axis=0, return_inverse=True)
    out = []
    for c, key in enumerate(labels):
        if key.any():
            members = (key[np.arange(n) // 64] >> (np.arange(n) % 64).astype(np.uint64)) & np.uint64(1)
            out.append((members.astype(bool), c))
    return out, inverse.reshape(-1)


def _disjoint(terms: list[tuple[np.ndarray, ...]]) -> list[tuple[np.ndarray, ...]]:
    """Disjoint products whose sum is the indicator of the union of ``terms`` (same factor shapes).

    One axis is cut at a time: its (out, in) pairs fall into classes by the set of terms
    whose factor holds them, and each class, times the union of those terms over the
    remaining axes (recursively), is one piece. The classes partition the axis, so the
    pieces are disjoint. The axis cut is the one with the fewest classes; for factors
    that nest (windows, channel ranges) there are at most n + 1 per axis, so the pieces
    number at most (n + 1)^axes, against 2^n − 1 for inclusion–exclusion.
    """
    terms = _reduce(terms)
    if len(terms) == 1 or not terms[0]:
        return terms[:1]
    n = len(terms)
    best = None
    for axis in range(len(terms[0])):
        if all(_same(t[axis], terms[0][axis]) for t in terms[1:]):
            # One class: the common factor comes out, with no search.
            best = (axis, [(np.ones(n, bool), terms[0][axis])], None, None)
            break
        stack = np.stack([t[axis] for t in terms])
        classes, inverse = _classes(stack)
        if best is None or len(classes) < len(best[1]):
            best = (axis, classes, inverse, stack.shape[1:])
    axis, classes, inverse, shape = best
    out: list[tuple[np.ndarray, ...]] = []
    for members, piece in classes:
        if inverse is not None:
            piece = (inverse == piece).reshape(shape)
            if piece.all():
                piece = ones_factor(*shape)
        rest = [t[:axis] + t[axis + 1:] for t, m in zip(terms, members) if m]
        for r in _disjoint(rest):
            out.append(r[:axis] + (piece,) + r[axis:])
    return out
