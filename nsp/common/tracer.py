"""One instrumented forward pass: what ran, how often, and which ReLUs no module hook can see.

captum's layer methods hook one module and expect it to run once; guided backprop can only
modify ReLUs that are modules. A forward pass under module hooks and a
:class:`torch.overrides.TorchFunctionMode` tells both, and gives the model's output (for
the default target) at the cost of one forward pass without grad.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

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


class _ReLUWatcher(TorchFunctionMode):
    def __init__(self, stack: list[nn.Module], trace: Trace) -> None:
        super().__init__()
        self.stack, self.trace = stack, trace

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        label = _RELU_FUNCTIONS.get(func)
        if label is None and func in _HARDTANH and _hardtanh_min(args, kwargs) == 0.0:
            label = _HARDTANH[func]
        if label is not None and self.stack and not isinstance(self.stack[-1], GUIDED_MODULES):
            module = self.stack[-1]
            found = FunctionalReLU(self.trace.name(module), type(module).__name__, label)
            if found not in self.trace.functional_relus:
                self.trace.functional_relus.append(found)
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
    names = {m: n for n, m in model.named_modules()}
    result = Trace(output=torch.empty(0), names=names)
    stack: list[nn.Module] = []

    def pre_hook(module: nn.Module, _inputs) -> None:
        stack.append(module)
        if module not in result.calls:
            result.order.append(module)
        result.calls[module] = result.calls.get(module, 0) + 1

    def post_hook(module: nn.Module, _inputs, output) -> None:
        stack.pop()
        result.output_shapes[module] = tuple(output.shape) if isinstance(output, torch.Tensor) else None

    handles = []
    try:
        for module in names:
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
        with torch.no_grad():
            if watch_relus:
                with _ReLUWatcher(stack, result):
                    output = model(inputs)
            else:
                output = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    result.output = output
    return result
