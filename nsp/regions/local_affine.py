"""Local affine maps of piecewise-linear networks: ``f(x') = W(x) x' + b(x)`` near ``x``.

A network built from affine layers (Linear, Conv, AvgPool, BatchNorm in eval mode, Flatten,
residual additions, concatenation) and piecewise-linear nonlinearities (ReLU, LeakyReLU,
MaxPool, ...) is affine on each of its linear regions. :func:`local_affine` returns the map
of the region that contains each input of a batch, with the activation pattern that names
the region, shaped like torchays's ``weight_graph`` ``(batch, *out, *in)`` and
``bias_graph`` ``(batch, *out)``.

``W(x)`` is the Jacobian, computed with :mod:`torch.func` (``vmap`` of ``jacrev``, or of
``jacfwd`` when the input is smaller than the output); ``b(x) = f(x) - W(x) x``. Both are
exact only when every operation the network runs is piecewise linear, so a checking forward
pass first runs the model under a :class:`~torch.overrides.TorchFunctionMode` that sees every
torch call, functional ones included, and rejects any operation on input-dependent tensors
that is not on an allow-list (Tanh, GELU, softmax, LayerNorm, the product of two
input-dependent tensors as in attention, BatchNorm or Dropout in training mode, ...). The
error names the module that made the call. The same pass records the activation pattern.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from nsp.common.tracer import ModuleTracer, map_leaves, tensors_in

__all__ = ["LocalAffine", "NotPiecewiseLinearError", "local_affine", "activation_patterns", "same_region"]


class NotPiecewiseLinearError(ValueError):
    """The network runs an operation that is not piecewise linear in its input."""


# Operations that are affine in their input-dependent tensor arguments.
_AFFINE = frozenset({
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "flatten", "unflatten", "view", "view_as", "reshape", "reshape_as", "permute",
    "transpose", "t", "contiguous", "squeeze", "unsqueeze", "__getitem__", "narrow", "select", "split",
    "chunk", "unbind", "cat", "concat", "concatenate", "stack", "add", "__add__", "__radd__", "__iadd__",
    "add_", "sub", "__sub__", "__rsub__", "__isub__", "sub_", "neg", "__neg__", "mean", "sum", "pad",
    "clone", "to", "double", "float", "expand", "expand_as", "repeat", "roll", "flip", "pixel_shuffle",
    "pixel_unshuffle", "channel_shuffle", "movedim", "swapaxes", "identity", "detach",
})
# Affine when at most one factor depends on the input (a scale, a matrix product with a weight).
_PRODUCTS = frozenset({
    "mul", "__mul__", "__rmul__", "__imul__", "mul_", "div", "__truediv__", "__itruediv__", "div_",
    "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "einsum",
})
# Piecewise linear: each names the activation pattern it records.
_RELU = frozenset({"relu", "relu_", "leaky_relu", "leaky_relu_", "prelu"})
_MAXPOOL = frozenset({
    "max_pool1d", "max_pool2d", "max_pool3d", "_max_pool1d", "_max_pool2d", "_max_pool3d",
    "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "_adaptive_max_pool1d", "_adaptive_max_pool2d",
    "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices",
})
_CLAMP = frozenset({"hardtanh", "hardtanh_", "relu6", "clamp", "clamp_", "clip", "clip_", "abs", "__abs__"})
_MAXIMUM = frozenset({"maximum", "minimum", "fmax", "fmin"})
# Queries that return no tensor derived from the input's values.
_QUERIES = frozenset({
    "__get__", "size", "dim", "numel", "__len__", "is_floating_point", "is_contiguous", "stride",
    "__format__", "__repr__", "get_device", "element_size", "ndimension", "nelement", "storage_offset",
    "__bool__", "data_ptr", "is_complex", "untyped_storage", "__setstate__", "type",
})
# Normalisation and dropout are affine only in eval mode: argument position of the flag.
_MODE_FLAGS = {"batch_norm": (5, "training"), "dropout": (2, "training"), "dropout1d": (2, "training"),
               "dropout2d": (2, "training"), "dropout3d": (2, "training"), "alpha_dropout": (2, "training"),
               "feature_alpha_dropout": (2, "training")}

PIECEWISE_LINEAR = (
    "Linear, Conv1d/2d/3d (and transposed), AvgPool and AdaptiveAvgPool, BatchNorm (eval mode), Dropout "
    "(eval mode), Flatten, Identity, view/reshape/permute/indexing, residual additions, concatenation, "
    "scaling by constants, ReLU, LeakyReLU, ReLU6/Hardtanh/clamp, abs, maximum/minimum, MaxPool and "
    "AdaptiveMaxPool"
)

_TAG = "_nsp_input_dependent"


def _tagged(t: torch.Tensor) -> bool:
    return bool(t.__dict__.get(_TAG, False))


def _tag(t: Any) -> Any:
    if isinstance(t, torch.Tensor):
        setattr(t, _TAG, True)
    return t


@dataclass
class Nonlinearity:
    """One call of a piecewise-linear operation during a forward pass.

    Attributes
    ----------
    key : str
        ``"<module path>:<op>"``, with ``#n`` appended when one module makes several calls.
    kind : str
        ``"relu"`` (ReLU, LeakyReLU), ``"maxpool"``, ``"clamp"`` or ``"maximum"``.
    func, args, kwargs
        The torch call, to replay or to inspect its parameters.
    """

    key: str
    kind: str
    func: Callable
    args: tuple
    kwargs: dict

    def clamp_knots(self) -> tuple[Any, Any]:
        """``(lower, upper)`` knots of a clamp-like call (ReLU6, Hardtanh, clamp); None for an open side.

        The knots are as the call was given them: numbers or tensors.
        """
        name = self.func.__name__.strip("_")
        a, kw = self.args, self.kwargs
        if name == "relu6":
            return 0.0, 6.0
        if name == "hardtanh":
            return kw.get("min_val", a[1] if len(a) > 1 else -1.0), kw.get("max_val", a[2] if len(a) > 2 else 1.0)
        return kw.get("min", a[1] if len(a) > 1 else None), kw.get("max", a[2] if len(a) > 2 else None)


class PiecewiseLinearGuard(ModuleTracer):
    """Run a forward pass, rejecting non-piecewise-linear operations on the input.

    Every tensor computed from a tensor marked with :meth:`mark` is input-dependent. An
    operation on input-dependent tensors must be affine, or one of the piecewise-linear
    nonlinearities; each of those calls ``on_nonlinear(nl, run)``, where ``run()`` performs the
    call, so that a caller can record the activation pattern or stop the pass.

    Parameters
    ----------
    model : nn.Module
        Its submodules name the module in error messages.
    linearise : bool
        Warn instead of raising for a non-piecewise-linear operation.
    on_nonlinear : callable, optional
        ``on_nonlinear(nonlinearity, run) -> result``.
    """

    def __init__(self, model: nn.Module, linearise: bool = False, on_nonlinear: Callable | None = None):
        super().__init__()
        self.model = model
        self.linearise = linearise
        self.on_nonlinear = on_nonlinear
        self.non_pl: list[str] = []
        self._counts: dict[str, int] = {}

    @staticmethod
    def mark(x: torch.Tensor) -> torch.Tensor:
        return _tag(x)

    def __enter__(self) -> "PiecewiseLinearGuard":
        self.stack = []
        self.watch(self.model.named_modules())
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self.unwatch()

    def _describe(self) -> str:
        """The running module, for messages: its path (the model's class for the model) and class."""
        if not self.stack:
            return f"'{type(self.model).__name__}'"
        return f"'{self.path or type(self.model).__name__}' ({type(self.module).__name__})"

    def _reject(self, name: str, why: str) -> None:
        where = self._describe()
        message = f"{where} calls {name}, which {why}"
        if not self.linearise:
            raise NotPiecewiseLinearError(
                f"nsp.local_affine: {message}; the network is not piecewise linear, so its local affine map is "
                f"not exact. Supported: {PIECEWISE_LINEAR}. Pass linearise=True for the Jacobian instead."
            )
        if message not in self.non_pl:
            self.non_pl.append(message)

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", repr(func))
        dependent = [t for t in tensors_in((args, kwargs)) if _tagged(t)]
        if not dependent or name in _QUERIES:
            return func(*args, **kwargs)
        kind = None
        if name in _MODE_FLAGS:
            pos, flag = _MODE_FLAGS[name]
            training = kwargs.get(flag, args[pos] if len(args) > pos else name != "batch_norm")
            if training:
                self._reject(name, f"runs in training mode (call model.eval() first: in training mode {name} "
                                   "depends on the batch or on chance)")
        if name in _RELU:
            kind = "relu"
        elif name in _MAXPOOL:
            kind = "maxpool"
        elif name in _CLAMP:
            kind = "clamp"
        elif name in _MAXIMUM or name in ("max", "min") and len(dependent) == 2:
            kind = "maximum"
        elif name in _PRODUCTS:
            if len(dependent) > 1:
                self._reject(name, "multiplies two input-dependent tensors (as attention and gating do)")
        elif name not in _AFFINE and name not in _MODE_FLAGS:
            self._reject(name, "is not on nsp's allow-list of piecewise-linear operations")

        def run() -> Any:
            return map_leaves(_tag, func(*args, **kwargs))

        if kind is None:
            return run()
        base = f"{self.path}:{name.strip('_')}"
        n = self._counts.get(base, 0)
        self._counts[base] = n + 1
        nl = Nonlinearity(base if n == 0 else f"{base}#{n}", kind, func, args, kwargs)
        if self.on_nonlinear is None:
            return run()
        return self.on_nonlinear(nl, run)


def _pattern(nl: Nonlinearity, out: Any) -> torch.Tensor:
    """The activation pattern of one nonlinearity call: which piece each unit is on."""
    x = nl.args[0] if nl.args else next(iter(nl.kwargs.values()))
    if nl.kind == "relu":
        return (x > 0).detach()
    if nl.kind == "maxpool":
        if isinstance(out, tuple):
            return out[1].detach()
        # This runs inside the guard's handler, where torch calls are not intercepted again.
        base = nl.func.__name__.strip("_").replace("_with_indices", "")
        kw = {k: v for k, v in nl.kwargs.items() if k != "return_indices"}
        n_args = 6 if base.startswith("max_pool") else 2
        return getattr(torch.nn.functional, base + "_with_indices")(*nl.args[:n_args], **kw)[1].detach()
    if nl.kind == "maximum":
        y = nl.args[1] if len(nl.args) > 1 else nl.kwargs.get("other")
        return (x > y).detach() if nl.func.__name__ in ("maximum", "fmax", "max") else (x < y).detach()
    # clamp-like: -1 below the lower knot, 0 between, 1 above (abs: its sign).
    name = nl.func.__name__.strip("_")
    if name == "abs":
        return (x > 0).to(torch.int8).detach()
    lo, hi = nl.clamp_knots()
    code = torch.zeros_like(x, dtype=torch.int8)
    if lo is not None:
        code = torch.where(x < lo, torch.tensor(-1, dtype=torch.int8), code)
    if hi is not None:
        code = torch.where(x > hi, torch.tensor(1, dtype=torch.int8), code)
    return code.detach()


def activation_patterns(model: nn.Module, x: torch.Tensor, *, linearise: bool = False,
                        params: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model(x)`` under the piecewise-linear guard and record every activation pattern.

    Parameters
    ----------
    model : nn.Module
        A piecewise-linear network (see :func:`local_affine`).
    x : torch.Tensor
        A batch of inputs.
    linearise : bool
        Warn, rather than raise, when an operation is not piecewise linear.
    params : dict, optional
        Parameters and buffers to run the model with (:func:`torch.func.functional_call`), e.g.
        float64 copies.

    Returns
    -------
    output : torch.Tensor
        ``model(x)``.
    patterns : dict of str to torch.Tensor
        One entry per nonlinearity call, ``(batch, *units)``: ``bool`` "on" for ReLU-like units,
        the argmax index for max-pools, a piece code in {-1, 0, 1} for clamps.

    Raises
    ------
    NotPiecewiseLinearError
        Naming the module that calls a non-piecewise-linear operation.
    """
    patterns: dict[str, torch.Tensor] = {}

    def record(nl: Nonlinearity, run: Callable) -> Any:
        out = run()
        patterns[nl.key] = _pattern(nl, out)
        return out

    guard = PiecewiseLinearGuard(model, linearise=linearise, on_nonlinear=record)
    x = x.detach().clone()
    with torch.no_grad(), guard:
        x = guard.mark(x)
        out = model(x) if params is None else torch.func.functional_call(model, params, (x,))
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"nsp.local_affine: expected the model to return one tensor, but got {type(out).__name__}")
    if guard.non_pl:
        warnings.warn(
            "nsp.local_affine(linearise=True): the network is not piecewise linear (" + "; ".join(guard.non_pl)
            + "); W is its Jacobian, exact only to first order.", stacklevel=3,
        )
    return out.detach(), patterns


@dataclass
class LocalAffine:
    """The affine map of the linear region around each input of a batch.

    Attributes
    ----------
    weight : torch.Tensor
        ``W(x)``, ``(batch, *out, *in)`` (torchays's ``weight_graph``).
    bias : torch.Tensor
        ``b(x) = f(x) - W(x) x``, ``(batch, *out)`` (torchays's ``bias_graph``).
    output : torch.Tensor
        ``f(x)``, ``(batch, *out)``.
    patterns : dict of str to torch.Tensor
        The activation pattern of each nonlinearity call, ``(batch, *units)``.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    output: torch.Tensor
    patterns: dict[str, torch.Tensor]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply each input's map to ``x`` (``(batch, *in)``): ``W(x_i) x_i' + b(x_i)``."""
        n_in = self.weight.dim() - self.bias.dim()
        dims = tuple(range(-n_in, 0))
        xb = x.reshape(x.shape[0], *([1] * (self.bias.dim() - 1)), *x.shape[1:]).to(self.weight.dtype)
        return (self.weight * xb).sum(dim=dims) + self.bias

    def same_region(self, other: "LocalAffine") -> torch.Tensor:
        """Whether input ``i`` of ``self`` and input ``i`` of ``other`` share a region, ``(batch,)``."""
        return _same(self.patterns, other.patterns)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
    if a.keys() != b.keys():
        raise ValueError("nsp.same_region: the two passes ran different nonlinearities (data-dependent control flow)")
    batch = next(iter(a.values())).shape[0] if a else 0
    same = torch.ones(batch, dtype=torch.bool)
    for k in a:
        same &= (a[k] == b[k]).reshape(batch, -1).all(dim=1)
    return same


def same_region(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Whether ``x1[i]`` and ``x2[i]`` lie in the same linear region (same activation pattern).

    Returns
    -------
    torch.Tensor
        ``(batch,)`` bool.
    """
    if x1.shape != x2.shape:
        raise ValueError(f"nsp.same_region: expected x1 and x2 of one shape, but got {tuple(x1.shape)} and {tuple(x2.shape)}")
    return _same(activation_patterns(model, x1)[1], activation_patterns(model, x2)[1])


def local_affine(model: nn.Module, x: torch.Tensor, *, linearise: bool = False, chunk_size: int | None = None) -> LocalAffine:
    """The local affine map ``f(x') = W(x) x' + b(x)`` of a piecewise-linear network at each input.

    Parameters
    ----------
    model : nn.Module
        Built from Linear, Conv, AvgPool, BatchNorm and Dropout (eval mode), Flatten, Identity,
        residual additions, concatenation, ReLU, LeakyReLU, MaxPool and other piecewise-linear
        operations, as modules or functional calls in ``forward``. It must return one tensor.
    x : torch.Tensor
        ``(batch, *in)``.
    linearise : bool
        For a network that is not piecewise linear, return its Jacobian (exact only to first order)
        with a warning instead of raising.
    chunk_size : int, optional
        Passed to :func:`torch.func.vmap` to bound memory on large batches.

    Returns
    -------
    LocalAffine
        ``weight`` ``(batch, *out, *in)``, ``bias`` ``(batch, *out)``, ``output`` and ``patterns``.

    Raises
    ------
    NotPiecewiseLinearError
        Naming the module that calls a non-piecewise-linear operation (Tanh, GELU, softmax,
        attention, BatchNorm in training mode, ...), unless ``linearise=True``.

    Examples
    --------
    >>> import torch, nsp
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> la = nsp.local_affine(net, torch.randn(4, 3))
    >>> la.weight.shape, la.bias.shape
    (torch.Size([4, 2, 3]), torch.Size([4, 2]))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"nsp.local_affine: expected argument `model` to be an nn.Module, but got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise TypeError("nsp.local_affine: expected argument `x` to be a batched tensor (batch, *in)")
    output, patterns = activation_patterns(model, x, linearise=linearise)

    def single(xi: torch.Tensor) -> torch.Tensor:
        return model(xi.unsqueeze(0)).squeeze(0)

    x = x.detach()
    jac = torch.func.jacfwd(single) if x[0].numel() < output[0].numel() else torch.func.jacrev(single)
    with torch.enable_grad():
        weight = torch.func.vmap(jac, chunk_size=chunk_size)(x).detach()
    n_in = x.dim() - 1
    xb = x.reshape(x.shape[0], *([1] * (output.dim() - 1)), *x.shape[1:])
    bias = output - (weight * xb).sum(dim=tuple(range(-n_in, 0)))
    return LocalAffine(weight=weight, bias=bias, output=output, patterns=patterns)
