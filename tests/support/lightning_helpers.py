"""A tiny LightningModule and data shared by the nsp_lightning tests (and the DDP script)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from lightning.pytorch.utilities.warnings import PossibleUserWarning

import nsp

LAYERS = ["input", "conv", "relu", "pool", "flatten", "fc"]

warnings.filterwarnings("ignore", category=PossibleUserWarning)


class TinyNet(pl.LightningModule):
    """conv → ReLU → max-pool → flatten → linear on 1×6×6 inputs: 6 layers, 207 neurons."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.lr = lr
        self.conv = nn.Conv2d(1, 2, 3)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def dataset(n: int = 16, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g))


def loader(n: int = 16, batch_size: int = 8) -> DataLoader:
    return DataLoader(dataset(n), batch_size=batch_size)


def probe(p: int = 2) -> torch.Tensor:
    return torch.randn(p, 1, 6, 6, generator=torch.Generator().manual_seed(123))


def trainer_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=3,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
    )
    kwargs.update(overrides)
    return kwargs


def fresh_spectra(model: nn.Module, x: torch.Tensor, INCL: bool = True, type: str = "standard") -> list[np.ndarray]:
    """Spectra of every probe input computed directly with nsp, as an independent reference.

    The probes are recorded in one batch, as the callback does: a batched forward pass may
    round differently from single ones, and spectra magnify such differences.
    """
    was_training = model.training
    model.eval()
    try:
        out = []
        with torch.no_grad():
            patterns = nsp.Activations.from_batch(model, x)
        for acts in patterns:
            spec = nsp.NNGraph(acts, INCL=INCL).transform(acts, type=type)
            out.append([layer.numpy() for layer in spec.layeractivations])
        return out
    finally:
        model.train(was_training)


def image_run(log_dir: Any, prefix: str = "spectrum") -> Any:
    """TensorBoard's reader of the run ``<log_dir>/<prefix>_images``, where the drawing helper writes the cards.

    Loaded once, every image kept.
    """
    import os

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = os.path.join(str(log_dir), f"{prefix.replace('/', '_')}_images")
    if not os.path.isdir(run):
        raise FileNotFoundError(f"no image run {run}")
    acc = EventAccumulator(run, size_guidance={"images": 0})
    acc.Reload()
    return acc
