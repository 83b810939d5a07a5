"""Occlusion (Zeiler and Fergus, 2014): how the target output changes when a window of
the input is replaced by a baseline."""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from nsp.attribution.base import Attribution
from nsp.common.tracer import Trace

__all__ = ["Occlusion"]


class Occlusion(Attribution):
    """``f(x) - f(x with a window set to the baseline)``, averaged over the windows that
    cover each input element, as captum's ``Occlusion`` computes it (windows span every
    channel; the last window along an axis is cut at the input's edge).

    The unoccluded inputs are evaluated in the same forward pass as each batch of occluded
    copies, so an input and a copy whose differences the model ignores go through the same
    kernels with the same batch: a window the model does not read gets exactly 0. (captum
    evaluates the inputs in a pass of their own, whose batch size differs, and a BLAS may
    round the two differently: 3e-8 instead of 0 on an AVX-512 CPU.)

    Options
    -------
    window : int or tuple of int, default 8
        The window's size along each spatial axis (the axes after ``(N, C)``; for inputs
        ``(N, F)`` the feature axis).
    stride : int or tuple of int, optional
        The step between windows; by default half the window (at least 1), 4 for the
        default window. At most the window, so that every element is covered.
    baseline : float, default 0.0
    batch_size : int, default 64
        Occluded copies of each input per forward pass.
    """

    name = "occlusion"
    # The copies are made here, not by captum: one input tensor, no extra arguments
    # ('feature_ablation' takes both).
    tuple_inputs = False
    forward_args = False

    def _prepare(self, traced: Trace, inputs: torch.Tensor, options: dict[str, Any]) -> None:
        spatial = _spatial(inputs)
        windows = _per_axis(options.get("window", 8), len(spatial), "window", self._where)
        if any(w > s for w, s in zip(windows, spatial)):
            raise ValueError(f"{self._where}: window {windows} is larger than the input's spatial shape {spatial}")
        strides = _strides(options.get("stride"), windows, self._where)
        if any(s > w for s, w in zip(strides, windows)):
            raise ValueError(f"{self._where}: stride {strides} is larger than the window {windows}, which would "
                             f"leave elements between windows unexplained; use a stride <= the window")
        batch_size = options.get("batch_size", 64)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"{self._where}: expected batch_size to be an int >= 1, got {batch_size!r}")
        if not isinstance(options.get("baseline", 0.0), (int, float)) or not math.isfinite(options.get("baseline", 0.0)):
            raise ValueError(f"{self._where}: expected baseline to be a finite number, got {options['baseline']!r}")

    def _attribute(self, inputs: torch.Tensor, target: torch.Tensor | None, *, window: int | tuple[int, ...] = 8,
                   stride: int | tuple[int, ...] | None = None, baseline: float = 0.0,
                   batch_size: int = 64) -> torch.Tensor:
        spatial = _spatial(inputs)
        lead = inputs.dim() - len(spatial)
        windows = _per_axis(window, len(spatial), "window", self._where)
        strides = _strides(stride, windows, self._where)
        starts = [range(0, s * (math.ceil((size - w) / s) + 1), s) for size, w, s in zip(spatial, windows, strides)]
        regions = [tuple(slice(p, min(p + w, size)) for p, w, size in zip(pos, windows, spatial))
                   for pos in itertools.product(*starts)]
        n = inputs.shape[0]
        x = inputs.detach()
        total = torch.zeros_like(x)
        counts = torch.zeros(spatial, dtype=x.dtype, device=x.device)
        keep = (slice(None),) * lead
        with torch.no_grad():
            for begin in range(0, len(regions), batch_size):
                chunk = regions[begin:begin + batch_size]
                copies = x.unsqueeze(0).repeat(len(chunk), *([1] * x.dim()))
                for j, region in enumerate(chunk):
                    copies[(j, *keep, *region)] = baseline
                out = self.model(torch.cat([x, copies.flatten(0, 1)]))
                values = out if target is None else out.gather(1, target.repeat(len(chunk) + 1).unsqueeze(1)).squeeze(1)
                values = values.reshape(len(chunk) + 1, n)
                deltas = (values[0] - values[1:]).to(x.dtype)
                for j, region in enumerate(chunk):
                    total[(*keep, *region)] += deltas[j].reshape(n, *([1] * (x.dim() - 1)))
                    counts[region] += 1
        return total / counts


def _spatial(inputs: torch.Tensor) -> tuple[int, ...]:
    return tuple(inputs.shape[2:]) if inputs.dim() > 2 else tuple(inputs.shape[1:])


def _strides(stride: Any, windows: tuple[int, ...], where: str) -> tuple[int, ...]:
    if stride is None:
        return tuple(max(1, w // 2) for w in windows)
    return _per_axis(stride, len(windows), "stride", where)


def _per_axis(value: Any, axes: int, argname: str, where: str) -> tuple[int, ...]:
    values = (value,) * axes if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(values, tuple) or len(values) != axes
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)):
        raise ValueError(f"{where}: expected {argname} to be an int >= 1 or a tuple of {axes} of them, got {value!r}")
    return values
