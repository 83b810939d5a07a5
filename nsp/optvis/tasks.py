"""netlens's image-optimisation tasks as one-liners.

==============================  ==========================================================
:func:`visualize_channel`       an image that excites one channel of a layer
:func:`visualize_class`         an image the model assigns to one class
:func:`deep_dream`              an image's patterns amplified at one layer, octave by octave
:func:`invert`                  an image whose layer activations match a given image's
:func:`style_transfer`          content of one image in the style of another (Gatys et al.)
==============================  ==========================================================

Each returns a :class:`~nsp.optvis.optimize.Render` (the images at the kept steps, the
objective's values, and the task's own losses in ``extra``) and writes PNGs when given
``save="name.png"``. The model is plain or :func:`~nsp.optvis.optimize.normalized` (mean,
std and size given once); layers are its dotted module names or the modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nsp.common.modes import eval_mode
from nsp.optvis import objectives as obj
from nsp.optvis.param import ImageParam, pixel_image
from nsp.optvis.optimize import (
    Render,
    device_dtype,
    evaluate,
    forward,
    make_param,
    render,
    resolve,
    save_images,
    unwrap,
)
from nsp.optvis.augment import Transform, jitter

__all__ = ["deep_dream", "invert", "style_transfer", "visualize_channel", "visualize_class"]


def _finish(result: Render, save: str | Path | None) -> Render:
    if save is not None:
        result.paths = save_images(result.image, save)
    return result


def visualize_channel(
    model: nn.Module,
    layer: str | nn.Module,
    channel: int,
    *,
    size: int | tuple[int, int] | None = None,
    steps: int = 256,
    thresholds: Sequence[int] | None = None,
    param: str | ImageParam = "fourier",
    transforms: str | Sequence[Transform] | None = "default",
    lr: float = 0.05,
    seed: int = 0,
    save: str | Path | None = None,
    progress: bool = False,
) -> Render:
    """An image that maximises the mean of channel ``channel`` of ``layer`` (lucid's channel objective).

    Parameters
    ----------
    model : torch.nn.Module
        Plain or :func:`~nsp.optvis.optimize.normalized`.
    layer : str or torch.nn.Module
        Dotted module name, e.g. ``"layer3"`` or ``"features.10"``, or the module.
    channel : int
        The channel.
    size, steps, thresholds, param, transforms, lr, seed, progress
        As for :func:`~nsp.optvis.optimize.render` (Fourier image, lucid's transforms, Adam
        at 0.05, 256 steps).
    save : str or Path, optional
        Write the final image there as a PNG.

    Returns
    -------
    Render
        ``image`` ``(1, C, H, W)`` and ``value``, the channel's mean activation on it.

    Raises
    ------
    ValueError
        Unknown layer, channel out of range, or a model that cannot take the image size.
    """
    objective = obj.channel(layer, channel)
    result = render(model, objective, param, steps=steps, thresholds=thresholds, transforms=transforms, lr=lr,
                    seed=seed, size=size, progress=progress, where="nsp.optvis.visualize_channel")
    return _finish(result, save)


def visualize_class(
    model: nn.Module,
    class_index: int,
    *,
    objective: str = "log_probability",
    size: int | tuple[int, int] | None = None,
    steps: int = 256,
    thresholds: Sequence[int] | None = None,
    param: str | ImageParam = "fourier",
    transforms: str | Sequence[Transform] | None = "default",
    lr: float = 0.05,
    seed: int = 0,
    save: str | Path | None = None,
    progress: bool = False,
) -> Render:
    """An image the model assigns to class ``class_index``.

    Parameters
    ----------
    objective : 'log_probability' or 'logit'
        Maximise the class's log-softmax (default: it also pushes the other classes
        down, so the probability rises) or its logit (lucid's choice, often cleaner
        pictures but a lower probability).

    The other parameters are as for :func:`visualize_channel`.

    Returns
    -------
    Render
        ``image`` and ``value`` (the objective); ``extra["probability"]``, the softmax
        probability of the class for the final image.

    Raises
    ------
    ValueError
        Class out of range, a model whose output is not ``(B, classes)``, or one that
        cannot take the image size.
    """
    makers = {"log_probability": obj.class_log_probability, "logit": obj.class_logit}
    if objective not in makers:
        raise ValueError(f"nsp.optvis.visualize_class: objective={objective!r}; expected 'log_probability' or 'logit'")
    result = render(model, makers[objective](class_index), param, steps=steps, thresholds=thresholds,
                    transforms=transforms, lr=lr, seed=seed, size=size, progress=progress,
                    where="nsp.optvis.visualize_class")
    log_p = evaluate(model, obj.class_log_probability(class_index), result.image)
    result.extra["probability"] = float(log_p.exp()[0])
    return _finish(result, save)


def _as_image(image: torch.Tensor, where: str, name: str = "image") -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or (image.dim() == 4 and image.shape[0] != 1):
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{where}: expected {name} to be one image (C, H, W) or (1, C, H, W), got {shape}")
    image = image.detach().float().cpu().reshape(1, *image.shape[-3:])
    if image.min() < 0 or image.max() > 1:
        raise ValueError(f"{where}: {name} must be in [0, 1] (normalisation belongs to nsp.optvis.normalized), got "
                         f"values in [{float(image.min()):.3g}, {float(image.max()):.3g}]")
    return image


def deep_dream(
    model: nn.Module,
    image: torch.Tensor,
    layer: str,
    *,
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps: int = 20,
    lr: float = 0.05,
    jitter_pixels: int = 4,
    seed: int = 0,
    save: str | Path | None = None,
    progress: bool = False,
) -> Render:
    """Deep dream: amplify what ``layer`` sees in ``image``, from the coarsest octave to the full size.

    The image is shrunk ``octaves - 1`` times by ``octave_scale``. At each octave, from
    the smallest, the pixels (through a sigmoid) climb ``layer``'s mean square (the
    :func:`~nsp.optvis.objectives.l2` objective) for ``steps`` Adam steps under random
    jitter; the detail added is carried, enlarged, to the next octave (Mordvintsev et al.,
    2015).

    Parameters
    ----------
    model : torch.nn.Module
        Plain or :func:`~nsp.optvis.optimize.normalized` (for a model with a fixed input
        size, every octave is resized to it).
    image : torch.Tensor
        ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1].
    layer : str
        Dotted module name.
    octaves, octave_scale : int, float
        Number of scales, and the ratio between neighbours.
    steps : int
        Steps per octave.
    lr : float
        Adam's learning rate on the pixels' logits.
    jitter_pixels : int
        Random shift at each step (0: none).
    seed, save, progress
        As for :func:`visualize_channel`.

    Returns
    -------
    Render
        ``images``: the result after each octave (each at its octave's size; the last at
        the input's), ``values``: the layer's mean square after each octave;
        ``initial_value``: on the input image.
    """
    where = "nsp.optvis.deep_dream"
    image = _as_image(image, where)
    if isinstance(octaves, bool) or not isinstance(octaves, int) or octaves < 1:
        raise ValueError(f"{where}: expected octaves >= 1, got {octaves!r}")
    if not octave_scale > 1:
        raise ValueError(f"{where}: expected octave_scale > 1, got {octave_scale!r}")
    objective = obj.l2(layer)
    h, w = image.shape[-2:]
    sizes = [(max(1, round(h / octave_scale ** k)), max(1, round(w / octave_scale ** k))) for k in range(octaves)][::-1]
    base = [F.interpolate(image, size=s, mode="bilinear", align_corners=False) if s != (h, w) else image for s in sizes]
    initial = evaluate(model, objective, image, where)
    detail = torch.zeros_like(base[0])
    images, values, losses, seconds = [], [], [], 0.0
    transforms = [jitter(jitter_pixels)] if jitter_pixels else None
    for k, (size, start) in enumerate(zip(sizes, base)):
        if detail.shape[-2:] != start.shape[-2:]:
            detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
        init = (start + detail).clamp(0, 1)
        result = render(model, objective, pixel_image(init.shape, init=init, decorrelate=False), steps=steps,
                        transforms=transforms, lr=lr, seed=seed + k, progress=progress, where=where)
        detail = result.image - start
        images.append(result.image)
        values.append(result.value)
        losses += result.losses
        seconds += result.seconds
    return _finish(Render(images, [steps * (k + 1) for k in range(octaves)], values, initial, losses, seconds), save)


def _noise_image(shape: Sequence[int], seed: int) -> torch.Tensor:
    """Uniform noise in [0.1, 0.9], drawn from ``seed`` (away from 0 and 1, where the sigmoid of the pixel parameterisation is flat)."""
    return 0.1 + 0.8 * torch.rand(tuple(shape), generator=torch.Generator().manual_seed(int(seed)))


def _activations(model: nn.Module, image: torch.Tensor, layers: Sequence[str], where: str) -> dict[str, torch.Tensor]:
    for layer in layers:
        resolve(model, layer, where)
    device, dtype = device_dtype(model)
    with eval_mode(model), torch.no_grad():
        try:
            return forward(model, image.to(device, dtype), list(layers), where)
        except RuntimeError as err:
            raise ValueError(f"{where}: the model ({type(unwrap(model)).__name__}) cannot take images of shape "
                             f"{list(image.shape[1:])} (channels, height, width): {err}") from err


def invert(
    model: nn.Module,
    image: torch.Tensor,
    layer: str,
    *,
    tv_weight: float = 1e-3,
    steps: int = 200,
    thresholds: Sequence[int] | None = None,
    param: str | ImageParam = "pixel",
    optimizer: str = "lbfgs",
    lr: float = 1.0,
    seed: int = 0,
    save: str | Path | None = None,
    progress: bool = False,
) -> Render:
    """An image whose activations at ``layer`` match those of ``image``, with total-variation regularisation.

    Starting from uniform noise in [0.1, 0.9] (drawn from ``seed``), the image minimises
    ``|acts(x) - acts(image)|² / |acts(noise) - acts(image)|² + tv_weight * TV(x)``
    (mean squares; the first term is 1 at the start, so ``tv_weight`` does not depend on
    the layer's scale). Mahendran and Vedaldi (2015) invert representations this way.

    Parameters
    ----------
    model : torch.nn.Module
        Plain or :func:`~nsp.optvis.optimize.normalized`.
    image : torch.Tensor
        ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1]; the inversion has its size.
    layer : str
        Dotted module name.
    tv_weight : float
        Weight of the total variation (mean absolute difference of neighbouring pixels).
    steps, thresholds, lr, seed, progress, save
        As for :func:`~nsp.optvis.optimize.render`; L-BFGS by default (no random
        transforms: the match is pixel-exact).
    param : 'pixel', 'fourier' or ImageParam
        The parameterisation (default pixels, started at the noise image).
    optimizer : str
        ``'lbfgs'`` (default) or ``'adam'``.

    Returns
    -------
    Render
        ``extra["initial_match_loss"]`` and ``extra["match_loss"]``: the mean squared
        distance of the activations, for the noise and for the result.
    """
    where = "nsp.optvis.invert"
    image = _as_image(image, where)
    target = _activations(model, image, [layer], where)[layer]
    noise = _noise_image(image.shape, seed)
    matching = obj.match(layer, target)
    start = -float(evaluate(model, matching, noise, where)[0])
    if start <= 0:
        raise ValueError(f"{where}: the noise image already matches the activations of {layer!r}; nothing to invert")
    objective = matching / start + tv_weight * obj.total_variation()
    shape = tuple(image.shape)
    init_param = make_param(param, shape, seed, init=noise) if isinstance(param, str) else param
    result = render(model, objective, init_param, steps=steps, thresholds=thresholds, transforms=None,
                    optimizer=optimizer, lr=lr, seed=seed, progress=progress, where=where)
    result.extra["initial_match_loss"] = start
    result.extra["match_loss"] = -float(evaluate(model, matching, result.image, where)[0])
    return _finish(result, save)


def style_transfer(
    model: nn.Module,
    content: torch.Tensor,
    style: torch.Tensor,
    content_layers: Sequence[str],
    style_layers: Sequence[str],
    style_weight: float = 1e6,
    content_weight: float = 1.0,
    tv_weight: float = 0.0,
    steps: int = 300,
    *,
    init: str | torch.Tensor = "content",
    thresholds: Sequence[int] | None = None,
    lr: float = 1.0,
    seed: int = 0,
    save: str | Path | None = None,
    progress: bool = False,
) -> Render:
    """Gatys et al.'s style transfer, run by L-BFGS: ``content``'s layout in ``style``'s textures.

    The image minimises ``content_weight × Σ content loss + style_weight × Σ style loss +
    tv_weight × TV``: the content loss of a layer is the mean squared difference of its
    activations from the content image's, the style loss the mean squared difference of
    its Gram matrix (divided by channels × positions) from the style image's (the
    weights of PyTorch's style-transfer tutorial).

    Parameters
    ----------
    model : torch.nn.Module
        Plain or :func:`~nsp.optvis.optimize.normalized` (classically VGG's ``features``).
    content, style : torch.Tensor
        Images ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1]; the result has the content's
        size, and the style image may have any size the model takes.
    content_layers, style_layers : sequence of str
        Dotted module names.
    style_weight, content_weight, tv_weight : float
        The losses' weights.
    steps : int
        L-BFGS iterations.
    init : 'content', 'noise' or torch.Tensor
        The starting image: the content image, uniform noise in [0.1, 0.9] drawn from ``seed``, or an
        image of the content's shape.
    thresholds, lr, seed, save, progress
        As for :func:`~nsp.optvis.optimize.render`.

    Returns
    -------
    Render
        ``extra``: ``initial_style_loss``, ``style_loss``, ``initial_content_loss``,
        ``content_loss`` (unweighted sums over the layers, for the start and the
        result) and ``style_image_content_loss`` (the content loss of the style image
        itself, resized to the content's size).
    """
    where = "nsp.optvis.style_transfer"
    content, style = _as_image(content, where, "content"), _as_image(style, where, "style")
    for name, layers in (("content_layers", content_layers), ("style_layers", style_layers)):
        if isinstance(layers, str) or not layers:
            raise ValueError(f"{where}: expected {name} to be a non-empty list of dotted module names, got {layers!r}")
    content_acts = _activations(model, content, content_layers, where)
    style_acts = _activations(model, style, style_layers, where)
    content_loss = sum((-1.0) * obj.match(l, content_acts[l]) for l in content_layers)
    style_loss = sum((-1.0) * obj.gram_match(l, obj.gram(style_acts[l])) for l in style_layers)
    objective = -(content_weight * content_loss + style_weight * style_loss) + tv_weight * obj.total_variation()
    if isinstance(init, torch.Tensor):
        start = _as_image(init, where, "init")
    elif init == "content":
        start = content
    elif init == "noise":
        start = _noise_image(content.shape, seed)
    else:
        raise ValueError(f"{where}: init={init!r}; expected 'content', 'noise' or an image")
    if start.shape != content.shape:
        raise ValueError(f"{where}: init has shape {list(start.shape)}, the content {list(content.shape)}")
    result = render(model, objective, pixel_image(content.shape, init=start, seed=seed, decorrelate=False),
                    steps=steps, thresholds=thresholds, transforms=None, optimizer="lbfgs", lr=lr, seed=seed,
                    progress=progress, where=where)
    resized_style = F.interpolate(style, size=content.shape[-2:], mode="bilinear", align_corners=False)
    result.extra.update(
        initial_style_loss=float(evaluate(model, style_loss, start, where)[0]),
        style_loss=float(evaluate(model, style_loss, result.image, where)[0]),
        initial_content_loss=float(evaluate(model, content_loss, start, where)[0]),
        content_loss=float(evaluate(model, content_loss, result.image, where)[0]),
        style_image_content_loss=float(evaluate(model, content_loss, resized_style, where)[0]),
    )
    return _finish(result, save)
