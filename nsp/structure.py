"""How each module maps input positions to output positions, composed along the network.

For every top-level child this module derives the relation "output x depends on input
y" (GUIDE §2):

- ``INCL=True`` gives the structural pattern as a product :class:`~nsp.relations.Relation`
  (per-axis 0/1 factors), independent of weights and data;
- ``INCL=False`` gives the nonzero pattern of the child's Jacobian at the input it actually
  received, as a scipy CSR boolean matrix.

Composite children (``nn.Sequential``, residual blocks, any module whose forward torch.fx
can trace) are composed from their parts. Anything else raises :class:`UnsupportedModuleError`
naming the module, its path and what is supported; a wrong graph is never produced.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from nsp.relations import Relation, StructureError, Term

__all__ = ["UnsupportedModuleError", "NetworkStructure", "build_structure", "ELEMENTWISE_MODULES"]

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
    "Conv1d/Conv2d, MaxPool1d/2d, AvgPool1d/2d, AdaptiveAvgPool1d/2d, AdaptiveMaxPool1d/2d, "
    "BatchNorm1d/2d (eval mode), Linear, Flatten, Identity, Dropout (eval mode), elementwise "
    "activation modules, and nn.Sequential or torch.fx-traceable blocks composed of these with "
    "elementwise functions, view/reshape/flatten and residual additions"
)

_ELEMENTWISE_FUNCTIONS: set[Any] = {
    torch.relu, torch.sigmoid, torch.tanh, torch.exp, torch.abs, torch.neg, torch.sin, torch.cos,
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.softplus,
    F.softsign, F.hardtanh, F.hardsigmoid, F.hardswish, F.logsigmoid, F.tanhshrink, F.softshrink,
    F.hardshrink, F.threshold, F.sigmoid, F.tanh, F.dropout, operator.neg,
}
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "abs", "neg", "clamp", "clamp_",
    "clip", "float", "double", "to", "contiguous", "clone", "detach",
}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "view_as", "reshape_as"}
_ADD = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub}
_SCALE = {operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div}


class UnsupportedModuleError(StructureError):
    """A module or operation whose input-to-output dependence nsp cannot derive."""


def _unsupported(path: str, what: str, why: str = "") -> UnsupportedModuleError:
    reason = f": {why}" if why else ""
    return UnsupportedModuleError(f"nsp.NNGraph: cannot analyse '{path}' ({what}){reason}. Supported: {SUPPORTED}.")


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
        return Term(tuple(np.eye(d, dtype=bool) for d in lead) + (np.ones((out_shape[-1], in_shape[-1]), bool),))
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
    if isinstance(m, _ADAPTIVE):
        factors = [np.eye(in_shape[0], dtype=bool)]
        factors += [_adaptive_factor(n_o, n_i) for n_o, n_i in zip(out_shape[1:], in_shape[1:])]
        return Term(tuple(factors))
    raise _unsupported(path, type(m).__name__)


def _is_leaf(m: nn.Module) -> bool:
    return isinstance(
        m, ELEMENTWISE_MODULES + _PASSTHROUGH + _BATCHNORM + _CONV + _POOL + _ADAPTIVE + (nn.Linear, nn.Flatten, nn.Unflatten)
    )


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


def _leaf_sparse(m: nn.Module, path: str, x: torch.Tensor, y: torch.Tensor) -> sp.csr_matrix:
    """The nonzero pattern of the leaf's Jacobian at input ``x`` (batch of one)."""
    in_shape, out_shape = tuple(x.shape[1:]), tuple(y.shape[1:])
    term = _leaf_term(m, path, in_shape, out_shape)
    out_idx, in_idx = term.edges()
    keep: np.ndarray | None = None
    if isinstance(m, ELEMENTWISE_MODULES):
        keep = _elementwise_mask(m, x)[out_idx]
    elif isinstance(m, _BATCHNORM) and m.affine:
        c = np.unravel_index(out_idx, out_shape)[0]
        keep = (m.weight.detach().cpu().numpy() != 0)[c]
    elif isinstance(m, nn.Linear):
        w = m.weight.detach().cpu().numpy() != 0
        keep = w[out_idx % out_shape[-1], in_idx % in_shape[-1]]
    elif isinstance(m, _CONV):
        o = np.unravel_index(out_idx, out_shape)
        i = np.unravel_index(in_idx, in_shape)
        pads = _conv_padding(m, in_shape[1:])
        taps = tuple(
            (i[a + 1] - o[a + 1] * s + p) // d for a, (s, p, d) in enumerate(zip(m.stride, pads, m.dilation))
        )
        per_group = in_shape[0] // m.groups
        w = m.weight.detach().cpu().numpy() != 0
        keep = w[(o[0], i[0] % per_group) + taps]
    elif isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
            fn = F.max_pool1d_with_indices if isinstance(m, nn.MaxPool1d) else F.max_pool2d_with_indices
            _, idx = fn(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)
        else:
            fn = F.adaptive_max_pool1d_with_indices if isinstance(m, nn.AdaptiveMaxPool1d) else F.adaptive_max_pool2d_with_indices
            _, idx = fn(x, m.output_size, True)
        argmax = idx.reshape(-1).cpu().numpy()
        spatial_in = int(np.prod(in_shape[1:]))
        keep = (in_idx % spatial_in) == argmax[out_idx]
    if keep is not None:
        out_idx, in_idx = out_idx[keep], in_idx[keep]
    n_out, n_in = math.prod(out_shape), math.prod(in_shape)
    return sp.csr_matrix((np.ones(out_idx.size, dtype=bool), (out_idx, in_idx)), shape=(n_out, n_in))


# -- composition through Sequential and fx-traced blocks ---------------------------------
@dataclass
class _Walker:
    """Derives a child's relation by walking its parts on the input it actually received."""

    incl: bool

    def identity(self, shape: tuple[int, ...]) -> Any:
        n = math.prod(shape)
        if self.incl:
            return Relation.identity(shape or (1,))
        return sp.identity(n, dtype=bool, format="csr")

    def compose(self, outer: Any, inner: Any) -> Any:
        if self.incl:
            return outer.compose(inner)
        return (outer.astype(np.int32) @ inner.astype(np.int32)).astype(bool).tocsr()

    def union(self, a: Any, b: Any) -> Any:
        return a.union(b) if self.incl else (a + b).astype(bool).tocsr()

    def mask(self, rel: Any, keep: np.ndarray) -> Any:
        return rel if self.incl else sp.diags(keep.astype(np.int8)).tocsr().astype(bool) @ rel

    def module(self, m: nn.Module, path: str, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """(relation from ``x`` to the output, output) for module ``m`` at input ``x``."""
        _check_mode(m, path, self.incl)
        if _is_leaf(m):
            with torch.no_grad():
                y = m(x)
            if self.incl:
                return Relation.of(_leaf_term(m, path, tuple(x.shape[1:]), tuple(y.shape[1:]))), y
            return _leaf_sparse(m, path, x, y), y
        if isinstance(m, nn.Sequential):
            rel = self.identity(tuple(x.shape[1:]))
            for name, sub in m.named_children():
                sub_rel, x = self.module(sub, f"{path}.{name}", x)
                rel = self.compose(sub_rel, rel)
            return rel, x
        return self.traced(m, path, x)

    def traced(self, m: nn.Module, path: str, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        try:
            gm = torch.fx.symbolic_trace(m)
        except Exception as err:  # fx raises many types; the message is what the user needs
            raise _unsupported(path, type(m).__name__, f"its forward is not traceable by torch.fx ({err})") from err
        values: dict[torch.fx.Node, Any] = {}
        rels: dict[torch.fx.Node, Any] = {}
        placeholders = 0
        for node in gm.graph.nodes:
            where = f"{path}: {node.format_node()}"
            if node.op == "placeholder":
                if placeholders:
                    raise _unsupported(path, type(m).__name__, "its forward takes more than one input")
                placeholders += 1
                values[node], rels[node] = x, self.identity(tuple(x.shape[1:]))
                continue
            if node.op == "output":
                out = node.args[0]
                if not isinstance(out, torch.fx.Node) or out not in rels:
                    raise _unsupported(path, type(m).__name__, "its output is not a single tensor")
                return rels[out], values[out]
            args = torch.fx.node.map_arg(node.args, lambda n: values[n])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: values[n])
            tensor_args = [a for a in node.all_input_nodes if a in rels]
            if node.op == "get_attr":
                raise _unsupported(path, type(m).__name__, f"it uses a parameter or buffer directly ({where})")
            if node.op == "call_module":
                sub = gm.get_submodule(node.target)
                if len(tensor_args) != 1 or args[0] is not values[tensor_args[0]]:
                    raise _unsupported(f"{path}.{node.target}", type(sub).__name__, "it must be called on one tensor")
                rel, y = self.module(sub, f"{path}.{node.target}", args[0])
                values[node], rels[node] = y, self.compose(rel, rels[tensor_args[0]])
                continue
            fn = node.target
            with torch.no_grad():
                y = fn(*args, **kwargs) if node.op == "call_function" else getattr(args[0], fn)(*args[1:], **kwargs)
            values[node] = y
            if not isinstance(y, torch.Tensor):
                if tensor_args:
                    raise _unsupported(path, type(m).__name__, f"unsupported operation {where}")
                continue
            rels[node] = self._function(node, fn, args, kwargs, tensor_args, values, rels, where, path, m)
        raise _unsupported(path, type(m).__name__, "its traced graph has no output")

    def _function(self, node, fn, args, kwargs, tensor_args, values, rels, where, path, m) -> Any:
        y = values[node]
        is_method = node.op == "call_method"
        if len(tensor_args) == 2 and fn in (_ADD if not is_method else {"add", "add_", "sub", "sub_"}) or (
            is_method and fn in {"add", "add_", "sub", "sub_"} and len(tensor_args) == 2
        ):
            a, b = tensor_args
            if values[a].shape != y.shape or values[b].shape != y.shape:
                raise _unsupported(path, type(m).__name__, f"broadcasting in {where}")
            return self.union(rels[a], rels[b])
        if len(tensor_args) != 1:
            raise _unsupported(path, type(m).__name__, f"unsupported operation {where}")
        (src,) = tensor_args
        x = values[src]
        if (fn in _RESHAPE_FUNCTIONS and not is_method) or (is_method and fn in _RESHAPE_METHODS):
            if y.numel() != x.numel() or y.shape[0] != x.shape[0]:
                raise _unsupported(path, type(m).__name__, f"{where} changes the batch dimension")
            return rels[src]
        scalar_op = (fn in _ADD or fn in _SCALE) if not is_method else fn in {"add", "sub", "mul", "div", "add_", "mul_"}
        elementwise = (fn in _ELEMENTWISE_FUNCTIONS) if not is_method else fn in _ELEMENTWISE_METHODS
        if not (scalar_op or elementwise) or y.shape != x.shape:
            raise _unsupported(path, type(m).__name__, f"unsupported operation {where}")
        if self.incl:
            return rels[src]
        position = next(i for i, a in enumerate(node.args) if a is src)

        def call(t: torch.Tensor) -> torch.Tensor:
            new_args = list(args)
            new_args[position] = t
            return fn(*new_args, **kwargs) if not is_method else getattr(new_args[0], fn)(*new_args[1:], **kwargs)

        return self.mask(rels[src], _elementwise_mask(call, x))


# -- the whole network -------------------------------------------------------------------
@dataclass
class NetworkStructure:
    """The layers of a recorded pattern and the edges between consecutive layers.

    Attributes
    ----------
    names, shapes : list
        Layer names and shapes (without batch dimension).
    incl : bool
        ``True`` for structural edges (product relations), ``False`` for Jacobian nonzeros.
    edges : list
        ``edges[L-1]`` relates layer ``L`` (rows) to layer ``L-1`` (columns): a
        :class:`~nsp.relations.Relation` if ``incl`` else a scipy CSR boolean matrix.
    """

    names: list[str]
    shapes: list[tuple[int, ...]]
    incl: bool
    edges: list[Any]
    sizes: np.ndarray = field(init=False)
    offsets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.sizes = np.array([math.prod(s) for s in self.shapes], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    def number_of_edges(self) -> int:
        return int(sum(e.nnz() if self.incl else e.nnz for e in self.edges))

    def edge_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Global (source, target) node indices of every edge, layer by layer."""
        src, dst = [], []
        for layer, rel in enumerate(self.edges, start=1):
            if self.incl:
                out_idx, in_idx = rel.edges()
            else:
                coo = rel.tocoo()
                out_idx, in_idx = coo.row.astype(np.int64), coo.col.astype(np.int64)
            src.append(in_idx + self.offsets[layer - 1])
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
    walker = _Walker(incl)
    shapes = [tuple(a.shape) for a in activations.layeractivations]
    edges = []
    for layer in range(1, len(shapes)):
        name = activations.layernames[layer]
        child = activations.layerdescriptions[layer]
        x = activations._layerinputs[layer].unsqueeze(0)
        prev_n = math.prod(shapes[layer - 1])
        if x.numel() != prev_n:
            raise UnsupportedModuleError(
                f"nsp.NNGraph: child '{name}' ({type(child).__name__}) received {x.numel()} values, but the "
                f"previous layer '{activations.layernames[layer - 1]}' has {prev_n}; with top-level layers, each "
                "child's input must be an elementwise image of the previous child's output"
            )
        rel, y = walker.module(child, name, _to_module(child, x))
        if tuple(y.shape[1:]) != shapes[layer]:
            raise UnsupportedModuleError(
                f"nsp.NNGraph: re-running child '{name}' ({type(child).__name__}) gave shape {tuple(y.shape[1:])}, "
                f"but the recorded output has shape {shapes[layer]}"
            )
        edges.append(rel)
    return NetworkStructure(list(activations.layernames), shapes, incl, edges)


def _to_module(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device and in the floating dtype of ``m``'s parameters."""
    p = next(m.parameters(), None)
    return x if p is None else x.to(device=p.device, dtype=p.dtype)
