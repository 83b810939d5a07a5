"""Small piecewise-linear networks and pattern helpers shared by the tests of ``nsp.regions``.

- :func:`mlp`: a ReLU MLP, float64, eval mode;
- :func:`pool_cnn` and :func:`cnn_plane`: conv → ReLU → max-pool → linear on 1×6×6 inputs, and a
  plane through three random inputs of that shape;
- :class:`SmallCNN`: conv, a pooling layer, a residual conv block with BatchNorm, linear, on 1×8×8;
- :class:`ResBlock` and :func:`residual_cnn`: max-pool, residual, concatenation, dropout,
  LeakyReLU, on 2×8×8;
- :func:`pattern_rows`: one hashable row per input for its whole activation pattern.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import nsp.regions as R


def mlp(seed: int, widths: list[int]) -> nn.Module:
    """Linear layers of the given widths with a ReLU between each two, float64, eval mode."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).double().eval()


def pool_cnn(seed: int) -> nn.Module:
    """conv → ReLU → max-pool → linear on 1×6×6 inputs (max-pool switches cut the plane too)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 2)).double().eval()


def cnn_plane(seed: int) -> R.Plane:
    """The plane through three random 1×6×6 inputs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, 6, 6, generator=g, dtype=torch.float64)
    return R.Plane.through(x[0], x[1], x[2])


class SmallCNN(nn.Module):
    """conv → ReLU → ``pool`` → a residual conv block with BatchNorm → linear, on 1×8×8 inputs."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        torch.manual_seed(7)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = pool
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h = self.pool(torch.relu(self.conv1(x)))
        h = F.relu(self.bn(self.conv2(h))) + h  # a residual block
        return self.fc(h.flatten(1))


class ResBlock(nn.Module):
    """A residual block with batch norm, a concatenated skip and a functional max-pool."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.mix = nn.Conv2d(2 * c, c, 1)

    def forward(self, x):
        h = F.relu(self.bn(self.conv1(x)))
        h = self.conv2(h) + x
        h = self.mix(torch.cat([h, x], dim=1))
        return F.max_pool2d(torch.relu(h), 2)


def residual_cnn() -> nn.Module:
    """Conv, in-place ReLU, max-pool, dropout, :class:`ResBlock`, avg-pool, LeakyReLU; 2×8×8 → 3."""
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Dropout(0.3),
        ResBlock(4), nn.AvgPool2d(2, 1), nn.Flatten(), nn.Linear(4, 5), nn.LeakyReLU(0.1), nn.Identity(),
        nn.Linear(5, 3),
    )
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.double().eval()


def pattern_rows(patterns: dict[str, torch.Tensor]) -> np.ndarray:
    """One hashable row (bytes) per input for the whole activation pattern."""
    flat = np.concatenate([p.reshape(len(p), -1).to(torch.int64).numpy() for p in patterns.values()], axis=1)
    return np.ascontiguousarray(flat.astype(np.int16)).view(np.dtype((np.void, 2 * flat.shape[1]))).ravel()
