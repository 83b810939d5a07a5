"""A small CNN trained on scikit-learn's digits in a few seconds (attribution tests)."""

from __future__ import annotations

import functools

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions, a max-pool and a linear classifier for 1x8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))))


@functools.lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as ``(N, 1, 8, 8)`` floats in [0, 1] and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(data.target, dtype=torch.long)


@functools.lru_cache(maxsize=1)
def trained(epochs: int = 8, seed: int = 0) -> tuple[DigitsCNN, float]:
    """A DigitsCNN trained on the first 1,500 digits, in eval mode, and its accuracy on the rest.

    Callers must not modify the returned network (it is cached): copy it first.
    """
    x, y = digits()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = torch.randperm(1500, generator=gen)
        for i in range(0, 1500, 50):
            idx = order[i: i + 50]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x[1500:]).argmax(1) == y[1500:]).float().mean())
    return model, accuracy
