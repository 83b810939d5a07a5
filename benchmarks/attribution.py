"""Attribution on a batch of 32 images at 64×64: each method of nsp.attribution against a
forward pass of the same model, measured side by side in one run.

Two models: a small CNN (three 3×3 convolutions, 16/32/64 channels) and torchvision's
ResNet-18 (10 classes). Every method runs on the whole batch in one call (captum batches
the noisy copies, integration steps and occluded copies too). Settings are the defaults:
SmoothGrad 25 samples, integrated gradients 50 steps (Gauss-Legendre, 128 images per
forward pass), occlusion 8×8 windows at stride 4 (225 windows, 64 copies per forward
pass), Grad-CAM on the last convolution. Rows also time captum called directly (what
nsp adds: one traced forward pass for the default target and the checks) and the same
saliency image by image (what batching saves).

    python benchmarks/attribution.py [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import torch
from torch import nn

from nsp.attribution import attribute


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, 10),
    )


def resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(num_classes=10)


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls, after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


METHODS = ["saliency", "guided_backprop", "smoothgrad", "guided_smoothgrad", "integrated_gradients", "gradcam",
           "guided_gradcam", "occlusion"]
SLOW = {"smoothgrad", "guided_smoothgrad", "integrated_gradients", "occlusion"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import captum.attr as ca

    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"batch {args.batch}x3x64x64, median of {args.repeats} (1 for SmoothGrad, IG, occlusion)")
    for name, make in (("small CNN", small_cnn), ("ResNet-18", resnet18)):
        torch.manual_seed(0)
        model = make().eval()
        x = torch.randn(args.batch, 3, 64, 64)
        with torch.no_grad():
            target = model(x).argmax(1)

        def forward() -> None:
            with torch.no_grad():
                model(x)

        fwd = timed(forward, args.repeats)
        print(f"\n{name}: forward pass {fwd * 1e3:.1f} ms")
        print(f"{'method':<24}{'ms':>10}{'x forward':>11}")
        for method in METHODS:
            repeats = 1 if method in SLOW else args.repeats
            seconds = timed(lambda: attribute(model, x, method), repeats)
            print(f"{method:<24}{seconds * 1e3:>10.1f}{seconds / fwd:>11.1f}")
        xg = x.clone().requires_grad_()
        layer = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
        rows = {
            "captum Saliency": lambda: ca.Saliency(model).attribute(xg, target=target, abs=False),
            "captum LayerGradCam": lambda: ca.LayerGradCam(model, layer).attribute(xg, target=target,
                                                                                  relu_attributions=True),
            "saliency, image by image": lambda: [attribute(model, x[i:i + 1], "saliency") for i in range(len(x))],
        }
        for label, fn in rows.items():
            seconds = timed(fn, args.repeats)
            print(f"{label:<24}{seconds * 1e3:>10.1f}{seconds / fwd:>11.1f}")


if __name__ == "__main__":
    main()
