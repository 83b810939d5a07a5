"""``NNGraph``: the neuron-level DAG of a network, with its Fourier transforms.

The graph keeps a compact structure (per-layer relations, :mod:`nsp.graph.structure`). The
networkx view of nodes and edges is materialised lazily, on first use, because it costs
one Python object per edge; the transforms never need it.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Sequence

import networkx as nx
import numpy as np
import scipy.sparse as sp
import torch

from nsp.common import memory
from nsp.graph.capture import Activations
from nsp.graph.structure import NetworkStructure, build_structure
from nsp.transforms.base import GraphTransform
from nsp.transforms.laplacian_bands import LaplacianBands, LaplacianOperator
from nsp.transforms.transformer import transform_builder

__all__ = ["NNGraph"]

# Beyond this many edges the networkx view takes minutes to build: warn first.
_EDGE_WARNING = 1_000_000


class _Lazy:
    """A networkx storage attribute that materialises the graph on first access.

    Setting it goes through what ``networkx.DiGraph`` itself keeps under that name: a
    descriptor that also resets the cached views (``adj``, ``succ``, ``pred``...) where
    networkx has one, else the instance's own attribute.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.inner = inspect.getattr_static(nx.DiGraph, name, None)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        if obj.__dict__.get("_pending"):
            obj._materialize()
        return obj.__dict__[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        if hasattr(self.inner, "__set__"):
            self.inner.__set__(obj, value)
        else:
            obj.__dict__[self.name] = value


class NNGraph(nx.DiGraph):
    """Directed graph of the neurons of a network (a ``networkx.DiGraph``).

    Nodes are ``(layer_index, *index_in_layer)`` tuples, ordered layer by layer and
    row-major inside a layer; this order is topological. Edges go from layer ``L-1``
    to layer ``L`` where an output of child ``L`` depends on an input position of that
    child, whose input is layer ``L-1`` up to an elementwise map and a row-major reshape
    (as ``x.view(...)`` before a Linear).

    Parameters
    ----------
    activations : Activations, optional
        A pattern recorded from the network. With ``INCL=True`` the graph depends only
        on the network's architecture and the input's shape, not on the values.
        ``None`` gives an empty graph (networkx uses this for ``copy()``).
    INCL : bool, default True
        ``True``: every weight counts even if it is 0, every pooling-window member
        counts, elementwise modules are the identity. ``False``: the nonzero entries of
        each child's Jacobian at the input it received (zero weights drop edges, a
        max-pool keeps its argmax, a ReLU at a negative input keeps none).
    **attr
        Graph attributes, as for ``networkx.DiGraph``.

    Attributes
    ----------
    structure : NetworkStructure
        Layer names, shapes and per-layer relations.
    inv_F : scipy.sparse.csr_matrix
        The seed's zeta matrix (``inv_F[x, y] = 1`` iff ``y ≤ x``), built on first access.
        It is N×N: only for small graphs. The transform never uses it.

    Raises
    ------
    UnsupportedModuleError
        If a child cannot be analysed; the message names the module path and type.
    ValueError
        If ``activations`` was recorded without its dataflow (``Activations(..., like=...)``,
        or read back from a file).

    Examples
    --------
    >>> import torch, nsp
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 1))
    >>> g = nsp.NNGraph(nsp.Activations(net, torch.ones(1, 2)))
    >>> g.number_of_nodes(), g.number_of_edges()
    (3, 2)
    >>> sorted(g.edges())
    [((0, 0), (1, 0)), ((0, 1), (1, 0))]
    """

    _node = _Lazy("_node")
    _adj = _Lazy("_adj")
    _succ = _adj
    _pred = _Lazy("_pred")

    def __init__(self, activations: Activations | None = None, INCL: bool = True, **attr: Any) -> None:
        super().__init__(**attr)
        self.INCL = bool(INCL)
        self.structure: NetworkStructure | None = None
        self._transformers: dict[str, GraphTransform] = {}
        self._bands: LaplacianBands | None = None
        self._inv_F: sp.csr_matrix | None = None
        if activations is None:
            return
        if not isinstance(activations, Activations):
            raise TypeError(
                f"nsp.NNGraph: expected `activations` to be an nsp.Activations, got {type(activations).__name__}"
            )
        self.structure = build_structure(activations, self.INCL)
        self.__dict__["_pending"] = True

    @classmethod
    def from_structure(cls, structure: NetworkStructure) -> "NNGraph":
        """A graph from an existing structure (e.g. one read back by ``OutputLoader``)."""
        graph = cls(INCL=structure.incl)
        graph.structure = structure
        graph.__dict__["_pending"] = True
        return graph

    # -- lazy networkx view ----------------------------------------------------------------
    def _materialize(self) -> None:
        s = self.structure
        edges = s.number_of_edges()
        # networkx holds about 240 bytes per edge (measured, peak) and 300 per node.
        need = 240 * edges + 300 * s.n
        memory.require(
            need, f"the networkx view (nodes, edges) of this {s.n:,}-node, {edges:,}-edge graph",
            "use graph.structure.edge_arrays() or graph.adjacency() (arrays, no Python object per edge) instead",
        )
        if edges > _EDGE_WARNING:
            warnings.warn(
                f"nsp.NNGraph: building the networkx view of {edges:,} edges (about {memory.size(need)} and "
                "minutes: one Python object per edge); graph.structure.edge_arrays() or graph.adjacency() give "
                "the edges as arrays",
                stacklevel=3,
            )
        self.__dict__["_pending"] = False
        nodes = [(layer, *idx) for layer, shape in enumerate(s.shapes) for idx in np.ndindex(*shape)]
        self.add_nodes_from(nodes)
        src, dst = s.edge_arrays()
        self.add_edges_from(zip(map(nodes.__getitem__, src.tolist()), map(nodes.__getitem__, dst.tolist())))

    def number_of_nodes(self) -> int:
        if self.__dict__.get("_pending"):
            return self.structure.n
        return super().number_of_nodes()

    def __len__(self) -> int:
        return self.number_of_nodes()

    def number_of_edges(self, u: Any = None, v: Any = None) -> int:
        if u is None and v is None and self.__dict__.get("_pending"):
            return self.structure.number_of_edges()
        return super().number_of_edges(u, v)

    def _require_structure(self, what: str) -> NetworkStructure:
        if self.structure is None:
            raise ValueError(
                f"nsp.NNGraph.{what}: this graph has no network structure (it was not built from Activations, "
                "e.g. it came from copy() or subgraph())"
            )
        return self.structure

    # -- seed API ---------------------------------------------------------------------
    def node_id(self, node: tuple) -> int:
        """Index of ``node`` in the total (topological) order of all nodes.

        Raises
        ------
        KeyError
            If ``node`` is not a node of the graph.
        """
        s = self._require_structure("node_id")
        try:
            layer, *index = node
            if not 0 <= layer < len(s.shapes) or len(index) != len(s.shapes[layer]):
                raise ValueError
            return int(s.offsets[layer]) + int(np.ravel_multi_index(tuple(index), s.shapes[layer] or (1,)))
        except (TypeError, ValueError) as err:
            raise KeyError(f"nsp.NNGraph.node_id: {node!r} is not a node of this graph") from err

    def adjacency(self) -> sp.csr_matrix:
        """The N×N sparse adjacency matrix, ``A[u, v] = 1`` for an edge u → v (node order)."""
        s = self._require_structure("adjacency")
        src, dst = s.edge_arrays()
        return sp.csr_matrix((np.ones(src.size, dtype=np.float64), (src, dst)), shape=(s.n, s.n))

    def get_transformer(self, type: str = "standard") -> GraphTransform:
        """The transform operator of this graph, built once and cached.

        Parameters
        ----------
        type : str, default 'standard'
            A name in :data:`nsp.transforms.transformer.TRANSFORMS`. ``'standard'``: the
            exact causal (Möbius) transform, :class:`~nsp.transforms.causal.CausalTransform`.
            ``'laplacian'``: the graph-Laplacian transform,
            :class:`~nsp.transforms.laplacian.LaplacianTransform`. Others are added with
            :func:`nsp.transforms.transformer.register_transform`.

        Returns
        -------
        GraphTransform
            An operator with ``forward``/``inverse`` on ``(N,)`` or ``(P, N)`` arrays.

        Raises
        ------
        ValueError
            If no transform is called ``type``.
        TypeError
            If a registered transform does not build a ``GraphTransform``.
        """
        self._require_structure("get_transformer")
        build = transform_builder(type, "nsp.NNGraph")
        if type not in self._transformers:
            transform = build(self)
            if not isinstance(transform, GraphTransform):
                raise TypeError(f"nsp.NNGraph.get_transformer: the transform {type!r} built a "
                                f"{transform.__class__.__name__}, not a GraphTransform")
            self._transformers[type] = transform
        return self._transformers[type]

    def laplacian_bands(self) -> LaplacianBands:
        """Energies per band of Laplacian eigenvalues, for graphs of any size.

        Chebyshev (kernel polynomial) filters applied through a structured Laplacian
        operator: no eigendecomposition, no N×N matrix and, with INCL=True, no edge list.
        Use it where ``get_transformer('laplacian')`` refuses a large graph.

        Returns
        -------
        LaplacianBands
            Built once and cached; see ``LaplacianBands.band_energies``.

        Examples
        --------
        >>> import torch, nsp
        >>> g = nsp.NNGraph(nsp.Activations(torch.nn.Sequential(torch.nn.Linear(2, 1)), torch.ones(1, 2)))
        >>> np.round(g.laplacian_bands().band_energies([1.0, 1.0, 1.0], [0.0, 0.5, 3.0]), 3)
        array([3., 0.])
        """
        s = self._require_structure("laplacian_bands")
        if self._bands is None:
            self._bands = LaplacianBands(LaplacianOperator(s))
        return self._bands

    @property
    def lu_piv(self) -> GraphTransform | None:
        """The Laplacian transformer once built (the seed kept an LU factorisation here)."""
        return self._transformers.get("laplacian")

    @property
    def inv_F(self) -> sp.csr_matrix:
        if self._inv_F is None:
            self._inv_F = _zeta_matrix(self._require_structure("inv_F"))
        return self._inv_F

    def transform(
        self, activations: Activations | Sequence[Activations], type: str = "standard"
    ) -> Activations | list[Activations]:
        """The spectrum of a recorded pattern, as a new ``Activations``.

        Parameters
        ----------
        activations : Activations or sequence of Activations
            A pattern of the same network and input shape as the graph, or several
            (e.g. from ``Activations.from_batch``), transformed together in one
            vectorised pass.
        type : str, default 'standard'
            The transform (see ``get_transformer``). For ``'laplacian'`` the coefficients
            are in ascending-eigenvalue order, cut into the layer shapes only for seed
            compatibility; use ``get_transformer('laplacian').eigenvalues`` with them.

        Returns
        -------
        Activations or list of Activations
            Same names and shapes, float64 spectral coefficients; a list for a list.

        Raises
        ------
        ValueError
            If a pattern's layers do not match the graph, or a value is not finite.
        """
        single = isinstance(activations, Activations)
        patterns = [activations] if single else list(activations)
        if not patterns:
            raise ValueError("nsp.NNGraph.transform: got an empty sequence of patterns")
        signals = np.stack([self._signal(a) for a in patterns])
        spectra = self.get_transformer(type).forward(signals)
        out = [a.to_activations(row) for a, row in zip(patterns, spectra)]
        return out[0] if single else out

    def _signal(self, activations: Activations) -> np.ndarray:
        s = self._require_structure("transform")
        if not isinstance(activations, Activations):
            raise TypeError(f"nsp.NNGraph.transform: expected an nsp.Activations, got {type(activations).__name__}")
        if [tuple(a.shape) for a in activations.layeractivations] != s.shapes:
            raise ValueError(
                "nsp.NNGraph.transform: the pattern's layer shapes "
                f"{[tuple(a.shape) for a in activations.layeractivations]} do not match the graph's {s.shapes}"
            )
        for name, layer in zip(activations.layernames, activations.layeractivations):
            bad = int((~torch.isfinite(layer)).sum())
            if bad:
                raise ValueError(
                    f"nsp.NNGraph.transform: layer '{name}' has {bad} non-finite activation(s) (nan/inf); "
                    "its spectrum is undefined"
                )
        return activations.to_numpy()


def _zeta_matrix(s: NetworkStructure) -> sp.csr_matrix:
    """Reachability (with the diagonal) as a sparse lower-triangular matrix; small graphs only."""
    limit = 20_000
    if s.n > limit:
        raise MemoryError(
            f"nsp.NNGraph.inv_F: the {s.n:,}-node closure would be dense (up to {s.n**2 / 2**30:.1f} G entries); "
            f"it is built only up to {limit:,} nodes. Use graph.get_transformer() instead"
        )
    src, dst = s.edge_arrays()
    adj = sp.csr_matrix((np.ones(src.size, dtype=np.int8), (dst, src)), shape=(s.n, s.n))
    closure = sp.identity(s.n, dtype=np.int8, format="csr")
    for layer in range(1, len(s.shapes)):
        closure = (closure + adj @ closure).astype(bool).astype(np.int8)
    return sp.tril(closure, format="csr").astype(np.float64)
