"""The model-randomisation sanity check of Adebayo et al. (2018, "Sanity checks for
saliency maps"): an attribution that explains the model must change when the model's
weights are replaced by random ones. Here the top (output) layer is randomised, on a copy."""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from nsp.common.layers import find_layer

__all__ = ["top_layer", "randomize_top_layer", "spearman"]


def top_layer(model: nn.Module) -> nn.Module:
    """The last module with its own parameters in ``model.named_modules()`` order: the
    output layer of a network that registers its modules in execution order.

    Raises
    ------
    ValueError
        If ``model`` has no module with parameters.
    """
    found = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    if not found:
        raise ValueError(f"nsp.attribution.top_layer: the model ({type(model).__name__}) has no parameters")
    return found[-1]


def randomize_top_layer(model: nn.Module, layer: nn.Module | str | None = None, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` whose top layer's parameters are re-initialised.

    Parameters
    ----------
    model : torch.nn.Module
        Left unchanged.
    layer : torch.nn.Module or str, optional
        The layer to randomise (a submodule of ``model`` or its dotted name); by default
        :func:`top_layer`.
    seed : int, default 0
        Seeds the new weights (in a forked RNG: the caller's stream is untouched).

    Returns
    -------
    torch.nn.Module
        The copy, in the same train/eval mode. Every parameter of the layer is redrawn:
        with the module's own ``reset_parameters`` where it has one, else from
        ``N(0, std)`` matched to the old values' standard deviation.

    Raises
    ------
    ValueError
        If ``layer`` is not a submodule of ``model`` (the error lists the model's layers).
    """
    chosen = top_layer(model) if layer is None else layer
    path, _ = find_layer(model, chosen, "nsp.attribution.randomize_top_layer", allow_model=True)
    # A copy made in inference mode (Lightning's validation) would hold inference tensors,
    # which autograd refuses.
    with torch.inference_mode(False):
        clone = copy.deepcopy(model)
    module = clone.get_submodule(path) if path else clone
    with torch.inference_mode(False), torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            for p in module.parameters(recurse=False):
                p.copy_(torch.randn_like(p) * (float(p.std()) if p.numel() > 1 else 1.0))
    return clone


def spearman(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman's rank correlation between ``a[i]`` and ``b[i]`` for each item of a batch.

    Ties get average ranks. An item whose attribution is constant (all zeros, say) has no
    ranks to correlate: its value is NaN.

    Parameters
    ----------
    a, b : torch.Tensor
        Same shape ``(N, ...)``.

    Returns
    -------
    numpy.ndarray
        ``float64`` of shape ``(N,)``.
    """
    if a.shape != b.shape:
        raise ValueError(f"nsp.attribution.spearman: shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    x = a.detach().reshape(a.shape[0], -1).double().cpu().numpy()
    y = b.detach().reshape(b.shape[0], -1).double().cpu().numpy()
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * ry).sum(axis=1) / np.where(denom > 0, denom, 1.0), np.nan)
