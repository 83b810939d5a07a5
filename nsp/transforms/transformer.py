"""The seed's ``Transformer`` functions, kept for compatibility.

New code should use the operators from ``NNGraph.get_transformer`` directly: they never
build an N×N matrix. These functions take a graph (or its matrices) as in the seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from nsp.graph.capture import Activations
from nsp.transforms.base import GraphTransform

__all__ = ["Transformer"]

#: Largest graph for which the dense Fourier (Möbius) matrix is built.
DENSE_LIMIT = 5_000


class Transformer:
    """Seed-compatible functions of a graph's Fourier transforms (all static)."""

    @staticmethod
    def get_laplacian(graph: Any) -> sp.csr_array:
        """The Laplacian ``L = D - W`` of the undirected neuron graph (sparse, float64).

        Parameters
        ----------
        graph : NNGraph
            A graph built from ``Activations``.
        """
        from nsp.transforms.laplacian import laplacian_matrix

        return laplacian_matrix(graph.adjacency())

    @staticmethod
    def get_inv_fourier_matrix(graph: Any, type: str = "standard") -> Any:
        """The inverse transform of ``graph``.

        Parameters
        ----------
        graph : NNGraph
        type : {'standard', 'laplacian'}
            ``'standard'``: the zeta matrix ``inv_F`` (sparse, lower triangular; small
            graphs only). ``'laplacian'``: the Laplacian transform operator (the seed
            returned an LU factorisation of the orthogonal eigenvector matrix here,
            which is never needed).
        """
        if type == "standard":
            return graph.inv_F
        return graph.get_transformer(type)

    @staticmethod
    def get_fourier_matrix(graph: Any, inv_F: Any = None) -> np.ndarray:
        """The dense Fourier (Möbius) matrix ``F = inv_F⁻¹``, computed exactly and rounded.

        Parameters
        ----------
        graph : NNGraph
            A graph with at most ``DENSE_LIMIT`` nodes.
        inv_F : optional
            Ignored; accepted for the seed's signature (``F`` comes from the graph).

        Raises
        ------
        MemoryError
            If the graph has more than ``DENSE_LIMIT`` nodes.
        """
        n = graph.number_of_nodes()
        if n > DENSE_LIMIT:
            raise MemoryError(
                f"nsp.Transformer.get_fourier_matrix: a dense {n:,}×{n:,} matrix needs {n * n * 8 / 2**30:.1f} GiB; "
                f"it is built only up to {DENSE_LIMIT:,} nodes. Use graph.get_transformer() instead"
            )
        return graph.get_transformer("standard").forward(np.eye(n)).T.copy()

    @staticmethod
    def get_fourier_coefficients(
        activations: Activations, inv_F: Any = None, type: str = "standard", lu_piv: Any = None
    ) -> Activations:
        """The spectrum of ``activations`` as a new ``Activations``.

        Parameters
        ----------
        activations : Activations
        inv_F : GraphTransform or scipy.sparse matrix
            For ``type='standard'``: the operator from ``graph.get_transformer()`` (exact,
            fast), or the seed's zeta matrix ``graph.inv_F``, which is solved exactly in
            integer arithmetic (slow; small graphs).
        type : {'standard', 'laplacian'}
        lu_piv : GraphTransform
            For ``type='laplacian'``: the operator from ``graph.get_transformer('laplacian')``.

        Raises
        ------
        ValueError
            If the operator the ``type`` needs is missing.
        """
        if type not in ("standard", "laplacian"):
            raise ValueError(f"nsp.Transformer: unknown type={type!r}; expected 'standard' or 'laplacian'")
        op = inv_F if type == "standard" else lu_piv
        if op is None:
            needed = "inv_F" if type == "standard" else "lu_piv"
            raise ValueError(f"nsp.Transformer.get_fourier_coefficients: type={type!r} needs `{needed}`")
        signal = activations.to_numpy()
        if isinstance(op, GraphTransform):
            return activations.to_activations(op.forward(signal))
        if type == "standard" and sp.issparse(op):
            return activations.to_activations(_solve_zeta_exactly(sp.csr_matrix(op), signal))
        raise TypeError(
            f"nsp.Transformer.get_fourier_coefficients: expected a GraphTransform or a sparse zeta matrix, "
            f"got {type(op).__name__}"
        )


def _solve_zeta_exactly(zeta: sp.csr_matrix, signal: np.ndarray) -> np.ndarray:
    """Möbius inversion through an explicit zeta matrix, in Python integers, rounded once."""
    from fractions import Fraction

    if zeta.shape != (signal.size, signal.size):
        raise ValueError(f"nsp.Transformer: inv_F has shape {zeta.shape}, the signal has {signal.size} values")
    values = [Fraction(v) for v in signal.tolist()]
    scale = max((v.denominator for v in values), default=1)
    ints = [int(v * scale) for v in values]
    out: list[int] = []
    for x in range(signal.size):
        cols = zeta.indices[zeta.indptr[x]: zeta.indptr[x + 1]]
        out.append(ints[x] - sum(out[y] for y in cols.tolist() if y < x))
    return np.array([float(Fraction(v, scale)) for v in out])
