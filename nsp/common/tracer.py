"""The op tracer: a :class:`~torch.overrides.TorchFunctionMode` that knows which module is running.

Three tools watch a forward pass torch call by torch call, and each needs to know the
module whose forward made a call: :mod:`nsp.graph.dataflow` records the dataflow,
:mod:`nsp.regions.local_affine` refuses operations that are not piecewise linear and names
the module that ran them, and :func:`trace` (used by :mod:`nsp.attribution`) counts module
calls and finds the ReLUs that no module hook can see. :class:`ModuleTracer` is what they
share: forward hooks keep the stack of running modules, and subclasses override
``__torch_function__`` (and :meth:`~ModuleTracer.entered` / :meth:`~ModuleTracer.left`
for per-module bookkeeping).

:func:`trace` runs one instrumented forward pass: captum's layer methods hook one module
and expect it to run once, and guided backprop can only modify ReLUs that are modules. It
tells both, and gives the model's output (for the default target) at the cost of one
forward pass without grad. :func:`tracing` records the same from passes that someone else
runs (captum's own forward pass, in :mod:`nsp.attribution`), at no extra pass.
"""

from __future__ import annotations

import contextlib
import threading
from threading import get_ident
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import (
    _global_forward_hooks_with_kwargs, register_module_forward_hook, register_module_forward_pre_hook,
)
from torch.overrides import TorchFunctionMode

# torch 2.13 has no public pytree module (torch.utils.pytree does not exist); torch.func uses this one.
from torch.utils._pytree import SUPPORTED_NODES, tree_flatten, tree_map

__all__ = ["GUIDED_MODULES", "FunctionalReLU", "ModuleTracer", "Trace", "map_leaves", "tensors_in", "trace", "tracing"]


_CONTAINERS = (tuple, list, dict)
_NESTING = frozenset(_CONTAINERS)
# Leaf types of torch calls' arguments that hold no tensor and that pytree does not walk
# into: checked first, by one set lookup, since nearly every leaf is a tensor or one of them.
_SCALARS = frozenset({int, float, bool, str, type(None), slice, type(Ellipsis), torch.dtype, torch.device,
                      torch.layout, torch.memory_format})


class _NotPlain(Exception):
    """Raised inside :func:`_collect` at a node that pytree flattens otherwise than a Python walk."""


def _plain(value: Any) -> bool:
    """Whether ``value`` nests only plain tuples, lists and dicts, so that pytree would
    flatten it as a Python walk does (dicts in insertion order). Run for every torch call
    while recording, where pytree's generality costs more than the call itself: a leaf is
    checked in the loop, without a call of its own."""
    kind = type(value)
    if kind is dict:
        value = value.values()
    elif kind is not tuple and kind is not list:
        return kind is torch.Tensor or kind in _SCALARS or (
            not isinstance(value, _CONTAINERS) and kind not in SUPPORTED_NODES)
    for v in value:
        kind = type(v)
        if kind is torch.Tensor or kind in _SCALARS:
            continue
        if kind is tuple or kind is list or kind is dict:
            if not _plain(v):
                return False
        elif kind in SUPPORTED_NODES or isinstance(v, _CONTAINERS):
            return False
    return True


def _collect(items: Iterable, out: list) -> None:
    """Append the tensors among ``items`` (nested plain tuples, lists and dicts) to ``out``,
    in pytree order; raise :class:`_NotPlain` at any other container. One walk: checking
    first and collecting after walked every torch call's arguments twice."""
    for v in items:
        kind = type(v)
        if kind is torch.Tensor:
            out.append(v)
        elif kind in _SCALARS or kind is torch.Size:  # a size holds ints only
            continue
        elif kind is tuple or kind is list:
            _collect(v, out)
        elif kind is dict:
            _collect(v.values(), out)
        elif kind in SUPPORTED_NODES or isinstance(v, _CONTAINERS):
            raise _NotPlain
        elif isinstance(v, torch.Tensor):
            out.append(v)


def _mapped(function: Callable[[Any], Any], value: Any) -> Any:
    # A leaf is mapped in the comprehension, without a call of _mapped of its own.
    kind = type(value)
    if kind is tuple or kind is list:
        return kind([_mapped(function, v) if type(v) in _NESTING else function(v) for v in value])
    if kind is dict:
        return {k: _mapped(function, v) if type(v) in _NESTING else function(v) for k, v in value.items()}
    return function(value)


def tensors_in(value: Any) -> list[torch.Tensor]:
    """The tensors in ``value`` (nested tuples, lists and dicts), in pytree order."""
    kind = type(value)
    if kind is torch.Tensor:
        return [value]
    found: list[torch.Tensor] = []
    try:
        _collect(value.values() if kind is dict else value if kind is tuple or kind is list else (value,), found)
    except _NotPlain:
        return [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]
    return found


def map_leaves(function: Callable[[Any], Any], value: Any) -> Any:
    """``value`` with every leaf of its nested tuples, lists and dicts replaced by ``function(leaf)``."""
    return _mapped(function, value) if _plain(value) else tree_map(function, value)


class ModuleTracer(TorchFunctionMode):
    """A torch-function mode that knows the stack of running modules.

    :meth:`watch` puts forward hooks on ``(path, module)`` pairs: while a watched module's
    forward runs, ``(path, module)`` is on :attr:`stack`, so ``__torch_function__`` can
    tell which module made each call (:attr:`path`, :attr:`module`). The hooks are
    independent of the mode: a caller may watch modules without entering the mode (it
    then pays nothing per torch call). The stack stays balanced when a forward raises.

    Subclasses override ``__torch_function__`` (by default it runs the call) and may
    override :meth:`entered` and :meth:`left`.

    Attributes
    ----------
    stack : list of (str, torch.nn.Module)
        The running watched modules, outermost first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, nn.Module]] = []
        self._handles: list[Any] = []
        # Modules watched through the hooks common to all modules: id -> (path, module).
        self._shared: dict[int, tuple[str, nn.Module]] = {}
        self._thread: int | None = None

    @property
    def path(self) -> str:
        """The path of the innermost running watched module ('' when none runs)."""
        return self.stack[-1][0] if self.stack else ""

    @property
    def module(self) -> nn.Module | None:
        """The innermost running watched module (None when none runs)."""
        return self.stack[-1][1] if self.stack else None

    def watch(self, modules: Iterable[tuple[str, nn.Module]], shared: bool = False) -> None:
        """Hook ``(path, module)`` pairs, e.g. ``model.named_modules()``, until :meth:`unwatch`.

        Hooks run in registration order, so a caller that hooks a module itself before
        (after) calling this sees it before it is pushed (after it is popped).

        With ``shared``, the modules are watched through two hooks common to all modules
        (``torch.nn.modules.module.register_module_forward_pre_hook`` and
        ``register_module_forward_hook``), registered once for this tracer, rather than
        two hooks per module: registering and removing those cost about as much as a
        small network's forward pass. Torch runs the common hooks before a module's own,
        so a caller that must see a module before it is pushed watches that one without
        ``shared``. They see only the thread that first watched (another thread running
        the same modules is not traced). A module is watched once, under its first path.
        A module that has hooks of its own is hooked as without ``shared``, after them.
        """
        if not shared:
            for path, module in modules:
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(path)))
                self._handles.append(module.register_forward_hook(self._post_hook, with_kwargs=True, always_call=True))
            return
        for path, module in modules:
            if module._forward_pre_hooks or module._forward_hooks:
                # A module with hooks of its own: they keep running before this tracer's
                # (a pre-hook that rewrites the input is seen as ops before the module).
                self.watch([(path, module)])
            else:
                self._shared.setdefault(id(module), (path, module))
        if self._thread is None:
            self._thread = threading.get_ident()
            self._handles.append(register_module_forward_pre_hook(self._shared_pre_hook))
            post = register_module_forward_hook(self._shared_post_hook, with_kwargs=True, always_call=True)
            self._handles.append(post)
            # torch's handle does not remove a common hook's entry in this table.
            self._handles.append(_KwargsEntry(post.id))

    def unwatch(self) -> None:
        """Remove every hook :meth:`watch` put."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._shared, self._thread = [], {}, None

    @contextlib.contextmanager
    def watching(self, modules: Iterable[tuple[str, nn.Module]], shared: bool = False) -> Iterator["ModuleTracer"]:
        """:meth:`watch` inside the block, :meth:`unwatch` after it."""
        self.watch(modules, shared)
        try:
            yield self
        finally:
            self.unwatch()

    def entered(self, path: str, module: nn.Module, args: tuple) -> None:
        """Called when a watched module's forward starts, after it is pushed."""

    def left(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        """Called when a watched module's forward ends (``output`` is None if it raised), before it is popped."""

    def _pre_hook(self, path: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            self.stack.append((path, module))
            self.entered(path, module, args)

        return hook

    def _post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        try:
            self.left(module, args, kwargs, output)
        finally:
            if self.stack:
                self.stack.pop()

    # The common hooks run for every module call of the pass: the thread is read by a
    # module-level name and the post hook does _post_hook's work without a call of its own.
    def _shared_pre_hook(self, module: nn.Module, args: tuple) -> None:
        entry = self._shared.get(id(module))
        if entry is not None and get_ident() == self._thread:
            self.stack.append(entry)
            self.entered(entry[0], module, args)

    def _shared_post_hook(self, module: nn.Module, args: tuple, *rest: Any) -> None:
        # (kwargs, output); torch passes (output,) alone when the forward raised.
        if id(module) in self._shared and get_ident() == self._thread:
            try:
                self.left(module, args, rest[0] if len(rest) == 2 else {}, rest[-1])
            finally:
                if self.stack:
                    self.stack.pop()

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        return func(*args, **(kwargs or {}))


class _KwargsEntry:
    """Removes a common forward hook's entry from torch's table of hooks that take keyword
    arguments, which the hook's own handle leaves behind (one entry per capture would pile up)."""

    def __init__(self, hook_id: int) -> None:
        self.hook_id = hook_id

    def remove(self) -> None:
        _global_forward_hooks_with_kwargs.pop(self.hook_id, None)


# The ReLU-type modules whose gradients guided backprop rectifies.
GUIDED_MODULES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)

# Functions that compute a ReLU (or ReLU6). nn.ReLU and nn.ReLU6 call some of them inside
# their own forward; anywhere else they are functional ReLUs that no module hook sees.
_RELU_FUNCTIONS = {
    F.relu: "torch.nn.functional.relu",
    torch.relu: "torch.relu",
    torch.relu_: "torch.relu_",
    torch.Tensor.relu: "Tensor.relu",
    torch.Tensor.relu_: "Tensor.relu_",
    F.relu6: "torch.nn.functional.relu6",
    torch._C._nn.relu6: "torch._C._nn.relu6",
}
_HARDTANH = {F.hardtanh: "torch.nn.functional.hardtanh", F.hardtanh_: "torch.nn.functional.hardtanh_"}


def _hardtanh_min(args: tuple, kwargs: dict) -> float:
    if len(args) > 1:
        return float(args[1])
    return float(kwargs.get("min_val", -1.0))


@dataclass
class FunctionalReLU:
    """A ReLU computed by a function inside ``module``'s forward rather than by a ReLU module."""

    module: str  # qualified name in the model, '' for the model itself
    kind: str  # the module's class name
    function: str


@dataclass
class Trace:
    """What one forward pass of a model did."""

    output: torch.Tensor
    names: dict[nn.Module, str]
    calls: dict[nn.Module, int] = field(default_factory=dict)
    order: list[nn.Module] = field(default_factory=list)
    output_shapes: dict[nn.Module, tuple[int, ...] | None] = field(default_factory=dict)
    functional_relus: list[FunctionalReLU] = field(default_factory=list)

    def name(self, module: nn.Module) -> str:
        return self.names.get(module, "")

    def describe(self, module: nn.Module) -> str:
        name = self.name(module)
        return f"module {name!r} ({type(module).__name__})" if name else f"the model's own forward ({type(module).__name__})"


class _Tracer(ModuleTracer):
    """Counts module calls and output shapes; as a mode, finds ReLUs computed outside ReLU modules."""

    def __init__(self, result: Trace) -> None:
        super().__init__()
        self.result = result

    def entered(self, path: str, module: nn.Module, args: tuple) -> None:
        if module not in self.result.calls:
            self.result.order.append(module)
        self.result.calls[module] = self.result.calls.get(module, 0) + 1

    def left(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self.result.output_shapes[module] = tuple(output.shape) if isinstance(output, torch.Tensor) else None

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        label = _RELU_FUNCTIONS.get(func)
        if label is None and func in _HARDTANH and _hardtanh_min(args, kwargs) == 0.0:
            label = _HARDTANH[func]
        if label is not None and self.stack and not isinstance(self.module, GUIDED_MODULES):
            found = FunctionalReLU(self.path, type(self.module).__name__, label)
            if found not in self.result.functional_relus:
                self.result.functional_relus.append(found)
        return func(*args, **kwargs)


def trace(model: nn.Module, inputs: torch.Tensor, watch_relus: bool = False) -> Trace:
    """Run ``model(inputs)`` once without grad and record what ran.

    Parameters
    ----------
    model : torch.nn.Module
    inputs : torch.Tensor
        A batch.
    watch_relus : bool, default False
        Also record ReLUs computed by functions outside ReLU modules (slower: every torch
        call of the pass goes through a Python mode).

    Returns
    -------
    Trace
    """
    with torch.no_grad(), tracing(model, watch_relus=watch_relus) as result:
        result.output = model(inputs)
    return result


@contextlib.contextmanager
def tracing(model: nn.Module, modules: Iterable[nn.Module] | None = None,
            watch_relus: bool = False) -> Iterator[Trace]:
    """Record what ``model``'s forward passes inside the block run, as :func:`trace` does
    for a pass of its own: a caller that runs the model anyway (with grad, inside another
    library) records it without a second pass.

    Parameters
    ----------
    model : torch.nn.Module
    modules : iterable of torch.nn.Module, optional
        Count calls and output shapes of these submodules only (a hook on each, so fewer
        cost less); by default of every module of ``model``.
    watch_relus : bool, default False
        Also record ReLUs computed by functions outside ReLU modules. Telling which module
        computed one needs every module watched, so ``modules`` must be None.

    Yields
    ------
    Trace
        Filled as the block runs; its ``output`` is left to the caller (an empty tensor).

    Raises
    ------
    ValueError
        If ``modules`` is given with ``watch_relus``.
    """
    if watch_relus and modules is not None:
        raise ValueError("nsp.common.tracer.tracing: watch_relus needs every module watched; pass modules=None")
    named = list(model.named_modules())
    result = Trace(output=torch.empty(0), names={m: n for n, m in named})
    watched = named if modules is None else [(result.name(m), m) for m in modules]
    tracer = _Tracer(result)
    with tracer.watching(watched), tracer if watch_relus else contextlib.nullcontext():
        yield result
