"""Attribution against captum called directly, side by side in one run (issue 23).

Default: torchvision's ResNet-18 (10 classes, random weights, eval mode) on a batch of 8
images at 3×64×64. For saliency, Grad-CAM (the last convolution), guided backprop and
guided Grad-CAM, ``nsp.attribution.attribute`` with its defaults (the target is each
input's prediction, the layer the last convolution that runs) is timed against captum's
class called directly with the target and the layer given. The two are interleaved
(their order alternating from repeat to repeat), after one warm-up call each, and the
minimum of the repeats is kept: the least disturbed run of each on a shared machine.

nsp's guided backprop rectifies at each ReLU's output instead of its input (see
``nsp.attribution.guided_backprop``), so on ResNet-18, whose blocks reuse a ReLU module, its
map differs from plain captum's. Its time is compared with plain captum's ``GuidedBackprop``
(the library's speed) and its map with captum's class running nsp's hooks, which it must
equal bit for bit; the other methods' maps must equal captum's.

``--table`` also times every method, the slow ones included, against a forward pass of
the same model (a small CNN and ResNet-18).

    python benchmarks/attribution.py [--threads 1] [--repeats 9] [--batch 8] [--table]
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from typing import Callable

import torch
from torch import nn

from nsp.attribution import attribute
from nsp.attribution.guided_backprop import captum_guided_backprop


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


def interleaved_minimum(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The minimum seconds of ``repeats`` calls of each function, the functions taking turns
    (in reversed order every other repeat), after one warm-up call each."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    order = list(fns)
    for r in range(repeats):
        for name in order if r % 2 == 0 else reversed(order):
            start = time.perf_counter()
            fns[name]()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def side_by_side(batch: int, repeats: int) -> None:
    """nsp against captum on ResNet-18, one pair per method."""
    import captum.attr as ca

    torch.manual_seed(0)
    model = resnet18().eval()
    x = torch.randn(batch, 3, 64, 64)
    with torch.no_grad():
        target = model(x).argmax(1)
    layer = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]

    def grad_input() -> torch.Tensor:
        return x.clone().requires_grad_()

    captum = {
        "saliency": lambda: ca.Saliency(model).attribute(grad_input(), target=target, abs=False),
        "gradcam": lambda: ca.LayerGradCam(model, layer).attribute(grad_input(), target=target,
                                                                    relu_attributions=True),
        "guided_backprop": lambda: ca.GuidedBackprop(model).attribute(grad_input(), target=target),
        "guided_gradcam": lambda: ca.GuidedGradCam(model, layer).attribute(grad_input(), target=target),
    }

    def guided_gradcam_nsp_hooks() -> torch.Tensor:
        method = ca.GuidedGradCam(model, layer)
        method.guided_backprop = captum_guided_backprop()(model)
        return method.attribute(grad_input(), target=target)

    # The map each nsp result must equal bit for bit: captum's, with nsp's guided hooks for the guided methods.
    reference = {
        "saliency": captum["saliency"],
        "gradcam": captum["gradcam"],
        "guided_backprop": lambda: captum_guided_backprop()(model).attribute(grad_input(), target=target),
        "guided_gradcam": guided_gradcam_nsp_hooks,
    }
    print(f"\nResNet-18 (10 classes), batch {batch}x3x64x64; nsp with its defaults against captum with the target "
          f"and layer given; minimum of {repeats} interleaved repeats")
    print(f"{'method':<18}{'nsp ms':>10}{'captum ms':>12}{'x captum':>10}  bit-equal")
    for method, direct in captum.items():
        fns = {"nsp": lambda m=method: attribute(model, x, m), "captum": direct}
        best = interleaved_minimum(fns, repeats)
        equal = torch.equal(attribute(model, x, method), reference[method]().detach())
        print(f"{method:<18}{best['nsp'] * 1e3:>10.1f}{best['captum'] * 1e3:>12.1f}"
              f"{best['nsp'] / best['captum']:>10.2f}  {equal}")


# The methods timed by --table: nsp's own wrappers (captum's table methods cost what captum costs
# plus one traced no-grad forward pass).
TABLE_METHODS = ("saliency", "guided_backprop", "smoothgrad", "guided_smoothgrad", "integrated_gradients", "gradcam",
                 "guided_gradcam", "occlusion", "deconvolution")
SLOW = {"smoothgrad", "guided_smoothgrad", "integrated_gradients", "occlusion"}


def table(batch: int, repeats: int) -> None:
    """Every method against a forward pass of the same model, small CNN and ResNet-18."""
    for name, make in (("small CNN", small_cnn), ("ResNet-18", resnet18)):
        torch.manual_seed(0)
        model = make().eval()
        x = torch.randn(batch, 3, 64, 64)

        def forward() -> None:
            with torch.no_grad():
                model(x)

        print(f"\n{name}: {'method':<24}{'ms':>10}{'x forward':>11}")
        for method in TABLE_METHODS:
            best = interleaved_minimum({"forward": forward, method: lambda m=method: attribute(model, x, m)},
                                       1 if method in SLOW else repeats)
            print(f"{'':<{len(name) + 2}}{method:<24}{best[method] * 1e3:>10.1f}{best[method] / best['forward']:>11.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--table", action="store_true", help="also time every method against a forward pass")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.machine()}")
    side_by_side(args.batch, args.repeats)
    if args.table:
        table(args.batch, args.repeats)


if __name__ == "__main__":
    main()
