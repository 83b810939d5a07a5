"""How each module maps input positions to output positions, composed along the network.

For every top-level child this module derives the relation "output x depends on input
y" (GUIDE §2):

- ``INCL=True`` gives the structural pattern as a product :class:`~nsp.relations.Relation`
  (per-axis 0/1 factors), independent of weights and data;
- ``INCL=False`` gives the nonzero pattern of the child's Jacobian at the input it actually
  received, as a scipy CSR boolean matrix.

Composite children (``nn.Sequential``, residual blocks, any module built from supported
parts) are composed along the dataflow recorded during the probe's forward pass
(:class:`nsp.capture.Program`). Anything else raises :class:`UnsupportedModuleError`
naming the module, its path and what is supported; a wrong graph is never produced.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from nsp.capture import Op, Program, Ref
from nsp.progress import Progress
from nsp.relations import Relation, StructureError, Term, ones_factor

__all__ = [
    "UnsupportedModuleError", "NetworkStructure", "build_structure", "fingerprint", "is_leaf_module", "ELEMENTWISE_MODULES",
]

ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.SiLU, nn.Mish,
    nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.Threshold,
    nn.LogSigmoid,
)
_PASSTHROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
_CONV = (nn.Conv1d, nn.Conv2d)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)

SUPPORTED = (
    "Conv1d/Conv2d, MaxPool1d/2d, AvgPool1d/2d, AdaptiveAvgPool1d/2d, AdaptiveMaxPool1d/2d, Upsample (nearest), "
    "BatchNorm1d/2d (eval mode), Linear, Flatten, Identity, Dropout (eval mode), elementwise "
    "activation modules, and nn.Sequential or custom blocks composed of these with "
    "elementwise functions, view/reshape/flatten, concatenation and residual additions"
)

class UnsupportedModuleError(StructureError):
    """A module or operation whose input-to-output dependence nsp cannot derive."""


def _unsupported(path: str, what: str, why: str = "") -> UnsupportedModuleError:
    reason = f": {why}" if why else ""
    return UnsupportedModuleError(f"nsp.NNGraph: cannot analyse '{path}' ({what}){reason}. Supported: {SUPPORTED}.")


# Structural pairs generated at a time when a leaf's Jacobian pattern is built.
_EDGE_CHUNK = 1 << 22


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


# -- per-axis factors ------------------------------------------------------------------
def _window_factor(n_out: int, n_in: int, kernel: int, stride: int, pad: int, dil: int) -> np.ndarray:
    starts = np.arange(n_out) * stride - pad
    taps = starts[:, None] + np.arange(kernel)[None, :] * dil
    f = np.zeros((n_out, n_in), dtype=bool)
    rows = np.broadcast_to(np.arange(n_out)[:, None], taps.shape)
    ok = (taps >= 0) & (taps < n_in)
    f[rows[ok], taps[ok]] = True
    return f


def _adaptive_factor(n_out: int, n_in: int) -> np.ndarray:
    o = np.arange(n_out)
    start = (o * n_in) // n_out
    end = -((-(o + 1) * n_in) // n_out)
    i = np.arange(n_in)
    return (i[None, :] >= start[:, None]) & (i[None, :] < end[:, None])


def _conv_padding(m: nn.Module, in_sizes: tuple[int, ...]) -> tuple[int, ...]:
    k, d = m.kernel_size, m.dilation
    if m.padding == "valid":
        return (0,) * len(k)
    if m.padding == "same":
        return tuple(dd * (kk - 1) // 2 for kk, dd in zip(k, d))
    return tuple(m.padding)


def _channel_groups(c_out: int, c_in: int, groups: int) -> np.ndarray:
    if groups == 1:
        return ones_factor(c_out, c_in)
    return (np.arange(c_out)[:, None] // (c_out // groups)) == (np.arange(c_in)[None, :] // (c_in // groups))


def _leaf_term(m: nn.Module, path: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Term:
    """The structural (INCL=True) relation of a leaf module, over (channel, *spatial) axes."""
    if isinstance(m, ELEMENTWISE_MODULES + _PASSTHROUGH + _BATCHNORM):
        if in_shape != out_shape:
            raise _unsupported(path, type(m).__name__, f"input {in_shape} and output {out_shape} differ")
        return Term.identity(in_shape or (1,))
    if isinstance(m, nn.Flatten) or isinstance(m, nn.Unflatten):
        return Term.identity(in_shape or (1,))
    if isinstance(m, nn.Linear):
        lead = in_shape[:-1]
        return Term(tuple(np.eye(d, dtype=bool) for d in lead) + (ones_factor(out_shape[-1], in_shape[-1]),))
    if isinstance(m, _CONV):
        if m.padding_mode != "zeros":
            raise _unsupported(path, type(m).__name__, f"padding_mode='{m.padding_mode}' (only 'zeros')")
        pads = _conv_padding(m, in_shape[1:])
        factors = [_channel_groups(out_shape[0], in_shape[0], m.groups)]
        for n_o, n_i, k, s, p, d in zip(out_shape[1:], in_shape[1:], m.kernel_size, m.stride, pads, m.dilation):
            factors.append(_window_factor(n_o, n_i, k, s, p, d))
        return Term(tuple(factors))
    if isinstance(m, _POOL):
        nd = len(in_shape) - 1
        k = _tuple(m.kernel_size, nd)
        s = _tuple(m.stride if m.stride is not None else m.kernel_size, nd)
        p = _tuple(m.padding, nd)
        d = _tuple(getattr(m, "dilation", 1), nd)
        factors = [np.eye(in_shape[0], dtype=bool)]
        for n_o, n_i, kk, ss, pp, dd in zip(out_shape[1:], in_shape[1:], k, s, p, d):
            factors.append(_window_factor(n_o, n_i, kk, ss, pp, dd))
        return Term(tuple(factors))
    if isinstance(m, nn.Upsample):
        if m.mode != "nearest":
            raise _unsupported(path, type(m).__name__, f"mode='{m.mode}' (only 'nearest')")
        factors = [np.eye(in_shape[0], dtype=bool)]
        scales = _tuple(m.scale_factor, len(in_shape) - 1) if m.scale_factor is not None else None
        for axis, (n_o, n_i) in enumerate(zip(out_shape[1:], in_shape[1:])):
            # torch's 'nearest' reads floor(o / scale), or floor(o * n_in / n_out) for a size.
            o = np.arange(n_o)
            source = np.floor(o / float(scales[axis])).astype(np.int64) if scales else (o * n_i) // n_o
            factors.append(np.minimum(source, n_i - 1)[:, None] == np.arange(n_i)[None, :])
        return Term(tuple(factors))
    if isinstance(m, _ADAPTIVE):
        factors = [np.eye(in_shape[0], dtype=bool)]
        factors += [_adaptive_factor(n_o, n_i) for n_o, n_i in zip(out_shape[1:], in_shape[1:])]
        return Term(tuple(factors))
    raise _unsupported(path, type(m).__name__)


def _check_mode(m: nn.Module, path: str, incl: bool) -> None:
    if isinstance(m, _BATCHNORM) and (m.training or m.running_mean is None):
        raise _unsupported(
            path, type(m).__name__,
            "it normalises with batch statistics (training mode or no running stats), so its output depends on "
            "the whole batch; call network.eval() first",
        )
    if not incl and isinstance(m, _PASSTHROUGH[1:] + (nn.RReLU,)) and m.training:
        raise _unsupported(
            path, type(m).__name__,
            "it is random in training mode, so its Jacobian is not that of the recorded pass; call network.eval() first",
        )


# -- data-dependent (INCL=False) masks on top of the structural edges -------------------
def _elementwise_mask(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> np.ndarray:
    """Nonzero diagonal of the Jacobian of an elementwise function at ``x``."""
    with torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        y = fn(leaf.clone())
        (grad,) = torch.autograd.grad(y.sum(), leaf, allow_unused=True)
    if grad is None:
        return np.zeros(x.numel(), dtype=bool)
    return (grad != 0).reshape(-1).cpu().numpy()


def _leaf_evidence(m: nn.Module, x: torch.Tensor) -> np.ndarray | None:
    """What a leaf's Jacobian nonzeros depend on at input ``x``, beyond its structure.

    Elementwise modules: where the derivative is nonzero; BatchNorm, Linear and
    convolutions: where the weight is nonzero; max-pools: the argmax of each window.
    None for modules whose Jacobian pattern is their structure (average pools, reshapes).
    """
    if isinstance(m, ELEMENTWISE_MODULES):
        return _elementwise_mask(m, x)
    if isinstance(m, _BATCHNORM):
        return (m.weight.detach().cpu().numpy() != 0) if m.affine else None
    if isinstance(m, (nn.Linear,) + _CONV):
        return m.weight.detach().cpu().numpy() != 0
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        fn = F.max_pool1d_with_indices if isinstance(m, nn.MaxPool1d) else F.max_pool2d_with_indices
        return fn(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)[1].reshape(-1).cpu().numpy()
    if isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
        fn = F.adaptive_max_pool1d_with_indices if isinstance(m, nn.AdaptiveMaxPool1d) else F.adaptive_max_pool2d_with_indices
        return fn(x, m.output_size, True)[1].reshape(-1).cpu().numpy()
    return None


def _leaf_sparse(m: nn.Module, path: str, x: torch.Tensor, y: torch.Tensor, evidence: np.ndarray | None) -> sp.csr_matrix:
    """The nonzero pattern of the leaf's Jacobian at input ``x`` (batch of one).

    The structural pairs are generated and filtered in slices of output rows, so the
    temporary index arrays stay small even where the leaf has 1e8 structural edges.
    """
    in_shape, out_shape = tuple(x.shape[1:]), tuple(y.shape[1:])
    term = _leaf_term(m, path, in_shape, out_shape)
    first, rest = term.factors[0], term.factors[1:]
    per_row = max(1, term.nnz() // max(1, first.shape[0]))
    step = max(1, _EDGE_CHUNK // per_row)
    stride = term.n_out // max(1, first.shape[0])
    indptr, indices = [np.zeros(1, dtype=np.int64)], []
    done = 0
    for a in range(0, first.shape[0], step):
        sub = Term((first[a: a + step],) + rest)
        out_idx, in_idx = sub.edges()
        out_idx += a * stride
        if evidence is not None:
            pairs = [np.nonzero(f) for f in sub.factors]
            pairs[0] = (pairs[0][0] + a, pairs[0][1])
            keep = _kept(m, evidence, pairs, in_shape, out_shape)
            out_idx, in_idx = out_idx[keep], in_idx[keep]
        rows = min(step, first.shape[0] - a) * stride
        # For each output the inputs come ascending, so a stable sort by output is CSR order.
        order = np.argsort(out_idx, kind="stable")
        indptr.append(np.cumsum(np.bincount(out_idx - a * stride, minlength=rows)) + done)
        indices.append(in_idx[order])
        done += in_idx.size
    n_out, n_in = math.prod(out_shape), math.prod(in_shape)
    return sp.csr_matrix(
        (np.ones(done, dtype=bool), np.concatenate(indices), np.concatenate(indptr)), shape=(n_out, n_in)
    )


def _kept(
    m: nn.Module, evidence: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]],
    in_shape: tuple[int, ...], out_shape: tuple[int, ...],
) -> np.ndarray:
    """Which structural pairs of the leaf are Jacobian nonzeros, by its evidence.

    ``pairs[f]`` are the (out, in) index pairs of the relation's factor ``f`` (one axis
    each); the relation's pairs are their Kronecker product, in the order of
    ``Term.edges``. The evidence is looked up per factor and broadcast, so no per-pair
    index array is ever unravelled.
    """
    n = len(pairs)

    def along(f: int, v: np.ndarray) -> np.ndarray:
        return v.reshape((1,) * f + (-1,) + (1,) * (n - f - 1))

    outs = tuple(along(f, o) for f, (o, _) in enumerate(pairs))
    if isinstance(m, ELEMENTWISE_MODULES):
        keep = evidence.reshape(out_shape or (1,))[outs]
    elif isinstance(m, _BATCHNORM):
        keep = along(0, evidence[pairs[0][0]])
    elif isinstance(m, nn.Linear):
        keep = along(n - 1, evidence[pairs[-1]])
    elif isinstance(m, _CONV):
        co, ci = pairs[0]
        pads = _conv_padding(m, in_shape[1:])
        taps = tuple(
            along(f, (i - o * s + p) // d)
            for f, ((o, i), s, p, d) in enumerate(zip(pairs[1:], m.stride, pads, m.dilation), start=1)
        )
        keep = evidence[(along(0, co), along(0, ci % (in_shape[0] // m.groups))) + taps]
    else:
        # Max-pools: the input position each window picked, flat within its channel.
        flat = sum(along(f, i * math.prod(in_shape[f + 1:])) for f, (_, i) in enumerate(pairs[1:], start=1))
        keep = evidence.reshape(out_shape)[outs] == flat
    return np.broadcast_to(keep, tuple(o.size for o, _ in pairs)).reshape(-1)


# -- composition along the recorded dataflow of a child ----------------------------------------
_ELEMENTWISE_NAMES = {
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu", "celu_",
    "gelu", "silu", "mish", "softplus", "softsign", "hardtanh", "hardtanh_", "hardsigmoid", "hardswish",
    "logsigmoid", "tanhshrink", "softshrink", "hardshrink", "threshold", "threshold_", "sigmoid", "sigmoid_",
    "tanh", "tanh_", "exp", "exp_", "abs", "abs_", "neg", "neg_", "__neg__", "__pos__", "clamp", "clamp_",
    "clip", "clip_", "contiguous", "clone", "float", "double", "half", "bfloat16", "to", "detach", "dropout",
    "alpha_dropout",
}
_RESHAPE_NAMES = {"view", "reshape", "flatten", "view_as", "reshape_as", "squeeze", "unsqueeze", "unflatten"}
_ADD_NAMES = {"add", "add_", "__add__", "__iadd__", "__radd__", "sub", "sub_", "__sub__", "__isub__", "__rsub__"}
_CONCAT_NAMES = {"cat", "concat", "concatenate"}
_SCALE_NAMES = {"mul", "mul_", "__mul__", "__imul__", "__rmul__", "div", "div_", "__truediv__", "__itruediv__",
                "__rtruediv__"}


def is_leaf_module(m: nn.Module) -> bool:
    """Whether nsp derives ``m``'s relation from its type (rather than from its parts)."""
    return isinstance(
        m,
        ELEMENTWISE_MODULES + _PASSTHROUGH + _BATCHNORM + _CONV + _POOL + _ADAPTIVE
        + (nn.Linear, nn.Flatten, nn.Unflatten, nn.Upsample),
    )


@dataclass
class _Pending:
    """An unsupported operation; an error only if the child's output depends on it."""

    error: UnsupportedModuleError


def _refs(op: Op) -> list[Ref]:
    found: list[Ref] = []
    for a in tree_flatten((op.args, op.kwargs))[0]:
        if isinstance(a, Ref) and a not in found:
            found.append(a)
    return found


def _substitute(tree: Any, values: dict[int, Any]) -> Any:
    return tree_map(lambda a: values[a.index] if isinstance(a, Ref) else a, tree)


@dataclass
class _Interpreter:
    """Composes the relations along a recorded program (see ``nsp.capture.Program``).

    Every recorded value carries a map ``{layer: relation}``: how it depends on each
    layer that reaches it without passing through another layer. A ``'layer'`` op
    records its incoming map as that layer's parents and restarts the map.

    With ``digest`` set it only replays the program and feeds everything the INCL=False
    relations would depend on into the hash (see ``fingerprint``).
    """

    incl: bool
    digest: Any = None
    progress: Progress | None = None

    def identity(self, shape: tuple[int, ...]) -> Any:
        if self.incl:
            return Relation.identity(shape or (1,))
        return sp.identity(math.prod(shape), dtype=bool, format="csr")

    def compose(self, outer: Any, deps: dict[int, Any]) -> dict[int, Any]:
        if self.incl:
            return {k: outer.compose(r) for k, r in deps.items()}
        return {k: (outer.astype(np.int32) @ r.astype(np.int32)).astype(bool).tocsr() for k, r in deps.items()}

    def union(self, a: dict[int, Any], b: dict[int, Any]) -> dict[int, Any]:
        out = dict(a)
        for k, r in b.items():
            if k not in out:
                out[k] = r
            else:
                out[k] = out[k].union(r) if self.incl else (out[k] + r).astype(bool).tocsr()
        return out

    def run(
        self, program: Program, name: str, owner: str, x: torch.Tensor | None, source: int
    ) -> tuple[dict[int, Any], dict[int, dict[int, Any]]]:
        """Interpret ``program`` whose input is layer ``source``.

        ``x`` is the program's actual input (batch of one); it is needed only for
        ``INCL=False``, where the program is replayed to get Jacobian nonzeros.

        Returns
        -------
        (dict, dict)
            The dependence map of the program's output, and the incoming map of every
            layer the program marks.
        """
        shapes = {-1: program.input_shape}
        maps: dict[int, Any] = {-1: {} if self.digest is not None else {source: self.identity(program.input_shape[1:])}}
        values: dict[int, Any] = {-1: x}
        layers: dict[int, dict[int, Any]] = {}
        for i, op in enumerate(program.ops):
            shapes[i] = op.shape
            path = op.path or name
            refs = _refs(op)
            blocked = next((maps[r.index] for r in refs if isinstance(maps[r.index], _Pending)), None)
            if blocked is None:
                try:
                    maps[i] = self._op(op, i, path, refs, shapes, maps, values, layers)
                    continue
                except UnsupportedModuleError as err:
                    blocked = _Pending(err)
            if op.kind == "layer":
                raise blocked.error
            maps[i] = blocked
        if program.output is None:
            raise _unsupported(name, owner, "its output was not computed from its input by operations nsp can see")
        result = maps[program.output.index]
        if isinstance(result, _Pending):
            raise result.error
        return result, layers

    def _op(self, op: Op, i: int, path: str, refs: list[Ref], shapes: dict, maps: dict, values: dict, layers: dict) -> Any:
        if op.kind == "opaque":
            raise _unsupported(path, op.name, "it returns several tensors")
        if op.kind == "layer":
            if not refs:
                raise _unsupported(
                    path, op.owner, "its output was not computed from the recorded input by operations nsp can see "
                    "(e.g. a round trip through numpy, or a custom extension)"
                )
            layers[op.target] = maps[refs[0].index]
            values[i] = values.get(refs[0].index)
            if self.progress is not None:
                self.progress.done(op.target)
            return {} if self.digest is not None else {op.target: self.identity(op.shape[1:])}
        if op.kind == "module":
            m = op.target
            _check_mode(m, path, self.incl)
            if not refs:
                raise _unsupported(
                    path, type(m).__name__, "its input was not computed from the recorded input by operations nsp "
                    "can see (e.g. a round trip through numpy, or a custom extension)"
                )
            (src,) = refs
            in_shape = shapes[src.index]
            if self.incl:
                rel = Relation.of(_leaf_term(m, path, in_shape[1:], op.shape[1:]))
            else:
                xin = values[src.index]
                with torch.no_grad():
                    values[i] = m(xin.clone())
                evidence = _leaf_evidence(m, xin)
                if self.digest is not None:
                    self._feed(type(m).__name__, evidence)
                    return {}
                rel = _leaf_sparse(m, path, xin, values[i], evidence)
            return self.compose(rel, maps[src.index])
        name = f"{op.name} in {op.owner}" if op.owner else op.name
        op_name = op.name
        if not self.incl:
            with torch.no_grad():
                values[i] = op.target(*_substitute(op.args, values), **_substitute(op.kwargs, values))
        if op_name in _CONCAT_NAMES:
            return self._concat(op, path, name, shapes, maps)
        if len(refs) == 2 and op_name in _ADD_NAMES:
            a, b = refs
            if shapes[a.index] != op.shape or shapes[b.index] != op.shape:
                raise _unsupported(path, name, f"adding shapes {shapes[a.index]} and {shapes[b.index]} broadcasts")
            return self.union(maps[a.index], maps[b.index])
        if len(refs) != 1:
            raise _unsupported(path, name, "an operation on several tensors derived from the input")
        (src,) = refs
        src_shape = shapes[src.index]
        if op_name in _RESHAPE_NAMES:
            if math.prod(op.shape) != math.prod(src_shape) or op.shape[:1] != src_shape[:1]:
                raise _unsupported(path, name, f"reshaping {src_shape} to {op.shape} moves the batch dimension")
            return maps[src.index]
        training = op.kwargs.get("training", False) or any(a is True for a in op.args[2:])
        if op_name == "dropout" and training:
            raise _unsupported(path, name, "functional dropout in training mode; call network.eval() first")
        if not (op_name in _ELEMENTWISE_NAMES or op_name in _ADD_NAMES or op_name in _SCALE_NAMES) or op.shape != src_shape:
            raise _unsupported(path, name, "it is not an elementwise operation, a reshape, a concatenation or a residual addition")
        if self.incl:
            return maps[src.index]
        position = [j for j, a in enumerate(op.args) if a == src]

        def call(t: torch.Tensor) -> torch.Tensor:
            args = list(_substitute(op.args, values))
            for j in position:
                args[j] = t
            return op.target(*args, **_substitute(op.kwargs, values))

        keep = _elementwise_mask(call, values[src.index])
        if self.digest is not None:
            self._feed(op_name, keep)
            return {}
        return {k: _keep_rows(r, keep) for k, r in maps[src.index].items()}

    def _concat(self, op: Op, path: str, name: str, shapes: dict, maps: dict) -> dict[int, Any]:
        parts = op.args[0] if op.args else op.kwargs.get("tensors")
        dim = op.args[1] if len(op.args) > 1 else op.kwargs.get("dim", 0)
        dim = dim + len(op.shape) if dim < 0 else dim
        if dim == 0:
            raise _unsupported(path, name, "concatenation along the batch dimension")
        out: dict[int, Any] = {}
        offset = 0
        for part in parts:
            width = (shapes[part.index] if isinstance(part, Ref) else tuple(part.shape))[dim]
            if isinstance(part, Ref) and self.digest is None:
                factors = [np.eye(d, dtype=bool) for d in op.shape[1:]]
                factors[dim - 1] = np.eye(op.shape[dim], width, -offset, dtype=bool)
                place = Term(tuple(factors))
                rel = Relation.of(place) if self.incl else _term_csr(place)
                out = self.union(out, self.compose(rel, maps[part.index]))
            offset += width
        return out

    def _feed(self, label: str, evidence: np.ndarray | None) -> None:
        self.digest.update(label.encode())
        if evidence is not None:
            self.digest.update(str(evidence.shape).encode())
            self.digest.update(np.ascontiguousarray(evidence).tobytes())


def _keep_rows(r: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """The rows of ``r`` where ``keep`` is true; the others emptied.

    Built from ``r``'s index arrays: ``r.multiply(mask)`` returns, in SciPy 1.17, a COO
    matrix that stores the masked entries as explicit zeros, which then count as edges.
    """
    r = r.tocsr()
    counts = np.diff(r.indptr) * keep.astype(r.indptr.dtype)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(r.indptr.dtype)
    indices = r.indices[np.repeat(keep, np.diff(r.indptr))]
    return sp.csr_matrix((np.ones(indices.size, dtype=bool), indices, indptr), shape=r.shape)


def _term_csr(term: Term) -> sp.csr_matrix:
    out_idx, in_idx = term.edges()
    return sp.csr_matrix((np.ones(out_idx.size, dtype=bool), (out_idx, in_idx)), shape=(term.n_out, term.n_in))


# -- the whole network -------------------------------------------------------------------
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
        that feeds it directly: a :class:`~nsp.relations.Relation` if ``incl``, else a
        scipy CSR boolean matrix. With top-level children, ``K = L - 1`` only.
    """

    names: list[str]
    shapes: list[tuple[int, ...]]
    incl: bool
    parents: list[dict[int, Any]]
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


def build_structure(activations: Any, incl: bool) -> NetworkStructure:
    """Derive the edges between consecutive layers of a recorded pattern.

    Parameters
    ----------
    activations : Activations
        A recorded pattern; its ``layerdescriptions[1:]`` are the child modules.
    incl : bool
        Structural (True) or data-dependent (False) edges, as in ``NNGraph``.

    Raises
    ------
    UnsupportedModuleError
        If a child (or a part of it) cannot be analysed; the message names its path.
    """
    progress = Progress("INCL=True graph" if incl else "INCL=False graph", list(activations.layernames))
    interpreter = _Interpreter(incl, progress=progress)
    shapes = [tuple(a.shape) for a in activations.layeractivations]
    if activations._dataflow is not None:
        x = None if incl else _to_modules(activations.layerdescriptions[1:], activations.layeractivations[0].unsqueeze(0))
        _, layers = interpreter.run(activations._dataflow, "network", "network", x, 0)
        parents = [{}] + [layers[layer] for layer in range(1, len(shapes))]
        return NetworkStructure(list(activations.layernames), shapes, incl, parents)
    parents: list[dict[int, Any]] = [{}]
    for layer in range(1, len(shapes)):
        name = activations.layernames[layer]
        child = activations.layerdescriptions[layer]
        program = activations._programs[layer]
        prev_n = math.prod(shapes[layer - 1])
        if math.prod(program.input_shape[1:]) != prev_n:
            raise UnsupportedModuleError(
                f"nsp.NNGraph: child '{name}' ({type(child).__name__}) received {math.prod(program.input_shape[1:])} "
                f"values, but the previous layer '{activations.layernames[layer - 1]}' has {prev_n}; with top-level "
                "layers, each child's input must be an elementwise image of the previous child's output"
            )
        x = None if incl else _to_module(child, activations._layerinputs[layer].unsqueeze(0))
        parents.append(interpreter.run(program, name, type(child).__name__, x, layer - 1)[0])
        progress.done(layer)
    return NetworkStructure(list(activations.layernames), shapes, incl, parents)


def _to_modules(modules: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device and in the floating dtype of the first parameter among ``modules``."""
    for m in modules:
        if next(m.parameters(), None) is not None:
            return _to_module(m, x)
    return x


def _to_module(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device and in the floating dtype of ``m``'s parameters."""
    p = next(m.parameters(), None)
    return x if p is None else x.to(device=p.device, dtype=p.dtype)


def fingerprint(activations: Any) -> str:
    """A digest of everything the ``INCL=False`` graph of a pattern depends on.

    It covers the layer names and shapes, the nonzero masks of the weights in use (read
    from the modules at call time, so pruning masks applied through
    ``torch.nn.utils.prune`` count), the argmax of every max-pool window and where each
    elementwise function has a nonzero derivative. Two patterns with the same
    fingerprint have the same ``INCL=False`` graph, so a graph and its transformer need
    rebuilding only when it changes. It costs one replay of the children, far less
    than building the graph.

    Parameters
    ----------
    activations : Activations
        A recorded pattern.

    Returns
    -------
    str
        32 hexadecimal digits.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr([(n, tuple(a.shape)) for n, a in zip(activations.layernames, activations.layeractivations)]).encode())
    interpreter = _Interpreter(incl=False, digest=digest)
    if activations._dataflow is not None:
        x = _to_modules(activations.layerdescriptions[1:], activations.layeractivations[0].unsqueeze(0))
        interpreter.run(activations._dataflow, "network", "network", x, 0)
        return digest.hexdigest()
    for layer in range(1, len(activations.layernames)):
        child = activations.layerdescriptions[layer]
        x = _to_module(child, activations._layerinputs[layer].unsqueeze(0))
        interpreter.run(activations._programs[layer], activations.layernames[layer], type(child).__name__, x, layer - 1)
    return digest.hexdigest()
