"""A model's responses at chosen layers, read as neurons, and the neurons' rank correlations.

What a response map lays out (:class:`~nsp.response_map.NeuralResponseMap`): the outputs
of the chosen layers over a set of inputs, one column per neuron (:func:`record`), and the
neurons' Spearman correlations as the dot products of unit vectors
(:func:`spearman_vectors`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from nsp.common.layers import Layer, find_layers
from nsp.common.modes import eval_mode

__all__ = ["METRICS", "ChosenLayer", "choose_layers", "inference", "metric_vectors", "neurons_of",
           "non_finite_rows", "record", "spearman_vectors"]

#: The similarities a layout can be made from (:func:`metric_vectors`).
METRICS = ("spearman", "pearson", "cosine")


def spearman_vectors(activations: np.ndarray) -> np.ndarray:
    """One unit vector per neuron whose dot products are Spearman's ρ.

    Parameters
    ----------
    activations : numpy.ndarray
        ``(P, N)``: ``P`` inputs by ``N`` neurons; no neuron may be constant.

    Returns
    -------
    numpy.ndarray
        ``(N, P)`` float64: each neuron's ranks over the inputs (ties averaged, as in
        ``scipy.stats.spearmanr``), centred and scaled to unit length, so that
        ``u_i @ u_j = ρ_ij`` and ``‖u_i − u_j‖² = 2 (1 − ρ_ij)``.

    Raises
    ------
    ValueError
        If ``activations`` is not 2-D or a neuron is constant.
    """
    x = np.asarray(activations)
    if x.ndim != 2:
        raise ValueError(f"nsp.response_map.spearman_vectors: expected (inputs, neurons), got shape {x.shape}")
    u = rankdata(x, axis=0).T
    u -= u.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(u, axis=1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError(
            f"nsp.response_map.spearman_vectors: {int(np.sum(norm == 0))} neuron(s) are constant over the "
            "inputs; their correlation is undefined"
        )
    u /= norm
    return u


def metric_vectors(activations: np.ndarray, metric: str = "spearman") -> np.ndarray:
    """One unit vector per neuron whose dot products are the neurons' similarity under ``metric``.

    Parameters
    ----------
    activations : numpy.ndarray
        ``(P, N)``: ``P`` inputs by ``N`` neurons; no neuron may be constant (for
        ``'cosine'``: all zero).
    metric : {'spearman', 'pearson', 'cosine'}
        ``'spearman'``: the ranks' correlation (:func:`spearman_vectors`); ``'pearson'``: the
        values' correlation (centred, unit length); ``'cosine'``: the values' cosine
        similarity (unit length, not centred).

    Returns
    -------
    numpy.ndarray
        ``(N, P)`` float64 with ``u_i @ u_j`` the similarity, so ``‖u_i − u_j‖² = 2 (1 − s_ij)``.

    Raises
    ------
    ValueError
        If ``metric`` is unknown, ``activations`` is not 2-D, or a neuron's vector has no
        direction.
    """
    if metric not in METRICS:
        raise ValueError(f"nsp.response_map.metric_vectors: expected `metric` to be one of {METRICS}, got {metric!r}")
    if metric == "spearman":
        return spearman_vectors(activations)
    x = np.asarray(activations, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"nsp.response_map.metric_vectors: expected (inputs, neurons), got shape {x.shape}")
    u = x.T.copy()
    if metric == "pearson":
        u -= u.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(u, axis=1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError(
            f"nsp.response_map.metric_vectors: {int(np.sum(norm == 0))} neuron(s) are "
            f"{'constant' if metric == 'pearson' else 'zero'} over the inputs; their {metric} similarity is undefined"
        )
    u /= norm
    return u


def non_finite_rows(inputs: torch.Tensor) -> str:
    """The indices of the inputs ``(B, ...)`` that hold NaN or infinite values, for an error
    ("3, 7 and 12 more"); empty where every value is finite."""
    if not (inputs.is_floating_point() or inputs.is_complex()) or bool(torch.isfinite(inputs).all()):
        return ""
    rows = (~torch.isfinite(inputs.reshape(inputs.shape[0], -1))).any(dim=1).nonzero().flatten().tolist()
    return ", ".join(map(str, rows[:10])) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")


@dataclass
class ChosenLayer:
    """A layer whose outputs are recorded: its dotted name in the model and its module."""

    name: str
    module: nn.Module


def choose_layers(model: nn.Module, layers: Layer | Iterable[Layer] | None, sample: torch.Tensor,
                  where: str) -> list[ChosenLayer]:
    """The layers to record, in the order given.

    Parameters
    ----------
    model : torch.nn.Module
    layers : str, torch.nn.Module, iterable of them, or None
        Dotted names at any depth or submodules (:func:`nsp.common.layers.find_layers`).
        None: the original's ``model.layers[1:-1]``, every top-level child that runs
        except the one that produces the output, in execution order.
    sample : torch.Tensor
        One input ``(1, *input_shape)``, run to find the execution order for None.
    where : str
        The function named in errors.

    Raises
    ------
    ValueError
        For an unknown layer, an empty ``layers``, or a model without children (None).
    """
    if layers is None:
        children = [ChosenLayer(n, m) for n, m in model.named_children()]
        if not children:
            raise ValueError(f"{where}: the model has no child modules; pass `layers`")
        order = _execution_order(model, children, sample, where)
        return order[:-1] if len(order) > 1 else order
    chosen = [ChosenLayer(name, module) for name, module in find_layers(model, layers, where)]
    if not chosen:
        raise ValueError(f"{where}: `layers` is empty")
    return chosen


def _execution_order(model: nn.Module, layers: list[ChosenLayer], sample: torch.Tensor,
                     where: str) -> list[ChosenLayer]:
    ran: list[int] = []
    handles = [
        layer.module.register_forward_hook(lambda m, a, o, i=i: ran.append(i) if i not in ran else None)
        for i, layer in enumerate(layers)
    ]
    try:
        with inference(model):
            _forward(model, sample, where)
    finally:
        for handle in handles:
            handle.remove()
    return [layers[i] for i in ran]


@contextlib.contextmanager
def inference(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode (:func:`nsp.common.modes.eval_mode`) without gradients."""
    with eval_mode(model), torch.no_grad():
        yield


def _forward(model: nn.Module, batch: torch.Tensor, where: str) -> None:
    device = next((p.device for p in model.parameters()), batch.device)
    try:
        model(batch.to(device))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        if isinstance(err, _LayerError):
            raise
        raise ValueError(
            f"{where}: the model failed on `inputs` of shape {list(batch.shape)}: {err}"
        ) from err


def record(model: nn.Module, chosen: list[ChosenLayer], inputs: torch.Tensor, units: str, batch_size: int,
           where: str) -> tuple[np.ndarray, list[int]]:
    """The chosen layers' neurons over ``inputs``, in eval mode without gradients.

    Parameters
    ----------
    model : torch.nn.Module
    chosen : list of ChosenLayer
    inputs : torch.Tensor
        ``(B, *input_shape)``, run ``batch_size`` at a time.
    units : {'channels', 'all'}
        As for :func:`neurons_of`.
    batch_size : int
    where : str
        The function named in errors.

    Returns
    -------
    values : numpy.ndarray
        ``(B, all neurons)`` float64, layer after layer.
    widths : list of int
        Each layer's neuron count (several calls of one module count as consecutive neurons).

    Raises
    ------
    ValueError
        If the model fails on ``inputs`` or a chosen layer does not run.
    TypeError
        If a chosen layer does not output one tensor.
    """
    chunks: list[list[np.ndarray]] = []
    current: dict[int, list[np.ndarray]] = {}

    def hook(index: int) -> Any:
        def save(module: nn.Module, args: tuple, output: Any) -> None:
            name = chosen[index].name
            if not isinstance(output, torch.Tensor):
                raise _LayerError(
                    f"{where}: layer {name!r} ({type(module).__name__}) returned {type(output).__name__}; "
                    "a layer must output one tensor"
                )
            current.setdefault(index, []).append(neurons_of(output.detach(), units).cpu().double().numpy())

        return save

    handles = [layer.module.register_forward_hook(hook(i)) for i, layer in enumerate(chosen)]
    try:
        with inference(model):
            for start in range(0, inputs.shape[0], batch_size):
                current.clear()
                _forward(model, inputs[start: start + batch_size], where)
                missing = [chosen[i].name for i in range(len(chosen)) if i not in current]
                if missing:
                    raise ValueError(f"{where}: the chosen layer(s) {missing} did not run in the forward pass")
                chunks.append([np.concatenate(current[i], axis=1) for i in range(len(chosen))])
                if start == 0:
                    _require_room(chunks[0], inputs.shape[0], units, where)
                bad = [chosen[i].name for i, values in enumerate(chunks[-1]) if not np.isfinite(values).all()]
                if bad:
                    raise ValueError(f"{where}: layer(s) {bad} respond with NaN or infinite values to finite inputs "
                                     f"{start}..{start + len(chunks[-1][0]) - 1}; a layout needs finite responses")
    finally:
        for handle in handles:
            handle.remove()
    per_layer = [np.concatenate([chunk[i] for chunk in chunks], axis=0) for i in range(len(chosen))]
    return np.concatenate(per_layer, axis=1), [v.shape[1] for v in per_layer]


def _require_room(first: list[np.ndarray], inputs: int, units: str, where: str) -> None:
    """Refuse, from the first batch's widths, responses that would not fit in memory.

    The responses are float64 ``(inputs, neurons)``; their concatenation, ranks and unit
    vectors make about four copies.
    """
    import nsp.common.memory as memory

    neurons = sum(values.shape[1] for values in first)
    advice = "use units='channels', fewer layers or fewer inputs" if units == "all" else "use fewer layers or inputs"
    memory.require(4 * 8 * inputs * neurons, f"{where}: the responses of {neurons:,} neurons to {inputs:,} inputs",
                   advice)


def neurons_of(output: torch.Tensor, units: str) -> torch.Tensor:
    """A layer output ``(B, ...)`` as ``(B, neurons)``.

    ``units='channels'`` averages ``(B, C, *spatial)`` over space (a channel is a neuron);
    ``'all'`` makes every element a neuron. ``(B,)`` is one neuron.
    """
    if output.dim() <= 1:
        return output.reshape(-1, 1)
    if units == "channels" and output.dim() > 2:
        return output.flatten(2).mean(dim=2)
    return output.flatten(1)


class _LayerError(TypeError):
    """A chosen layer's output that cannot be read as neurons (raised from inside a hook)."""
