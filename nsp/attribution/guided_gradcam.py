"""Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map."""

from __future__ import annotations

from typing import Any

import torch

from nsp.attribution.backend import captum_attr
from nsp.common.tracer import Trace
from nsp.attribution.base import LayerAttribution
from nsp.attribution.guided_backprop import captum_guided_backprop

__all__ = ["GuidedGradCam"]


class GuidedGradCam(LayerAttribution):
    """Guided Grad-CAM (captum's ``GuidedGradCam``, with the guided backprop of
    :class:`~nsp.attribution.GuidedBackprop`): shaped like the input.

    Options
    -------
    interpolate : str, default 'nearest'
        How the Grad-CAM map is brought to the input's shape (captum's default).
    """

    name = "guided_gradcam"
    guided = True
    one_pass = True
    tuple_inputs = False

    def _prepare(self, traced: Trace, inputs: torch.Tensor, options: dict[str, Any]) -> None:
        super()._prepare(traced, inputs, options)
        shape = traced.output_shapes[self.layer]
        if len(shape) != inputs.dim():
            raise ValueError(f"{self._where}: layer {traced.describe(self.layer)} has output shape {shape}; guided "
                             f"Grad-CAM needs a layer with the inputs' spatial dimensions ({tuple(inputs.shape)})")

    def _attribute(self, inputs: torch.Tensor, target: torch.Tensor | None, *,
                   interpolate: str = "nearest") -> torch.Tensor:
        captum = captum_attr(self._where)
        method = captum.GuidedGradCam(self._explained, self.layer)
        method.guided_backprop = captum_guided_backprop()(self._explained)
        return method.attribute(inputs, target=target, interpolate_mode=interpolate,
                                additional_forward_args=self._forward_args)
