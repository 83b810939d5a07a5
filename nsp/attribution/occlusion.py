"""Occlusion (Zeiler and Fergus, 2014): how the target output changes when a window of
the input is replaced by a baseline."""

from __future__ import annotations

from typing import Any

import torch

from nsp.attribution.backend import captum_attr
from nsp.common.tracer import Trace
from nsp.attribution.base import Attribution

__all__ = ["Occlusion"]


class Occlusion(Attribution):
    """``f(x) - f(x with a window set to the baseline)``, averaged over the windows that
    cover each input element (captum's ``Occlusion``). Windows span every channel.

    Options
    -------
    window : int or tuple of int, default 8
        The window's size along each spatial axis (the axes after ``(N, C)``; for inputs
        ``(N, F)`` the feature axis).
    stride : int or tuple of int, default 4
    baseline : float, default 0.0
    batch_size : int, default 64
        Occluded copies per forward pass.
    """

    name = "occlusion"

    def _prepare(self, traced: Trace, inputs: torch.Tensor, options: dict[str, Any]) -> None:
        spatial = _spatial(inputs)
        for key, default in (("window", 8), ("stride", 4)):
            sizes = _per_axis(options.get(key, default), len(spatial), key, self._where)
            if key == "window" and any(w > s for w, s in zip(sizes, spatial)):
                raise ValueError(f"{self._where}: window {sizes} is larger than the input's spatial shape {spatial}")

    def _attribute(self, inputs: torch.Tensor, target: torch.Tensor | None, *, window: int | tuple[int, ...] = 8,
                   stride: int | tuple[int, ...] = 4, baseline: float = 0.0, batch_size: int = 64) -> torch.Tensor:
        spatial = _spatial(inputs)
        leading = tuple(inputs.shape[1: inputs.dim() - len(spatial)])
        windows = leading + _per_axis(window, len(spatial), "window", self._where)
        strides = tuple(1 for _ in leading) + _per_axis(stride, len(spatial), "stride", self._where)
        captum = captum_attr(self._where)
        return captum.Occlusion(self.model).attribute(
            inputs, sliding_window_shapes=windows, strides=strides, baselines=baseline, target=target,
            perturbations_per_eval=batch_size)


def _spatial(inputs: torch.Tensor) -> tuple[int, ...]:
    return tuple(inputs.shape[2:]) if inputs.dim() > 2 else tuple(inputs.shape[1:])


def _per_axis(value: Any, axes: int, argname: str, where: str) -> tuple[int, ...]:
    values = (value,) * axes if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(values, tuple) or len(values) != axes
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)):
        raise ValueError(f"{where}: expected {argname} to be an int >= 1 or a tuple of {axes} of them, got {value!r}")
    return values
