"""A nine-record digits run with all five probe analyses in one ProbeCallback (report tests)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from digits_cnn import DigitsCNN, digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl

from nsp_lightning import ProbeCallback
from nsp_lightning.analyses.attribution import AttributionAnalysis
from nsp_lightning.analyses.feature_vis import FeatureVisAnalysis
from nsp_lightning.analyses.linear_regions import LinearRegionsAnalysis
from nsp_lightning.analyses.response_map import ResponseMapAnalysis
from nsp_lightning.analyses.spectrum import SpectrumAnalysis

EPOCHS = 8
"""Training epochs: with the baseline, nine records per analysis."""


class DigitsModule(pl.LightningModule):
    """:class:`DigitsCNN`'s layers as the module's own children (each one a recorded layer), trained with Adam."""

    def __init__(self) -> None:
        super().__init__()
        for name, module in DigitsCNN().named_children():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return DigitsCNN.forward(self, x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def analyses(inputs: torch.Tensor) -> list:
    """The five analyses, at their defaults where the digits CNN allows (small budgets elsewhere)."""
    return [
        SpectrumAnalysis(),
        AttributionAnalysis(),
        FeatureVisAnalysis(channels={"conv2": [0, 1, 2, 3]}, classes=[0, 3, 7], steps=16),
        ResponseMapAnalysis(inputs=inputs, resolution=96),
        LinearRegionsAnalysis(resolution=96),
    ]


def five_analysis_run(root: Path, epochs: int = EPOCHS, probes: int = 3) -> Path:
    """Train the digits CNN for ``epochs`` short epochs with the five analyses; returns the run directory.

    Each epoch is 4 batches of 50 digits, so that the fit itself takes a second or two.
    """
    x, y = digits()
    pl.seed_everything(0, verbose=False)
    callback = ProbeCallback(x[1500: 1500 + probes], analyses(x[:256]))
    logger = pl.loggers.CSVLogger(root, name="digits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pl.Trainer(
            accelerator="cpu", devices=1, max_epochs=epochs, logger=logger, callbacks=[callback],
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        ).fit(DigitsModule(), DataLoader(TensorDataset(x[:200], y[:200]), batch_size=50, shuffle=True))
    return Path(logger.log_dir)
