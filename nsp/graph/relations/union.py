"""Unions of terms (:class:`Relation`): common forms, pruning, and disjoint pieces.

A residual block gives main path ∪ skip path, and a concatenation one term per branch.
Terms over the same spaces are first re-factorised to a common form (factor by factor
the same shapes), so that contained terms drop out and terms that differ in one factor
merge (:func:`Relation.union`), and a union is cut into disjoint products along one axis
at a time (:meth:`Relation.disjoint`).
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from nsp.graph.relations.boolean import is_ones, is_vector, ones_factor, rank_one, same_entries
from nsp.graph.relations.reorder import cut
from nsp.graph.relations.term import StructureError, Term, Unaligned, coarsening, pair_vectors, refinement

__all__ = ["Relation"]


def _common_forms(terms: Sequence[Term]) -> list[Term]:
    """Re-factorise terms over the same spaces so their factors pair up one to one."""
    terms = list(terms)
    for side in ("out", "in"):
        # The sides without their 1s, computed once per term (Term caches them for composing).
        dims = [t._in_core if side == "in" else t._out_core for t in terms]
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
    :func:`pair_vectors`: terms whose columns and rows have the same sizes, however
    they were interleaved or paired, come out with the same factor shapes."""
    return Term(pair_vectors(_expanded(term)))


def _expanded(term: Term) -> list[np.ndarray]:
    """The factors of ``term`` with every rank-1 factor split into a column and a row."""
    factors: list[np.ndarray] = []
    for f in term.factors:
        parts = rank_one(f)
        if parts is None:
            factors.append(f)
        else:
            factors += parts
    return factors


# Terms with at most this many pairs are checked for containment in another (pair by pair
# where the two have no common form).
_CONTAINED_PAIRS = 1 << 16


def _drop_contained(terms: list[Term]) -> list[Term]:
    """``terms`` without the small ones contained in another (of any factor shapes).

    A permutation of axes cut into terms (:func:`nsp.graph.relations.reorder.cut`) gives one small
    term per position; a path through a channel mix usually contains them all, and only
    then do the remaining terms share a form.
    """
    order = sorted(range(len(terms)), key=lambda k: terms[k].nnz())
    dropped: set[int] = set()
    expanded: dict[int, Term] = {}

    def contains(j: int, k: int, pairs: _Pairs) -> bool:
        for i in (j, k):
            if i not in expanded:
                expanded[i] = Term(tuple(_expanded(terms[i])))
        return _contains(terms[j], terms[k], (expanded[j], expanded[k]), pairs)

    for k in order:
        if terms[k].nnz() > _CONTAINED_PAIRS:
            break
        pairs = _Pairs(terms[k])
        if any(j != k and j not in dropped and contains(j, k, pairs) for j in order[::-1]):
            dropped.add(k)
    return [t for k, t in enumerate(terms) if k not in dropped]


class _Pairs:
    """The pairs of a small term and their digits in each factorisation, computed on first
    use and once for all the terms it is compared with (ShuffleNet: a term per shuffled
    position)."""

    def __init__(self, term: Term) -> None:
        self.term = term
        self.digits: dict[tuple, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    @functools.cached_property
    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        return self.term.edges()

    def of(self, out_dims: tuple[int, ...], in_dims: tuple[int, ...]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The digits of every pair's out and in index in the mixed radices ``out_dims``, ``in_dims``."""
        if (out_dims, in_dims) not in self.digits:
            out_idx, in_idx = self.edges
            self.digits[(out_dims, in_dims)] = (_digits(out_idx, out_dims), _digits(in_idx, in_dims))
        return self.digits[(out_dims, in_dims)]


def _contains(big: Term, small: Term, expanded: tuple[Term, Term], pairs: _Pairs) -> bool:
    """Whether every pair of ``small`` is in ``big`` (same spaces, any factorisations).

    Where both terms can be written with factors of the same shapes (:func:`_paired_forms`,
    from their ``expanded`` forms) this is factor by factor; otherwise every pair of
    ``small`` is looked up in ``big``.
    """
    if big.nnz() < small.nnz():
        return False
    forms = _paired_forms(big, small, expanded)
    if forms is not None:
        # A nonempty product lies in another iff each factor lies in the other's (for 0/1
        # entries g > f is g & ~f, in one pass).
        return small.is_empty() or all(not np.count_nonzero(g > f) for f, g in zip(*forms))
    out_digits, in_digits = pairs.of(big.out_dims, big.in_dims)
    ok = np.ones(out_digits[0].size if out_digits else 1, dtype=bool)
    for f, a, b in zip(big.factors, out_digits, in_digits):
        ok &= f[a, b]
        if not np.count_nonzero(ok):
            return False
    return np.count_nonzero(ok) == ok.size


def _paired_forms(
    a: Term, b: Term, expanded: tuple[Term, Term]
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]] | None:
    """The factors of ``a`` and ``b`` re-expressed with the same shapes, or None.

    ``expanded`` holds both terms with their rank-1 factors split (:func:`_expanded`).
    Columns and rows commute (:func:`_realise`): a gate's ``(1, 4) (1, 4) (2, 1) (2, 1)``
    meets a window term's ``(2, 4) (2, 4)`` without listing a single pair.
    """
    if _same_shapes([a, b]):
        return a.factors, b.factors
    for target in ([f.shape for f in a.factors], [f.shape for f in b.factors]):
        ra, rb = (_realise(t, target) for t in expanded)
        if ra is not None and rb is not None:
            return ra.factors, rb.factors
    return None


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
        while (want_col and not cols or want_row and not rows) and i < len(items) and is_vector(items[i]) \
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
            both = is_ones(c) and is_ones(r)
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

    def union(self, *others: "Relation") -> "Relation":
        """The union with each of ``others``, pruned once.

        A concatenation of n parts unions n relations: pruned pair by pair, its terms were
        pruned n times over (a DenseNet block's concatenations: O(n²) per block).
        """
        for other in others:
            if (self.n_out, self.n_in) != (other.n_out, other.n_in):
                raise StructureError(
                    f"nsp: cannot add relations of shapes {(self.n_out, self.n_in)} and {(other.n_out, other.n_in)}"
                )
        return Relation(_prune(self.terms + sum((other.terms for other in others), ())), self.n_out, self.n_in)

    def compose(self, inner: "Relation") -> "Relation":
        """``self ∘ inner``: pairs (x, z) with x related to some y related to z."""
        terms = tuple(c for t, u in _meeting(self.terms, inner.terms) for c in _compose(t, u))
        return Relation(_prune(terms), self.n_out, inner.n_in)

    def plain(self) -> "Relation":
        """The same relation with every term plain (relabelled terms cut, :func:`~nsp.graph.relations.reorder.cut`)."""
        if all(t.in_order is None for t in self.terms):
            return self
        return Relation(tuple(p for t in self.terms for p in cut(t)), self.n_out, self.n_in)

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
        terms, order = _one_order(terms)
        return [Term(f, order) for f in _disjoint([t.factors for t in _common_forms(terms)])]

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


# Up to this many pairs of terms, every pair is composed; beyond, only the pairs that meet.
_FEW_PAIRS = 16
# Largest table of supports (terms × middle positions) that _meeting builds.
_SUPPORT_ENTRIES = 1 << 22


def _meeting(outer: Sequence[Term], inner: Sequence[Term]) -> list[tuple[Term, Term]]:
    """The pairs ``(t, u)`` whose composition ``t ∘ u`` is not empty, in ``outer``-major order.

    ``t ∘ u`` has a pair iff some middle position is on both ``t``'s in side and ``u``'s
    out side, and a product term's side is the product of its factors' sides: one
    matrix product over the supports finds the pairs that meet. A permutation cut into
    one term per position (:func:`~nsp.graph.relations.reorder.cut`, where a relabelled
    term meets terms in another order) meets its inverse in 64 of 64 × 64 pairs on an
    8 × 8 map, where composing every pair took a second.
    """
    pairs = [(t, u) for t in outer for u in inner]
    n_mid = outer[0].n_in if outer else 0
    if len(pairs) <= _FEW_PAIRS or n_mid * (len(outer) + len(inner)) > _SUPPORT_ENTRIES:
        return pairs
    ins = np.stack([_support(t, 0) for t in outer]).astype(np.float32)
    outs = np.stack([_support(u, 1) for u in inner]).astype(np.float32)
    # Counts of shared positions; float32 sums of nonnegative terms stay positive.
    meet = (ins @ outs.T) > 0
    return [pairs[i * len(inner) + j] for i, j in zip(*np.nonzero(meet))]


def _support(term: Term, axis: int) -> np.ndarray:
    """The flat positions of ``term``'s in side (``axis`` 0) or out side (``axis`` 1) that it relates."""
    out = np.ones(1, dtype=bool)
    for i in term.in_sequence if axis == 0 else range(len(term.factors)):
        out = (out[:, None] & term.factors[i].any(axis=axis)[None, :]).reshape(-1)
    return out


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
    terms, order = _one_order(terms)
    return tuple(Term(f, order) for f in _reduce([t.factors for t in _common_forms(terms)]))


def _one_order(terms: list[Term]) -> tuple[list[Term], tuple[int, ...] | None]:
    """Terms over one order of their in axes: ``(terms, in_order)``.

    Terms with the same factor shapes and the same relabelling are one relabelling of
    plain products, so they are pruned and cut factor by factor as they are (the returned
    terms, given the order). Otherwise relabelled terms are cut into plain ones.
    """
    order = terms[0].in_order
    if order is None and all(t.in_order is None for t in terms):
        return terms, None
    if all(t.in_order == order for t in terms) and _same_shapes(terms):
        return [Term(t.factors) for t in terms], order
    return [p for t in terms for p in cut(t)], None


def _compose(outer: Term, inner: Term) -> list[Term]:
    """``outer ∘ inner`` as terms: relabelled terms whose middle axes do not agree are cut first."""
    try:
        return [outer.compose(inner)]
    except Unaligned:
        return [a.compose(b) for a in cut(outer) for b in cut(inner)]


def _same(f: np.ndarray, g: np.ndarray) -> bool:
    return f is g or same_entries(f, g)


class _Factors:
    """Equality and containment of factors, by content, each pair computed once.

    ``_reduce`` compares every pair of terms on every axis; a deep network's unions hold
    hundreds of terms built from a few distinct factors, so numpy calls per pair were most
    of ConvNeXt's and DenseNet's plan time. Factors are numbered by content (shape, dtype
    and bytes), and containment is memoised on the numbers.
    """

    def __init__(self) -> None:
        self.numbers: dict[tuple, int] = {}
        self.seen: dict[int, tuple[np.ndarray, int]] = {}
        self.arrays: list[np.ndarray] = []
        self.inside: dict[tuple[int, int], bool] = {}

    def number(self, f: np.ndarray) -> int:
        if id(f) not in self.seen:
            key = _ones_key(f.shape) if is_ones(f) else (f.shape, f.dtype.str, f.tobytes())
            if key not in self.numbers:
                self.numbers[key] = len(self.arrays)
                self.arrays.append(f)
            # The array is kept with its number, so its id stays its own.
            self.seen[id(f)] = (f, self.numbers[key])
        return self.seen[id(f)][1]

    def contains(self, i: int, j: int) -> bool:
        """Whether every pair of factor number ``j`` is in factor number ``i``."""
        key = (i, j)
        if key not in self.inside:
            # The shared all-ones factor holds every pair: known without a pass over it.
            big, small = self.arrays[i], self.arrays[j]
            self.inside[key] = i == j or is_ones(big) or not np.count_nonzero(small > big)
        return self.inside[key]

    def term_contains(self, big: tuple[int, ...], small: tuple[int, ...]) -> bool:
        """Whether the term of factor numbers ``small`` lies in ``big``, factor by factor."""
        return all(self.contains(i, j) for i, j in zip(big, small))


@functools.lru_cache(maxsize=256)
def _ones_key(shape: tuple[int, int]) -> tuple:
    """:class:`_Factors`' content key of the shared all-ones factor of ``shape``, built once: its
    bytes (a broadcast view, written out in full) and their hash are then computed once per shape."""
    f = ones_factor(*shape)
    return (f.shape, f.dtype.str, f.tobytes())


def _reduce(terms: list[tuple[np.ndarray, ...]]) -> list[tuple[np.ndarray, ...]]:
    """Drop contained terms and merge terms that differ in one factor only (same factor shapes).

    Merge partners are found by hashing each term's factor numbers on all axes but one, so
    a union of many pieces (a ConvNeXt stage's 1,936) folds in about linear time; only a
    term with no partner is compared with the others for containment.
    """
    if len(terms) == 2:
        return _reduce_two(*terms)
    factors = _Factors()
    kept: dict[int, tuple[tuple[np.ndarray, ...], tuple[int, ...]]] = {}
    # (axis, numbers on the other axes) -> the kept term; no two kept terms share one, as
    # they would have been merged.
    partners: dict[tuple[int, tuple[int, ...]], int] = {}
    queue = collections.deque(terms)

    def forget(serial: int) -> None:
        numbers = kept.pop(serial)[1]
        for a in range(len(numbers)):
            del partners[(a, numbers[:a] + numbers[a + 1:])]

    serial = 0
    while queue:
        t = queue.popleft()
        numbers = tuple(factors.number(f) for f in t)
        partner = next(
            ((a, partners[key]) for a in range(len(t)) if (key := (a, numbers[:a] + numbers[a + 1:])) in partners), None
        )
        if partner is not None:
            a, s = partner
            k, kn = kept[s]
            if factors.contains(kn[a], numbers[a]):
                continue
            forget(s)
            if factors.contains(numbers[a], kn[a]):
                queue.appendleft(t)
                continue
            merged = k[a] | t[a]
            if np.count_nonzero(merged) == merged.size:
                merged = ones_factor(*merged.shape)
            # The merged term may now contain or merge with others: process it again.
            queue.appendleft(k[:a] + (merged,) + k[a + 1:])
            continue
        if any(factors.term_contains(kn, numbers) for _, kn in kept.values()):
            continue
        for s in [s for s, (_, kn) in kept.items() if factors.term_contains(numbers, kn)]:
            forget(s)
        kept[serial] = (t, numbers)
        for a in range(len(t)):
            partners[(a, numbers[:a] + numbers[a + 1:])] = serial
        serial += 1
    return [k for k, _ in kept.values()]


def _inside(small: np.ndarray, big: np.ndarray) -> bool:
    """Whether every pair of factor ``small`` is in ``big`` (same shapes)."""
    return small is big or is_ones(big) or not np.count_nonzero(small > big)


def _reduce_two(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> list[tuple[np.ndarray, ...]]:
    """:func:`_reduce` of two terms, the same terms as it gives, compared factor by factor.

    Most unions of a plan join two terms (ShuffleNet with every leaf: 127 of 206), where
    numbering every factor by its bytes cost more than comparing the two factors on each
    axis: a 1,024 × 96 channel factor was written out and hashed to be found equal.
    """
    differ = [k for k, (f, g) in enumerate(zip(a, b)) if not _same(f, g)]
    if not differ:
        return [a]
    if len(differ) == 1:
        # Equal on all axes but one: kept, dropped or merged there, as _reduce does with a partner.
        k = differ[0]
        if _inside(b[k], a[k]):
            return [a]
        if _inside(a[k], b[k]):
            return [b]
        merged = a[k] | b[k]
        if np.count_nonzero(merged) == merged.size:
            merged = ones_factor(*merged.shape)
        return [a[:k] + (merged,) + a[k + 1:]]
    if all(_inside(g, f) for f, g in zip(a, b)):
        return [a]
    if all(_inside(f, g) for f, g in zip(a, b)):
        return [b]
    return [a, b]


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


def _pairwise_disjoint(terms: list[tuple[np.ndarray, ...]]) -> bool:
    """Whether no two of ``terms`` (same factor shapes) share a pair: each pair of terms
    has an axis whose two factors share none."""
    return all(
        any(not (is_ones(f) and is_ones(g)) and not np.count_nonzero(f & g) for f, g in zip(a, b))
        for i, a in enumerate(terms) for b in terms[i + 1:]
    )


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
    if _pairwise_disjoint(terms):
        # Concatenated branches relate disjoint channel ranges: already pieces, with no
        # class table (GoogLeNet: 512 × 512 channel factors, a sort of 262,144 keys each).
        return terms
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
