"""The executed dataflow of one top-level child, recorded during the probe's forward pass.

A :class:`Recorder` sees every torch function and tensor method run on data derived from
a child's input (through the torch-function mode of :class:`nsp.common.tracer.ModuleTracer`)
and every module that has a rule (through forward hooks), and writes them down as a
:class:`Program` of :class:`Op` s whose tensor arguments are :class:`Ref` s to earlier
outputs. :mod:`nsp.graph.capture` runs it; :mod:`nsp.graph.structure` composes the
relations along the programs it records.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from nsp.common.tracer import ModuleTracer, map_leaves, tensors_in

__all__ = ["Op", "Program", "Recorder", "Ref", "first_tensor", "version_counter"]


def first_tensor(value: Any) -> Any:
    """``value`` if it is a tensor, else its first tensor (a module returning a tuple gives its first output)."""
    if isinstance(value, torch.Tensor):
        return value
    found = tensors_in(value)
    return found[0] if found else value


@dataclass(frozen=True)
class Ref:
    """A reference to a recorded tensor: tensor output ``item`` of op ``index`` (-1: the child's input)."""

    index: int
    item: int = 0


@dataclass
class Op:
    """One operation that ran inside a child on data derived from the child's input.

    ``path`` and ``owner`` are the qualified name and type of the innermost module it ran in.
    ``kind`` is ``'layer'`` where a chosen module's output becomes layer ``target``,
    ``'module'`` for a module that has a rule (:mod:`nsp.rules`; its internals are not
    recorded), ``'function'`` for a torch function or tensor method, or ``'refused'`` for
    an operation whose effect the dataflow cannot show (an in-place write into part of
    a tensor, a value read into Python; ``args`` is then the reason). Tensor
    arguments that came from the child's input are replaced by :class:`Ref`; other
    arguments are kept as they were. ``shapes`` are the shapes of the tensor outputs, in
    the order of :func:`nsp.common.tracer.tensors_in` (one for a tensor).
    """

    kind: str
    target: Any
    args: tuple
    kwargs: dict
    shape: tuple[int, ...]
    path: str
    owner: str
    shapes: tuple[tuple[int, ...], ...] = ()

    @property
    def name(self) -> str:
        if self.kind == "module":
            return type(self.target).__name__
        if isinstance(self.target, str):
            return self.target
        return getattr(self.target, "__name__", repr(self.target))


@dataclass
class Program:
    """The dataflow from a child's input to its output, as executed during the probe's pass."""

    input_shape: tuple[int, ...]
    ops: list[Op] = field(default_factory=list)
    output: Ref | None = None


class Recorder(ModuleTracer):
    """Records, for each top-level child, the operations on data derived from its input.

    Modules for which ``is_leaf`` is true are recorded whole, through forward hooks;
    everything else is seen op by op through the torch-function mode. This is the
    executed dataflow (control flow already resolved), recorded during the probe's own
    forward pass, so no extra pass or symbolic trace is needed.
    """

    def __init__(self, is_leaf: Callable[[nn.Module], bool]) -> None:
        super().__init__()
        self.is_leaf = is_leaf
        self.program: Program | None = None
        self.ids: dict[int, Ref] = {}
        # The version counter of every recorded tensor when it was recorded: a later
        # in-place write (through a view, or by item assignment) changes it.
        self.versions: dict[int, int | None] = {}
        self.alive: list[torch.Tensor] = []
        self.inside: nn.Module | None = None
        self.leaf: tuple[str, str] = ("", "")
        self._stepped_off = False

    def begin(self, x: torch.Tensor) -> None:
        self.program = Program(tuple(x.shape))
        self.ids = {id(x): Ref(-1)}
        self.versions = {id(x): version_counter(x)}
        self.alive = [x]

    def end(self, output: Any) -> Program:
        program = self.program
        program.output = self.ids.get(id(first_tensor(output)))
        if output is not None and self._stale(first_tensor(output)):
            self.refuse("output", "its output was modified in place after it was computed (item assignment, "
                        "or an in-place operation on a view of it)")
        self.program, self.ids, self.versions, self.alive = None, {}, {}, []
        return program

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Do not record the ops run inside (nsp's own copies in hooks).

        Where this mode is the innermost one it steps off the stack for the block, so that
        the block's torch calls and attribute reads (a layer's ``.shape``, its copy) do not
        pass through it at all: a tensor subclass's own ``__torch_function__`` still runs.
        """
        saved, self.inside = self.inside, self
        stepped_off = torch.overrides._get_current_function_mode() is self
        if stepped_off:
            self.__exit__(None, None, None)
        try:
            yield
        finally:
            if stepped_off:
                self.__enter__()
            self.inside = saved

    def where(self) -> tuple[str, str]:
        """``(path, owner)`` of the innermost running module, or of the module recorded whole that runs."""
        if isinstance(self.inside, nn.Module):
            return self.leaf
        return (self.path, type(self.module).__name__) if self.stack else ("", "")

    def mark(self, index: int, output: torch.Tensor) -> None:
        """Record that ``output`` is layer ``index``: a ``'layer'`` op that later ops read."""
        ref = self.ids.get(id(output))
        self.program.ops.append(Op("layer", index, (ref,) if ref else (), {}, tuple(output.shape), *self.where()))
        self.ids[id(output)] = Ref(len(self.program.ops) - 1)
        self.versions[id(output)] = version_counter(output)
        self.alive.append(output)

    def _record(self, kind: str, target: Any, args: tuple, kwargs: dict, out: Any) -> None:
        ids = self.ids
        if not kwargs and type(args) is tuple and all(type(a) is torch.Tensor for a in args):
            # A module called with tensors (nearly every one): no tree to walk.
            op_args, op_kwargs = tuple([ids.get(id(a), a) for a in args]), {}
        else:
            ref = lambda v: ids.get(id(v), v) if isinstance(v, torch.Tensor) else v  # noqa: E731
            op_args, op_kwargs = map_leaves(ref, args), map_leaves(ref, kwargs)
        flat_out = tensors_in(out)
        shapes = tuple([tuple(t.shape) for t in flat_out])
        ops = self.program.ops
        ops.append(Op(kind, target, op_args, op_kwargs, shapes[0] if shapes else (), *self.where(), shapes))
        index = len(ops) - 1
        for item, t in enumerate(flat_out):
            ids[id(t)] = Ref(index, item)
            self.versions[id(t)] = _unhooked_version(t)
            self.alive.append(t)

    def refuse(self, func: Any, why: str) -> None:
        """Record an operation whose effect on the dataflow nsp cannot see.

        Recording the pattern still works; building a graph from it raises
        :class:`~nsp.rules.UnsupportedModuleError` naming the operation and ``why``.
        """
        self.program.ops.append(Op("refused", func, (why,), {}, (), *self.where()))

    def _stale(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and id(t) in self.ids and self.versions.get(id(t)) != version_counter(t)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.program is None or self.inside is not None:
            return func(*args, **kwargs)
        tensors = tensors_in((args, kwargs))
        inputs = [a for a in tensors if id(a) in self.ids]
        if not inputs or getattr(func, "__name__", "") in _CONSTANT_FACTORIES:
            return func(*args, **kwargs)
        # This handler runs with the mode popped, so the version counters are read directly.
        stale = any(self.versions.get(id(a)) != _unhooked_version(a) for a in inputs)
        before = [_unhooked_version(a) for a in tensors]
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        changed = [a for a, v in zip(tensors, before) if _unhooked_version(a) != v]
        produces = bool(tensors_in(out))
        if stale and (produces or name in _VALUE_READS):
            self.refuse(func, "it reads a tensor derived from the input that was modified in place after it was "
                        "computed (item assignment, or an in-place operation on a view of it)")
        elif name in _VALUE_READS:
            self.refuse(func, "it reads values derived from the input into Python or numpy, where nsp cannot "
                        "follow them (e.g. x * float(x[0, 0, 5]), or a round trip through numpy)")
        elif changed and not (len(changed) == 1 and changed[0] is out and out._base is None and id(out) in self.ids):
            # An in-place operation on a whole tensor returns it and is recorded like any other;
            # a write into part of a tensor (y[..., 0] = v, y[:, 0] += v) or into an untracked
            # one (out=, z[...] = x) changes data the recorded dataflow does not show.
            self.refuse(func, "it writes in place into part of a tensor, or writes values derived from the "
                        "input into a tensor nsp does not track (y[:, 0] = ..., y[:, 0] += ..., out=...)")
        elif produces:
            self._record("function", func, args, kwargs, out)
        return out

    def entered(self, path: str, module: nn.Module, args: tuple) -> None:
        if self.program is not None and self.inside is None and self.is_leaf(module):
            self.inside, self.leaf = module, (path, type(module).__name__)
            # Nothing inside a module recorded whole is recorded, so this mode steps off the
            # stack while it runs: a convolution or BatchNorm paid its dispatch for nothing.
            # Only this mode: a tensor subclass's own __torch_function__ still runs.
            if torch.overrides._get_current_function_mode() is self:
                self.__exit__(None, None, None)
                self._stepped_off = True

    def left(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.program is not None and self.inside is module:
            self.inside = None
            if self._stepped_off:
                self._stepped_off = False
                self.__enter__()
            # From a hook, every tensor attribute read (the output's shape) would reach this mode.
            with torch._C.DisableTorchFunction():
                self._record("module", module, args, kwargs, output)


# Functions whose output takes only the shape, dtype and device of their tensor argument:
# a constant with respect to the input, so it is not tracked and later writes into it
# (Swin builds its shifted-window mask with x.new_zeros, then item assignment) are
# writes into a constant. Writing input-derived values into it is still refused.
_CONSTANT_FACTORIES = frozenset({
    "new_zeros", "new_ones", "new_full", "new_empty", "zeros_like", "ones_like", "full_like", "empty_like",
})

# Tensor methods that hand values to Python or numpy, where the recorder cannot follow them.
_VALUE_READS = frozenset({"__float__", "__int__", "__index__", "__complex__", "item", "tolist", "numpy", "__array__"})


def _unhooked_version(t: torch.Tensor) -> int | None:
    """``t``'s version counter where no torch-function mode is active (inside the mode's handler)."""
    try:
        return t._version
    except RuntimeError:
        return None


def version_counter(t: torch.Tensor) -> int | None:
    """``t``'s in-place version counter, read past any torch-function mode.

    Parameters
    ----------
    t : torch.Tensor

    Returns
    -------
    int or None
        The counter, which every in-place write into ``t`` or a view of it raises; None
        for an inference tensor, which has none.

    Examples
    --------
    >>> x = torch.zeros(2)
    >>> before = version_counter(x)
    >>> _ = x.add_(1)
    >>> version_counter(x) == before + 1
    True
    """
    # Read without the recorder: from a hook, the attribute access would reach its mode.
    with torch._C.DisableTorchFunction():
        try:
            return t._version
        except RuntimeError:
            return None
