"""Scale benchmarks: layers at depth, batched probes and INCL=False.

Run ``python benchmarks/scale.py [--resnet50-sizes 32 64 224] [--incl-false-sizes 28 84]``
(the defaults take about 15 minutes and 15 GB at their peak). Each line is measured in
this process, side by side with the forward pass of the same probe(s):

- ResNet-50 with every leaf module as a layer (INCL=True), exact spectrum of one probe,
  at the given input sizes: torchvision's layout (7×7 stride-2 stem, max-pool, 1000
  classes) and the CIFAR layout of ``networks.py`` (3×3 stem, no max-pool: 16 times the
  neurons in the first stages at the same input size);
- 16 batched probes on ResNet-18 at 32×32 (one graph, one vectorised transform);
- INCL=False (exact ancestor sets, stored by receptive field) on the MNIST tutorial
  network's layers at growing input sizes, up to the largest that fits the machine.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import nsp  # noqa: E402
from networks import resnet18, resnet50  # noqa: E402
from transform import _median_time, _randomise_batchnorm  # noqa: E402


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def resnet50_leaves(size: int, imagenet: bool = False) -> None:
    torch.manual_seed(0)
    net = _randomise_batchnorm(resnet50(1000, imagenet=True) if imagenet else resnet50())
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        forward = _median_time(lambda: net(x), 3)
    start = time.perf_counter()
    acts = nsp.Activations(net, x, layers="leaves")
    captured = time.perf_counter()
    op = nsp.NNGraph(acts).get_transformer()
    built = time.perf_counter()
    op.forward(acts.to_numpy())
    done = time.perf_counter()
    n = sum(a.numel() for a in acts.layeractivations)
    layout = "torchvision layout" if imagenet else "CIFAR layout"
    print(f"| ResNet-50 ({layout}) {size}x{size}, every leaf ({len(acts.layernames)} layers) | {n:,} | {forward * 1e3:.1f} | "
          f"{(captured - start) * 1e3:.0f} | {(built - captured):.2f} s | {(done - built):.2f} s | "
          f"{(done - captured) / forward:.0f} | {_rss_gb():.1f} |", flush=True)


def batched_resnet18(probes: int) -> None:
    torch.manual_seed(0)
    net, x = _randomise_batchnorm(resnet18()), torch.randn(probes, 3, 32, 32)
    with torch.no_grad():
        forward = _median_time(lambda: net(x), 5)
    patterns = nsp.Activations.from_batch(net, x)
    graph = nsp.NNGraph(patterns[0])
    op = graph.get_transformer()
    signals = torch.stack([torch.from_numpy(p.to_numpy()) for p in patterns]).numpy()
    transform = _median_time(lambda: op.forward(signals), 3)
    build = _median_time(lambda: nsp.NNGraph(patterns[0]).get_transformer(), 3)
    n = signals.shape[1]
    print(f"| ResNet-18 32x32, {probes} batched probes | {probes} × {n:,} | {forward * 1e3:.1f} | – | "
          f"{build * 1e3:.1f} ms | {transform * 1e3:.1f} ms | {(build + transform) / forward:.2f} | {_rss_gb():.1f} |",
          flush=True)


def incl_false(size: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 1, size, size)
    features = torch.nn.Sequential(
        torch.nn.Conv2d(1, 10, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(10, 20, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
    )
    with torch.no_grad():
        flat = features(x).shape[1]
    # The MNIST tutorial network's layers as modules, so ReLU and max-pool prune edges.
    net = torch.nn.Sequential(*features, torch.nn.Linear(flat, 10)).eval()
    with torch.no_grad():
        forward = _median_time(lambda: net(x), 5)
    acts = nsp.Activations(net, x)
    start = time.perf_counter()
    try:
        op = nsp.NNGraph(acts, INCL=False).get_transformer()
    except MemoryError as err:
        print(f"| MNIST-style CNN {size}x{size}, INCL=False | {sum(a.numel() for a in acts.layeractivations):,} | "
              f"refused: {err} |", flush=True)
        return
    built = time.perf_counter()
    op.forward(acts.to_numpy())
    done = time.perf_counter()
    n = sum(a.numel() for a in acts.layeractivations)
    print(f"| MNIST-style CNN {size}x{size}, INCL=False | {n:,} | {forward * 1e3:.2f} | – | {built - start:.2f} s | "
          f"{(done - built):.2f} s | {(done - start) / forward:.0f} | {_rss_gb():.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resnet50-sizes", type=int, nargs="*", default=[32, 64, 224])
    parser.add_argument("--incl-false-sizes", type=int, nargs="*", default=[28, 84, 224, 336, 448])
    parser.add_argument("--imagenet-resnet50-sizes", type=int, nargs="*", default=[224])
    args = parser.parse_args()
    print(f"# {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print("| case | neurons | forward ms | capture ms | build | transform | ratio to forward | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|")
    batched_resnet18(16)
    for size in args.incl_false_sizes:
        incl_false(size)
    for size in args.imagenet_resnet50_sizes:
        resnet50_leaves(size, imagenet=True)
    for size in args.resnet50_sizes:
        resnet50_leaves(size)


if __name__ == "__main__":
    main()
