"""Graph build and exact causal transform against the probe's forward pass.

Run ``python benchmarks/transform.py`` (or ``make bench``). For each network it measures,
in one process and side by side:

- ``forward``: the probe's forward pass (no grad), the unit of every ratio;
- ``capture``: ``nsp.Activations`` (one forward pass with recording hooks);
- ``build``: ``nsp.NNGraph`` plus ``get_transformer()`` (relations, plan, majorant);
- ``transform``: the exact standard spectrum of one probe;
- ``peak MB``: peak numpy/Python memory of build + transform (tracemalloc).

Times are medians over repeats. The MNIST tutorial network is the one the original
package needed about 400 s for (GUIDE §3, fact 1).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

import nsp  # noqa: E402
from networks import LeNet5, MnistTutorialNet, ReadmeNet, resnet18  # noqa: E402


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _randomise_batchnorm(net: nn.Module) -> nn.Module:
    """Non-trivial running statistics, as after training."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return net.eval()


def cases() -> list[tuple[str, nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    return [
        ("seed README net (4x4)", ReadmeNet().eval(), torch.randn(1, 1, 4, 4)),
        ("MNIST tutorial net (28x28)", MnistTutorialNet().eval(), torch.randn(1, 1, 28, 28)),
        ("LeNet-5 (32x32)", LeNet5().eval(), torch.randn(1, 1, 32, 32)),
        ("ResNet-18 (32x32, top-level)", _randomise_batchnorm(resnet18()), torch.randn(1, 3, 32, 32)),
    ]


def measure(name: str, net: nn.Module, x: torch.Tensor, repeats: int) -> dict:
    with torch.no_grad():
        forward = _median_time(lambda: net(x), repeats)
    capture = _median_time(lambda: nsp.Activations(net, x), repeats)
    acts = nsp.Activations(net, x)
    signal = acts.to_numpy()

    def build():
        return nsp.NNGraph(acts).get_transformer()

    op = build()
    build_time = _median_time(build, repeats)
    transform = _median_time(lambda: op.forward(signal), repeats)
    tracemalloc.start()
    build().forward(signal)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    graph = nsp.NNGraph(acts)
    return {
        "name": name,
        "neurons": graph.number_of_nodes(),
        "edges": graph.number_of_edges(),
        "forward_ms": forward * 1e3,
        "capture_ms": capture * 1e3,
        "build_ms": build_time * 1e3,
        "transform_ms": transform * 1e3,
        "ratio": (build_time + transform) / forward,
        "peak_mb": peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per measurement (median)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's); nsp's transform itself runs on one core")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, python {platform.python_version()}")
    header = ("network", "neurons", "edges", "forward ms", "capture ms", "build ms", "transform ms",
              "(build+transform)/forward", "peak MB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, net, x in cases():
        r = measure(name, net, x, args.repeats)
        print(f"| {r['name']} | {r['neurons']:,} | {r['edges']:,} | {r['forward_ms']:.2f} | {r['capture_ms']:.2f} | "
              f"{r['build_ms']:.2f} | {r['transform_ms']:.2f} | {r['ratio']:.2f} | {r['peak_mb']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
