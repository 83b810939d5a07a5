"""Feature visualisation (nsp.optvis): render times against the model's own forward and
backward passes, lucent side by side, and FeatureVisAnalysis's cost per record.

1. A 256-step channel visualisation at 128×128 (Fourier image, lucid's transforms, Adam)
   on torchvision's ResNet-18 (a channel of ``layer3``) and on the digits CNN's layout (a
   channel of ``relu2``; the forward pass stops there, so the convolutions run at 128×128
   although the classifier takes 8×8), both with random weights; the channel is the
   layer's most active on the starting image. Each is next to 256 forward+backward passes
   of the same layers on the same image in the same run: the render's overhead is the
   parameterisation, the transforms and the optimiser.
2. lucent's comparison: a 64-step channel objective on a small CNN (three 3×3
   convolutions), with and without the default transforms, at lucent's defaults (a
   128-pixel image, shown to the model at 224 pixels). With ``--lucent DIR`` (a directory
   holding ``torch-lucent==0.1.8``, ``kornia==0.4.1`` and whatever else lets it import),
   lucent renders the same objective in the same run, interleaved with nsp's (minimum of
   ``--repeats`` runs each). ``--lucent-only`` runs this part alone.
3. FeatureVisAnalysis.compute, as the callback runs it at each record.

    python benchmarks/optvis.py [--threads 1] [--repeats 3] [--lucent /tmp/lucent_site:/tmp/lucent_stub] [--lucent-only]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch
from torch import nn

from nsp import optvis
from nsp.optvis.optimize import forward


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, 10),
    )


class DigitsCNN(nn.Module):
    """tests/support/digits_cnn.py's layout: two 3×3 convolutions, a max-pool and a linear classifier for 1×8×8."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))))


def forward_backward(model: nn.Module, objective: optvis.Objective, image: torch.Tensor, steps: int) -> float:
    """Seconds of ``steps`` forward passes to the objective's layers and backward passes to the image."""
    start = time.perf_counter()
    for _ in range(steps):
        x = image.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(-objective(forward(model, x, objective.layers)).sum(), x)
    return time.perf_counter() - start


def most_active(net: nn.Module, layer: str, shape: tuple[int, int, int, int]) -> int:
    """The channel of ``layer`` most active on the starting image (a channel that is off for
    the whole image has zero gradient, and its render never moves)."""
    start = optvis.fourier_image(shape, seed=0)().detach()
    with torch.no_grad():
        return int(forward(net, start, [layer])[layer][0].flatten(1).mean(1).argmax())


def channel_vis(name: str, net: nn.Module, layer: str, channels: int) -> None:
    channel = most_active(net, layer, (1, channels, 128, 128))
    name = f"{name}, {layer}:{channel}"
    objective = optvis.channel(layer, channel)
    with_t = optvis.render(net, objective, steps=256, size=128, channels=channels)
    without = optvis.render(net, objective, steps=256, size=128, channels=channels, transforms=None)
    fb = forward_backward(net, objective, with_t.image, 256)
    print(f"| {name} | {with_t.seconds:.2f} | {without.seconds:.2f} | {fb:.2f} | {with_t.seconds / fb:.2f} | "
          f"{without.seconds / fb:.2f} |")


def lucent_render(model: nn.Module, objective: str, transforms: bool) -> float:
    from lucent.optvis import param, render

    kwargs = {} if transforms else {"transforms": []}
    start = time.perf_counter()
    render.render_vis(model, objective, param_f=lambda: param.image(128), thresholds=(64,), show_image=False,
                      progress=False, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the lucent comparison (minimum shown)")
    parser.add_argument("--lucent", default=None, help="PYTHONPATH entries (':'-separated) where lucent imports")
    parser.add_argument("--lucent-only", action="store_true", help="run the lucent comparison alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}")
    import torchvision

    torch.manual_seed(0)
    resnet = optvis.normalized(torchvision.models.resnet18().eval(), optvis.IMAGENET_MEAN, optvis.IMAGENET_STD)
    digits = optvis.normalized(DigitsCNN().eval(), [0.0], [1.0])

    if not args.lucent_only:
        print("\n256-step channel visualisation at 128×128, seconds")
        print("| model | render, default transforms | render, no transforms | 256 × (forward + backward) | "
              "× fwd+bwd | × fwd+bwd, no transforms |")
        print("|---|---|---|---|---|---|")
        channel_vis("ResNet-18 (random)", resnet, "layer3", 3)
        channel_vis("digits CNN (random)", digits, "relu2", 1)

    torch.manual_seed(0)
    cnn = small_cnn().eval()
    at224 = optvis.normalized(cnn, optvis.IMAGENET_MEAN, optvis.IMAGENET_STD, size=224)
    at128 = optvis.normalized(cnn, optvis.IMAGENET_MEAN, optvis.IMAGENET_STD)
    lucent_channel = most_active(at224, "7", (1, 3, 128, 128))
    objective = optvis.channel("7", lucent_channel)
    print(f"\n64-step objective on channel {lucent_channel} of a small CNN's third ReLU, 128-pixel image shown "
          "at 224, seconds")
    rows: dict[str, list[list[float] | str]] = {"nsp.optvis, shown at 224 (lucent's default)": [[], []],
                                                 "nsp.optvis, shown at 128": [[], []]}
    if args.lucent:
        sys.path[:0] = args.lucent.split(":")
        rows["lucent 0.1.8"] = [[], []]
    # Interleaved and repeated: on a shared machine the minimum is the least disturbed run.
    for _ in range(args.repeats):
        for column, t in enumerate(("default", None)):
            rows["nsp.optvis, shown at 224 (lucent's default)"][column].append(
                optvis.render(at224, objective, steps=64, size=128, transforms=t).seconds)
            rows["nsp.optvis, shown at 128"][column].append(
                optvis.render(at128, objective, steps=64, size=128, transforms=t).seconds)
            if args.lucent and not isinstance(rows["lucent 0.1.8"][column], str):
                try:
                    rows["lucent 0.1.8"][column].append(lucent_render(cnn, f"7:{lucent_channel}", t == "default"))
                except (RuntimeError, AssertionError, ImportError) as err:
                    # lucent's transforms call kornia, which is not installed here.
                    rows["lucent 0.1.8"][column] = f"did not run: {type(err).__name__}"
    print("| renderer | default transforms | no transforms |")
    print("|---|---|---|")
    for label, cells in rows.items():
        shown = [c if isinstance(c, str) else f"{min(c):.2f}" for c in cells]
        print(f"| {label} | {' | '.join(shown)} |")
    if args.lucent_only:
        return

    print("\nFeatureVisAnalysis.compute per record, seconds")
    from nsp_lightning.analyses import FeatureVisAnalysis
    from nsp_lightning.probe.analysis import ProbeContext

    cases = [
        ("digits CNN, 1×8×8 probes: 4 channels of relu2 + 10 classes, 64 steps at 8×8", digits.model,
         torch.rand(1, 1, 8, 8), FeatureVisAnalysis({"relu2": [0, 1, 2, 3]}, range(10), steps=64)),
        ("digits CNN, same targets, 64 steps at 32×32", digits.model, torch.rand(1, 1, 8, 8),
         FeatureVisAnalysis({"relu2": [0, 1, 2, 3]}, range(10), steps=64, size=32)),
        ("ResNet-18, 3×64×64 probes: 4 channels of layer3 + 2 classes, 64 steps at 64×64", resnet.model,
         torch.rand(1, 3, 64, 64), FeatureVisAnalysis({"layer3": [0, 1, 2, 3]}, [0, 1], steps=64,
                                                      mean=optvis.IMAGENET_MEAN, std=optvis.IMAGENET_STD)),
    ]
    print("| case | seconds per record | per target |")
    print("|---|---|---|")
    for label, model, probes, analysis in cases:
        analysis.check(model, probes)
        context = ProbeContext(model, probes, epoch=0, global_step=0)
        start = time.perf_counter()
        with torch.no_grad():
            analysis.compute(model, probes, context)
        seconds = time.perf_counter() - start
        print(f"| {label} | {seconds:.2f} | {seconds / len(analysis.labels()):.2f} |")


if __name__ == "__main__":
    main()
