"""Integrated gradients (Sundararajan et al., 2017)."""

from __future__ import annotations

from typing import Any

import torch

from nsp.attribution.backend import captum_attr
from nsp.attribution.base import Attribution, Inputs

__all__ = ["IntegratedGradients"]


class IntegratedGradients(Attribution):
    """``(x - baseline) * mean gradient`` along the straight path from the baseline to
    ``x`` (captum's ``IntegratedGradients``).

    Completeness: the attributions of an input sum to ``f(x) - f(baseline)`` up to the
    quadrature error, which shrinks with ``steps``. On ReLU networks the integrand has
    kinks, so Gauss-Legendre converges slowly: see the README for the error measured on
    a ResNet.

    Options
    -------
    baseline : float or torch.Tensor, default 0.0
        A number, or a tensor broadcastable to the batch; for tuple inputs, one for all
        or a tuple of one per input tensor.
    steps : int, default 50
    quadrature : str, default 'gausslegendre'
        captum's ``method``: 'gausslegendre', 'riemann_left', 'riemann_right',
        'riemann_middle' or 'riemann_trapezoid'.
    batch_size : int, optional
        Inputs per forward pass across all steps; by default ``max(N, 128)``.
    """

    name = "integrated_gradients"

    def _attribute(self, inputs: Inputs, target: torch.Tensor | None, *,
                   baseline: float | torch.Tensor | tuple = 0.0, steps: int = 50, quadrature: str = "gausslegendre",
                   batch_size: int | None = None) -> Inputs:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{self._where}: expected steps to be an int >= 1, got {steps!r}")
        methods = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
        if quadrature not in methods:
            raise ValueError(f"{self._where}: unknown quadrature={quadrature!r}; expected one of {', '.join(methods)}")
        parts = inputs if isinstance(inputs, tuple) else (inputs,)
        if isinstance(inputs, tuple):
            if not isinstance(baseline, tuple):
                baseline = (baseline,) * len(parts)
            if len(baseline) != len(parts):
                raise ValueError(f"{self._where}: expected one baseline per input tensor ({len(parts)}), "
                                 f"got {len(baseline)}")
            baselines = tuple(self._baseline(b, p) for b, p in zip(baseline, parts))
        else:
            baselines = self._baseline(baseline, inputs)
        captum = captum_attr(self._where)
        return captum.IntegratedGradients(self.model).attribute(
            inputs, baselines=baselines, target=target, n_steps=steps, method=quadrature,
            additional_forward_args=self._forward_args,
            internal_batch_size=batch_size or max(parts[0].shape[0], 128))

    def _baseline(self, baseline: Any, inputs: torch.Tensor) -> float | torch.Tensor:
        """One input tensor's baseline: a number, or a tensor broadcast to the tensor's shape."""
        if isinstance(baseline, torch.Tensor):
            try:
                return torch.broadcast_to(baseline.to(inputs), inputs.shape)
            except RuntimeError as err:
                raise ValueError(f"{self._where}: baseline of shape {tuple(baseline.shape)} does not broadcast "
                                 f"to the inputs' shape {tuple(inputs.shape)}") from err
        if not isinstance(baseline, (int, float)) or isinstance(baseline, bool):
            raise TypeError(f"{self._where}: expected baseline to be a number or a tensor, got {baseline!r}")
        return baseline
