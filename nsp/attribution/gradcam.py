"""Grad-CAM (Selvaraju et al., 2017) for a layer, or for chosen features (channels) of it."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from nsp.attribution.backend import captum_attr
from nsp.common.tracer import Trace
from nsp.attribution.base import LayerAttribution

__all__ = ["GradCam"]

_MODES = ("nearest", "bilinear", "bicubic", "area", "linear", "trilinear")


class GradCam(LayerAttribution):
    """Grad-CAM: the layer's channels weighted by their spatially averaged gradients,
    summed and rectified (captum's ``LayerGradCam``).

    The result has one channel and the layer's spatial shape, ``(N, 1, h, w)``, or the
    input's with ``upsample``.

    Options
    -------
    upsample : bool or str, default False
        Interpolate the map to the input's spatial shape: True for 'linear', 'bilinear' or
        'trilinear' (by the layer's 1, 2 or 3 spatial dimensions), or a mode of
        ``torch.nn.functional.interpolate`` that takes them ('nearest', 'bicubic', ...).
    channels : int or sequence of int, optional
        Grad-CAM for these features of the layer only: the weighted maps of these
        channels are summed before the ReLU. By default every channel.
    relu : bool, default True
        Rectify the weighted sum (Grad-CAM's definition); False keeps negative evidence.
    """

    name = "gradcam"
    one_pass = True
    tuple_inputs = False

    def _prepare(self, traced: Trace, inputs: torch.Tensor, options: dict[str, Any]) -> None:
        super()._prepare(traced, inputs, options)
        shape = traced.output_shapes[self.layer]
        channels = options.get("channels")
        if channels is not None:
            values = [channels] if isinstance(channels, int) else channels
            ok = isinstance(values, Sequence) and values and all(
                isinstance(c, int) and not isinstance(c, bool) for c in values)
            if not ok:
                raise TypeError(f"{self._where}: expected channels to be an int or a non-empty sequence of int, "
                                f"got {channels!r}")
            bad = [c for c in values if not 0 <= c < shape[1]]
            if bad:
                raise ValueError(f"{self._where}: channel {bad[0]} is out of range for layer "
                                 f"{traced.describe(self.layer)} with {shape[1]} channels")
        upsample = options.get("upsample", False)
        _upsample_mode(upsample, len(shape) - 2, self._where)
        if upsample is not False and len(shape) != inputs.dim():
            raise ValueError(f"{self._where}: cannot upsample layer {traced.describe(self.layer)} of shape {shape} "
                             f"to inputs of shape {tuple(inputs.shape)}: they differ in spatial dimensions")

    def _attribute(self, inputs: torch.Tensor, target: torch.Tensor | None, *, upsample: bool | str = False,
                   channels: int | Sequence[int] | None = None, relu: bool = True) -> torch.Tensor:
        mode = _upsample_mode(upsample, inputs.dim() - 2, self._where)
        captum = captum_attr(self._where)
        cam = captum.LayerGradCam(self._explained, self.layer)
        if channels is None:
            maps = cam.attribute(inputs, target=target, relu_attributions=relu,
                                additional_forward_args=self._forward_args)
        else:
            index = [channels] if isinstance(channels, int) else list(channels)
            per_channel = cam.attribute(inputs, target=target, relu_attributions=False, attr_dim_summation=False,
                                        additional_forward_args=self._forward_args)
            maps = per_channel[:, index].sum(dim=1, keepdim=True)
            if relu:
                maps = F.relu(maps)
        if mode is not None:
            maps = captum.LayerAttribution.interpolate(maps, tuple(inputs.shape[2:]), interpolate_mode=mode)
        return maps


# The interpolation modes that take maps of each number of spatial dimensions.
_MODE_DIMS = {"nearest": (1, 2, 3), "area": (1, 2, 3), "linear": (1,), "bilinear": (2,), "bicubic": (2,),
              "trilinear": (3,)}
_DEFAULT_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _upsample_mode(upsample: bool | str, dims: int, where: str) -> str | None:
    """The interpolation mode for ``upsample`` on maps with ``dims`` spatial dimensions."""
    if upsample is False:
        return None
    if upsample is True:
        if dims not in _DEFAULT_MODE:
            raise ValueError(f"{where}: cannot upsample maps with {dims} spatial dimensions; pass upsample=False")
        return _DEFAULT_MODE[dims]
    if upsample not in _MODES:
        raise ValueError(f"{where}: expected upsample to be a bool or one of {', '.join(_MODES)}, got {upsample!r}")
    if dims not in _MODE_DIMS[upsample]:
        fits = [m for m, d in _MODE_DIMS.items() if dims in d]
        raise ValueError(f"{where}: upsample={upsample!r} interpolates maps with {_MODE_DIMS[upsample][0]} spatial "
                         f"dimension(s), but this layer's have {dims}; use True or one of {', '.join(fits)}")
    return upsample
