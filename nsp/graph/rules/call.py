"""One recorded call as a rule sees it, and the error a rule raises when it cannot analyse it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nsp.common.tracer import map_leaves, tensors_in
from nsp.graph.relations import StructureError

__all__ = ["Call", "UnsupportedModuleError", "unsupported"]


class UnsupportedModuleError(StructureError):
    """A module or operation whose input-to-output dependence nsp cannot derive."""


def unsupported(path: str, what: str, why: str = "") -> UnsupportedModuleError:
    """The error for an operation ``what`` at module path ``path`` that nsp cannot analyse, and ``why``."""
    reason = f": {why}" if why else ""
    return UnsupportedModuleError(
        f"nsp.NNGraph: cannot analyse '{path}' ({what}){reason}. "
        "Register a rule with nsp.rules.register_rule, or see README 'Supported operations'."
    )


@dataclass
class Call:
    """One recorded call of a module or function, as a rule sees it.

    Attributes
    ----------
    target : nn.Module or callable
        The module (for a module rule) or the function or tensor method.
    args, kwargs
        The call's arguments. Tensors derived from the network's input are the values
        they had in the recorded pass (``INCL=False``), or tensors on the ``meta`` device
        with their shape (``INCL=True``); every other argument is as it was.
    inputs : list of torch.Tensor
        The tensors derived from the network's input, each once, in order of first
        appearance. A rule returns one relation per input, in this order.
    output : torch.Tensor
        The output this call is about (with several outputs: number ``item``), a value or
        a meta tensor as for the inputs. Shapes include the batch dimension of 1; relations
        leave it out.
    item : int
        Which of several tensor outputs (0 for the first or only one).
    path, name : str
        The module path and the operation's name (a function's ``__name__``, a module's class).
    label : str
        How messages name the call (``'mul in SqueezeExcitation'``).
    values : bool
        Whether ``args``/``inputs``/``output`` hold the recorded values (``INCL=False``).
    """

    target: Any
    args: tuple
    kwargs: dict
    inputs: list[torch.Tensor]
    output: torch.Tensor
    path: str
    name: str
    item: int = 0
    values: bool = False
    label: str = ""

    def unsupported(self, why: str = "") -> UnsupportedModuleError:
        return unsupported(self.path, self.label or self.name, why)

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """Argument ``index`` if given positionally, else keyword ``name``, else ``default``."""
        if len(self.args) > index:
            return self.args[index]
        return self.kwargs.get(name, default)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.output.shape[1:])

    def in_shape(self, j: int = 0) -> tuple[int, ...]:
        return tuple(self.inputs[j].shape[1:])

    def run(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The call again with ``inputs`` in place of the recorded inputs; output ``item``."""
        return self.run_all(*inputs)[self.item]

    def run_all(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """The call again with ``inputs`` in place of the recorded inputs; every tensor output, in order."""
        swap = {id(a): b for a, b in zip(self.inputs, inputs)}
        sub = lambda v: swap.get(id(v), v) if isinstance(v, torch.Tensor) else v  # noqa: E731
        out = self.target(*map_leaves(sub, self.args), **map_leaves(sub, self.kwargs))
        if isinstance(out, torch.Tensor):
            return [out]
        return tensors_in(out)
