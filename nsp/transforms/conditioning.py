"""How far each layer's spectrum is determined by the activations themselves.

The causal spectrum amplifies its input enormously on deep networks, because the Möbius
function of the reachability order grows exponentially with depth: a change in the last
bit of one activation can change a deep layer's spectrum
completely. nsp computes spectra exactly, so the spectrum is right *for the recorded
activations*; this indicator says whether it would survive the rounding that produced
them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nsp.graph.capture import Activations

__all__ = ["rounding_sensitivity"]


def rounding_sensitivity(graph: Any, activations: Activations, seed: int = 0) -> np.ndarray:
    """Per layer, the relative change of the spectrum under the activations' own rounding.

    Every recorded activation ``s(x)`` is moved by half a unit in the last place of its
    own dtype, with a pseudo-random sign, ``δ(x) = ±ulp(s(x))/2`` (exact zeros stay);
    the transform is linear, so the spectrum moves by ``F δ``. The indicator of layer L is

        κ_L = ‖(F δ)_L‖₂ / ‖(F s)_L‖₂,

    computed exactly. ``κ_L ≪ 1`` (e.g. 1e-7 for float32 data): the layer's spectrum is
    determined by the activations to about ``-log10 κ_L`` digits. ``κ_L ≳ 1``: it is
    dominated by rounding in the forward pass; compare such layers only with care.
    ``inf`` marks a layer whose spectrum is exactly zero while its perturbation is not.

    Parameters
    ----------
    graph : NNGraph
        The graph of the pattern (its standard transform is used).
    activations : Activations
        The recorded pattern.
    seed : int
        Seed of the signs, so that the indicator is reproducible.

    Returns
    -------
    numpy.ndarray
        float64, one value per layer.

    Examples
    --------
    >>> import nsp
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh())
    >>> acts = nsp.Activations(net, torch.ones(1, 3))
    >>> kappa = rounding_sensitivity(nsp.NNGraph(acts), acts)
    >>> bool(np.all(kappa < 1e-5))
    True
    """
    signal = activations.to_numpy()
    half_ulp = np.concatenate([_half_ulp(layer) for layer in activations.layeractivations])
    signs = np.where(np.random.default_rng(seed).random(signal.size) < 0.5, -1.0, 1.0)
    delta = np.where(signal != 0, signs * half_ulp, 0.0)
    spectrum, moved = graph.get_transformer("standard").forward(np.stack([signal, delta]))
    offsets = graph.structure.offsets
    out = np.empty(offsets.size - 1)
    for layer in range(out.size):
        cut = slice(int(offsets[layer]), int(offsets[layer + 1]))
        out[layer] = _relative(moved[cut], spectrum[cut])
    return out


def _half_ulp(layer: torch.Tensor) -> np.ndarray:
    dtype = {torch.float16: np.float16, torch.float32: np.float32}.get(layer.dtype, np.float64)
    if layer.dtype == torch.bfloat16:
        # bfloat16 keeps 8 significant bits: its ulp is 2^16 times float32's.
        values = layer.float().numpy().reshape(-1)
        return np.spacing(np.abs(values)).astype(np.float64) * 2.0**16 / 2
    values = layer.numpy().astype(dtype).reshape(-1)
    return np.spacing(np.abs(values)).astype(np.float64) / 2


def _relative(change: np.ndarray, base: np.ndarray) -> float:
    scale = max(float(np.abs(change).max(initial=0.0)), float(np.abs(base).max(initial=0.0)))
    if scale == 0:
        return 0.0
    top = np.linalg.norm(change / scale)
    bottom = np.linalg.norm(base / scale)
    if bottom == 0:
        return float("inf") if top else 0.0
    return float(top / bottom)
