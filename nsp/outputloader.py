"""Saving and loading ``Activations`` and ``NNGraph`` objects in safe formats.

The seed pickled objects; a pickle from someone else can run arbitrary code. Here an
object is one ``.npz`` file (arrays, read with ``allow_pickle=False``) with JSON metadata,
written atomically. Files written by the original package are not read.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from nsp.capture import Activations
from nsp.graph import NNGraph
from nsp.relations import Relation, Term
from nsp.storage import load_npz, save_npz
from nsp.structure import NetworkStructure

__all__ = ["OutputLoader"]

_KIND = "nsp-object"


class OutputLoader:
    """Store and load ``Activations`` and ``NNGraph`` objects (seed API, safe format)."""

    @staticmethod
    def save(obj: Activations | NNGraph, path: str | os.PathLike) -> None:
        """Write ``obj`` to ``path`` (a ``.npz`` file; parent folders are created).

        An ``NNGraph`` keeps its structure, so transforms work after loading; a loaded
        ``Activations`` has its module descriptions as strings.

        Raises
        ------
        TypeError
            If ``obj`` is neither an ``Activations`` nor an ``NNGraph`` built from one.
        """
        if isinstance(obj, Activations):
            arrays = {f"layer{i}": _numpy(a) for i, a in enumerate(obj.layeractivations)}
            meta = {
                "kind": _KIND,
                "type": "Activations",
                "layernames": list(obj.layernames),
                "layerdescriptions": [d if isinstance(d, str) else repr(d) for d in obj.layerdescriptions],
            }
        elif isinstance(obj, NNGraph) and obj.structure is not None:
            arrays, meta = _graph_arrays(obj)
        else:
            raise TypeError(
                f"nsp.OutputLoader.save: expected Activations or an NNGraph built from Activations, "
                f"got {type(obj).__name__}"
            )
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_npz(path, arrays, meta)

    @staticmethod
    def load(path: str | os.PathLike) -> Activations | NNGraph:
        """Read an object written by ``save``.

        Raises
        ------
        ValueError
            If the file is not an nsp object file.
        """
        arrays, meta = load_npz(path)
        if meta.get("kind") != _KIND:
            raise ValueError(f"nsp.OutputLoader.load: {os.fspath(path)!r} is not an nsp object file")
        if meta["type"] == "Activations":
            acts = Activations.__new__(Activations)
            acts.layernames = list(meta["layernames"])
            acts.layerdescriptions = list(meta["layerdescriptions"])
            acts.layeractivations = [torch.from_numpy(arrays[f"layer{i}"]) for i in range(len(acts.layernames))]
            acts._layerinputs = [None] * len(acts.layernames)
            acts._programs = [None] * len(acts.layernames)
            acts._dataflow = None
            return acts
        return _graph_from_arrays(arrays, meta)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return (t.float() if t.dtype == torch.bfloat16 else t).detach().cpu().numpy()


def _graph_arrays(graph: NNGraph) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    s = graph.structure
    arrays: dict[str, np.ndarray] = {}
    layout = []
    for b, (layer, k, rel) in enumerate(s.blocks()):
        if s.incl:
            terms = []
            for t, term in enumerate(rel.terms):
                for f, factor in enumerate(term.factors):
                    arrays[f"b{b}.t{t}.f{f}"] = factor
                terms.append(len(term.factors))
            layout.append([layer, k, terms])
        else:
            csr = rel.tocsr()
            arrays[f"b{b}.indptr"], arrays[f"b{b}.indices"] = csr.indptr, csr.indices
            layout.append([layer, k, list(csr.shape)])
    meta = {"kind": _KIND, "type": "NNGraph", "incl": s.incl, "names": s.names,
            "shapes": [list(x) for x in s.shapes], "layout": layout}
    return arrays, meta


def _graph_from_arrays(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> NNGraph:
    shapes = [tuple(x) for x in meta["shapes"]]
    parents: list[dict[int, Any]] = [{} for _ in shapes]
    for b, (layer, k, layout) in enumerate(meta["layout"]):
        if meta["incl"]:
            terms = tuple(
                Term(tuple(arrays[f"b{b}.t{t}.f{f}"].astype(bool) for f in range(count)))
                for t, count in enumerate(layout)
            )
            rel = Relation(terms, math.prod(shapes[layer]), math.prod(shapes[k]))
        else:
            indptr, indices = arrays[f"b{b}.indptr"], arrays[f"b{b}.indices"]
            rel = sp.csr_matrix((np.ones(indices.size, bool), indices, indptr), shape=tuple(layout))
        parents[layer][k] = rel
    return NNGraph.from_structure(NetworkStructure(list(meta["names"]), shapes, bool(meta["incl"]), parents))
