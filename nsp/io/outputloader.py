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

from nsp.graph.capture import Activations
from nsp.graph.nngraph import NNGraph
from nsp.graph.relations import Relation, Term
from nsp.io.storage import load_npz, save_npz
from nsp.graph.structure import NetworkStructure

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

        Every array and metadata field is checked before use (dtypes, shapes, index
        ranges, monotone CSR row pointers, sizes against the header), so a corrupt or
        crafted file is refused with a message naming it, never passed on to numpy or
        SciPy internals; the decompressed size is limited (:func:`nsp.io.storage.load_npz`).

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If the file is not a valid nsp object file; the message names the file and
            what is wrong.
        """
        arrays, meta = load_npz(path)
        where = f"nsp.OutputLoader.load: {os.fspath(path)!r}"
        if meta.get("kind") != _KIND:
            raise ValueError(f"{where} is not an nsp object file")
        try:
            if meta.get("type") == "Activations":
                return _activations_from_arrays(arrays, meta)
            if meta.get("type") == "NNGraph":
                return _graph_from_arrays(arrays, meta)
            raise _Invalid(f"has type {meta.get('type')!r}; expected 'Activations' or 'NNGraph'")
        except _Invalid as err:
            raise ValueError(f"{where} is not a valid nsp object file: it {err}") from None


class _Invalid(Exception):
    """What is wrong with an object file's contents."""


def _field(meta: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = meta.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _Invalid(f"has {key!r} = {_short(value)}, expected a {getattr(kind, '__name__', kind)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _strings(meta: dict[str, Any], key: str) -> list[str]:
    values = _field(meta, key, list)
    if not all(isinstance(v, str) for v in values):
        raise _Invalid(f"has {key!r} with a non-string entry")
    return values


def _count(value: Any, what: str, low: int = 0, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value >= high):
        bounds = f"[{low}, {high})" if high is not None else f">= {low}"
        raise _Invalid(f"has {what} = {_short(value)}, expected an integer {bounds}")
    return value


def _array(arrays: dict[str, np.ndarray], key: str, kinds: str, ndim: int | None = None) -> np.ndarray:
    if key not in arrays:
        raise _Invalid(f"lacks the array {key!r}")
    a = arrays[key]
    if a.dtype.kind not in kinds or a.dtype.fields is not None:
        raise _Invalid(f"has array {key!r} of dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise _Invalid(f"has array {key!r} of shape {a.shape}, expected {ndim} dimension(s)")
    # torch refuses non-native byte orders; the values are the same.
    return a.astype(a.dtype.newbyteorder("="), copy=False)


# The dtypes torch.from_numpy accepts for activations.
_TORCH_DTYPES = {np.dtype(t) for t in ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64")}


def _activations_from_arrays(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Activations:
    names = _strings(meta, "layernames")
    descriptions = _strings(meta, "layerdescriptions")
    if len(descriptions) != len(names) or not names:
        raise _Invalid(f"has {len(names)} layer names and {len(descriptions)} descriptions")
    layers = []
    for i in range(len(names)):
        a = _array(arrays, f"layer{i}", "biuf")
        if a.dtype not in _TORCH_DTYPES:
            raise _Invalid(f"has array 'layer{i}' of dtype {a.dtype}, which torch does not read")
        layers.append(torch.from_numpy(np.ascontiguousarray(a)))
    if len(arrays) != len(names):
        raise _Invalid(f"has {len(arrays)} arrays for {len(names)} layers")
    acts = Activations.__new__(Activations)
    acts.layernames, acts.layerdescriptions, acts.layeractivations = names, descriptions, layers
    acts._layerinputs = [None] * len(names)
    acts._programs = [None] * len(names)
    acts._dataflow = None
    return acts


def _graph_from_arrays(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> NNGraph:
    names = _strings(meta, "names")
    raw_shapes = _field(meta, "shapes", list)
    incl = _field(meta, "incl", bool)
    layout = _field(meta, "layout", list)
    if len(raw_shapes) != len(names) or not names:
        raise _Invalid(f"has {len(names)} layer names and {len(raw_shapes)} shapes")
    shapes = []
    for i, shape in enumerate(raw_shapes):
        if not isinstance(shape, list):
            raise _Invalid(f"has shapes[{i}] = {_short(shape)}, expected a list of sizes")
        shapes.append(tuple(_count(d, f"shapes[{i}]", 1) for d in shape))
    sizes = [math.prod(s) for s in shapes]
    parents: list[dict[int, Any]] = [{} for _ in shapes]
    used = set()
    for b, entry in enumerate(layout):
        if not isinstance(entry, list) or len(entry) != 3:
            raise _Invalid(f"has layout[{b}] = {_short(entry)}, expected [layer, parent, block]")
        layer = _count(entry[0], f"layout[{b}][0] (layer)", 1, len(shapes))
        k = _count(entry[1], f"layout[{b}][1] (parent layer)", 0, layer)
        if k in parents[layer]:
            raise _Invalid(f"lists the block ({layer}, {k}) twice")
        prefix = f"b{b}."
        if incl:
            parents[layer][k] = _relation(arrays, prefix, entry[2], sizes[layer], sizes[k], used)
        else:
            parents[layer][k] = _csr(arrays, prefix, entry[2], sizes[layer], sizes[k], used)
    extra = sorted(set(arrays) - used)
    if extra:
        raise _Invalid(f"has arrays that no block uses: {_short(extra)}")
    return NNGraph.from_structure(NetworkStructure(names, shapes, incl, parents))


# A relation's inclusion-exclusion visits every subset of its terms.
_MAX_TERMS = 16


def _relation(arrays: dict[str, np.ndarray], prefix: str, counts: Any, n_out: int, n_in: int, used: set) -> Relation:
    if not isinstance(counts, list) or not 1 <= len(counts) <= _MAX_TERMS:
        raise _Invalid(f"has a block {prefix[:-1]} with {_short(counts)} as term layout, expected 1 to {_MAX_TERMS} factor counts")
    terms = []
    for t, count in enumerate(counts):
        count = _count(count, f"{prefix}t{t} factor count", 1, 64)
        factors = []
        for f in range(count):
            key = f"{prefix}t{t}.f{f}"
            factor = _array(arrays, key, "biu", ndim=2)
            if factor.size and factor.max(initial=0) > 1:
                raise _Invalid(f"has factor {key!r} with entries other than 0 and 1")
            factors.append(factor.astype(bool))
            used.add(key)
        order = None
        if f"{prefix}t{t}.order" in arrays:
            key = f"{prefix}t{t}.order"
            order = tuple(int(i) for i in _array(arrays, key, "iu", ndim=1))
            if sorted(order) != list(range(count)):
                raise _Invalid(f"has {key!r} = {_short(list(order))}, expected a permutation of range({count})")
            used.add(key)
        term = Term(tuple(factors), order)
        if term.n_out != n_out or term.n_in != n_in:
            raise _Invalid(
                f"has term {prefix}t{t} relating {term.n_out} to {term.n_in} nodes, but its layers have {n_out} and {n_in}"
            )
        terms.append(term)
    return Relation(tuple(terms), n_out, n_in)


def _csr(arrays: dict[str, np.ndarray], prefix: str, shape: Any, n_out: int, n_in: int, used: set) -> sp.csr_matrix:
    if shape != [n_out, n_in]:
        raise _Invalid(f"has block {prefix[:-1]} of shape {_short(shape)}, but its layers have {n_out} and {n_in} nodes")
    indptr = _array(arrays, prefix + "indptr", "iu", ndim=1).astype(np.int64)
    indices = _array(arrays, prefix + "indices", "iu", ndim=1).astype(np.int64)
    used.update((prefix + "indptr", prefix + "indices"))
    if indptr.size != n_out + 1 or indptr[0] != 0 or indptr[-1] != indices.size or np.any(np.diff(indptr) < 0):
        raise _Invalid(
            f"has block {prefix[:-1]} whose row pointers are not {n_out + 1} non-decreasing offsets from 0 to "
            f"{indices.size}"
        )
    if indices.size and (indices.min() < 0 or indices.max() >= n_in):
        raise _Invalid(f"has block {prefix[:-1]} with column indices outside [0, {n_in})")
    index_dtype = np.int32 if max(n_out, n_in, indices.size) < 2**31 else np.int64
    csr = sp.csr_matrix(
        (np.ones(indices.size, bool), indices.astype(index_dtype), indptr.astype(index_dtype)), shape=(n_out, n_in)
    )
    # Checked above, so SciPy's compiled code sees valid indices; duplicates merge, rows sort.
    csr.sum_duplicates()
    return csr
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
                if term.in_order is not None:
                    # The order of the in axes (a permutation of axes): see Term.in_order.
                    arrays[f"b{b}.t{t}.order"] = np.array(term.in_order, dtype=np.int64)
                terms.append(len(term.factors))
            layout.append([layer, k, terms])
        else:
            csr = rel.tocsr()
            arrays[f"b{b}.indptr"], arrays[f"b{b}.indices"] = csr.indptr, csr.indices
            layout.append([layer, k, list(csr.shape)])
    meta = {"kind": _KIND, "type": "NNGraph", "incl": s.incl, "names": s.names,
            "shapes": [list(x) for x in s.shapes], "layout": layout}
    return arrays, meta
