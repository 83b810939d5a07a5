"""What lucid's transforms cost on a random ResNet-18 at 64x64 (issue 15).

Renders channel 5 of ``layer3`` (256 Adam steps, Fourier image, seed 0) under several
transform lists and prints, for the final un-transformed image, its channel mean as a
multiple of the mean over 100 uniform-noise images and of the starting image, and after a
4-pixel shift. About 10 minutes on one CPU thread (the figures are in the README)::

    python examples/optvis_resnet_transforms.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision

from nsp import optvis
from nsp.optvis import augment as T

SCALES = [1 + (i - 5) / 50 for i in range(11)]
ANGLES = list(range(-10, 11)) + 5 * [0]
CASES = {
    "no transforms": (None, "fourier", 0.05),
    "default (lucid's, scaled from 128 px: pad 6, jitter 4 and 2)": ("default", "fourier", 0.05),
    "pad 6, jitter 4 and 2 only": ([T.pad(6), T.jitter(4), T.jitter(2)], "fourier", 0.05),
    "lucid's scaled from 224 px: pad 3, jitter 2 and 1": (
        [T.pad(3), T.jitter(2), T.random_scale(SCALES), T.random_rotate(ANGLES), T.jitter(1)], "fourier", 0.05),
    "pad 2, jitter 1 and 1": (
        [T.pad(2), T.jitter(1), T.random_scale(SCALES), T.random_rotate(ANGLES), T.jitter(1)], "fourier", 0.05),
    "jitter centred on the image (pad 4, crop 8)": (
        [T.pad(4), T.jitter(8), T.random_scale(SCALES), T.random_rotate(ANGLES)], "fourier", 0.05),
    "default, lr 0.3": ("default", "fourier", 0.3),
    "default, pixel image, lr 0.1": ("default", "pixel", 0.1),
}


def main() -> None:
    torch.manual_seed(0)
    net = optvis.normalized(torchvision.models.resnet18().eval(), optvis.IMAGENET_MEAN, optvis.IMAGENET_STD)
    objective = optvis.channel("layer3", 5)
    random_mean = optvis.evaluate(net, objective, torch.rand(100, 3, 64, 64,
                                                             generator=torch.Generator().manual_seed(1))).mean()
    print("| transforms | x random images | x start | x start after a 4-px shift |\n|---|---|---|---|")
    for name, (transforms, param, lr) in CASES.items():
        result = optvis.visualize_channel(net, "layer3", 5, size=64, transforms=transforms, param=param, lr=lr)
        shifted = F.pad(result.image[..., :-4, :-4], [4, 0, 4, 0], mode="replicate")
        start = float(result.initial_value[0])
        print(f"| {name} | {float(result.value[0] / random_mean):.1f} | {float(result.value[0]) / start:.1f} | "
              f"{float(optvis.evaluate(net, objective, shifted)[0]) / start:.1f} |", flush=True)


if __name__ == "__main__":
    main()
