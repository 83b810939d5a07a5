"""The seed README's example, unchanged apart from the network's name and a fixed seed.

Writes ``activations.pdf`` and ``spectrum.pdf`` (one page per layer) into the output
folder (default: ``out/seed_readme``).
"""

import argparse
from pathlib import Path

import torch
import torch.nn as nn

import nsp


class Network(nn.Module):
    def __init__(self):
        super(Network, self).__init__()
        self.conv1 = nn.Conv2d(in_channels=1, out_channels=2, kernel_size=2)
        self.conv2 = nn.Conv2d(in_channels=2, out_channels=8, kernel_size=2)
        self.fc1 = nn.Linear(1 * 4 * 8, 8)

    def forward(self, x):
        x = torch.sigmoid(self.conv1(x))
        x = torch.sigmoid(self.conv2(x))
        x = x.view(-1, 1 * 4 * 8)
        x = self.fc1(x)
        return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/seed_readme"), help="output folder")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)

    # The seed README leaves the weights random; a fixed seed makes the PDFs the same on every run.
    torch.manual_seed(0)
    network = Network()
    image = torch.tensor([[[[-6, -1, -2,  5],
                            [-3, -6,  5,  4],
                            [ 2,  5, -6,  3],
                            [ 5,  0,  1, -6]]]], dtype=torch.float)

    activations = nsp.Activations(network, image)
    graph = nsp.NNGraph(activations)
    spectrum = graph.transform(activations)

    nsp.Visualizer.visualize_pattern(activations, pdf_filepath=str(out / 'activations.pdf'), scale='layernorm', cmap_style='viridis')
    nsp.Visualizer.visualize_pattern(spectrum, pdf_filepath=str(out / 'spectrum.pdf'), scale='layernorm', cmap_style='viridis')
    print(f"graph: {graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges")
    print(f"wrote {out / 'activations.pdf'} and {out / 'spectrum.pdf'}")


if __name__ == "__main__":
    main()
