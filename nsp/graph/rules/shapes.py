"""Rules of ops that move values without computing: reshapes, slicing and indexing, concatenation, stacking.

Each output copies at most one input position (a concatenated tensor read twice copies
to both slices), so the Jacobian pattern is the structure whatever the values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from nsp.common.tracer import map_leaves
from nsp.graph.relations import Term
from nsp.graph.rules.call import Call
from nsp.graph.rules.factors import eye, union_of_terms
from nsp.graph.rules.registry import StructuralRule, register_rule

__all__ = ["ReshapeRule", "ConcatRule", "StackRule", "IndexRule"]


class ReshapeRule(StructuralRule):
    """``view``, ``reshape``, ``flatten``, ``squeeze``...: row-major order is kept, so the relation is the identity."""

    def relations(self, call):
        (x,) = call.inputs
        if x.numel() != call.output.numel() or call.output.shape[:1] != x.shape[:1]:
            raise call.unsupported(f"reshaping {tuple(x.shape)} to {tuple(call.output.shape)} moves the batch dimension")
        # The input's own axes factorise the flat index of the output too: a flatten
        # before a classifier stays (512)(7)(7), not one 25,088² factor.
        return [Term.identity(call.in_shape() or (1,))]


def _parts_and_axis(call, what: str) -> tuple[Any, int]:
    """``torch.cat``/``torch.stack``'s tensors and their non-negative output axis, refusing the batch axis."""
    parts = call.arg(0, "tensors")
    dim = call.arg(1, "dim", 0)
    dim = dim + call.output.dim() if dim < 0 else dim
    if dim == 0:
        raise call.unsupported(f"{what} along the batch dimension")
    return parts, dim


class ConcatRule(StructuralRule):
    """``torch.cat`` along a non-batch axis: each part goes to its slice."""

    aligned = True

    def relations(self, call):
        parts, dim = _parts_and_axis(call, "concatenation")
        out_shape = call.out_shape
        placed: dict[int, list[Term]] = {}
        offset = 0
        for part in parts:
            width = part.shape[dim]
            if any(part is x for x in call.inputs):
                factors = [eye(d) for d in out_shape]
                factors[dim - 1] = np.eye(out_shape[dim - 1], width, -offset, dtype=bool)
                # A tensor concatenated more than once (cat([x, x])) goes to each of its slices.
                placed.setdefault(id(part), []).append(Term(tuple(factors)))
            offset += width
        return [union_of_terms(placed[id(x)]) for x in call.inputs]


class StackRule(StructuralRule):
    """``torch.stack`` along a non-batch axis: part ``j`` goes to index ``j`` of the new axis."""

    def relations(self, call):
        parts, dim = _parts_and_axis(call, "stacking")
        shape = call.out_shape
        placed: dict[int, list[Term]] = {}
        for j, part in enumerate(parts):
            if any(part is x for x in call.inputs):
                new = np.zeros((len(parts), 1), dtype=bool)
                new[j] = True
                factors = [eye(d) for d in shape[:dim - 1]] + [new] + [eye(d) for d in shape[dim:]]
                placed.setdefault(id(part), []).append(Term(tuple(factors)))
        return [union_of_terms(placed[id(x)]) for x in call.inputs]


class IndexRule(StructuralRule):
    """Ops where each output copies at most one input: slicing, ``narrow``, ``select``, ``chunk``, ``split``,
    ``unbind``, ``roll``, ``pad``, ``flip``, ``expand``, ``repeat``, ``permute``...

    The op is run on the positions themselves (twice, with two offsets, so a padding
    value is never taken for a position); the resulting map is written as one factor
    per pair of matching axes, or refused where it is not such a product.
    """

    # The last call's runs, every output's: a chunk's outputs are asked for one at a time.
    _last: tuple[Any, list[list[np.ndarray]]] | None = None

    def _sources(self, call) -> tuple[np.ndarray, tuple[int, ...]]:
        if len(call.inputs) != 1:
            raise call.unsupported("an index computed from the input")
        (x,) = call.inputs
        n = x.numel()
        key = _reuse_key(call)
        last = self._last
        if key is None or last is None or last[0] != key:
            outs = []
            for offset in (1, n + 1):
                idx = torch.arange(offset, offset + n, dtype=torch.float64).reshape(x.shape)
                with torch.no_grad():
                    outs.append([t.reshape(-1).numpy() for t in call.run_all(idx)])
            last = self._last = (key, outs) if key is not None else None
        else:
            outs = last[1]
        runs = [out[call.item] for out in outs]
        src = runs[0] - 1
        ok = (runs[1] - runs[0] == n) & (src >= 0) & (src < n) & (src == np.round(src))
        return np.where(ok, src, -1).astype(np.int64), tuple(x.shape[1:])

    def patterns(self, call):
        src, in_shape = self._sources(call)
        rows = np.flatnonzero(src >= 0)
        return [sp.csr_matrix((np.ones(rows.size, dtype=bool), (rows, src[rows])),
                              shape=(src.size, math.prod(in_shape)))]

    def relations(self, call):
        block = _slice_term(call)
        if block is not None:
            return [block]
        src, in_shape = self._sources(call)
        out_shape = call.out_shape
        return [_gather_term(src, in_shape, out_shape, call)]


# torch's own chunk, split and narrow, whose slices are known from their arguments. A
# function of another module registered under one of these names takes the general path.
_CHUNKS = (torch.chunk, torch.Tensor.chunk)
_SPLITS = (torch.split, torch.Tensor.split)
_NARROWS = (torch.narrow, torch.Tensor.narrow)


def _slice_term(call) -> Term | None:
    """The term of torch's ``chunk``, ``split`` or ``narrow`` along a non-batch axis, from the
    arguments alone: the shifted identity ``eye(width, n, -start)`` on that axis, the identity
    on the others. None for any other call, which the rule runs on the positions instead
    (ShuffleNet's every block chunks its channels: the runs cost 90 µs an output)."""
    target = call.target
    if target not in _CHUNKS + _SPLITS + _NARROWS or len(call.inputs) != 1 or not call.args \
            or call.args[0] is not call.inputs[0]:
        return None
    x = call.inputs[0]
    ndim = x.dim()
    if target in _NARROWS:
        dim, start = call.arg(1, "dim"), call.arg(2, "start")
    else:
        dim = call.arg(2, "dim", 0)
    if type(dim) is not int or not -ndim <= dim < ndim:
        return None
    dim = dim + ndim if dim < 0 else dim
    n = x.shape[dim]
    if target in _CHUNKS:
        chunks = call.arg(1, "chunks")
        if type(chunks) is not int or chunks < 1:
            return None
        # torch.chunk is split into pieces of ceil(n / chunks).
        start = call.item * -(-n // chunks)
    elif target in _SPLITS:
        size = call.arg(1, "split_size", call.kwargs.get("split_size_or_sections"))
        if type(size) is int and size > 0:
            start = call.item * size
        elif isinstance(size, (list, tuple)) and all(type(s) is int for s in size):
            start = sum(size[:call.item])
        else:
            return None
    elif type(start) is not int:
        return None
    else:
        start = start + n if start < 0 else start
    width = call.output.shape[dim]
    if dim == 0 or not 0 <= start <= start + width <= n \
            or call.output.shape[:dim] + call.output.shape[dim + 1:] != x.shape[:dim] + x.shape[dim + 1:]:
        return None
    factors = [eye(d) for d in call.out_shape]
    if width != n:
        factors[dim - 1] = np.eye(width, n, start, dtype=bool)
    return Term(tuple(factors))


def _reuse_key(call) -> tuple | None:
    """Everything a call's positions' map depends on (its function, its input's shape, its other
    arguments), or None where an argument is another tensor (an index) and the map is not reused."""
    (x,) = call.inputs
    others = []
    described = repr(map_leaves(lambda v: others.append(v) if isinstance(v, torch.Tensor) and v is not x
                                else "<input>" if v is x else v, (call.args, call.kwargs)))
    return None if others else (call.target, tuple(x.shape), described)


def _gather_term(src: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...], call: Call) -> Term:
    """The Kronecker form of "output o copies input src[o]" (-1: nothing), axis by axis.

    Each input axis must follow at most one output axis, in the same order (slices,
    selections, rolls, pads, flips, broadcasts); otherwise (a transpose) the map is one
    factor, refused above 2^24 entries.
    """
    o_dims = [d for d in out_shape if d != 1] or [1]
    i_dims = [d for d in in_shape if d != 1] or [1]
    valid = (src >= 0).reshape(o_dims)
    if not valid.any():
        return Term((np.zeros((src.size, math.prod(in_shape)), dtype=bool),)) if src.size * math.prod(in_shape) <= 1 << 24 \
            else _dense_gather(src, in_shape, out_shape, call)
    block = _leading_block(src, i_dims, o_dims)
    if block is not None:
        return block
    coords = np.stack(np.unravel_index(np.where(src >= 0, src, 0), i_dims), axis=-1).reshape(tuple(o_dims) + (len(i_dims),))
    star = tuple(int(i) for i in np.argwhere(valid)[0])
    drivers: list[int | None] = []
    for k in range(len(i_dims)):
        moving = [a for a in range(len(o_dims)) if not _constant_along(coords[..., k], valid, a)]
        if len(moving) > 1:
            return _dense_gather(src, in_shape, out_shape, call)
        drivers.append(moving[0] if moving else None)
    driven = [d for d in drivers if d is not None]
    if driven != sorted(set(driven)):
        return _dense_gather(src, in_shape, out_shape, call)

    def line(a: int) -> tuple[np.ndarray, np.ndarray]:
        index = [slice(None) if b == a else star[b] for b in range(len(o_dims))]
        return valid[tuple(index)], coords[tuple(index)]

    factors: list[np.ndarray] = []
    a = 0

    def free_axes(until: int) -> None:
        nonlocal a
        while a < until:
            ok, _ = line(a)
            factors.append(ok[:, None].copy())
            a += 1

    for k, d in enumerate(drivers):
        if d is None:
            f = np.zeros((1, i_dims[k]), dtype=bool)
            f[0, coords[star + (k,)]] = True
            factors.append(f)
            continue
        free_axes(d)
        ok, c = line(d)
        f = np.zeros((o_dims[d], i_dims[k]), dtype=bool)
        f[np.flatnonzero(ok), c[ok, k]] = True
        factors.append(f)
        a = d + 1
    free_axes(len(o_dims))
    term = Term(tuple(factors))
    rows = np.flatnonzero(src >= 0)
    # Term.edges lists the pairs sorted by output, then input: equal to the map's pairs iff exact.
    out_idx, in_idx = term.edges()
    if not (np.array_equal(out_idx, rows) and np.array_equal(in_idx, src[rows])):
        return _dense_gather(src, in_shape, out_shape, call)
    return term


def _leading_block(src: np.ndarray, i_dims: list[int], o_dims: list[int]) -> Term | None:
    """The term of a run of whole slices along the first axis (``chunk``, ``split`` or ``narrow`` of the
    channels: ShuffleNet's every block), known from the run's start; None for any other map."""
    if len(o_dims) != len(i_dims) or o_dims[1:] != i_dims[1:]:
        return None
    stride = math.prod(i_dims[1:])
    start = int(src[0])
    if start % stride or not np.array_equal(src, np.arange(start, start + src.size)):
        return None
    first = np.eye(o_dims[0], i_dims[0], start // stride, dtype=bool)
    return Term((first, *(eye(d) for d in o_dims[1:])))


def _constant_along(c: np.ndarray, valid: np.ndarray, axis: int) -> bool:
    """Whether ``c`` is constant along ``axis`` over the valid positions."""
    if c.shape[axis] == 1:
        return True
    big = np.where(valid, c, np.iinfo(np.int64).min)
    small = np.where(valid, c, np.iinfo(np.int64).max)
    hi, lo = big.max(axis=axis), small.min(axis=axis)
    some = valid.any(axis=axis)
    return bool(((hi == lo) | ~some).all())


def _dense_gather(src: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...], call: Call) -> Term:
    n_out, n_in = src.size, math.prod(in_shape)
    if n_out * n_in > (1 << 24):
        raise call.unsupported(
            f"its index map is not a product of per-axis maps, and as one matrix it needs {n_out * n_in:,} entries"
        )
    f = np.zeros((n_out, n_in), dtype=bool)
    rows = np.flatnonzero(src >= 0)
    f[rows, src[rows]] = True
    return Term((f,))


register_rule(["view", "reshape", "flatten", "view_as", "reshape_as", "squeeze", "unsqueeze", "unflatten"],
              ReshapeRule())
register_rule(["cat", "concat", "concatenate"], ConcatRule())
register_rule(["stack"], StackRule())
register_rule(["__getitem__", "narrow", "select", "chunk", "split", "unbind", "tensor_split", "roll", "pad", "flip",
               "expand", "expand_as", "repeat", "permute", "transpose", "swapaxes", "swapdims", "movedim",
               "moveaxis", "index_select"], IndexRule())
