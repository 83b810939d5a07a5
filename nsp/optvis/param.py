"""Image parameterisations: what the optimiser changes, after lucid's ``param``.

A parameterisation is a module without input whose ``forward()`` returns a batch of images
``(B, C, H, W)`` in [0, 1]; its parameters are what the optimiser updates.

- :func:`pixel_image`: one number per pixel and channel, through a sigmoid.
- :func:`fourier_image`: the image's 2-D Fourier coefficients, scaled by ``1/frequency``
  so that every frequency learns at the same rate (lucid's ``fft_image``; it removes the
  high-frequency noise plain pixels collect).

Both decorrelate colour on three-channel images: the parameters are coordinates in the
square root of ImageNet's colour covariance (lucid's ``color_correlation_svd_sqrt``), so a
step changes natural colours rather than one channel. Every image of a batch starts from
the same noise (drawn from ``seed``), so that a batch of objectives differs only by
objective, and an image can be given as the starting point instead (``init``): the
parameters are then the exact inverse of that image.

Examples
--------
>>> image = fourier_image((1, 3, 32, 32), seed=0)
>>> image().shape, bool(image().min() >= 0), bool(image().max() <= 1)
(torch.Size([1, 3, 32, 32]), True, True)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["COLOR_CORRELATION", "FourierImage", "ImageParam", "PixelImage", "fourier_image", "pixel_image"]

# lucid's color_correlation_svd_sqrt (ImageNet), normalised so its largest column has norm 1.
_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = torch.tensor(_SVD_SQRT / np.max(np.linalg.norm(_SVD_SQRT, axis=0)), dtype=torch.float32)
# lucid divides the Fourier image by 4: "increasing this seems to reduce saturation".
_FOURIER_DIVISOR = 4.0
_EPS = 1e-4


def _shape(shape: Sequence[int], where: str) -> tuple[int, int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"{where}: expected an image shape (B, C, H, W) of positive sizes, got {list(shape)}")
    return shape  # type: ignore[return-value]


def _noise(shape: tuple[int, ...], sd: float, seed: int) -> torch.Tensor:
    """``(B, ...)`` noise whose B images are the same draw from ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    one = torch.randn((1, *shape[1:]), generator=generator) * sd
    return one.expand(shape).clone()


class ImageParam(nn.Module):
    """Base of the parameterisations: ``forward()`` returns images ``(B, C, H, W)`` in [0, 1].

    Attributes
    ----------
    shape : tuple of int
        ``(B, C, H, W)``.
    decorrelate : bool
        Whether colour is decorrelated (three channels only).
    """

    def __init__(self, shape: tuple[int, int, int, int], decorrelate: bool | None) -> None:
        super().__init__()
        if decorrelate and shape[1] != 3:
            raise ValueError(f"nsp.optvis.param: decorrelate=True needs 3 channels, the image has {shape[1]}")
        self.shape = shape
        self.decorrelate = shape[1] == 3 if decorrelate is None else bool(decorrelate)

    def _to_rgb(self, t: torch.Tensor) -> torch.Tensor:
        if self.decorrelate:
            t = torch.einsum("bchw,dc->bdhw", t, COLOR_CORRELATION.to(t.device, t.dtype))
        return torch.sigmoid(t)

    def _from_rgb(self, image: torch.Tensor) -> torch.Tensor:
        t = torch.logit(image.clamp(_EPS, 1 - _EPS))
        if self.decorrelate:
            t = torch.einsum("bchw,dc->bdhw", t, torch.linalg.inv(COLOR_CORRELATION).to(t.device, t.dtype))
        return t


def _init(init: torch.Tensor | None, shape: tuple[int, int, int, int], where: str) -> torch.Tensor | None:
    if init is None:
        return None
    init = torch.as_tensor(init).detach().float().cpu()
    if init.dim() == 3:
        init = init.unsqueeze(0)
    if init.dim() != 4 or init.shape[1:] != shape[1:] or init.shape[0] not in (1, shape[0]):
        raise ValueError(f"{where}: init has shape {list(init.shape)}; expected (C, H, W) or (1 or B, C, H, W) "
                         f"matching {list(shape)}")
    if init.min() < 0 or init.max() > 1:
        raise ValueError(f"{where}: init must be an image in [0, 1], got values in "
                         f"[{float(init.min()):.3g}, {float(init.max()):.3g}]")
    return init.expand(shape)


class PixelImage(ImageParam):
    """One parameter per pixel and channel, through a sigmoid (see :func:`pixel_image`)."""

    def __init__(self, shape: tuple[int, int, int, int], sd: float, seed: int, init: torch.Tensor | None,
                 decorrelate: bool | None) -> None:
        super().__init__(shape, decorrelate)
        start = _init(init, shape, "nsp.optvis.pixel_image")
        self.pixels = nn.Parameter(_noise(shape, sd, seed) if start is None else self._from_rgb(start).clone())

    def forward(self) -> torch.Tensor:
        return self._to_rgb(self.pixels)


def _frequencies(h: int, w: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FourierImage(ImageParam):
    """The image's real 2-D Fourier coefficients, scaled by 1/frequency (see :func:`fourier_image`)."""

    def __init__(self, shape: tuple[int, int, int, int], sd: float, seed: int, init: torch.Tensor | None,
                 decorrelate: bool | None, decay_power: float) -> None:
        super().__init__(shape, decorrelate)
        h, w = shape[2:]
        scale = 1.0 / torch.clamp(_frequencies(h, w), min=1.0 / max(h, w)) ** decay_power
        self.register_buffer("scale", scale.float(), persistent=False)
        start = _init(init, shape, "nsp.optvis.fourier_image")
        if start is None:
            spectrum = _noise((*shape[:2], *scale.shape, 2), sd, seed)
        else:
            t = self._from_rgb(start) * _FOURIER_DIVISOR
            spectrum = torch.view_as_real(torch.fft.rfft2(t, norm="ortho") / self.scale).contiguous()
        self.spectrum = nn.Parameter(spectrum)

    def forward(self) -> torch.Tensor:
        coefficients = torch.view_as_complex(self.spectrum) * self.scale
        t = torch.fft.irfft2(coefficients, s=self.shape[2:], norm="ortho") / _FOURIER_DIVISOR
        return self._to_rgb(t)


def pixel_image(
    shape: Sequence[int],
    *,
    sd: float = 0.01,
    seed: int = 0,
    init: torch.Tensor | None = None,
    decorrelate: bool | None = None,
) -> PixelImage:
    """Images parameterised by their pixels, through a sigmoid.

    Parameters
    ----------
    shape : sequence of int
        ``(B, C, H, W)``.
    sd : float
        Standard deviation of the starting noise (before the sigmoid; lucid's 0.01 gives
        a nearly uniform grey).
    seed : int
        Seed of the starting noise; every image of the batch starts from the same noise.
    init : torch.Tensor, optional
        A starting image ``(C, H, W)`` or ``(1 or B, C, H, W)`` in [0, 1] instead of noise.
    decorrelate : bool, optional
        Decorrelate colour (default: when there are 3 channels).

    Returns
    -------
    PixelImage
        ``forward()`` returns ``(B, C, H, W)`` in [0, 1].
    """
    return PixelImage(_shape(shape, "nsp.optvis.pixel_image"), sd, seed, init, decorrelate)


def fourier_image(
    shape: Sequence[int],
    *,
    sd: float = 0.01,
    seed: int = 0,
    init: torch.Tensor | None = None,
    decorrelate: bool | None = None,
    decay_power: float = 1.0,
) -> FourierImage:
    """Images parameterised by their Fourier coefficients scaled by ``1/frequency**decay_power`` (lucid's ``fft_image``).

    Parameters are as for :func:`pixel_image`; ``decay_power`` is lucid's (1: each
    frequency's amplitude learns at the rate natural images have).

    Returns
    -------
    FourierImage
        ``forward()`` returns ``(B, C, H, W)`` in [0, 1].
    """
    if not (isinstance(decay_power, (int, float)) and math.isfinite(decay_power) and decay_power >= 0):
        raise ValueError(f"nsp.optvis.fourier_image: expected decay_power >= 0, got {decay_power!r}")
    return FourierImage(_shape(shape, "nsp.optvis.fourier_image"), sd, seed, init, decorrelate, float(decay_power))
