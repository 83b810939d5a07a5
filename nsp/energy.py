"""Spectral energy per layer: the sum of squared spectral coefficients of each layer.

The causal transform is not orthogonal, so this is not a Parseval quantity (GUIDE §3);
it spans hundreds of decades, hence the log10 form.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["spectral_energy", "log10_energy", "energy_share"]


def _layers(layers: Any) -> list[np.ndarray]:
    values = getattr(layers, "layeractivations", layers)
    if isinstance(values, (torch.Tensor, np.ndarray)) or not isinstance(values, Sequence):
        raise TypeError(
            "nsp.energy: expected `layers` to be an Activations or a sequence of per-layer arrays, "
            f"got {type(layers).__name__}"
        )
    return [np.asarray(v.detach().cpu().double() if isinstance(v, torch.Tensor) else v, dtype=np.float64) for v in values]


def spectral_energy(layers: Any) -> np.ndarray:
    """Σ ŝ² of every layer.

    Parameters
    ----------
    layers : Activations or sequence of array-like
        A spectrum (as returned by ``NNGraph.transform``) or its per-layer arrays.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(num_layers,)``. May be ``inf`` where ŝ² overflows float64.

    Examples
    --------
    >>> spectral_energy([np.array([3.0, 4.0]), np.zeros(2)])
    array([25.,  0.])
    """
    out = []
    for v in _layers(layers):
        # Scale by the largest magnitude first so squares of 1e200 do not overflow needlessly.
        peak = np.max(np.abs(v)) if v.size else 0.0
        if peak == 0 or not np.isfinite(peak):
            out.append(0.0 if peak == 0 else np.inf)
            continue
        with np.errstate(over="ignore"):  # the documented inf, not a warning
            out.append(float(np.sum((v / peak) ** 2)) * peak * peak)
    return np.asarray(out, dtype=np.float64)


def log10_energy(layers: Any) -> np.ndarray:
    """log10 of ``spectral_energy``, computed without overflow; ``-inf`` for a zero layer.

    Examples
    --------
    >>> log10_energy([np.array([1e200]), np.zeros(1)])
    array([400., -inf])
    """
    out = []
    for v in _layers(layers):
        peak = np.max(np.abs(v)) if v.size else 0.0
        if peak == 0:
            out.append(-np.inf)
        elif not np.isfinite(peak):
            out.append(np.inf)
        else:
            out.append(2 * np.log10(peak) + np.log10(np.sum((v / peak) ** 2)))
    return np.asarray(out, dtype=np.float64)


def energy_share(layers: Any) -> np.ndarray:
    """Each layer's share of the total spectral energy (sums to 1; zeros if all are 0).

    Examples
    --------
    >>> energy_share([np.array([1.0]), np.array([1.0, 1.0, 1.0])])
    array([0.25, 0.75])
    """
    logs = log10_energy(layers)
    if np.all(np.isneginf(logs)):
        return np.zeros_like(logs)
    weights = np.power(10.0, logs - np.max(logs))
    return weights / weights.sum()
