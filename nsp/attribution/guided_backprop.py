"""Guided backpropagation (Springenberg et al., 2015): the gradient with negative
gradients set to zero at every ReLU.

captum's ``GuidedBackprop`` rectifies the gradient that arrives at each ``nn.ReLU``
module's *input* tensor. That tensor's gradient also collects every other use of the
tensor (a skip connection taken before the ReLU), and ``nn.ReLU6`` (MobileNetV2) is not
rectified at all. Here captum's class keeps its target and input handling, and the
rectification moves to each call's *output*: a forward hook on every ``nn.ReLU`` and
``nn.ReLU6`` wraps the output in an identity whose backward keeps the positive part.
Each call of a reused module gets its own node, and in-place ReLUs need nothing special.
ReLUs computed by functions (``F.relu`` in a ``forward``) cannot be hooked; the
attribution refuses them and names the module (see :mod:`nsp.common.tracer`).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from nsp.attribution.backend import captum_attr
from nsp.common.tracer import GUIDED_MODULES
from nsp.attribution.base import Attribution, Inputs

__all__ = ["GuidedBackprop"]


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; the backward passes only the positive part of the gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad.clamp(min=0)


def _rectify_output_gradient(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return _PositiveGradient.apply(output)


@functools.lru_cache(maxsize=1)
def captum_guided_backprop() -> type:
    """captum's ``GuidedBackprop`` with the hooks described in the module docstring."""
    captum = captum_attr("nsp.attribution.GuidedBackprop")

    class _GuidedBackprop(captum.GuidedBackprop):
        def _register_hooks(self, module: nn.Module) -> None:
            if isinstance(module, GUIDED_MODULES):
                self.backward_hooks.append(module.register_forward_hook(_rectify_output_gradient))

    return _GuidedBackprop


class GuidedBackprop(Attribution):
    """Guided backpropagation through every ``nn.ReLU`` and ``nn.ReLU6`` module.

    At each ReLU the gradient is masked by the forward pass (as the true gradient is) and
    by its own sign: only positive gradients flow back. Other activations pass the true
    gradient, as in captum.

    Raises
    ------
    ValueError
        (from :meth:`attribute`) If a ReLU is computed by a function outside a ReLU
        module (``F.relu``, ``torch.relu``, ``x.relu()``, ``F.relu6``): the message names the
        module whose forward calls it.
    """

    name = "guided_backprop"
    guided = True
    one_pass = True

    def _attribute(self, inputs: Inputs, target: torch.Tensor | None) -> Inputs:
        return captum_guided_backprop()(self._explained).attribute(
            inputs, target=target, additional_forward_args=self._forward_args)
