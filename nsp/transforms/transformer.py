"""Transforms chosen by name, and the seed's ``Transformer`` functions, kept for compatibility.

:data:`TRANSFORMS` maps a name (``NNGraph.get_transformer(type)``,
``NNGraph.transform(..., type=)``) to a function that builds the transform of a graph:
``'standard'`` (the exact causal transform) and ``'laplacian'``. A transform of your own is
added with :func:`register_transform` (which refuses to replace one unless
``override=True``), removed with :func:`unregister_transform`, and replaced for one block
with :func:`using_transforms`.

New code should use the operators from ``NNGraph.get_transformer`` directly: they never
build an N×N matrix. The ``Transformer`` functions take a graph (or its matrices) as in the seed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Mapping
from fractions import Fraction
from typing import Any

import numpy as np
import scipy.sparse as sp

from nsp.common.registry import Registry
from nsp.graph.capture import Activations
from nsp.transforms.base import GraphTransform
from nsp.transforms.causal import CausalTransform
from nsp.transforms.laplacian import LaplacianTransform, laplacian_matrix

__all__ = [
    "Transformer", "TRANSFORMS", "register_transform", "unregister_transform", "using_transforms", "transform_builder",
]


def _check(name: Hashable, build: Any, where: str) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{where}: expected a transform name (a non-empty str), got {name!r}")
    if not callable(build):
        raise TypeError(f"{where}: expected a function graph -> GraphTransform, got {build!r}")


#: The transforms by name: read like a dict; changed with :func:`register_transform`,
#: :func:`unregister_transform` and :func:`using_transforms`.
TRANSFORMS: Registry[Callable[[Any], GraphTransform]] = Registry(
    "nsp.transforms.transformer", "transform", "using_transforms", _check
)


def register_transform(name: str, build: Callable[[Any], GraphTransform], *, override: bool = False) -> None:
    """Make ``build(graph)`` the transform called ``name``.

    Parameters
    ----------
    name : str
        The name ``NNGraph.get_transformer`` and ``NNGraph.transform`` take as ``type``.
    build : callable
        ``build(graph)`` returns the :class:`~nsp.transforms.base.GraphTransform` of an
        ``NNGraph`` (``graph.structure`` and ``graph.adjacency()`` describe it).
    override : bool, default False
        Replace the transform already called ``name``.

    Raises
    ------
    ValueError
        If ``name`` is taken and ``override`` is false.
    TypeError
        If ``name`` is not a non-empty str or ``build`` is not callable.
    """
    TRANSFORMS.register(name, build, override=override)


def unregister_transform(name: str) -> None:
    """Remove the transform called ``name``.

    Raises
    ------
    KeyError
        If there is no transform called ``name``.
    """
    TRANSFORMS.unregister(name)


def using_transforms(overrides: Mapping[str, Callable[[Any], GraphTransform]]) -> contextlib.AbstractContextManager[None]:
    """A block in which ``overrides`` (``{name: build}``) replace or add transforms.

    On leaving the block, also by an exception, :data:`TRANSFORMS` is exactly as before it.
    A graph keeps the transforms it has built (``NNGraph.get_transformer`` caches them).
    """
    return TRANSFORMS.using(overrides)


def transform_builder(name: str, where: str) -> Callable[[Any], GraphTransform]:
    """The function that builds the transform called ``name``; ``where`` names the caller in the error.

    Raises
    ------
    ValueError
        If no transform is called ``name`` (the message lists the names).
    """
    if not isinstance(name, str) or name not in TRANSFORMS:
        raise ValueError(f"{where}: unknown transform type={name!r}; expected one of {tuple(TRANSFORMS)}")
    return TRANSFORMS[name]


def _causal(graph: Any) -> GraphTransform:
    return CausalTransform(graph.structure)


def _laplacian(graph: Any) -> GraphTransform:
    return LaplacianTransform(graph.adjacency())


register_transform("standard", _causal)
register_transform("laplacian", _laplacian)

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
        return laplacian_matrix(graph.adjacency())

    @staticmethod
    def get_inv_fourier_matrix(graph: Any, type: str = "standard") -> Any:
        """The inverse transform of ``graph``.

        Parameters
        ----------
        graph : NNGraph
        type : str
            ``'standard'``: the zeta matrix ``inv_F`` (sparse, lower triangular; small
            graphs only). ``'laplacian'``: the Laplacian transform operator (the seed
            returned an LU factorisation of the orthogonal eigenvector matrix here,
            which is never needed). Another name in :data:`TRANSFORMS`: its operator.
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
        type : str
            A name in :data:`TRANSFORMS`.
        lu_piv : GraphTransform
            For any other ``type`` than ``'standard'``: the operator from
            ``graph.get_transformer(type)``.

        Raises
        ------
        ValueError
            If the operator the ``type`` needs is missing.
        """
        if type not in TRANSFORMS:
            raise ValueError(f"nsp.Transformer: unknown type={type!r}; expected one of {tuple(TRANSFORMS)}")
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
