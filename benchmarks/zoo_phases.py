"""One zoo model's INCL=True pipeline, phase by phase, in CPU time (``time.process_time``).

``python benchmarks/zoo_phases.py MODEL top|leaves [--repeats N]`` prints the minimum over
the repeats of each phase: the model's forward pass, capture (``nsp.Activations``), graph
(``nsp.NNGraph``), plan (``get_transformer()``) and the exact transform of the probe.
Run it for two source trees one after the other (``PYTHONPATH=TREE``), alternating:
on a shared machine CPU time moves much less with the load than the wall times of
``benchmarks/zoo.py``, whose forward pass then varies by several times between runs.
Same models, weights and input as ``benchmarks/zoo.py``, one torch thread.
"""

from __future__ import annotations

import argparse
import time

import torch

from zoo import MODELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=list(MODELS))
    parser.add_argument("layers", choices=["top", "leaves"])
    parser.add_argument("--repeats", type=int, default=5, help="runs of the whole pipeline (minimum per phase)")
    args = parser.parse_args()
    import torchvision

    import nsp

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = getattr(torchvision.models, args.model)(num_classes=10, **MODELS[args.model]).eval()
    x = torch.rand(1, 3, 32, 32)
    kwargs = {} if args.layers == "top" else {"layers": "leaves"}
    nsp.NNGraph(nsp.Activations(net, x, **kwargs)).get_transformer()  # warm-up
    phases: dict[str, list[float]] = {k: [] for k in ("forward", "capture", "graph", "plan", "transform", "pipeline")}
    clock = time.process_time
    for _ in range(args.repeats):
        with torch.no_grad():
            start = clock()
            net(x)
            phases["forward"].append(clock() - start)
        marks = [clock()]
        acts = nsp.Activations(net, x, **kwargs)
        marks.append(clock())
        graph = nsp.NNGraph(acts)
        marks.append(clock())
        transformer = graph.get_transformer()
        marks.append(clock())
        transformer.forward(acts.to_numpy())
        marks.append(clock())
        for name, a, b in zip(("capture", "graph", "plan", "transform"), marks, marks[1:]):
            phases[name].append(b - a)
        phases["pipeline"].append(marks[-1] - marks[0])
    best = {k: min(v) * 1e3 for k, v in phases.items()}
    print(f"{args.model} {args.layers}: " + ", ".join(f"{k} {v:.1f}" for k, v in best.items())
          + f" ms CPU (min of {args.repeats}); pipeline ÷ forward {best['pipeline'] / best['forward']:.1f}×")


if __name__ == "__main__":
    main()
