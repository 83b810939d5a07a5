"""A bound on the majorant of INCL=False spectra, found before the ancestor sets are built.

The exact transform bounds ``|ŝ(x)| ≤ max|s| · G(x)`` with ``G(x) = 1 + Σ_{y<x} G(y)`` over
the strict ancestors of x (:mod:`nsp.transforms.causal`), and refuses a graph whose G
leaves the float64 range. Computing G exactly needs every ancestor set
(:class:`~nsp.transforms.ancestor_sets.AncestorSets`), which on densenet121 with every
leaf takes minutes before the refusal comes. This module bounds G from the parent
relations alone, in one sparse product per relation (seconds), so that the refusal comes
first.

The ancestors of x are its parents and the union of their ancestors, and the ancestors
of a parent in layer J lie in the layers that reach J. So, with ``W_K = Σ_{y ∈ K} G(y)``,

    G(x) ≤ 1 + Σ_p G(p) + min(Σ_p (G(p) − 1), Σ_{K reaching a parent's layer} W_K),

which is exact (``2 G(p)``) for a unit with one parent. Deep in a network, where receptive
fields cover whole layers, the second term of the minimum is nearly exact: on densenet121
(every leaf, 32×32) the bound stays within 2 % of log2 G, and leaves the float64 range 7
layers before G does (where 1 + log2 G is 1,008). A graph whose exact G stays just inside the
range can therefore be refused; on every other zoo model the bound stays below 745 bits.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from nsp.graph.relations import StructureError
from nsp.graph.structure import NetworkStructure

__all__ = ["growth_bound"]

# Row sums run over runs of rows of about this many entries: a float64 copy of a whole
# relation (100 M entries in vgg11_bn's first Linear) would cost seconds and 800 MB.
_CHUNK_ENTRIES = 1 << 22


def _row_sums(edge: sp.csr_matrix, x: np.ndarray, ones: list[np.ndarray], classes: np.ndarray | None) -> np.ndarray:
    """``Σ_{p ∈ row} x[p]`` for every row of a boolean CSR matrix, without copying it.

    Rows of one of the known ``classes`` are equal, so one row of each is summed (every
    row of a ViT's attention is one class: 1.4 G entries in all, otherwise). ``ones[0]``
    is a reusable array of 1.0s, grown as needed.
    """
    if classes is not None:
        _, first, inverse = np.unique(classes, return_index=True, return_inverse=True)
        if 2 * first.size <= edge.shape[0]:
            return _row_sums(edge[first], x, ones, None)[inverse.reshape(-1)]
    indptr = edge.indptr
    stops = np.searchsorted(indptr, np.arange(_CHUNK_ENTRIES, edge.nnz, _CHUNK_ENTRIES))
    out = np.empty(edge.shape[0])
    start = 0
    for stop in np.unique(np.append(stops, edge.shape[0])).tolist():
        a, b = int(indptr[start]), int(indptr[stop])
        if ones[0].size < b - a:
            ones[0] = np.ones(b - a)
        # One index dtype, or scipy would copy the indices to unify them.
        rows = (indptr[start: stop + 1] - a).astype(edge.indices.dtype)
        part = sp.csr_matrix((ones[0][: b - a], edge.indices[a:b], rows), shape=(stop - start, edge.shape[1]))
        out[start:stop] = part @ x
        start = stop
    return out


def growth_bound(structure: NetworkStructure) -> np.ndarray:
    """Per layer, 1 + log2 of an upper bound on max G, from the parent relations only.

    Parameters
    ----------
    structure : NetworkStructure
        An ``INCL=False`` structure (``parents[L][K]`` boolean sparse matrices).

    Returns
    -------
    numpy.ndarray
        One float per layer, at least the exact growth of
        :meth:`~nsp.transforms.ancestor_sets.AncestorSets.growth_bits`.

    Raises
    ------
    StructureError
        At the first layer whose bound leaves the float64 range; the message names it.
    """
    start = time.perf_counter()
    n_layers = len(structure.sizes)
    g: list[np.ndarray] = []
    weight = np.zeros(n_layers)  # W_K
    reach = np.zeros((n_layers, n_layers), dtype=bool)  # reach[L, K]: layer K reaches layer L
    out = np.ones(n_layers)
    ones = [np.ones(0)]
    known = structure.row_classes or [{} for _ in range(n_layers)]
    for layer, size in enumerate(structure.sizes):
        parents = {j: e.tocsr() for j, e in structure.parents[layer].items()}
        below = np.zeros(n_layers, dtype=bool)
        for j in parents:
            below |= reach[j]
            reach[layer, j] = True
        reach[layer] |= below
        bound = np.ones(int(size))
        if parents:
            with np.errstate(over="ignore", invalid="ignore"):
                counts = sum(np.diff(e.indptr) for e in parents.values())
                sums = sum(_row_sums(e, g[j], ones, known[layer].get(j)) for j, e in parents.items())
                # With no parent (a dead unit) both sums are 0, so the bound is 1.
                bound += sums + np.minimum(sums - counts, weight[below].sum())
        peak = float(bound.max()) if bound.size else 1.0
        if not np.isfinite(peak):
            raise StructureError(
                f"nsp: spectra of layer '{structure.names[layer]}' ({layer} of {n_layers - 1}) may exceed 1e308 in "
                "magnitude: a bound on their growth leaves the float64 range there (found in "
                f"{time.perf_counter() - start:.1f} s, before building the INCL=False ancestor sets); the network "
                "is too deep for an exact float64 result with INCL=False. Use INCL=True, or fewer (e.g. top-level) "
                "probe layers"
            )
        g.append(bound)
        with np.errstate(over="ignore"):
            weight[layer] = bound.sum()
        out[layer] = np.log2(peak) + 1
    return out
