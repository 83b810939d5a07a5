"""nsp's occlusion against captum's ``Occlusion`` on the same data, side by side in one run.

nsp evaluates each batch of occluded copies together with the unoccluded inputs (so that a
window the model ignores gives exactly 0 on any CPU); captum evaluates the inputs once in
a pass of their own. Both use 8×8 windows at stride 4 on 3×64×64 images (225 windows) and
64 copies of each input per forward pass. One torch thread, interleaved, minimum of the
repeats; the two results agree to float32 rounding.

    python benchmarks/occlusion.py [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from captum.attr import Occlusion

from attribution import small_cnn
from nsp.attribution import attribute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = small_cnn().eval()
    x = torch.rand(args.batch, 3, 64, 64)
    target = model(x).argmax(dim=1)
    runs = {
        "nsp occlusion": lambda: attribute(model, x, "occlusion", target=target),
        "captum Occlusion": lambda: Occlusion(model).attribute(
            x, sliding_window_shapes=(3, 8, 8), strides=(1, 4, 4), target=target, perturbations_per_eval=64),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    results = {}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            results[name] = run()
            times[name].append(time.perf_counter() - start)
    diff = (results["nsp occlusion"] - results["captum Occlusion"]).abs().max().item()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, "
          f"load {os.getloadavg()[0]:.2f}, batch {args.batch}, max |difference| {diff:.2e}")
    base = min(times["captum Occlusion"])
    for name, values in times.items():
        print(f"| {name} | {min(values):.2f} s | {min(values) / base:.2f}x |")


if __name__ == "__main__":
    main()
