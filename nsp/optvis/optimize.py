"""The optimiser loop, after lucid's ``render.render_vis``.

:func:`render` optimises a parameterised image (:mod:`nsp.optvis.param`) so that the
model, shown randomly transformed copies of it (:mod:`nsp.optvis.augment`), raises an
objective (:mod:`nsp.optvis.objectives`). It hooks the layers the objective names (dotted
module names or the modules), stops each forward pass once the last of them has run (so a channel
of an early layer costs only the layers before it, and a model whose classifier cannot
take the image size can still be visualised at its convolutions), and keeps the image
at chosen steps (``thresholds``).

The model's input convention is given once, by wrapping it: ``normalized(model, mean,
std, size)`` maps images in [0, 1] to what the model expects (resized to ``size``, then
``(x - mean) / std``), and every function of :mod:`nsp.optvis` takes the wrapped model
with the layer names of the original.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from nsp.optvis import channel, normalized, render
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> net = normalized(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), IMAGENET_MEAN, IMAGENET_STD, size=16)
>>> result = render(net, channel("1", 2), steps=8)
>>> result.image.shape, bool(result.value > result.initial_value)
(torch.Size([1, 3, 16, 16]), True)
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nsp.common.layers import Layer, find_layer
from nsp.common.modes import eval_mode
from nsp.optvis.objectives import INPUT, OUTPUT, Objective
from nsp.optvis.param import ImageParam, fourier_image, pixel_image
from nsp.optvis.augment import Transform, compose, standard_transforms

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Normalized", "Render", "evaluate", "forward", "normalized",
           "render", "save_images"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# lucid's render size.
DEFAULT_SIZE = 128


class Normalized(nn.Module):
    """A model and its input convention: images in [0, 1] are resized to ``size`` and normalised.

    Made by :func:`normalized`. Layer names given to :mod:`nsp.optvis` are the wrapped
    model's own (``"layer3"``, not ``"model.layer3"``).

    Attributes
    ----------
    model : torch.nn.Module
        The wrapped model.
    channels : int or None
        The number of input channels (the length of ``mean``), if known.
    size : tuple of int or None
        ``(H, W)`` the model takes, or None for any size.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None,
                 size: int | tuple[int, int] | None) -> None:
        super().__init__()
        where = "nsp.optvis.normalized"
        if not isinstance(model, nn.Module):
            raise TypeError(f"{where}: expected a torch.nn.Module, got {type(model).__name__}")
        mean_t = torch.as_tensor(0.0 if mean is None else mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(1.0 if std is None else std, dtype=torch.float32).reshape(-1)
        if mean is not None and std is not None and mean_t.numel() != std_t.numel():
            raise ValueError(f"{where}: mean has {mean_t.numel()} entries and std {std_t.numel()}; give one per channel")
        if (std_t <= 0).any():
            raise ValueError(f"{where}: std must be positive, got {std_t.tolist()}")
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        if size is not None and not (isinstance(size, tuple) and len(size) == 2 and all(
                isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
            raise ValueError(f"{where}: expected size to be an int, (H, W) or None, got {size!r}")
        self.model = model
        self.train(model.training)
        self.channels = max(mean_t.numel(), std_t.numel()) if mean is not None or std is not None else None
        self.size = size
        self.register_buffer("mean", mean_t.reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.reshape(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.size is not None and tuple(images.shape[-2:]) != self.size:
            images = F.interpolate(images, size=self.size, mode="bilinear", align_corners=False)
        # The buffers are float32; a bfloat16 or half model must still get images in its own dtype.
        return self.model((images - self.mean.to(images.dtype)) / self.std.to(images.dtype))


def normalized(
    model: nn.Module,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    size: int | tuple[int, int] | None = None,
) -> Normalized:
    """Wrap ``model`` with its input convention, given once: mean, std (one per channel) and size.

    Parameters
    ----------
    model : torch.nn.Module
        The model (e.g. torchvision's ``resnet18()``; ImageNet models take
        :data:`IMAGENET_MEAN` and :data:`IMAGENET_STD`).
    mean, std : sequence of float, optional
        Per-channel normalisation ``(x - mean) / std`` (default: none). Their length is
        the number of input channels the renders use.
    size : int or (int, int), optional
        The input size the model needs (a classifier with a Linear head); images are
        resized to it. None: the model takes any size, and renders at the size asked.

    Returns
    -------
    Normalized
    """
    return Normalized(model, mean, std, size)


def unwrap(model: nn.Module) -> nn.Module:
    """The model a :class:`Normalized` wraps, or ``model`` itself: the one whose layer names optvis takes."""
    return model.model if isinstance(model, Normalized) else model


def resolve(model: nn.Module, layer: Layer, where: str) -> nn.Module:
    """The submodule ``layer`` (a dotted name or the module) of ``model``, of the wrapped model for :class:`Normalized`.

    Raises
    ------
    ValueError
        For an unknown name or a module that is not in the model, listing its layers.
    """
    return find_layer(unwrap(model), layer, where)[1]


class _Stop(Exception):
    """Raised by a hook once every layer the objective needs has run."""


def forward(model: nn.Module, images: torch.Tensor, layers: Sequence[Layer],
            where: str = "nsp.optvis") -> dict[Layer, torch.Tensor]:
    """The activations of ``layers`` (dotted names or modules, :data:`INPUT`, :data:`OUTPUT`) for ``images``.

    The result is keyed by the items of ``layers`` as given. The forward pass stops after
    the last layer needed, unless the output is needed.
    """
    wanted = [l for l in layers if l not in (INPUT, OUTPUT)]
    need_output = OUTPUT in layers
    found = {layer: find_layer(unwrap(model), layer, where) for layer in wanted}
    acts: dict[Layer, torch.Tensor] = {INPUT: images}
    pending = set(wanted)

    def make_hook(layer: Layer, name: str) -> Callable:
        def hook(module: nn.Module, inputs: object, output: object) -> torch.Tensor | None:
            if not isinstance(output, torch.Tensor):
                raise ValueError(f"{where}: layer {name!r} ({type(module).__name__}) returns "
                                 f"{type(output).__name__}, not a tensor; choose a layer that returns one")
            acts[layer] = output
            pending.discard(layer)
            if not pending and not need_output:
                raise _Stop
            # Downstream in-place operations (ReLU(inplace=True), +=) then change a copy.
            return output.clone()
        return hook

    handles = [module.register_forward_hook(make_hook(layer, name)) for layer, (name, module) in found.items()]
    try:
        output = model(images)
        if need_output:
            acts[OUTPUT] = output
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [found[l][0] for l in wanted if l not in acts]
    if missing:
        raise ValueError(f"{where}: layer(s) {missing} did not run in the model's forward pass; the modules that "
                         f"run are: {', '.join(_modules_that_run(model, images))}")
    return acts


def _modules_that_run(model: nn.Module, images: torch.Tensor) -> list[str]:
    """The dotted names (in the wrapped model) of the submodules a forward pass on ``images`` calls, in order."""
    inner = unwrap(model)
    names = {m: n for n, m in inner.named_modules() if n}
    ran: list[str] = []
    handles = [m.register_forward_pre_hook(lambda m, i: ran.append(names[m])) for m in names]
    try:
        with torch.no_grad():
            model(images.detach())
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(ran))


@dataclass
class Render:
    """What :func:`render` returns.

    Attributes
    ----------
    images : list of torch.Tensor
        The image ``(B, C, H, W)`` in [0, 1] at each threshold (CPU, detached).
    thresholds : list of int
        The steps at which they were kept.
    values : list of torch.Tensor
        The objective ``(B,)`` of each kept image, measured on the image itself (not
        transformed).
    initial_value : torch.Tensor
        The objective ``(B,)`` of the starting image.
    losses : list of float
        Minus the objective (summed over the batch) at each step, on the transformed images.
    seconds : float
        Wall time of the optimisation.
    extra : dict of str to float
        What a task measures besides the objective (see :mod:`nsp.optvis.tasks`).
    paths : list of pathlib.Path
        The PNGs written (``save=``).
    """

    images: list[torch.Tensor]
    thresholds: list[int]
    values: list[torch.Tensor]
    initial_value: torch.Tensor
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)

    @property
    def image(self) -> torch.Tensor:
        """The last kept image ``(B, C, H, W)``."""
        return self.images[-1]

    @property
    def value(self) -> torch.Tensor:
        """The objective ``(B,)`` of the last kept image."""
        return self.values[-1]


def device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of ``model``'s first floating-point parameter (CPU, float32 without one)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def image_shape(model: nn.Module, size: int | tuple[int, int] | None, channels: int | None,
                batch: int = 1) -> tuple[int, int, int, int]:
    """The render's image shape: ``size`` or the model's (:class:`Normalized`) or 128, and its channels or 3."""
    if size is None:
        size = model.size if isinstance(model, Normalized) and model.size is not None else DEFAULT_SIZE
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not (isinstance(size, tuple) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise ValueError(f"nsp.optvis: expected size to be an int or (H, W), got {size!r}")
    if channels is None:
        channels = model.channels if isinstance(model, Normalized) and model.channels else 3
    return (batch, int(channels), *size)


def make_param(kind: str | ImageParam, shape: tuple[int, int, int, int], seed: int,
               init: torch.Tensor | None = None) -> ImageParam:
    """An :class:`ImageParam` from ``'fourier'`` or ``'pixel'`` (or ``kind`` itself)."""
    if isinstance(kind, ImageParam):
        return kind
    if kind == "fourier":
        return fourier_image(shape, seed=seed, init=init)
    if kind == "pixel":
        return pixel_image(shape, seed=seed, init=init)
    raise ValueError(f"nsp.optvis: param={kind!r}; expected 'fourier', 'pixel' or an ImageParam")


def _transforms(transforms: str | Sequence[Transform] | Transform | None, shape: Sequence[int]) -> Transform | None:
    if transforms is None:
        return None
    if isinstance(transforms, str):
        if transforms != "default":
            raise ValueError(f"nsp.optvis: transforms={transforms!r}; expected 'default', None or a list of transforms")
        return compose(standard_transforms(max(shape[-2:])))
    if callable(transforms):
        return transforms
    return compose(list(transforms))


def require_memory(model: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, layers: Sequence[Layer],
                   where: str) -> None:
    """Refuse, before allocating, a render whose image and activations would not fit in memory.

    The activations the objective needs are measured on the model at a small size and
    scaled by the image's area (a convolutional network's grow with it); a model that takes no other size is
    estimated by its image alone. A render keeps about three copies of the activations
    (forward, gradient, transformed image) and about sixteen of the image (its
    parameterisation, gradient, optimiser moments, transforms).
    """
    import nsp.common.memory as memory

    _, channels, height, width = shape
    element = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    image = 4 * channels * height * width
    small = (min(height, 32), min(width, 32))
    total = 0

    def count(module: nn.Module, args: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * element

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        device, _ = device_dtype(model)
        with eval_mode(model), torch.no_grad():
            forward(model, torch.zeros(1, channels, *small, device=device, dtype=dtype), layers, where)
        # A Normalized model with a size resamples every image to it: its activations do not grow.
        fixed = isinstance(model, Normalized) and model.size is not None
        activations = total if fixed else total * (height * width) / (small[0] * small[1])
    except (RuntimeError, ValueError, TypeError, IndexError):
        activations = 0
    finally:
        for handle in handles:
            handle.remove()
    memory.require(int(3 * activations + 16 * image), f"{where}: rendering a {height}x{width} image",
                   "choose a smaller size")


def _optimizer(optimizer: str | Callable, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    if optimizer == "lbfgs":
        # One iteration per step, and no early exit: the step count is the budget.
        return torch.optim.LBFGS(params, lr=lr, max_iter=1, history_size=50, line_search_fn="strong_wolfe",
                                 tolerance_grad=0.0, tolerance_change=0.0)
    if callable(optimizer):
        return optimizer(params)
    raise ValueError(f"nsp.optvis: optimizer={optimizer!r}; expected 'adam', 'lbfgs' or a callable(params)")


def evaluate(model: nn.Module, objective: Objective, images: torch.Tensor, where: str = "nsp.optvis") -> torch.Tensor:
    """The objective ``(B,)`` of ``images`` ``(B, C, H, W)`` in [0, 1], without transforms and gradients.

    Raises
    ------
    ValueError
        For an unknown layer, an index out of range, or a model that cannot take the images.
    """
    device, dtype = device_dtype(model)
    with eval_mode(model), torch.no_grad():
        acts = _checked_forward(model, images.to(device, dtype), objective, where)
        return objective(acts).detach().cpu()


def _checked_forward(model: nn.Module, images: torch.Tensor, objective: Objective, where: str) -> dict[Layer, torch.Tensor]:
    for layer in objective.layers:
        if layer not in (INPUT, OUTPUT):
            resolve(model, layer, where)
    try:
        acts = forward(model, images, objective.layers, where)
    except RuntimeError as err:
        if isinstance(model, Normalized) and model.size is not None:
            hint = f"; it is given images resized to {list(model.size)}"
        else:
            hint = "; give the size and channels it takes once, with nsp.optvis.normalized(model, mean, std, size)"
        raise ValueError(f"{where}: the model ({type(unwrap(model)).__name__}) cannot take images of shape "
                         f"{list(images.shape[1:])} (channels, height, width): {err}{hint}") from err
    objective.check(acts)
    return acts


def render(
    model: nn.Module,
    objective: Objective,
    param: str | ImageParam = "fourier",
    *,
    steps: int = 256,
    thresholds: Sequence[int] | None = None,
    transforms: str | Sequence[Transform] | Transform | None = "default",
    optimizer: str | Callable = "adam",
    lr: float = 0.05,
    seed: int = 0,
    size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    progress: bool = False,
    where: str = "nsp.optvis.render",
) -> Render:
    """Optimise an image to maximise ``objective``.

    Parameters
    ----------
    model : torch.nn.Module
        The model, plain or :func:`normalized`. It is put in eval mode for the render and
        back after; its parameters' ``.grad`` are not touched.
    objective : Objective
        What to maximise (summed over the batch).
    param : 'fourier', 'pixel' or ImageParam
        The parameterisation (default: Fourier with decorrelated colour, lucid's default).
        A string builds one of shape ``(1, channels, *size)`` from ``seed``.
    steps : int
        Optimiser steps (default 256); ``max(thresholds)`` when thresholds are given.
    thresholds : sequence of int, optional
        The steps at which the image is kept (default: only the last).
    transforms : 'default', None, or transforms
        Transformation robustness: ``'default'`` is lucid's list
        (:func:`~nsp.optvis.augment.standard_transforms`, scaled to the image size);
        None shows the model the image itself.
    optimizer : 'adam', 'lbfgs' or callable
        Adam (lucid's default, lr 0.05), L-BFGS (one iteration per step; use without
        random transforms), or ``callable(params) -> torch.optim.Optimizer``.
    lr : float
        Learning rate of ``'adam'`` and ``'lbfgs'``.
    seed : int
        Seed of the starting noise and of the transforms: a render is reproducible.
    size : int or (int, int), optional
        The image size when ``param`` is a string (default: the model's, or 128).
    channels : int, optional
        Image channels when ``param`` is a string (default: the model's, or 3).
    progress : bool
        Show a progress bar (tqdm).
    where : str
        The function named in error messages.

    Returns
    -------
    Render
        The kept images and their objective values.

    Raises
    ------
    ValueError
        For an unknown layer, a channel, class or position out of range, or a model that
        cannot take the image (raised before the first step).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{where}: expected steps >= 1, got {steps!r}")
    kept = sorted({int(t) for t in thresholds}) if thresholds is not None else [steps]
    if not kept or kept[0] < 1:
        raise ValueError(f"{where}: expected thresholds >= 1, got {thresholds!r}")
    steps = kept[-1]
    if not isinstance(objective, Objective):
        raise TypeError(f"{where}: expected an nsp.optvis Objective, got {type(objective).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{where}: expected seed to be an int, got {seed!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"{where}: expected lr to be a positive number, got {lr!r}")
    device, dtype = device_dtype(model)
    # The image is optimised in float32 at least (its Fourier parameterisation needs complex
    # numbers, which bfloat16 has not) and shown to the model in the model's dtype.
    param_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    shape = image_shape(model, size, channels)
    require_memory(model, shape, dtype, objective.layers, where)
    images: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    losses: list[float] = []
    start = time.perf_counter()
    # Under torch.inference_mode() (Lightning's validation) the image and its optimiser
    # are made inside the block that re-enables autograd, or they could not be optimised.
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        image_param = make_param(param, shape, seed).to(device, param_dtype)
        transform = _transforms(transforms, image_param.shape)
        generator = torch.Generator().manual_seed(seed)
        params = [p for p in image_param.parameters() if p.requires_grad]
        opt = _optimizer(optimizer, params, lr)
        with torch.no_grad():
            initial = objective(_checked_forward(model, image_param().to(dtype), objective, where)).detach().cpu()

        def closure() -> torch.Tensor:
            opt.zero_grad()
            image = image_param()
            shown = transform(image, generator) if transform is not None else image
            acts = forward(model, shown.to(dtype), objective.layers, where)
            acts[INPUT] = image
            loss = -objective(acts).sum()
            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads):
                p.grad = g
            if not losses and all(not g.any() for g in grads):
                warnings.warn(f"{where}: the objective ({objective.description}) has zero gradient at the starting "
                              "image, so the image cannot change (a ReLU unit that is off for the whole image); try "
                              "another seed, or a starting image with more contrast, e.g. fourier_image(shape, sd=0.2)",
                              RuntimeWarning, stacklevel=3)
            return loss.detach()

        bar = _progress(steps, progress)
        for step in range(1, steps + 1):
            losses.append(float(opt.step(closure)))
            if step in kept:
                with torch.no_grad():
                    image = image_param()
                    values.append(objective(forward(model, image.to(dtype), objective.layers, where)).detach().cpu())
                images.append(image.detach().cpu())
            bar.update(1)
        bar.close()
    return Render(images, kept, values, initial, losses, time.perf_counter() - start)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(steps: int, show: bool) -> object:
    if not show:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=steps, desc="nsp.optvis", unit="step")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` in [0, 1] to ``(B, H, W, 3)`` uint8 (one channel repeated to grey)."""
    array = images.detach().float().cpu().clamp(0, 1).numpy()
    if array.shape[1] == 1:
        array = np.repeat(array, 3, axis=1)
    if array.shape[1] != 3:
        raise ValueError(f"nsp.optvis: cannot show images with {array.shape[1]} channels as RGB")
    return np.round(array.transpose(0, 2, 3, 1) * 255).astype(np.uint8)


def save_images(images: torch.Tensor, path: str | Path) -> list[Path]:
    """Write images ``(B, C, H, W)`` in [0, 1] as PNGs: ``path`` for one image, ``<stem>-<i><suffix>`` for several.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"nsp.optvis: save={str(path)!r}; expected a .png path")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = to_uint8(images)
    paths = [path] if len(arrays) == 1 else [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(len(arrays))]
    for array, p in zip(arrays, paths):
        Image.fromarray(array).save(p)
    return paths
