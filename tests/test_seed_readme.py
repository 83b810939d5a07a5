"""The seed README's code runs unchanged (apart from its ``Network_1`` name slip)."""

import os
import runpy
import sys
from pathlib import Path

import torch

SEED_README_CODE = '''
import torch
import torch.nn as nn
import nsp

class Network(nn.Module):
    def __init__(self):
        super(Network, self).__init__()
        self.conv1 = nn.Conv2d(in_channels=1, out_channels=2, kernel_size=2)
        self.conv2 = nn.Conv2d(in_channels=2, out_channels=8, kernel_size=2)
        self.fc1 = nn.Linear(1*4*8, 8)

    def forward(self, x):
        x = torch.sigmoid(self.conv1(x))
        x = torch.sigmoid(self.conv2(x))
        x = x.view(-1, 1*4*8)
        x = self.fc1(x)
        return x

network = Network()
image = torch.tensor([[[[-6, -1, -2,  5],
                        [-3, -6,  5,  4],
                        [ 2,  5, -6,  3],
                        [ 5,  0,  1, -6]]]], dtype = torch.float)

activations = nsp.Activations(network, image)
graph = nsp.NNGraph(activations)
spectrum = graph.transform(activations)
nsp.Visualizer.visualize_pattern(activations, pdf_filepath='activations.pdf', scale='layernorm', cmap_style='viridis')
nsp.Visualizer.visualize_pattern(spectrum, pdf_filepath='spectrum.pdf', scale='layernorm', cmap_style='viridis')
'''


def test_seed_readme_code_runs_and_writes_both_pdfs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(SEED_README_CODE, "seed-README", "exec"), namespace)
    for name in ("activations.pdf", "spectrum.pdf"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"%PDF") and data.count(b"/Type /Page\n") + data.count(b"/Type /Page ") >= 1
    assert namespace["graph"].number_of_edges() == 584
    assert os.path.exists(Path(tmp_path) / "spectrum.pdf")


def test_seed_readme_example_writes_the_same_pdfs_on_every_run(tmp_path, monkeypatch):
    # examples/seed_readme.py is seeded (issue 21, #10): two runs after different global seeds agree.
    script = Path(__file__).resolve().parents[1] / "examples" / "seed_readme.py"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")  # matplotlib's PDF creation date
    outputs = []
    for run, seed in enumerate((1, 2)):
        torch.manual_seed(seed)
        out = tmp_path / str(run)
        monkeypatch.setattr(sys, "argv", [str(script), "--out", str(out)])
        runpy.run_path(str(script), run_name="__main__")
        outputs.append([(out / name).read_bytes() for name in ("activations.pdf", "spectrum.pdf")])
    assert outputs[0] == outputs[1]
