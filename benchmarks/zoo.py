"""torchvision's classification models: graph and exact causal transform against the forward pass.

Run ``python benchmarks/zoo.py`` (INCL=True, top-level layers and every leaf) and
``python benchmarks/zoo.py --incl-false`` (the data-dependent graph);
``--profile N`` prints each case's N costliest functions instead (cProfile, own time). Every model gets
random weights (no downloads), eval mode, one random 3×32×32 input and one torch thread
(nsp's transform is single-threaded numpy, so both sides use one core). Each case runs
in its own process, under a time limit, and measures side by side:

- ``forward``: the model's forward pass (no grad, median of repeats), the unit of every ratio;
- ``capture``: ``nsp.Activations`` (a forward pass with recording hooks);
- ``graph``: ``nsp.NNGraph`` (the relations between layers);
- ``transform``: ``get_transformer()`` (ancestor plan, majorant) and the exact spectrum
  of the probe.

Each time is the median of its repeats; ``--min`` takes the minimum instead, for the
forward pass and each phase alike, as issue 23's figures were taken (on a shared machine the
minimum moves less: a garbage-collector pass or another process lands in some repeats only).

A model nsp cannot analyse is listed with the ``UnsupportedModuleError`` it raises.
torchvision must import (on the CPU build of torch, through the test environment's shim:
see README, "Quick start").
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch

MODELS: dict[str, dict] = {
    "resnet18": {},
    "resnet50": {},
    "vgg11_bn": {},
    "mobilenet_v2": {},
    "mobilenet_v3_small": {},
    "efficientnet_b0": {},
    "densenet121": {},
    "shufflenet_v2_x0_5": {},
    "squeezenet1_1": {},
    "googlenet": {"aux_logits": False, "init_weights": False},
    "regnet_y_400mf": {},
    "mnasnet0_5": {},
    "convnext_tiny": {},
    "vit_b_16": {"image_size": 32},
    "swin_t": {},
}


# The clock of every measurement: the wall clock, or with --cpu the process's CPU time.
_clock: Callable[[], float] = time.perf_counter
# How repeats become one time: their median, or with --min their minimum.
_summary: Callable[[list[float]], float] = statistics.median


def _time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = _clock()
        fn()
        times.append(_clock() - start)
    return _summary(times)


def measure(name: str, layers: str, incl: bool, repeats: int) -> dict:
    """One case, in this process."""
    import torchvision

    import nsp

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(num_classes=10, **MODELS[name]).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        net(x)
        forward = _time(lambda: net(x), 20)
    kwargs = {} if layers == "top" else {"layers": "leaves"}
    result = {"model": name, "layers": layers, "incl": incl, "forward_ms": forward * 1e3}
    try:
        capture = _time(lambda: nsp.Activations(net, x, **kwargs), repeats)
        acts = nsp.Activations(net, x, **kwargs)
        graphs, transforms = [], []
        for _ in range(repeats):
            start = _clock()
            graph = nsp.NNGraph(acts, INCL=incl)
            middle = _clock()
            try:
                graph.transform(acts)
            except (nsp.StructureError, MemoryError) as err:
                # A refusal is a result too: how long it took to come matters (issue 23).
                result.update(refused=str(err), neurons=graph.number_of_nodes(), layer_count=len(acts.layernames),
                              capture_ms=capture * 1e3, graph_ms=(middle - start) * 1e3,
                              transform_ms=(_clock() - middle) * 1e3)
                return result
            graphs.append(middle - start)
            transforms.append(_clock() - middle)
    except nsp.UnsupportedModuleError as err:
        result["unsupported"] = str(err).split(". Supported:")[0]
        return result
    result.update(
        neurons=graph.number_of_nodes(), layer_count=len(acts.layernames), capture_ms=capture * 1e3,
        graph_ms=_summary(graphs) * 1e3, transform_ms=_summary(transforms) * 1e3,
    )
    return result


def profile(name: str, layers: str, incl: bool, top: int) -> str:
    """cProfile of one capture + graph + transform, the ``top`` entries by own time."""
    import cProfile
    import io
    import pstats

    import torchvision

    import nsp

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(num_classes=10, **MODELS[name]).eval()
    x = torch.rand(1, 3, 32, 32)
    kwargs = {} if layers == "top" else {"layers": "leaves"}
    nsp.NNGraph(nsp.Activations(net, x, **kwargs), INCL=incl).get_transformer()  # warm-up
    profiler = cProfile.Profile()
    profiler.enable()
    acts = nsp.Activations(net, x, **kwargs)
    nsp.NNGraph(acts, INCL=incl).get_transformer().forward(acts.to_numpy())
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return f"### {name}, {layers}, INCL={incl}\n" + out.getvalue()


def _run(name: str, layers: str, incl: bool, repeats: int, timeout: float, cpu: bool = False,
         minimum: bool = False) -> dict:
    command = [sys.executable, __file__, "--one", name, layers, str(incl), "--repeats", str(repeats)] \
        + ["--cpu"] * cpu + ["--min"] * minimum
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "layers": layers, "incl": incl, "timeout": timeout}
    if done.returncode != 0:
        return {"model": name, "layers": layers, "incl": incl, "error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(r: dict) -> str:
    head = f"| {r['model']} | {r['layers']} |"
    # The value cells between the layers and the note: 7 with INCL=True, 6 without.
    cells = 7 if r["incl"] else 6
    if "timeout" in r:
        return head + " – |" * cells + f" did not finish in {r['timeout']:.0f} s |"
    if "error" in r:
        return head + " – |" * cells + f" failed: {r['error']} |"
    if "unsupported" in r:
        return head + f" – | {r['forward_ms']:.1f} |" + " – |" * (cells - 2) + f" unsupported: {r['unsupported']} |"
    f = r["forward_ms"]
    if "refused" in r:
        return head + (f" {r['neurons']:,} ({r['layer_count']} layers) | {f:.1f} | {r['capture_ms'] / 1e3:.2f} s | "
                       f"{r['graph_ms'] / 1e3:.1f} s | {r['transform_ms'] / 1e3:.1f} s to the refusal | "
                       f"**refused after {(r['graph_ms'] + r['transform_ms']) / 1e3:.1f} s** |" + " – |" * (cells - 6)
                       + f" {r['refused']} |")
    total = (r["graph_ms"] + r["transform_ms"]) / f
    if r["incl"]:
        pipeline = total + r["capture_ms"] / f
        times = (f"{r['capture_ms'] / f:.1f} | {r['graph_ms'] / f:.1f} | {r['transform_ms'] / f:.1f} | {total:.1f} | "
                 f"**{pipeline:.1f}** ({(r['capture_ms'] + r['graph_ms'] + r['transform_ms']) / 1e3:.2f} s)")
    else:
        times = (f"{r['capture_ms'] / 1e3:.2f} s | {r['graph_ms'] / 1e3:.1f} s | {r['transform_ms'] / 1e3:.1f} s | "
                 f"**{(r['graph_ms'] + r['transform_ms']) / 1e3:.1f} s**")
    return head + f" {r['neurons']:,} ({r['layer_count']} layers) | {f:.1f} | {times} | |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(MODELS), help="torchvision model names")
    parser.add_argument("--layers", nargs="*", default=["top", "leaves"], choices=["top", "leaves"])
    parser.add_argument("--incl-false", action="store_true", help="measure INCL=False (the data-dependent graph)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of capture, graph and transform (median)")
    parser.add_argument("--min", action="store_true",
                        help="the minimum of the repeats instead of their median (forward pass and every phase)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per case")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="instead of timing, print each case's N costliest functions (cProfile, own time)")
    parser.add_argument("--cpu", action="store_true",
                        help="time with the process's CPU time instead of the wall clock (under load, leaves out the "
                             "time a process waits for a core; one torch thread, so the two agree on a quiet machine)")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "LAYERS", "INCL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    global _clock, _summary
    if args.cpu:
        _clock = time.process_time
    if args.min:
        _summary = min
    if args.profile:
        for name in args.models:
            for layers in args.layers:
                print(profile(name, layers, not args.incl_false, args.profile), flush=True)
        return
    if args.one:
        name, layers, incl = args.one
        print(json.dumps(measure(name, layers, incl == "True", args.repeats)))
        return
    incl = not args.incl_false
    print(f"# {platform.processor() or platform.machine()}, 1 torch thread, torch {torch.__version__}, "
          f"python {platform.python_version()}, INCL={incl}, 3×32×32 input, "
          f"{'minimum' if args.min else 'median'} of the repeats")
    if incl:
        header = ("model", "layers", "neurons", "forward ms", "capture/fwd", "graph/fwd", "transform/fwd",
                  "(graph+transform)/fwd", "(capture+graph+transform)/fwd", "note")
    else:
        header = ("model", "layers", "neurons", "forward ms", "capture", "graph", "transform", "graph+transform", "note")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in args.models:
        for layers in args.layers:
            print(_row(_run(name, layers, incl, 1 if not incl else args.repeats, args.timeout, args.cpu, args.min)),
                  flush=True)


if __name__ == "__main__":
    main()
