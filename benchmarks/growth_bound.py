"""The INCL=False growth bound against the exact growth, on torchvision's zoo with every leaf.

``python benchmarks/growth_bound.py`` builds each model's ``INCL=False`` graph (random
weights, eval mode, one random 3×32×32 input, one torch thread, as ``zoo.py``) and times
``nsp.transforms.growth.growth_bound``: 1 + log2 of its bound on max G per layer, and the
first layer where it leaves the float64 range (where the transform refuses).

``--exact`` also builds the ancestor sets (minutes per model) and computes the exact
growth with each layer's G held as a float64 mantissa and a power of two, so that it is
found beyond the float64 range too; it prints both per layer, every ``--every`` layers.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import nsp
from nsp.graph.relations import StructureError
from nsp.transforms.ancestor_sets import AncestorSets
from nsp.transforms.growth import growth_bound
from zoo import MODELS


def exact_growth(structure) -> np.ndarray:
    """Per layer, 1 + log2 of the exact max G, found beyond the float64 range too."""
    sets = AncestorSets(structure)
    mantissa: dict[int, np.ndarray] = {}
    exponent: dict[int, float] = {}
    out = np.ones(len(structure.sizes))
    ones = np.ones(max(1, sets._ones.size))
    for layer, size in enumerate(structure.sizes):
        total = np.zeros(int(size))
        top = max((exponent[k] for k in sets.blocks[layer]), default=0.0)
        for k, block in sets.blocks[layer].items():
            base = getattr(block, "base", block)
            product = base.matmul(np.ascontiguousarray((mantissa[k] * 2.0 ** (exponent[k] - top))[:, None]), ones)
            total += (block.gather(product) if base is not block else product)[:, 0]
        total += 2.0 ** -top if top < 1000 else 0.0  # the 1 of G = 1 + Σ G
        shift = math.floor(math.log2(total.max())) if total.size and total.max() > 0 else 0
        mantissa[layer], exponent[layer] = total / 2.0**shift, top + shift
        out[layer] = math.log2(mantissa[layer].max()) + exponent[layer] + 1 if total.size else 1.0
    return out


def main() -> None:
    import torchvision

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--exact", action="store_true", help="also the exact growth (builds the ancestor sets)")
    parser.add_argument("--every", type=int, default=14, help="with --exact, print every N-th layer")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| model | layers | graph s | bound s | max bound bits | refused at |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        net = getattr(torchvision.models, name)(num_classes=10, **MODELS[name]).eval()
        start = time.perf_counter()
        structure = nsp.NNGraph(nsp.Activations(net, torch.rand(1, 3, 32, 32), layers="leaves"), INCL=False).structure
        middle = time.perf_counter()
        try:
            bound, refused = growth_bound(structure), "–"
        except StructureError as err:
            bound, refused = None, str(err).split("'")[1]
        seconds = time.perf_counter() - middle
        peak = "–" if bound is None else f"{bound.max():.1f}"
        print(f"| {name} | {len(structure.sizes)} | {middle - start:.1f} | {seconds:.2f} | {peak} | {refused} |", flush=True)
        if args.exact:
            exact = exact_growth(structure)
            for layer in range(0, len(exact), args.every):
                within = "" if bound is None else f", bound {bound[layer]:.1f}"
                print(f"  {layer} {structure.names[layer]}: exact {exact[layer]:.1f}{within}", flush=True)


if __name__ == "__main__":
    main()
