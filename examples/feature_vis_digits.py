"""Feature visualisations of a small digits CNN forming over training.

Trains a CNN on scikit-learn's 8x8 digits (no download) with ``FeatureVisAnalysis``
rendering four channels of the second convolution and every class at each epoch (64
steps at 16x16, one seed and one starting image for all records), writes the HTML report,
prints each class's probability for its own picture at the last record, and saves the
mosaic of all records (epochs down, targets across, both named) as a PNG.

    python examples/feature_vis_digits.py [--epochs 4] [--root out/feature_vis_digits] [--figure docs/feature_vis_digits.png]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from nsp_lightning import ProbeCallback, read_records, report
from nsp_lightning.analyses import FeatureVisAnalysis
from nsp_lightning.analyses.feature_vis.analysis import feature_mosaic


class Digits(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))

    def forward(self, x):
        return self.head(self.relu2(self.conv2(self.relu1(self.conv1(x)))))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--root", default="out/feature_vis_digits")
    parser.add_argument("--figure", help="also save the mosaic here (PNG)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="lightning")
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    torch.manual_seed(0)
    model = Digits()
    analysis = FeatureVisAnalysis({"relu2": [0, 1, 2, 3]}, classes=range(10), steps=64, size=16)
    trainer = pl.Trainer(max_epochs=args.epochs, logger=TensorBoardLogger(args.root, name="run"),
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         callbacks=[ProbeCallback(x[1500:1501], [analysis])])
    trainer.fit(model, DataLoader(TensorDataset(x[:1500], y[:1500]), batch_size=50, shuffle=True))
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x[1500:]).argmax(1) == y[1500:]).float().mean())
    print(f"validation accuracy {accuracy:.3f}")

    records = read_records(Path(trainer.log_dir) / "feature_vis")
    last = records[-1]
    print("seconds per record:", ", ".join(f"{r.seconds:.2f}" for r in records))
    probabilities = [np.exp(last.scalars[f"class_{k}/objective"]) for k in range(10)]
    print("class probabilities of their own pictures:", " ".join(f"{p:.3f}" for p in probabilities))
    mosaic = feature_mosaic(records, analysis.labels())
    for path in [Path(args.root) / "mosaic.png"] + ([Path(args.figure)] if args.figure else []):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mosaic).save(path)
        print("figure:", path)
    print("report:", report(trainer.log_dir))


if __name__ == "__main__":
    main()
