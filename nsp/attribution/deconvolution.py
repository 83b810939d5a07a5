"""Deconvolution (Zeiler and Fergus, 2014): the gradient with the ReLUs' backward replaced
by a ReLU of the gradient, whatever the forward pass did.

captum's ``Deconvolution`` sets a full backward hook on each ``nn.ReLU`` module, which is
right on in-place and reused modules (torchvision's ResNet, tested) but leaves ``nn.ReLU6``
alone: on MobileNetV2 captum gives the vanilla gradient there (1.62 relative error, tested).
Here, as for guided backprop, the rule is applied to every ``nn.ReLU`` and ``nn.ReLU6``
call: a pre-hook hands the call a detached view of its input, so the module's own backward
(which masks by the forward pass) never runs, and a forward hook returns the module's output
through a function whose backward sends the positive part of the output's gradient to the
original input. Each call gets its own node; an in-place module still writes its result
into its input, so the forward values are the
model's own. ReLUs computed by functions cannot be hooked and are refused, as for guided
backprop.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from nsp.attribution.backend import captum_attr
from nsp.attribution.base import Attribution, Inputs
from nsp.common.tracer import GUIDED_MODULES

__all__ = ["Deconvolution", "captum_deconvolution"]


class _DeconvolutionGate(torch.autograd.Function):
    """Forward: the ReLU's output (computed off the graph); backward: ``relu(grad)`` to its input."""

    @staticmethod
    def forward(ctx, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return output.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad.clamp(min=0), None


def _register_deconvolution(module: nn.Module, handles: list) -> None:
    """Hooks that give each call of ``module`` (a ReLU or ReLU6) the deconvolution rule."""
    sources: list[torch.Tensor] = []

    def pre(mod: nn.Module, args: tuple) -> tuple:
        sources.append(args[0])
        return (args[0].detach(), *args[1:])

    def post(mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return _DeconvolutionGate.apply(sources.pop(), output)

    handles.append(module.register_forward_pre_hook(pre))
    handles.append(module.register_forward_hook(post))


@functools.lru_cache(maxsize=1)
def captum_deconvolution() -> type:
    """captum's ``Deconvolution`` with the hooks described in the module docstring."""
    captum = captum_attr("nsp.attribution.Deconvolution")

    class _Deconvolution(captum.Deconvolution):
        def _register_hooks(self, module: nn.Module) -> None:
            if isinstance(module, GUIDED_MODULES):
                _register_deconvolution(module, self.backward_hooks)

    return _Deconvolution


class Deconvolution(Attribution):
    """Deconvolution through every ``nn.ReLU`` and ``nn.ReLU6`` module: at each call the
    gradient passed to the ReLU's input is the positive part of the gradient at its
    output, unmasked by the forward pass (captum's rule for ``nn.ReLU``, here also for
    ``nn.ReLU6``, which captum skips).

    Raises
    ------
    ValueError
        (from :meth:`attribute`) If a ReLU is computed by a function outside a ReLU
        module: the message names the module whose forward calls it.
    """

    name = "deconvolution"
    guided = True
    one_pass = True

    def _attribute(self, inputs: Inputs, target: torch.Tensor | None) -> Inputs:
        return captum_deconvolution()(self._explained).attribute(
            inputs, target=target, additional_forward_args=self._forward_args)
