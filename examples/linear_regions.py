"""Linear regions of a small ReLU network trained on two moons, before and after training.

Writes ``linear_regions.png`` (or the path given): the exact partition of the input box into
the network's linear regions, each coloured by its activation pattern, over the decision
function (grey: probability of class 1), and prints the region counts.

    python examples/linear_regions.py [out.png]
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.datasets import make_moons
from torch import nn

from nsp.regions import linear_regions, plot_regions

DOMAIN = (-1.5, 2.5, -1.0, 1.5)


def main(out: str = "linear_regions.png") -> None:
    torch.manual_seed(0)
    x, y = make_moons(512, noise=0.1, random_state=0)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    FigureCanvasAgg(fig)

    def probability(out: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(out[:, 0] - out[:, 1]))

    for panel, epochs in enumerate((0, 200)):
        opt = torch.optim.Adam(net.parameters(), lr=0.02)
        for _ in range(epochs):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        regions = linear_regions(net.eval(), domain=DOMAIN)
        ax = fig.add_subplot(1, 2, panel + 1)
        plot_regions(regions, ax, decision=probability)
        ax.scatter(*x[::4].T, c=y[::4], s=4, cmap="coolwarm")
        ax.set_title(f"after {epochs} steps: {len(regions)} linear regions")
        print(f"after {epochs} steps: {len(regions)} regions")
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
