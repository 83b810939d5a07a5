"""Attributions of a small digits CNN over training, and a methods x probes figure.

Trains a CNN on scikit-learn's 8x8 digits (no download) for a few epochs with
``AttributionAnalysis`` on four validation digits (saliency, Grad-CAM, guided backprop,
integrated gradients), writes the HTML report, prints the sanity scores of the last
record, and saves a grid of every method on the trained network as PNG and PDF.

    python examples/attribution_digits.py [--epochs 4] [--root out/attribution_digits]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from nsp.attribution import attribute
from nsp.attribution.plot import grid_figure, save_figure
from nsp_lightning import ProbeCallback, read_records, report
from nsp_lightning.analyses import AttributionAnalysis


# The methods drawn: those that explain a class on the input with no options to choose
# (captum's others, in the README's table, need baselines, neurons or feature groups).
FIGURE_METHODS = ("saliency", "guided_backprop", "smoothgrad", "guided_smoothgrad", "integrated_gradients", "gradcam",
                  "guided_gradcam", "occlusion")


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
    parser.add_argument("--root", default="out/attribution_digits")
    parser.add_argument("--figure", help="also save the methods x probes figure here (PNG, 80 dpi)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="lightning")
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    torch.manual_seed(0)
    model = Digits()
    probes = x[1500:1504]
    analysis = AttributionAnalysis(["saliency", "gradcam", "guided_backprop", "integrated_gradients"], layer="conv2")
    trainer = pl.Trainer(max_epochs=args.epochs, logger=TensorBoardLogger(args.root, name="run"),
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         callbacks=[ProbeCallback((probes, y[1500:1504]), [analysis])])
    trainer.fit(model, DataLoader(TensorDataset(x[:1500], y[:1500]), batch_size=50, shuffle=True))
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x[1500:]).argmax(1) == y[1500:]).float().mean())
    print(f"validation accuracy {accuracy:.3f}")

    last = read_records(Path(trainer.log_dir) / "attribution")[-1]
    for method in analysis.methods:
        rho = [last.scalars[f"{method}/probe_{p}/sanity_rho"] for p in range(len(probes))]
        print(f"{method:>22}: sanity rho (top layer randomised) median {np.median(rho):+.2f}")
    # 2x2 occlusion windows: the default 8x8 window would cover a whole digit.
    options = {"gradcam": {"layer": "conv2"}, "guided_gradcam": {"layer": "conv2"},
               "occlusion": {"window": 2, "stride": 1}}
    maps = {m: attribute(model, probes, m, **options.get(m, {})) for m in FIGURE_METHODS}
    with torch.no_grad():
        predicted = model(probes).argmax(1)
    names = [f"probe {p}\nlabel {int(y[1500 + p])}, predicted {int(predicted[p])}" for p in range(len(probes))]
    figure = grid_figure(probes, maps, mode="signed", probe_names=names,
                         title=f"Every method on four validation digits after {args.epochs} epochs "
                               "(each explains the predicted class; red raises its score, blue lowers it)")
    for suffix in (".png", ".pdf"):
        print("figure:", save_figure(figure, Path(args.root) / f"methods{suffix}"))
    if args.figure:
        print("figure:", save_figure(figure, args.figure, dpi=80))
    print("report:", report(trainer.log_dir))
    print(f"tensorboard --logdir {args.root} --samples_per_plugin images=100000")


if __name__ == "__main__":
    main()
