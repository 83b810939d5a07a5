"""Integrated gradients (Sundararajan et al., 2017)."""

from __future__ import annotations

import torch

from nsp.attribution.backend import captum_attr
from nsp.attribution.base import Attribution

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
        A number, or a tensor broadcastable to the batch.
    steps : int, default 50
    quadrature : str, default 'gausslegendre'
        captum's ``method``: 'gausslegendre', 'riemann_left', 'riemann_right',
        'riemann_middle' or 'riemann_trapezoid'.
    batch_size : int, optional
        Inputs per forward pass across all steps; by default ``max(N, 128)``.
    """

    name = "integrated_gradients"

    def _attribute(self, inputs: torch.Tensor, target: torch.Tensor | None, *,
                   baseline: float | torch.Tensor = 0.0, steps: int = 50, quadrature: str = "gausslegendre",
                   batch_size: int | None = None) -> torch.Tensor:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{self._where}: expected steps to be an int >= 1, got {steps!r}")
        methods = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
        if quadrature not in methods:
            raise ValueError(f"{self._where}: unknown quadrature={quadrature!r}; expected one of {', '.join(methods)}")
        if isinstance(baseline, torch.Tensor):
            try:
                baseline = torch.broadcast_to(baseline.to(inputs), inputs.shape)
            except RuntimeError as err:
                raise ValueError(f"{self._where}: baseline of shape {tuple(baseline.shape)} does not broadcast "
                                 f"to the inputs' shape {tuple(inputs.shape)}") from err
        elif not isinstance(baseline, (int, float)) or isinstance(baseline, bool):
            raise TypeError(f"{self._where}: expected baseline to be a number or a tensor, got {baseline!r}")
        captum = captum_attr(self._where)
        return captum.IntegratedGradients(self.model).attribute(
            inputs, baselines=baseline, target=target, n_steps=steps, method=quadrature,
            internal_batch_size=batch_size or max(inputs.shape[0], 128))
