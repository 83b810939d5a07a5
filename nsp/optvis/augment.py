"""Transformation robustness, after lucid's ``transform``.

Each step of a render shows the model a randomly padded, jittered, scaled and rotated
copy of the image, so that the image must raise the objective wherever it lands instead of
exploiting the exact pixel grid (Olah et al., "Feature Visualization", Distill 2017). A
transform is called as ``t(images, generator)`` on ``(B, C, H, W)`` images; every random
choice comes from ``generator``, so a render is reproducible under its seed.

:func:`standard_transforms` is lucid's default list, given for 128-pixel images::

    pad(12, value=0.5), jitter(8), random_scale([1 + (i - 5) / 50 for i in range(11)]),
    random_rotate(list(range(-10, 11)) + 5 * [0]), jitter(4)

with the pixel amounts scaled to other image sizes.

Examples
--------
>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> compose(standard_transforms())(torch.rand(1, 3, 128, 128), g).shape[1]
3
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["Compose", "Jitter", "Pad", "RandomRotate", "RandomScale", "Transform", "compose", "jitter", "pad",
           "random_rotate", "random_scale", "standard_transforms"]

# The image size lucid's default pixel amounts were chosen for (lucid's default render size).
LUCID_SIZE = 128


def _choice(values: Sequence[float], generator: torch.Generator) -> float:
    return values[int(torch.randint(len(values), (1,), generator=generator))]


class Transform:
    """Base of the transforms: ``t(images, generator) -> images``."""

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class Pad(Transform):
    """Pad ``width`` pixels on every side, with a constant (lucid: 0.5, grey) or by reflection."""

    def __init__(self, width: int, mode: str = "constant", value: float = 0.5) -> None:
        if isinstance(width, bool) or not isinstance(width, int) or width < 0:
            raise ValueError(f"nsp.optvis.pad: expected a width >= 0, got {width!r}")
        if mode not in ("constant", "reflect", "replicate"):
            raise ValueError(f"nsp.optvis.pad: mode {mode!r}; expected 'constant', 'reflect' or 'replicate'")
        self.width, self.mode, self.value = width, mode, float(value)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.width == 0:
            return images
        if self.mode == "constant":
            return F.pad(images, [self.width] * 4, mode="constant", value=self.value)
        return F.pad(images, [self.width] * 4, mode=self.mode)

    def __repr__(self) -> str:
        return f"pad({self.width}, mode={self.mode!r}, value={self.value:g})"


class Jitter(Transform):
    """Crop ``d`` pixels from each dimension at a random offset in ``0..d`` (lucid's jitter: a random shift)."""

    def __init__(self, d: int) -> None:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ValueError(f"nsp.optvis.jitter: expected d >= 0, got {d!r}")
        self.d = d

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        h, w = images.shape[-2:]
        d = min(self.d, h - 1, w - 1)
        if d <= 0:
            return images
        dy, dx = (int(v) for v in torch.randint(d + 1, (2,), generator=generator))
        return images[..., dy: dy + h - d, dx: dx + w - d]

    def __repr__(self) -> str:
        return f"jitter({self.d})"


class RandomScale(Transform):
    """Resize by a factor drawn from ``scales`` (bilinear)."""

    def __init__(self, scales: Sequence[float]) -> None:
        scales = [float(s) for s in scales]
        if not scales or min(scales) <= 0:
            raise ValueError(f"nsp.optvis.random_scale: expected positive scales, got {scales!r}")
        self.scales = scales

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        scale = _choice(self.scales, generator)
        h, w = images.shape[-2:]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        if size == (h, w):
            return images
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False)

    def __repr__(self) -> str:
        return f"random_scale({self.scales})"


class RandomRotate(Transform):
    """Rotate about the centre by an angle in degrees drawn from ``angles`` (bilinear, edges repeated)."""

    def __init__(self, angles: Sequence[float]) -> None:
        angles = [float(a) for a in angles]
        if not angles:
            raise ValueError("nsp.optvis.random_rotate: expected at least one angle")
        self.angles = angles

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        angle = math.radians(_choice(self.angles, generator))
        if angle == 0.0:
            return images
        h, w = images.shape[-2:]
        cos, sin = math.cos(angle), math.sin(angle)
        # affine_grid works in [-1, 1] coordinates: correct for the aspect ratio so that
        # the rotation is one in pixels.
        theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=images.dtype,
                             device=images.device).expand(images.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def __repr__(self) -> str:
        return f"random_rotate({self.angles})"


class Compose(Transform):
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        for t in transforms:
            if not callable(t):
                raise TypeError(f"nsp.optvis.compose: expected callables t(images, generator), got {t!r}")
        self.transforms = list(transforms)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for t in self.transforms:
            images = t(images, generator)
        return images

    def __repr__(self) -> str:
        return f"compose([{', '.join(map(repr, self.transforms))}])"


def pad(width: int, mode: str = "constant", value: float = 0.5) -> Pad:
    """Pad ``width`` pixels on every side (see :class:`Pad`)."""
    return Pad(width, mode, value)


def jitter(d: int) -> Jitter:
    """A random shift by cropping up to ``d`` pixels (see :class:`Jitter`)."""
    return Jitter(d)


def random_scale(scales: Sequence[float]) -> RandomScale:
    """Resize by a random factor from ``scales`` (see :class:`RandomScale`)."""
    return RandomScale(scales)


def random_rotate(angles: Sequence[float]) -> RandomRotate:
    """Rotate by a random angle (degrees) from ``angles`` (see :class:`RandomRotate`)."""
    return RandomRotate(angles)


def compose(transforms: Sequence[Transform]) -> Compose:
    """One transform applying ``transforms`` in order."""
    return Compose(transforms)


def standard_transforms(size: int = LUCID_SIZE) -> list[Transform]:
    """lucid's default transforms, with its pixel amounts scaled from 128-pixel images to ``size``.

    Parameters
    ----------
    size : int
        The image's size in pixels (its larger side); at 128 the list is lucid's exactly.

    Returns
    -------
    list of Transform
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"nsp.optvis.standard_transforms: expected a size >= 1, got {size!r}")

    def pixels(n: int) -> int:
        return max(1, round(n * size / LUCID_SIZE))

    return [
        pad(pixels(12), mode="constant", value=0.5),
        jitter(pixels(8)),
        random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
        random_rotate(list(range(-10, 11)) + 5 * [0]),
        jitter(pixels(4)),
    ]
