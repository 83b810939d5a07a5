"""The Laplacian of a network's neuron graph as a structured operator.

:class:`LaplacianOperator` applies ``L = D - W`` of an ``NNGraph``'s undirected neuron
graph as a :class:`scipy.sparse.linalg.LinearOperator`, for graphs far too large for a
matrix. With ``INCL=True`` it applies each layer relation (a union of Kronecker products
of small per-axis 0/1 factors, :mod:`nsp.graph.relations`) and its transpose with per-axis
sums and small matrix products, so neither an ``N x N`` matrix nor an edge list ever
exists. With ``INCL=False`` the relations are sparse matrices already, and ``L`` is one.
:class:`~nsp.transforms.laplacian_bands.LaplacianBands` takes band energies through it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from nsp.graph.relations import Term
from nsp.graph.structure import NetworkStructure
from nsp.transforms.laplacian import laplacian_matrix

__all__ = ["LaplacianOperator"]

# Factors with more entries than this are applied as sparse matrices: a fallback relation
# can be one large, mostly empty factor.
_DENSE_FACTOR_ENTRIES = 1 << 16


def _factor_ops(term: Term) -> tuple[tuple[int, ...], tuple[int, ...], list[tuple[int, Any]]]:
    """Per-axis operations applying ``term`` to a tensor shaped ``in_dims + (P,)``.

    Identity factors are skipped; an all-ones factor is a sum over its axis (kept with
    size 1, so the result broadcasts onto the out size); any other factor is a matrix
    product along its axis.
    """
    ops: list[tuple[int, Any]] = []
    for axis, f in enumerate(term.factors):
        p, q = f.shape
        nonzero = int(np.count_nonzero(f))
        if p == q == nonzero and bool(f.diagonal().all()):
            continue
        if nonzero == f.size:
            ops.append((axis, None))
        elif f.size > _DENSE_FACTOR_ENTRIES:
            ops.append((axis, sp.csr_array(f, dtype=np.float64)))
        else:
            ops.append((axis, f.astype(np.float64)))
    return term.in_dims, term.out_dims, ops


def _apply_ops(x: np.ndarray, ops: list[tuple[int, Any]]) -> np.ndarray:
    for axis, f in ops:
        if f is None:
            x = x.sum(axis=axis, keepdims=True)
        elif isinstance(f, np.ndarray):
            x = np.moveaxis(np.tensordot(f, x, axes=([1], [axis])), 0, axis)
        else:
            moved = np.moveaxis(x, axis, 0)
            rest = moved.shape[1:]
            x = np.moveaxis((f @ moved.reshape(moved.shape[0], -1)).reshape((f.shape[0],) + rest), 0, axis)
    return x


class LaplacianOperator(LinearOperator):
    """The Laplacian ``L = D - W`` of a network's undirected neuron graph, as an operator.

    ``W[u, v] = 1`` when ``u -> v`` or ``v -> u`` is an edge of the graph of
    ``structure`` (the symmetrised 0/1 adjacency, as in
    :func:`nsp.transforms.laplacian.laplacian_matrix`), and ``D`` holds the degrees
    ``W @ 1``. Edges only join a layer to an earlier one, so ``W`` is the sum over the
    layer relations ``A_LK`` of ``A_LK`` and its transpose, and no two of these overlap.

    With ``INCL=True`` each relation is applied as the sum of disjoint product terms
    (:meth:`nsp.graph.relations.Relation.disjoint`), so overlapping terms of a union count
    once; each term is applied with per-axis sums and
    small per-axis matrix products in float64. The cost of a product is about that of a
    few passes over the activations per term; no ``N x N`` matrix or edge list is formed.
    With ``INCL=False`` the relations are sparse matrices, and ``L`` is assembled once as
    a scipy CSR matrix.

    Parameters
    ----------
    structure : NetworkStructure
        The layers and relations of an ``NNGraph`` (``graph.structure``).

    Attributes
    ----------
    structure : NetworkStructure
    degrees : numpy.ndarray, shape (N,), float64, read-only
        Node degrees of the undirected graph (the diagonal of ``L``).
    spectrum_bound : float
        An upper bound on the largest eigenvalue of ``L``: Merris' bound
        ``max_u (d_u + m_u)``, with ``m_u`` the mean degree of ``u``'s neighbours
        (R. Merris, "A note on Laplacian graph eigenvalues", Linear Algebra Appl. 285,
        1998). It costs one product with ``W`` and never exceeds ``2 max d``; 1 for a
        graph without edges.

    Raises
    ------
    TypeError
        If `structure` is not a :class:`~nsp.graph.structure.NetworkStructure`.

    See Also
    --------
    nsp.transforms.laplacian.laplacian_matrix : the same matrix, sparse, from an adjacency.
    LaplacianBands : band energies from products with this operator.

    Examples
    --------
    >>> import torch, nsp
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 1))
    >>> op = LaplacianOperator(nsp.NNGraph(nsp.Activations(net, torch.ones(1, 2))).structure)
    >>> op
    <3x3 LaplacianOperator with dtype=float64>
    >>> op @ np.eye(3)
    array([[ 1.,  0., -1.],
           [ 0.,  1., -1.],
           [-1., -1.,  2.]])
    >>> op.spectrum_bound
    3.0
    """

    def __init__(self, structure: NetworkStructure) -> None:
        if not isinstance(structure, NetworkStructure):
            raise TypeError(
                f"LaplacianOperator: expected `structure` to be an nsp.structure.NetworkStructure "
                f"(graph.structure), got {type(structure).__name__}"
            )
        n = structure.n
        super().__init__(dtype=np.float64, shape=(n, n))
        self.structure = structure
        self._sparse: sp.csr_array | None = None
        self._blocks: list[tuple[int, int, tuple, tuple]] = []
        if structure.incl:
            for layer, k, relation in structure.blocks():
                # The per-factor operations below read the factor order on both sides.
                for term in relation.plain().disjoint():
                    down = _factor_ops(term)
                    up = _factor_ops(Term(tuple(f.T for f in term.factors)))
                    self._blocks.append((layer, k, down, up))
            degrees = self._adjacency_matmat(np.ones((n, 1)))[:, 0]
        else:
            src, dst = structure.edge_arrays()
            self._sparse = laplacian_matrix(sp.csr_array((np.ones(src.size), (src, dst)), shape=(n, n)))
            degrees = self._sparse.diagonal()
        degrees.flags.writeable = False
        self.degrees = degrees
        neighbours = self._adjacency_matmat(degrees[:, None])[:, 0]
        linked = degrees > 0
        self.spectrum_bound = (
            float(np.max(degrees[linked] + neighbours[linked] / degrees[linked])) if linked.any() else 1.0
        )

    def _adjacency_matmat(self, X: np.ndarray) -> np.ndarray:
        """``W @ X`` for ``X`` of shape (N, P)."""
        if self._sparse is not None:
            return self.degrees[:, None] * X - self._sparse @ X
        s, p = self.structure, X.shape[1]
        out = np.zeros((s.n, p))

        def view(a: np.ndarray, layer: int, dims: tuple[int, ...]) -> np.ndarray:
            return a[int(s.offsets[layer]): int(s.offsets[layer + 1])].reshape(dims + (p,))

        for layer, k, (down_in, down_out, down), (up_in, up_out, up) in self._blocks:
            # Row `layer`, column `k` of W is A_LK; row `k`, column `layer` is its transpose.
            target = view(out, layer, down_out)
            target += _apply_ops(view(X, k, down_in), down)
            target = view(out, k, up_out)
            target += _apply_ops(view(X, layer, up_in), up)
        return out

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if self._sparse is not None:
            return self._sparse @ X
        return self.degrees[:, None] * X - self._adjacency_matmat(X)

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(np.reshape(x, (-1, 1)))[:, 0]

    def _rmatvec(self, x: np.ndarray) -> np.ndarray:
        return self._matvec(x)

    def _rmatmat(self, X: np.ndarray) -> np.ndarray:
        return self._matmat(X)

    def _adjoint(self) -> "LaplacianOperator":
        return self

    def _transpose(self) -> "LaplacianOperator":
        return self

    def __repr__(self) -> str:
        return f"<{self.shape[0]}x{self.shape[1]} {type(self).__name__} with dtype={self.dtype}>"
