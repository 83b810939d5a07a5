"""Exact ancestor sets of data-dependent (``INCL=False``) graphs, stored by receptive field.

``INCL=False`` graphs (argmax parents, zero weights, dead ReLU units) are not
product-shaped: a node's ancestors in an earlier layer are no longer a (channel set) ×
(row set) × (column set) product. So the causal transform needs the ancestor set of every
node explicitly. Packed bitsets over all earlier nodes cost ``N_L · N_{<L} / 8`` bytes per
layer, which caps them near 2e5 neurons. But a node's ancestors inside an earlier layer K
lie in its receptive field, which in a convolutional network is a small part of layer K,
and dead units, argmax maps and pruned weights only make the sets smaller.

So the ancestor relation is kept block by block, ``(L, K)`` for every layer K below L,
and each block in row chunks, each chunk either

- *sparse*: CSR column indices, 4 bytes per ancestor (local receptive fields), or
- *dense*: packed bitsets over layer K, ``N_K / 8`` bytes per row (fully connected layers,
  or receptive fields that cover the layer),

whichever is smaller. The memory is then at most about 4 bytes per comparable pair of
neurons, the pairs any explicit method must hold, and less where bitsets win. A layer
whose units have one parent at most (elementwise modules, a max-pool's argmax) shares its
parent's blocks instead of copying them.

Blocks are built layer by layer: ``anc_K(x) = ⋃_{p ∈ parents(x)} ({p} if p ∈ K else anc_K(p))``,
a Boolean sparse product (scipy's SpGEMM: compiled, and it never forms the dense product)
for sparse sources and a bitwise OR of gathered rows for dense ones. Applying a block to
exact limbs is a float64 sparse or dense matrix product, exact because every partial sum
stays below 2^53.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import scipy.sparse as sp

from nsp.common import memory
from nsp.graph.sparse_products import unique_rows
from nsp.common.progress import Progress
from nsp.graph.relations import StructureError
from nsp.graph.structure import NetworkStructure

__all__ = ["AncestorSets", "ANCESTOR_MEMORY_LIMIT"]

#: A cap, in bytes, on the ancestor sets of one INCL=False graph; ``None``: the memory
#: available when the sets are built (:func:`nsp.memory.available_bytes`) is the limit.
ANCESTOR_MEMORY_LIMIT: int | None = None
# A chunk covers about this many candidate (row, ancestor) pairs: it bounds the temporary
# memory of building and applying a chunk (tens of MB) while keeping Python overhead small.
_CHUNK_ENTRIES = 1 << 22


@dataclass
class _Chunk:
    """Rows ``start:stop`` of a block: CSR ``indptr``/``indices``, or ``bits`` (rows, words) uint64.

    With ``classes``, ``bits`` holds only the distinct rows and row x of the chunk is
    ``bits[classes[x]]``: deep in a network most nodes share one ancestor set.
    """

    start: int
    stop: int
    indptr: np.ndarray | None = None
    indices: np.ndarray | None = None
    bits: np.ndarray | None = None
    classes: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        if self.bits is not None:
            return self.bits.nbytes + (0 if self.classes is None else self.classes.nbytes)
        return self.indptr.nbytes + self.indices.nbytes

    def full_bits(self) -> np.ndarray:
        return self.bits if self.classes is None else self.bits[self.classes]


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _prefer_sparse(nnz: int, rows: int, n_cols: int) -> bool:
    """Whether CSR column indices take no more memory than packed bitsets for these rows."""
    return 4 * nnz + 4 * (rows + 1) <= rows * ((n_cols + 63) // 64) * 8


def _csr_to_bits(indptr: np.ndarray, indices: np.ndarray, rows: int, n_cols: int) -> np.ndarray:
    """Packed bitsets (rows, words) uint64 of a CSR pattern (columns unique within a row)."""
    width = (n_cols + 63) // 64 * 8
    row = np.repeat(np.arange(rows, dtype=np.int64), np.diff(indptr))
    cols = indices.astype(np.int64)
    # Bits of one byte come from distinct columns, so their sum is their OR.
    values = np.bincount(row * width + (cols >> 3), weights=128 >> (cols & 7), minlength=rows * width)
    return values.astype(np.uint8).reshape(rows, width).view(np.uint64)


def _bits_to_csr(bits: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    dense = np.unpackbits(bits.view(np.uint8), axis=1, count=n_cols)
    rows, cols = np.nonzero(dense)
    indptr = np.zeros(bits.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=bits.shape[0]), out=indptr[1:])
    return indptr.astype(np.int32 if indptr[-1] < 2**31 else np.int64), cols.astype(np.int32)


def _or_rows(edge: sp.csr_matrix, base: np.ndarray) -> np.ndarray:
    """Row x of the result is the OR of ``base`` rows at x's parents (CSR columns of ``edge``)."""
    out = np.zeros((edge.shape[0], base.shape[1]), dtype=base.dtype)
    indptr, indices = edge.indptr, edge.indices
    counts = np.diff(indptr)
    nonempty = np.flatnonzero(counts)
    if base.shape[1] == 0 or nonempty.size == 0:
        return out
    start = 0
    for stop in _chunk_stops(counts[nonempty], max(1, _CHUNK_ENTRIES // (base.shape[1] * 8))):
        rows = nonempty[start:stop]
        gathered = base[indices[indptr[rows[0]]: indptr[rows[-1] + 1]]]
        out[rows] = np.bitwise_or.reduceat(gathered, indptr[rows] - indptr[rows[0]], axis=0)
        start = stop
    return out


def _unique_bit_rows(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of packed bitsets ``(rows, words)`` and the class of every row."""
    if bits.shape[0] <= 1:
        return bits, np.zeros(bits.shape[0], dtype=np.int64)
    view = np.ascontiguousarray(bits).view(np.dtype((np.void, bits.dtype.itemsize * bits.shape[1])))[:, 0]
    _, first, inverse = np.unique(view, return_index=True, return_inverse=True)
    return bits[first], inverse.reshape(-1)


def _or_classes(edge: sp.csr_matrix, classes: np.ndarray, inverse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``edge ∘ base`` where ``base`` row y is ``classes[inverse[y]]``: distinct result rows and their classes.

    Rows of ``edge`` that reach the same classes of ``base`` get the same result, so only
    the distinct sets of classes are ORed (``unique_rows``).
    """
    mapped = sp.csr_matrix(
        (np.ones(edge.indices.size, dtype=np.int8), inverse[edge.indices], edge.indptr),
        shape=(edge.shape[0], classes.shape[0]),
    )
    reached, rows = unique_rows(mapped)
    return _or_rows(reached, classes), rows


def _merge_classes(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The row-wise OR of two matrices given as (distinct rows, classes)."""
    pairs = a[1].astype(np.int64) * b[0].shape[0] + b[1]
    keys, inverse = np.unique(pairs, return_inverse=True)
    merged = a[0][keys // b[0].shape[0]] | b[0][keys % b[0].shape[0]]
    distinct, again = _unique_bit_rows(merged)
    return distinct, again[inverse.reshape(-1)]


def _chunk_stops(weights: np.ndarray, budget: int) -> list[int]:
    """Ends of consecutive runs of rows whose weights sum to about ``budget`` (one row at least)."""
    total = np.cumsum(weights)
    ends = np.searchsorted(total, np.arange(1, int(total[-1]) // budget + 2) * budget) if total.size else []
    return np.unique(np.concatenate([np.clip(ends, 1, weights.size), [weights.size]])).astype(int).tolist()


class _Block:
    """The ancestors in one earlier layer of every node of a layer, as row chunks.

    ``key`` names it ``("product", L, K)``: the memo key of its product with layer K's
    limbs when layers that share the block read that product.
    """

    def __init__(self, n_rows: int, n_cols: int, key: tuple[str, int, int]) -> None:
        self.n_rows, self.n_cols, self.key = n_rows, n_cols, key
        self.chunks: list[_Chunk] = []

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.chunks)

    @property
    def has_dense(self) -> bool:
        return any(c.bits is not None for c in self.chunks)

    def add(self, start: int, stop: int, indptr: np.ndarray, indices: np.ndarray) -> None:
        """Append rows ``start:stop`` from CSR arrays, in whichever form is smaller."""
        rows = stop - start
        if _prefer_sparse(indices.size, rows, self.n_cols):
            self.chunks.append(_Chunk(start, stop, indptr=indptr, indices=indices))
        else:
            self.chunks.append(_Chunk(start, stop, bits=_csr_to_bits(indptr, indices, rows, self.n_cols)))

    def add_bits(self, start: int, stop: int, bits: np.ndarray, classes: np.ndarray | None = None) -> None:
        """Append rows ``start:stop`` from packed bitsets (distinct rows ``bits[classes]`` if given)."""
        counts = np.bitwise_count(bits).sum(axis=1)
        total = int(counts.sum() if classes is None else counts[classes].sum())
        if _prefer_sparse(total, stop - start, self.n_cols):
            self.add(start, stop, *_bits_to_csr(bits if classes is None else bits[classes], self.n_cols))
        elif classes is not None and 2 * bits.shape[0] > stop - start:
            self.chunks.append(_Chunk(start, stop, bits=bits[classes]))
        else:
            self.chunks.append(_Chunk(start, stop, bits=bits, classes=classes))

    def row_counts(self) -> np.ndarray:
        out = np.zeros(self.n_rows, dtype=np.int64)
        for c in self.chunks:
            if c.bits is None:
                out[c.start: c.stop] = np.diff(c.indptr)
            else:
                counts = np.bitwise_count(c.bits).sum(axis=1)
                out[c.start: c.stop] = counts if c.classes is None else counts[c.classes]
        return out

    def to_csr(self) -> sp.csr_matrix:
        """The whole block as a boolean CSR matrix (every chunk sparse)."""
        indptr = [np.zeros(1, dtype=np.int64)]
        offset = 0
        for c in self.chunks:
            indptr.append(c.indptr[1:].astype(np.int64) + offset)
            offset += int(c.indptr[-1])
        indices = np.concatenate([c.indices for c in self.chunks]) if self.chunks else np.zeros(0, np.int32)
        return sp.csr_matrix(
            (np.ones(indices.size, dtype=bool), indices, np.concatenate(indptr)), shape=(self.n_rows, self.n_cols)
        )

    def to_bits(self) -> np.ndarray:
        """The whole block as packed bitsets ``(n_rows, words)`` uint64."""
        out = np.zeros((self.n_rows, (self.n_cols + 63) // 64), dtype=np.uint64)
        for c in self.chunks:
            rows = c.stop - c.start
            out[c.start: c.stop] = c.full_bits() if c.bits is not None else _csr_to_bits(c.indptr, c.indices, rows, self.n_cols)
        return out

    def unique_bits(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct rows as packed bitsets and the class of every row, from each chunk's
        own distinct rows: a block whose rows share a few sets is never expanded row by row."""
        words = (self.n_cols + 63) // 64
        parts = [np.zeros((1, words), dtype=np.uint64)]  # rows no chunk covers are empty
        codes = np.zeros(self.n_rows, dtype=np.int64)
        offset = 1
        for c in self.chunks:
            rows = c.stop - c.start
            if c.bits is None:
                bits, local = _csr_to_bits(c.indptr, c.indices, rows, self.n_cols), np.arange(rows)
            else:
                bits, local = c.bits, (np.arange(rows) if c.classes is None else c.classes)
            parts.append(bits)
            codes[c.start: c.stop] = local + offset
            offset += bits.shape[0]
        distinct, again = _unique_bit_rows(np.concatenate(parts))
        return distinct, again[codes]

    def matmul(self, rhs: np.ndarray, ones: np.ndarray) -> np.ndarray:
        """``A @ rhs`` for the 0/1 matrix ``A`` of the block; ``ones`` is a long float64 array of 1s."""
        out = np.empty((self.n_rows, rhs.shape[1]), dtype=rhs.dtype)
        for c in self.chunks:
            rows = c.stop - c.start
            if c.bits is None:
                # The data array is a view of shared ones: nothing per ancestor is allocated.
                a = sp.csr_matrix((ones[: c.indices.size], c.indices, c.indptr), shape=(rows, self.n_cols))
                out[c.start: c.stop] = a @ rhs
            else:
                # The distinct rows only, then gathered.
                distinct = np.empty((c.bits.shape[0], rhs.shape[1]), dtype=rhs.dtype)
                step = max(1, _CHUNK_ENTRIES // max(1, self.n_cols))
                for a in range(0, c.bits.shape[0], step):
                    dense = np.unpackbits(c.bits[a: a + step].view(np.uint8), axis=1, count=self.n_cols)
                    distinct[a: a + dense.shape[0]] = dense.astype(rhs.dtype) @ rhs
                out[c.start: c.stop] = distinct if c.classes is None else distinct[c.classes]
        return out


class _Gathered:
    """Another layer's block, read at each unit's single parent.

    A unit of an elementwise layer (ReLU, BatchNorm, Dropout, a reshape) or of a max-pool
    (its argmax) has at most one parent, so its ancestors in every older layer are that
    parent's. The block is shared, not copied; a unit with no parent (a dead ReLU) has none.
    """

    def __init__(self, base: "_Block | _Gathered", source: np.ndarray) -> None:
        if isinstance(base, _Gathered):
            base, source = base.base, np.where(source >= 0, base.source[np.maximum(source, 0)], -1)
        self.base, self.source = base, source
        self.kept = source >= 0
        self.n_rows, self.n_cols = source.size, base.n_cols
        self.nbytes = 0

    @property
    def has_dense(self) -> bool:
        return self.base.has_dense

    def row_counts(self) -> np.ndarray:
        return self.base.row_counts()[np.maximum(self.source, 0)] * self.kept

    def to_csr(self) -> sp.csr_matrix:
        rows = np.where(self.kept, self.source, self.base.n_rows)
        # An extra empty row stands for "no parent".
        a = self.base.to_csr()
        a = sp.csr_matrix((a.data, a.indices, np.append(a.indptr, a.indptr[-1])), shape=(a.shape[0] + 1, a.shape[1]))
        return a[rows]

    def to_bits(self) -> np.ndarray:
        bits = self.base.to_bits()[np.maximum(self.source, 0)]
        bits[~self.kept] = 0
        return bits

    def unique_bits(self) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`_Block.unique_bits`, read at each unit's parent (a unit without one is empty)."""
        distinct, inverse = self.base.unique_bits()
        bits = np.concatenate([distinct, np.zeros((1, distinct.shape[1]), dtype=np.uint64)])
        codes = np.where(self.kept, inverse[np.maximum(self.source, 0)], distinct.shape[0])
        again_distinct, again = _unique_bit_rows(bits)
        return again_distinct, again[codes]

    def gather(self, product: np.ndarray) -> np.ndarray:
        """This block's product from its base block's product with the same limbs."""
        out = product[np.maximum(self.source, 0)]
        out[~self.kept] = 0
        return out


def _base(block: "_Block | _Gathered") -> _Block:
    return block.base if isinstance(block, _Gathered) else block


def _single_parents(edge: sp.csr_matrix) -> np.ndarray | None:
    """Each row's only column (-1 for an empty row), or None if some row has several."""
    counts = np.diff(edge.indptr)
    if counts.max(initial=0) > 1:
        return None
    source = np.full(edge.shape[0], -1, dtype=np.int64)
    source[counts.astype(bool)] = edge.indices
    return source


def _rows(edge: sp.csr_matrix, start: int, stop: int) -> sp.csr_matrix:
    """Rows ``start:stop`` of a CSR matrix as views, without scipy's copy."""
    a, b = edge.indptr[start], edge.indptr[stop]
    return sp.csr_matrix(
        (edge.data[a:b], edge.indices[a:b], edge.indptr[start: stop + 1] - a), shape=(stop - start, edge.shape[1])
    )


class AncestorSets:
    """``Σ_{K<L} A_{L,K} X_K`` for data-dependent graphs, from exact ancestor sets.

    Parameters
    ----------
    structure : NetworkStructure
        An ``INCL=False`` structure: ``parents[L][J]`` is a boolean CSR matrix.

    Raises
    ------
    MemoryError
        Before a chunk of ancestor sets is allocated that would take them past the memory
        available when construction started (or ``ANCESTOR_MEMORY_LIMIT``, if smaller);
        the message names the layer and the estimate.

    Building the sets of a large graph takes minutes; progress goes to the ``"nsp"``
    logger (:mod:`nsp.common.progress`), each message with the memory held so far and the
    time and memory the rest would take at that rate.
    """

    def __init__(self, structure: NetworkStructure) -> None:
        self.structure = structure
        sizes = [int(s) for s in structure.sizes]
        self.blocks: list[dict[int, _Block | _Gathered]] = [{}]
        self.nbytes = 0
        available = memory.available_bytes()
        limits = [(v, name) for v, name in ((ANCESTOR_MEMORY_LIMIT, "nsp.transforms.ancestor_sets.ANCESTOR_MEMORY_LIMIT"),
                                            (available, "the memory available")) if v is not None]
        self._limit = min(limits, default=None)
        largest = 1
        done = np.cumsum(sizes)
        progress = Progress("INCL=False ancestor sets", structure.names,
                            lambda layer, seconds: self._estimate(done, layer, seconds))
        for layer in range(1, len(sizes)):
            parents = {j: e.tocsr() for j, e in structure.parents[layer].items()}
            targets = sorted(set(parents).union(*(self.blocks[j] for j in parents)))
            own: dict[int, _Block | _Gathered] = {}
            source = _single_parents(next(iter(parents.values()))) if len(parents) == 1 else None
            if source is not None:
                (j,) = parents
                own = {k: _Gathered(block, source) for k, block in self.blocks[j].items()}
                targets = [j]
            classes = None
            if source is None:
                # Rows equal in every parent relation have the same ancestors everywhere (deep in
                # a ResNet stage almost all do): the sets are built for one row per class.
                known = structure.row_classes[layer] if structure.row_classes is not None else {}
                codes = np.stack([known[j] if j in known else unique_rows(e)[1] for j, e in parents.items()], axis=1)
                _, first, inverse = np.unique(codes, axis=0, return_index=True, return_inverse=True)
                if 2 * first.size <= sizes[layer]:
                    classes = inverse.reshape(-1)
                    parents = {j: e[first] for j, e in parents.items()}
            n_rows = next(iter(parents.values())).shape[0]
            # Upper bounds on each row's ancestor count per target layer, one product per parent.
            bounds = {k: np.zeros(n_rows, dtype=np.int64) for k in targets}
            for j, e in parents.items():
                ks = [k for k in targets if k == j or k in self.blocks[j]]
                counts = np.stack([np.ones(sizes[j], np.int64) if k == j else self.blocks[j][k].row_counts() for k in ks], 1)
                for k, column in zip(ks, (e.astype(np.int64) @ counts).T):
                    bounds[k] += column
            for k in targets:
                sources = [(e, None if j == k else self.blocks[j][k]) for j, e in parents.items() if j == k or k in self.blocks[j]]
                own[k] = self._block(layer, k, sizes[k], sources, np.minimum(bounds[k], sizes[k]))
                if classes is not None:
                    own[k] = _Gathered(own[k], classes)
            self.blocks.append(own)
            largest = max(largest, sum(sizes[k] for k in own))
            progress.done(layer)
        # A layer's limbs are read once, by its first reader, into a float64 matrix in the
        # pass's memo, which lasts until its last reader.
        self.last_read = list(range(len(sizes)))
        last_use = list(range(len(sizes)))
        for layer, own in enumerate(self.blocks):
            for k in own:
                if self.last_read[k] == k:
                    self.last_read[k] = layer
                last_use[k] = layer
        self._expiring: list[list[int | tuple]] = [[] for _ in sizes]
        for k, layer in enumerate(last_use):
            self._expiring[layer].append(k)
        # A block shared by later layers (an elementwise or max-pool layer after it) is
        # multiplied once per pass; the product lasts until the last layer that gathers it.
        readers: dict[tuple, list[int]] = {}
        for layer, own in enumerate(self.blocks):
            for block in own.values():
                readers.setdefault(_base(block).key, []).append(layer)
        self._shared = {key for key, layers in readers.items() if len(layers) > 1}
        for key in self._shared:
            self._expiring[readers[key][-1]].append(key)
        # Every float64 partial sum adds at most `largest` limbs below 2^b: exact below 2^53.
        self.limb_bits = min(32, 52 - math.ceil(math.log2(largest + 1)))
        self._ones = np.ones(
            max(
                (c.indices.size for b in self.blocks for blk in b.values() for c in _base(blk).chunks if c.bits is None),
                default=0,
            )
        )

    def _block(
        self, layer: int, k: int, n_cols: int, sources: list[tuple[sp.csr_matrix, "_Block | _Gathered | None"]],
        bound: np.ndarray,
    ) -> _Block:
        n_rows = bound.size
        block = _Block(n_rows, n_cols, ("product", layer, k))
        if n_rows == 0:
            return block
        dense = any(src is not None and src.has_dense for _, src in sources)
        prepared = [(e, None if src is None else (src.unique_bits() if dense else src.to_csr()))
                    for e, src in sources]
        if dense:
            bound[:] = n_cols
        start = 0
        for stop in _chunk_stops(bound, _CHUNK_ENTRIES):
            self._reserve(layer, (stop - start) * ((n_cols + 63) // 64) * 8 if dense
                          else int(bound[start:stop].sum()) * 4 + (stop - start + 1) * 8)
            if dense:
                merged = None
                for e, src in prepared:
                    part = _rows(e, start, stop)
                    if src is None:
                        rows, classes = unique_rows(part)
                        piece = (_csr_to_bits(rows.indptr, rows.indices, rows.shape[0], n_cols), classes)
                    else:
                        piece = _or_classes(part, *src)
                    merged = piece if merged is None else _merge_classes(merged, piece)
                block.add_bits(start, stop, *merged)
            else:
                union = None
                for e, src in prepared:
                    part = _rows(e, start, stop) if src is None else _rows(e, start, stop) @ src
                    union = part if union is None else union + part
                # SpGEMM and scipy's sums never leave duplicates, so no sort is needed.
                union = union.tocsr()
                block.add(start, stop, union.indptr.copy(), union.indices.astype(np.int32))
            self.nbytes += block.chunks[-1].nbytes
            start = stop
        return block

    def _estimate(self, done: np.ndarray, layer: int, seconds: float) -> str:
        """The rest of the build, extrapolated from layers ``0..layer`` by their share of the neurons.

        An extrapolation, not a bound: on resnet18, mobilenet_v2 and googlenet with every leaf
        (32×32), from a tenth of the build on, the total time it implies was 0.15–1.44× the
        real one (googlenet's later layers cost more per neuron): an order of magnitude.
        """
        share = max(float(done[layer]), 1.0) / max(float(done[-1]), 1.0)
        limit = "" if self._limit is None else f", against a limit of {_size(self._limit[0])}"
        return (f"{_size(self.nbytes)} of ancestor sets so far; at this rate about {seconds * (1 / share - 1):.0f} s "
                f"more and {_size(int(self.nbytes / share))} in all{limit}")

    def _reserve(self, layer: int, estimate: int) -> None:
        """Refuse, before allocating it, a chunk of about ``estimate`` bytes (an upper bound) that
        would take the sets past the limit."""
        if self._limit is None or self.nbytes + estimate <= self._limit[0]:
            return
        s = self.structure
        raise MemoryError(
            f"nsp: the exact INCL=False transform of this {s.n:,}-node graph needs more than "
            f"{_size(self._limit[0])} of ancestor sets ({self._limit[1]}): {_size(self.nbytes + estimate)} by layer "
            f"'{s.names[layer]}', {layer} of {len(s.names) - 1} (estimated before allocating); use INCL=True, "
            "fewer or smaller probe layers, or a smaller input"
        )

    def growth_bits(self) -> np.ndarray:
        """Per layer, 1 + log2 of max G, by running the recursion on floats."""
        g: dict[int, np.ndarray] = {}
        memo: dict = {}
        out = np.zeros(len(self.structure.sizes))
        for layer, size in enumerate(self.structure.sizes):
            acc = np.ones((1, 1, int(size)))
            if layer:
                self.accumulate(layer, g, acc, +1, memo)
            peak = float(acc.max()) if acc.size else 1.0
            if not math.isfinite(peak):
                raise StructureError(
                    f"nsp: spectra of layer '{self.structure.names[layer]}' may exceed 1e308 in magnitude; "
                    "the network is too deep for an exact float64 result"
                )
            g[layer] = acc
            # Float summation error is far below one bit; the extra bit covers it.
            out[layer] = math.log2(peak) + 1
        return out

    def accumulate(self, layer: int, xs: Mapping[int, np.ndarray], acc: np.ndarray, sign: int, memo: dict) -> None:
        """Add ``sign · Σ_K A_{L,K} xs[K]`` into ``acc`` (limbs ``(k, P, N_L)``).

        ``xs[K]`` holds layer K's limbs ``(k_K, P, N_K)`` with ``k_K`` at most ``acc``'s.
        ``memo`` (one dict per pass over the layers) keeps each earlier layer's limbs as a
        float64 ``(N_K, k_K·P)`` matrix until the last layer that reads them, and the
        products of blocks that later layers gather until the last of those.
        """
        k_acc, p = acc.shape[0], acc.shape[1]
        total = np.zeros((acc.shape[2], k_acc * p))
        for k, block in self.blocks[layer].items():
            rhs = memo.get(k)
            if rhs is None:
                x = xs[k]
                # C order: scipy's sparse product would copy any other layout, per chunk.
                rhs = memo[k] = np.ascontiguousarray(x.reshape(x.shape[0] * p, -1).T, dtype=np.float64)
            base = _base(block)
            product = memo.get(base.key)
            if product is None:
                product = base.matmul(rhs, self._ones)
                if base.key in self._shared:
                    memo[base.key] = product
            total[:, : rhs.shape[1]] += block.gather(product) if isinstance(block, _Gathered) else product
        for k in self._expiring[layer]:
            memo.pop(k, None)
        flat = acc.reshape(k_acc * p, -1)
        total = total.T
        if np.issubdtype(acc.dtype, np.integer):
            total = total.astype(np.int64)
        if sign > 0:
            flat += total
        else:
            flat -= total
