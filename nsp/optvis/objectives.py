"""Objectives: what an image is optimised for, after lucid's ``objectives``.

An :class:`Objective` maps the activations of one forward pass to one value per image of
the batch, ``(B,)``, which :func:`nsp.optvis.optimize.render` maximises. Objectives add,
subtract, negate and scale by numbers, so that ``channel("layer3", 7) - 0.1 * l2("layer2")``
is an objective too. Each names the layers it reads (dotted module names, or the modules
themselves: ``channel(net.layer3, 7)``); the render
loop hooks exactly those, checks the indices against the first forward pass (an unknown
channel or class is an error naming the layer and its size), and stops the forward pass
once no further layer is needed.

=================================  ==================================================
:func:`channel`                    mean of one channel over its positions
:func:`neuron`                     one channel at one position (the centre by default)
:func:`l2`, :func:`deepdream`      mean square of a whole layer (deep dream)
:func:`class_logit`                one output logit
:func:`class_log_probability`      one output's log-softmax
:func:`channel_batch`              a channel per image of the batch, in one evaluation
:func:`class_batch`                a class per image of the batch, in one evaluation
:func:`direction`                  mean over positions of the dot product with a vector
:func:`match`                      minus the mean squared distance to given activations
:func:`gram_match`                 minus the squared distance of Gram matrices (style)
:func:`total_variation`            minus the image's total variation
=================================  ==================================================

Examples
--------
>>> import torch
>>> from torch import nn
>>> acts = {"conv": torch.arange(8.0).reshape(1, 2, 2, 2)}
>>> channel("conv", 1)(acts)
tensor([5.5000])
>>> (channel("conv", 1) - 2 * channel("conv", 0))(acts)
tensor([2.5000])
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from nsp.common.layers import Layer

__all__ = [
    "INPUT",
    "OUTPUT",
    "Objective",
    "channel",
    "channel_batch",
    "class_batch",
    "class_log_probability",
    "class_logit",
    "deepdream",
    "direction",
    "gram_match",
    "l2",
    "match",
    "neuron",
    "total_variation",
]

# Keys of the activation mapping that are not layers: the rendered image (B, C, H, W) in
# [0, 1], before transforms and normalisation, and the model's output. A module's dotted
# name never starts with "@".
INPUT = "@input"
OUTPUT = "@output"

Activations = Mapping[Layer, torch.Tensor]


class Objective:
    """A differentiable value per image, computed from the activations of a forward pass.

    Parameters
    ----------
    function : callable
        ``function(acts) -> (B,) tensor``, where ``acts`` maps each item of ``layers`` (and
        :data:`INPUT`, :data:`OUTPUT` when listed) to its activations ``(B, ...)``.
    layers : sequence of str or torch.nn.Module
        The layers the function reads, as dotted module names or modules (or :data:`INPUT`,
        :data:`OUTPUT`).
    description : str
        A short human-readable description, e.g. ``"channel layer3:7"``.
    check : callable, optional
        ``check(acts)`` raises ``ValueError`` when an index is out of range; the render
        loop calls it once, on the first forward pass.
    """

    def __init__(
        self,
        function: Callable[[Activations], torch.Tensor],
        layers: Sequence[Layer],
        description: str,
        check: Callable[[Activations], None] | None = None,
    ) -> None:
        self.function = function
        self.layers = tuple(dict.fromkeys(layers))
        self.description = description
        self._checks = [check] if check is not None else []

    def __call__(self, acts: Activations) -> torch.Tensor:
        return self.function(acts)

    def check(self, acts: Activations) -> None:
        """Raise ``ValueError`` if an index of this objective does not exist in ``acts``."""
        for check in self._checks:
            check(acts)

    def __repr__(self) -> str:
        return f"Objective({self.description})"

    def _combine(self, other: "Objective", sign: float, symbol: str) -> "Objective":
        if not isinstance(other, Objective):
            return NotImplemented
        a, b = self.function, other.function
        combined = Objective(lambda acts: a(acts) + sign * b(acts), self.layers + other.layers,
                             f"{self.description} {symbol} {other.description}")
        combined._checks = self._checks + other._checks
        return combined

    def __add__(self, other: "Objective") -> "Objective":
        return self._combine(other, 1.0, "+")

    def __sub__(self, other: "Objective") -> "Objective":
        return self._combine(other, -1.0, "-")

    def __radd__(self, other: object) -> "Objective":
        # sum() starts from 0.
        if isinstance(other, (int, float)) and other == 0:
            return self
        return NotImplemented

    def __mul__(self, factor: float) -> "Objective":
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            return NotImplemented
        f = self.function
        scaled = Objective(lambda acts: factor * f(acts), self.layers, f"{factor:g} * ({self.description})")
        scaled._checks = list(self._checks)
        return scaled

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        return self * -1.0

    def __truediv__(self, divisor: float) -> "Objective":
        if isinstance(divisor, bool) or not isinstance(divisor, (int, float)):
            return NotImplemented
        return self * (1.0 / divisor)


def _index(value: int | None, what: str, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: expected {what} to be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{where}: {what} {value} out of range: expected a non-negative index")
    return value


def _layer(layer: Layer, where: str) -> Layer:
    if isinstance(layer, nn.Module) or isinstance(layer, str) and layer:
        return layer
    raise TypeError(f"{where}: expected a layer's dotted module name or the module itself, got {layer!r}")


def _text(layer: Layer) -> str:
    """A layer in a description: its name, or its class for a module (whose name the model knows)."""
    return layer if isinstance(layer, str) else type(layer).__name__


def _repr(layer: Layer) -> str:
    """A layer in a message: its quoted name, or its class for a module."""
    return repr(layer) if isinstance(layer, str) else type(layer).__name__


def _select(values: torch.Tensor, batch: int | None) -> torch.Tensor:
    """``values`` (B,), or only image ``batch``'s entry (the others zero)."""
    if batch is None:
        return values
    mask = torch.zeros_like(values)
    mask[batch] = 1.0
    return values * mask


def _check_batch(batch: int | None, acts: torch.Tensor, where: str) -> None:
    if batch is not None and batch >= acts.shape[0]:
        raise ValueError(f"{where}: batch {batch} out of range: the render has {acts.shape[0]} image(s)")


def _check_channel(layer: Layer, n: int, batch: int | None, where: str) -> Callable[[Activations], None]:
    def check(acts: Activations) -> None:
        a = acts[layer]
        if a.dim() < 2:
            raise ValueError(f"{where}: layer {_repr(layer)} has output shape {list(a.shape)}; expected (B, C, ...)")
        if n >= a.shape[1]:
            raise ValueError(f"{where}: channel {n} out of range: layer {_repr(layer)} has {a.shape[1]} channels "
                             f"(output shape {list(a.shape[1:])})")
        _check_batch(batch, a, where)
    return check


def channel(layer: Layer, n: int, batch: int | None = None) -> Objective:
    """The mean of channel ``n`` of ``layer`` over its positions (for ``(B, C)`` layers, unit ``n``).

    Parameters
    ----------
    layer : str or torch.nn.Module
        Dotted module name, or the module.
    n : int
        Channel index.
    batch : int, optional
        Only this image of the batch (the others score 0): how several objectives share
        one batched render.

    Returns
    -------
    Objective
    """
    where = f"nsp.optvis.channel({_repr(layer)}, {n!r})"
    layer, n, batch = _layer(layer, where), _index(n, "channel", where), _index(batch, "batch", where)
    return Objective(lambda acts: _select(acts[layer][:, n].reshape(acts[layer].shape[0], -1).mean(1), batch),
                     [layer], f"channel {_text(layer)}:{n}", _check_channel(layer, n, batch, where))


def neuron(layer: Layer, n: int, x: int | None = None, y: int | None = None, batch: int | None = None) -> Objective:
    """Channel ``n`` of ``layer`` at one position: column ``x``, row ``y`` (default: the centre).

    For 4-d layers ``(B, C, H, W)`` only; see :func:`channel` for the other arguments.
    """
    where = f"nsp.optvis.neuron({_repr(layer)}, {n!r})"
    layer, n, batch = _layer(layer, where), _index(n, "channel", where), _index(batch, "batch", where)
    x, y = _index(x, "x", where), _index(y, "y", where)

    def position(a: torch.Tensor) -> tuple[int, int]:
        return (a.shape[2] // 2 if y is None else y), (a.shape[3] // 2 if x is None else x)

    def function(acts: Activations) -> torch.Tensor:
        a = acts[layer]
        row, col = position(a)
        return _select(a[:, n, row, col], batch)

    def check(acts: Activations) -> None:
        _check_channel(layer, n, batch, where)(acts)
        a = acts[layer]
        if a.dim() != 4:
            raise ValueError(f"{where}: layer {_repr(layer)} has output shape {list(a.shape)}; a neuron needs (B, C, H, W)")
        row, col = position(a)
        if row >= a.shape[2] or col >= a.shape[3]:
            raise ValueError(f"{where}: position (x={col}, y={row}) out of range: layer {_repr(layer)} is "
                             f"{a.shape[2]}×{a.shape[3]}")

    return Objective(function, [layer], f"neuron {_text(layer)}:{n}", check)


def l2(layer: Layer, batch: int | None = None) -> Objective:
    """The mean square of ``layer``'s activations: deep dream's objective."""
    where = f"nsp.optvis.l2({_repr(layer)})"
    layer, batch = _layer(layer, where), _index(batch, "batch", where)
    return Objective(lambda acts: _select(acts[layer].reshape(acts[layer].shape[0], -1).pow(2).mean(1), batch),
                     [layer], f"l2 {_text(layer)}", lambda acts: _check_batch(batch, acts[layer], where))


deepdream = l2


def _check_class(n: int, batch: int | None, where: str) -> Callable[[Activations], None]:
    def check(acts: Activations) -> None:
        out = acts[OUTPUT]
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{where}: expected the model to return logits (B, classes), got {shape}")
        if n >= out.shape[1]:
            raise ValueError(f"{where}: class {n} out of range: the model has {out.shape[1]} classes")
        _check_batch(batch, out, where)
    return check


def class_logit(n: int, batch: int | None = None) -> Objective:
    """Output logit ``n`` (before the softmax), lucid's class objective."""
    where = f"nsp.optvis.class_logit({n!r})"
    n, batch = _index(n, "class", where), _index(batch, "batch", where)
    return Objective(lambda acts: _select(acts[OUTPUT][:, n], batch), [OUTPUT], f"logit {n}",
                     _check_class(n, batch, where))


def class_log_probability(n: int, batch: int | None = None) -> Objective:
    """The log-softmax of output ``n``: raising it pushes the other logits down too."""
    where = f"nsp.optvis.class_log_probability({n!r})"
    n, batch = _index(n, "class", where), _index(batch, "batch", where)
    return Objective(lambda acts: _select(torch.log_softmax(acts[OUTPUT], dim=1)[:, n], batch), [OUTPUT],
                     f"log p {n}", _check_class(n, batch, where))


def _targets(targets: Sequence[int], batches: Sequence[int] | None, what: str,
             where: str) -> tuple[list[int], list[int]]:
    """``targets`` and the image of each (default ``0, 1, ...``), checked: ints >= 0, one target per image."""
    targets = [_index(t, what, where) for t in targets]
    rows = list(range(len(targets))) if batches is None else [_index(b, "batch", where) for b in batches]
    if not targets or len(rows) != len(targets):
        raise ValueError(f"{where}: expected one or more {what}s and one batch index per {what}, got {len(targets)} "
                         f"{what}(s) and {len(rows)} batch index(es)")
    if len(set(rows)) != len(rows):
        raise ValueError(f"{where}: batch indices {rows} repeat: each image gets one {what}")
    return targets, rows


def _scatter(values: torch.Tensor, rows: torch.Tensor, size: int) -> torch.Tensor:
    """``(size,)`` zeros holding ``values`` at ``rows`` (differentiable)."""
    return values.new_zeros(size).index_put((rows,), values)


def channel_batch(layer: Layer, channels: Sequence[int], batches: Sequence[int] | None = None) -> Objective:
    """Channel ``channels[i]`` of ``layer`` for image ``batches[i]`` (default ``i``); the other images score 0.

    The same values as ``sum(channel(layer, c, batch=b) for c, b in zip(channels, batches))``,
    in one indexing operation instead of one masked mean per channel: several channels of one
    layer rendered in one batch cost about one channel's objective.

    Parameters
    ----------
    layer : str or torch.nn.Module
        Dotted module name, or the module.
    channels : sequence of int
        One channel per rendered image.
    batches : sequence of int, optional
        The image of each channel, all different (default ``0, 1, ...``).

    Returns
    -------
    Objective

    Examples
    --------
    >>> acts = {"conv": torch.arange(8.0).reshape(2, 2, 2)}
    >>> channel_batch("conv", [1, 0])(acts)
    tensor([2.5000, 4.5000])
    """
    where = f"nsp.optvis.channel_batch({_repr(layer)}, {list(channels)!r})"
    layer = _layer(layer, where)
    targets, rows = _targets(channels, batches, "channel", where)
    index, at = torch.tensor(targets), torch.tensor(rows)

    def function(acts: Activations) -> torch.Tensor:
        a = acts[layer]
        picked = a[at.to(a.device), index.to(a.device)]
        return _scatter(picked.reshape(len(rows), -1).mean(1), at.to(a.device), a.shape[0])

    def check(acts: Activations) -> None:
        _check_channel(layer, max(targets), max(rows), where)(acts)

    return Objective(function, [layer], f"channels {_text(layer)}:{targets}", check)


def class_batch(classes: Sequence[int], batches: Sequence[int] | None = None,
                kind: str = "log_probability") -> Objective:
    """Class ``classes[i]`` for image ``batches[i]`` (default ``i``): its log-softmax, or its logit; the others score 0.

    The same values as the sum of :func:`class_log_probability` (or :func:`class_logit`)
    objectives, one per image, with the softmax computed once for the batch instead of once
    per class.

    Parameters
    ----------
    classes : sequence of int
        One class per rendered image.
    batches : sequence of int, optional
        The image of each class, all different (default ``0, 1, ...``).
    kind : {'log_probability', 'logit'}
        What is maximised.

    Returns
    -------
    Objective

    Examples
    --------
    >>> from nsp.optvis import OUTPUT
    >>> class_batch([2, 0], kind="logit")({OUTPUT: torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])})
    tensor([2., 3.])
    """
    where = f"nsp.optvis.class_batch({list(classes)!r})"
    if kind not in ("log_probability", "logit"):
        raise ValueError(f"{where}: expected kind 'log_probability' or 'logit', got {kind!r}")
    targets, rows = _targets(classes, batches, "class", where)
    index, at = torch.tensor(targets), torch.tensor(rows)

    def function(acts: Activations) -> torch.Tensor:
        out = acts[OUTPUT]
        i, r = index.to(out.device), at.to(out.device)
        picked = out[r]
        if kind == "log_probability":
            picked = torch.log_softmax(picked, dim=1)
        return _scatter(picked[torch.arange(len(rows), device=out.device), i], r, out.shape[0])

    def check(acts: Activations) -> None:
        _check_class(max(targets), max(rows), where)(acts)

    return Objective(function, [OUTPUT], f"{'log p' if kind == 'log_probability' else 'logit'} {targets}", check)


def direction(layer: Layer, vector: torch.Tensor | Sequence[float], batch: int | None = None) -> Objective:
    """The mean over positions of ``<vector, acts[:, :, position]>``: a direction in activation space."""
    where = f"nsp.optvis.direction({_repr(layer)})"
    layer, batch = _layer(layer, where), _index(batch, "batch", where)
    vec = torch.as_tensor(vector, dtype=torch.float32).reshape(-1)

    def function(acts: Activations) -> torch.Tensor:
        a = acts[layer]
        v = vec.to(a.device, a.dtype).reshape(1, -1, *([1] * (a.dim() - 2)))
        return _select((a * v).sum(1).reshape(a.shape[0], -1).mean(1), batch)

    def check(acts: Activations) -> None:
        a = acts[layer]
        if a.dim() < 2 or a.shape[1] != vec.numel():
            raise ValueError(f"{where}: the vector has {vec.numel()} entries; layer {_repr(layer)} has "
                             f"{a.shape[1] if a.dim() >= 2 else 'no'} channels")
        _check_batch(batch, a, where)

    return Objective(function, [layer], f"direction {_text(layer)}", check)


def match(layer: Layer, target: torch.Tensor) -> Objective:
    """Minus the mean squared distance between ``layer``'s activations and ``target`` (inversion).

    ``target`` is ``(1, ...)`` or ``(B, ...)``, e.g. the activations of the image to invert.
    """
    where = f"nsp.optvis.match({_repr(layer)})"
    layer = _layer(layer, where)
    target = target.detach()

    def function(acts: Activations) -> torch.Tensor:
        a = acts[layer]
        return -(a - target.to(a.device, a.dtype)).pow(2).reshape(a.shape[0], -1).mean(1)

    def check(acts: Activations) -> None:
        if acts[layer].shape[1:] != target.shape[1:]:
            raise ValueError(f"{where}: layer {_repr(layer)} gives shape {list(acts[layer].shape[1:])}, the target "
                             f"{list(target.shape[1:])}: invert at the target image's size")

    return Objective(function, [layer], f"match {_text(layer)}", check)


def gram(acts: torch.Tensor) -> torch.Tensor:
    """The Gram matrices ``(B, C, C)`` of ``(B, C, ...)`` activations, divided by ``C × positions`` (Gatys et al.)."""
    b, c = acts.shape[:2]
    flat = acts.reshape(b, c, -1)
    return flat @ flat.transpose(1, 2) / (c * flat.shape[2])


def gram_match(layer: Layer, target: torch.Tensor) -> Objective:
    """Minus the mean squared distance between the Gram matrix of ``layer`` and ``target`` ``(1, C, C)`` (style)."""
    where = f"nsp.optvis.gram_match({_repr(layer)})"
    layer = _layer(layer, where)
    target = target.detach()

    def function(acts: Activations) -> torch.Tensor:
        g = gram(acts[layer])
        return -(g - target.to(g.device, g.dtype)).pow(2).reshape(g.shape[0], -1).mean(1)

    def check(acts: Activations) -> None:
        if acts[layer].shape[1] != target.shape[-1]:
            raise ValueError(f"{where}: layer {_repr(layer)} has {acts[layer].shape[1]} channels, the target Gram "
                             f"matrix {target.shape[-1]}")

    return Objective(function, [layer], f"gram {_text(layer)}", check)


def total_variation() -> Objective:
    """Minus the mean absolute difference of neighbouring pixels of the rendered image (smoothness)."""
    def function(acts: Activations) -> torch.Tensor:
        x = acts[INPUT]
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().reshape(x.shape[0], -1).mean(1)
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().reshape(x.shape[0], -1).mean(1)
        return -(dx + dy)

    return Objective(function, [INPUT], "total variation")
