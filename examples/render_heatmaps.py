"""Regenerate docs/heatmap_{readme,mnist,resnet18}.png with nsp.render.render_side_by_side.

Run from the repository root:  .venv/bin/python examples/render_heatmaps.py docs
Networks: benchmarks/networks.py. README and MNIST nets carry the weights stored in
tests/data (the original package's), the MNIST net sees an sklearn digit resized to 28x28,
and a randomly initialised (seed 0) CIFAR-style ResNet-18 sees the same digit at 32x32.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits

sys.path.insert(0, "benchmarks")
import networks  # noqa: E402

import nsp  # noqa: E402
from nsp.viz import render  # noqa: E402


def with_npz_weights(net, path):
    with np.load(path, allow_pickle=False) as npz:
        net.load_state_dict({k[len("param."):]: torch.from_numpy(npz[k]) for k in npz.files if k.startswith("param.")})
        return net.eval(), torch.from_numpy(npz["input"])


def save(net, x, path):
    activations = nsp.Activations(net, x)
    spectrum = nsp.NNGraph(activations).transform(activations)
    img = render.render_side_by_side(activations, spectrum)
    # A 256-colour palette PNG (octree, no dithering) keeps the ResNet-18 image near 160 KB.
    Image.fromarray(img).quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
        path, optimize=True)
    print(path, img.shape, os.path.getsize(path) // 1024, "KB")


folder = sys.argv[1]
digit = torch.tensor(load_digits().images[0], dtype=torch.float32)[None, None] / 16.0
net, x = with_npz_weights(networks.ReadmeNet(), "tests/data/readme-net.npz")
save(net, x, f"{folder}/heatmap_readme.png")
net, _ = with_npz_weights(networks.MnistTutorialNet(), "tests/data/mnist-tutorial-net.npz")
save(net, F.interpolate(digit, size=(28, 28), mode="bilinear", align_corners=False), f"{folder}/heatmap_mnist.png")
torch.manual_seed(0)
x = (F.interpolate(digit, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1) - 0.5) / 0.25
save(networks.resnet18().eval(), x, f"{folder}/heatmap_resnet18.png")
