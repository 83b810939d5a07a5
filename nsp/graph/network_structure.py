"""The layers of a recorded pattern and the edges into each layer, as :func:`nsp.graph.structure.build_structure`
derives them and the transforms read them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["NetworkStructure"]


@dataclass
class NetworkStructure:
    """The layers of a recorded pattern and the edges into each layer.

    Attributes
    ----------
    names, shapes : list
        Layer names and shapes (without batch dimension), in a topological order.
    incl : bool
        ``True`` for structural edges (product relations), ``False`` for Jacobian nonzeros.
    parents : list of dict
        ``parents[L][K]`` relates layer ``L`` (rows) to an earlier layer ``K`` (columns)
        that feeds it directly: a :class:`~nsp.graph.relations.Relation` if ``incl``, else a
        scipy CSR boolean matrix. With top-level children, ``K = L - 1`` only.
    row_classes : list of dict or None
        ``INCL=False`` only: ``row_classes[L][K][x]`` is a class of row x of
        ``parents[L][K]`` such that rows of one class are equal (the composition knows them;
        finding them again costs a pass over every entry). Where missing, unknown.
    """

    names: list[str]
    shapes: list[tuple[int, ...]]
    incl: bool
    parents: list[dict[int, Any]]
    row_classes: list[dict[int, np.ndarray]] | None = None
    sizes: np.ndarray = field(init=False)
    offsets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.sizes = np.array([math.prod(s) for s in self.shapes], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        if len(self.parents) != len(self.shapes) or any(k >= l for l, p in enumerate(self.parents) for k in p):
            raise ValueError("nsp.NetworkStructure: every layer needs a parent map over earlier layers only")

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    def blocks(self) -> list[tuple[int, int, Any]]:
        """Every ``(L, K, relation)``, layer by layer."""
        return [(layer, k, rel) for layer, parents in enumerate(self.parents) for k, rel in sorted(parents.items())]

    def number_of_edges(self) -> int:
        return int(sum(rel.nnz() if self.incl else rel.nnz for _, _, rel in self.blocks()))

    def edge_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Global (source, target) node indices of every edge, layer by layer."""
        src, dst = [], []
        for layer, k, rel in self.blocks():
            if self.incl:
                out_idx, in_idx = rel.edges()
            else:
                coo = rel.tocoo()
                out_idx, in_idx = coo.row.astype(np.int64), coo.col.astype(np.int64)
            src.append(in_idx + self.offsets[k])
            dst.append(out_idx + self.offsets[layer])
        if not src:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(src), np.concatenate(dst)
