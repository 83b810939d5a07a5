"""Which of torchvision's classification models nsp analyses, and which it refuses by name.

Run ``python benchmarks/zoo_status.py`` (one model per family) or ``--all`` (every
classification model in ``torchvision.models``). Each model gets random weights (no
downloads), eval mode and one random input at a small size (3×32×32; larger where the
architecture needs it). For top-level layers and for ``layers="leaves"``, with
``INCL=True`` and ``INCL=False``, ``Activations`` → ``NNGraph`` → ``transform`` either
works (the time is printed) or raises ``UnsupportedModuleError`` naming the operation and
its module path (printed). Each case runs in its own process under a time limit, with one
torch thread. The README's "Model zoo status" table is this script's output.
torchvision must import (on the CPU build of torch, through the test environment's shim:
see README, "Quick start").
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time

import torch

# One model per family; --all takes every classification model.
FAMILIES = [
    "resnet18", "vgg11_bn", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "densenet121",
    "shufflenet_v2_x0_5", "squeezenet1_1", "googlenet", "regnet_y_400mf", "mnasnet0_5", "convnext_tiny", "vit_b_16",
    "swin_t", "alexnet", "resnext50_32x4d", "wide_resnet50_2", "efficientnet_v2_s", "inception_v3",
    "regnet_x_400mf", "swin_v2_t", "maxvit_t",
]


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """``name`` with random weights in eval mode, and a random input at a small size."""
    import torchvision

    kwargs: dict = {"num_classes": 10}
    size = 32
    if name == "googlenet":
        kwargs.update(aux_logits=False, init_weights=False)
    elif name == "inception_v3":
        kwargs.update(aux_logits=False, init_weights=False)
        size = 75  # its stem needs at least 75×75
    elif name.startswith("vit_"):
        size = 28 if name.endswith("_14") else 32
        kwargs["image_size"] = size
    elif name == "alexnet":
        size = 64  # three 3×3 stride-2 max-pools after a stride-4 stem
    elif name == "maxvit_t":
        size = 224  # every stage's map must be a multiple of its 7×7 partitions
        kwargs["input_size"] = (size, size)
    torch.manual_seed(0)
    net = torchvision.models.get_model(name, **kwargs).eval()
    return net, torch.rand(1, 3, size, size)


def status(name: str, layers: str, incl: bool) -> dict:
    """One case, in this process: ``{'seconds': ...}`` or ``{'refused': message}``."""
    import nsp

    torch.set_num_threads(1)
    net, x = build(name)
    start = time.perf_counter()
    try:
        acts = nsp.Activations(net, x, **({} if layers == "top" else {"layers": "leaves"}))
        graph = nsp.NNGraph(acts, INCL=incl)
        graph.transform(acts)
    except nsp.UnsupportedModuleError as err:
        return {"refused": str(err)}
    return {"seconds": time.perf_counter() - start, "neurons": graph.number_of_nodes()}


def short(message: str) -> str:
    """The refused operation and its module path, from an ``UnsupportedModuleError``."""
    found = re.search(r"cannot analyse '([^']*)' \(([^)]*)\)(: [^.]*)?", message)
    if not found:
        return message[:120]
    path, op, why = found.groups()
    return f"refused: `{op}` at `{path}`{(why or '')[:100]}"


def run_case(name: str, layers: str, incl: bool, timeout: float) -> str:
    command = [sys.executable, __file__, "--one", name, layers, str(incl)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"> {timeout:.0f} s"
    if done.returncode != 0:
        return f"error: {(done.stderr.strip().splitlines() or ['?'])[-1][:120]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "refused" in result:
        return short(result["refused"])
    return f"works, {result['seconds']:.1f} s ({result['neurons']:,} neurons)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="every classification model, not one per family")
    parser.add_argument("--models", nargs="*", help="these models only")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per case")
    parser.add_argument("--incl", choices=["True", "False"], help="only the INCL=True or only the INCL=False columns")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "LAYERS", "INCL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        name, layers, incl = args.one
        print(json.dumps(status(name, layers, incl == "True")))
        return
    import torchvision

    names = args.models or (torchvision.models.list_models(module=torchvision.models) if args.all else FAMILIES)
    print(f"# {platform.processor() or platform.machine()}, 1 torch thread, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, limit {args.timeout:.0f} s per case")
    cases = [("top", True), ("top", False), ("leaves", True), ("leaves", False)]
    cases = [(layers, incl) for layers, incl in cases if args.incl is None or str(incl) == args.incl]
    print("| model | input | " + " | ".join(f"{layers}, INCL={incl}" for layers, incl in cases) + " |")
    print("|" + "---|" * (len(cases) + 2))
    for name in names:
        size = build(name)[1].shape[-1]
        cells = [run_case(name, layers, incl, args.timeout) for layers, incl in cases]
        print(f"| {name} | {size}×{size} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
