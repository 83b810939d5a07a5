"""Watch the spectra of a small CNN evolve while it learns to read digits.

Trains a small CNN on scikit-learn's bundled 8x8 digits (1,797 images, no download) on
the CPU with ``SpectrumCallback`` at its default settings. The training set is the 1,437
training digits at each of their nine shifts by up to one pixel (12,933 images, see
`shifted`); the other 360 digits validate. Then prints the validation accuracy, where the
TensorBoard logs and the spectrum records are, and how to look at them.

    python examples/demo_digits.py [--epochs 8] [--root out/demo_digits]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.warnings import PossibleUserWarning

import nsp.transforms.energy
from nsp_lightning import SpectrumCallback, read_records, report

PROBES = 4


class DigitsCNN(pl.LightningModule):
    """conv → ReLU → max-pool, twice, then a linear classifier; each step a top-level layer."""

    def __init__(self, lr: float = 2e-3) -> None:
        super().__init__()
        self.lr = lr
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(self.flatten(x))

    def _step(self, x: torch.Tensor, y: torch.Tensor, stage: str) -> torch.Tensor:
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log(f"{stage}_loss", loss, prog_bar=True)
        self.log(f"{stage}_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(*batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(*batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def shifted(x: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    """Every image of a batch ``(N, C, H, W)`` at every shift by up to ``pixels`` per axis.

    What moves in is zero, the digits' background. Returns ``(S * N, C, H, W)`` with
    ``S = (2 * pixels + 1) ** 2`` shifts, shift by shift.
    """
    _, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4)
    span = range(2 * pixels + 1)
    return torch.cat([padded[:, :, dy : dy + h, dx : dx + w] for dy in span for dx in span])


def digits_loaders(batch_size: int = 16) -> tuple[DataLoader, DataLoader]:
    """Train/validation loaders, images scaled to [0, 1], shape (1, 8, 8).

    Training: 1,437 digits at their 9 one-pixel shifts (12,933 images, shuffled; 809
    steps per epoch in batches of 16); validation: the other 360 digits as they are.
    """
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, val = order[:1437], order[1437:]
    x_train = shifted(x[train])
    y_train = y[train].repeat(len(x_train) // len(train))
    return (
        DataLoader(TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True),
        DataLoader(TensorDataset(x[val], y[val]), batch_size=batch_size),
    )


def fit(root: str | os.PathLike, epochs: int, callbacks: list[pl.Callback], seed: int = 0) -> pl.Trainer:
    """Train the digits CNN; the benchmark calls this with and without the callback.

    Torch runs on one thread: a CNN this small gains little from more, and a thread pool
    waits for its slowest thread at every operation, which is very slow while other
    processes keep the cores busy (on a 2-core machine shared with other work, 100
    training steps took 0.3-0.4 s on one thread and 2.4-14 s on two).
    """
    torch.set_num_threads(1)
    pl.seed_everything(seed, verbose=False)
    train, val = digits_loaders()
    trainer = pl.Trainer(
        default_root_dir=root,
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(root, name="digits"),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(DigitsCNN(), train, val)
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    parser.add_argument("--root", default="out/demo_digits", help="log directory (default out/demo_digits)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=PossibleUserWarning)  # few DataLoader workers: fine here

    _, val = digits_loaders()
    probe = next(iter(val))[0][:PROBES]  # PROBES validation digits, shape (PROBES, 1, 8, 8)
    callback = SpectrumCallback(probe)
    start = time.perf_counter()
    trainer = fit(args.root, args.epochs, [callback])
    seconds = time.perf_counter() - start

    records = read_records(callback.dirpath)
    root = Path(args.root).resolve()
    print(f"\nTrained {args.epochs} epochs in {seconds:.1f} s; took {len(records)} spectrum records.")
    print(f"Validation accuracy after the last epoch: {float(trainer.callback_metrics['val_acc']):.3f} (360 digits)")
    print("\nlog10 spectral energy per layer, probe 0 (first and last record):")
    for record in (records[0], records[-1]):
        values = ", ".join(f"{n}={v:.2f}" for n, v in zip(record.layernames, record.log10_energy[0]))
        print(f"  record {record.epoch:2d}: {values}")
    # The energies barely move; the change since the baseline does (nsp.energy.change_since).
    change = nsp.energy.change_since(records[0].spectra[0], records[-1].spectra[0])
    print(f"\nchange of the spectrum since the baseline, probe 0, record {records[-1].epoch}:")
    print("  layer     relative ‖ŝ−ŝ₀‖/‖ŝ₀‖   median decades moved   sign flips")
    for l, name in enumerate(records[0].layernames):
        print(f"  {name:8s}  {change['relative'][l]:20.3g}   {change['decades'][l]:20.3g}   {change['sign_flips'][l]:10.3g}")
    print(f"\nTensorBoard logs: {Path(trainer.log_dir).resolve()}")
    print(f"Spectrum records: {Path(callback.dirpath).resolve()}  (read with nsp_lightning.read_records)")
    print("View them with:")
    # TensorBoard keeps 10 images per tag by default; images=0 shows none at all (TensorBoard 2.21).
    print(f"  tensorboard --logdir {root} --samples_per_plugin images=100000")
    html = report(callback.dirpath, Path(trainer.log_dir) / "report.html")
    print(f"\nOffline report: {html.resolve()}  (or: nsp-report {Path(trainer.log_dir).resolve()})")


if __name__ == "__main__":
    main()
