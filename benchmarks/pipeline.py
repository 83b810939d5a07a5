"""Issue 23's acceptance figure: ResNet-18's exact pipeline against its forward pass.

``benchmarks/networks.py``'s ResNet-18 at 32×32 (random weights with non-trivial
BatchNorm statistics, eval mode), top-level layers, ``INCL=True``, one torch thread. In
one process, interleaved (each repeat runs every phase once, so a slow moment of a shared
machine hits all of them), the minimum of the repeats of:

- ``forward``: the model's forward pass without grad, the unit of every ratio;
- ``pipeline``: ``nsp.Activations`` + ``nsp.NNGraph`` + ``get_transformer()`` + the exact
  spectrum (target: at most 2× the forward pass);
- ``record``: the layers' values (``nsp.Activations(net, x, like=pattern)``, no dataflow
  recorder) + the exact spectrum with the transformer already built, what each record of
  a callback pays (target: at most 1.5×);
- ``capture``, ``graph`` and ``transform`` alone, to say where the time goes.

    python benchmarks/pipeline.py [--repeats 9] [--profile N] [--baseline DIR]

``--profile N`` runs N pipelines under cProfile and prints the top entries by own time.
``--baseline DIR`` also times, interleaved with the rest, every phase with another
checkout's whole ``nsp`` package (copied to a temporary directory as ``nsp_baseline``, its
imports of ``nsp`` renamed), so that a change anywhere in capture, graph or transform is
measured side by side in one process. A checkout from before issue 23's values-only
capture records in full in its ``record``.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import importlib
import inspect
import os
import platform
import pstats
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

import nsp  # noqa: E402
from networks import resnet18  # noqa: E402
from transform import _randomise_batchnorm  # noqa: E402


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _baseline(root: Path) -> object:
    """The ``nsp`` package of the checkout at ``root``, imported as ``nsp_baseline``."""
    copy = Path(tempfile.mkdtemp(prefix="nsp_baseline_"))
    atexit.register(shutil.rmtree, copy, True)
    shutil.copytree(root / "nsp", copy / "nsp_baseline")
    for path in (copy / "nsp_baseline").rglob("*.py"):
        text = path.read_text()
        text = re.sub(r"\bimport nsp\.", "import nsp_baseline.", text)
        text = re.sub(r"\bfrom nsp\b", "from nsp_baseline", text)
        text = re.sub(r"^import nsp$", "import nsp_baseline as nsp", text, flags=re.M)
        path.write_text(text)
    sys.path.insert(0, str(copy))
    return importlib.import_module("nsp_baseline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9, help="interleaved repeats (minimum taken; default 9)")
    parser.add_argument("--profile", type=int, default=0, help="profile this many pipelines instead of timing")
    parser.add_argument("--baseline", type=Path, default=None, help="a checkout whose exact transform is timed too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = _randomise_batchnorm(resnet18())
    x = torch.randn(1, 3, 32, 32)
    acts = nsp.Activations(net, x)
    op = nsp.NNGraph(acts).get_transformer()
    signal = acts.to_numpy()

    def pipeline() -> np.ndarray:
        a = nsp.Activations(net, x)
        return nsp.NNGraph(a).get_transformer().forward(a.to_numpy())

    def record() -> np.ndarray:
        return op.forward(nsp.Activations(net, x, like=acts).to_numpy())

    def forward() -> None:
        with torch.no_grad():
            net(x)

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.profile):
            pipeline()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    phases: dict[str, Callable[[], object]] = {
        "forward": forward,
        "pipeline": pipeline,
        "record": record,
        "capture": lambda: nsp.Activations(net, x),
        "capture (values only)": lambda: nsp.Activations(net, x, like=acts),
        "graph": lambda: nsp.NNGraph(acts).get_transformer(),
        "transform": lambda: op.forward(signal),
    }
    if args.baseline is not None:
        base = _baseline(args.baseline)
        base_acts = base.Activations(net, x)
        base_op = base.NNGraph(base_acts).get_transformer()
        if not np.array_equal(base_op.forward(base_acts.to_numpy()), op.forward(signal)):
            raise SystemExit(f"the baseline's spectrum differs from this checkout's ({args.baseline})")
        like = {"like": base_acts} if "like" in inspect.signature(base.Activations).parameters else {}

        def baseline_pipeline() -> np.ndarray:
            a = base.Activations(net, x)
            return base.NNGraph(a).get_transformer().forward(a.to_numpy())

        phases["pipeline (baseline)"] = baseline_pipeline
        phases["record (baseline)"] = lambda: base_op.forward(base.Activations(net, x, **like).to_numpy())
        phases["capture (baseline)"] = lambda: base.Activations(net, x)
        phases["graph (baseline)"] = lambda: base.NNGraph(base_acts).get_transformer()
        phases["transform (baseline)"] = lambda: base_op.forward(signal)
    for fn in phases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in phases}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for name, fn in phases.items():
            times[name].append(_seconds(fn))
    load_after = os.getloadavg()
    best = {name: min(t) * 1e3 for name, t in times.items()}
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"torch {torch.__version__} on {torch.get_num_threads()} thread, numpy {np.__version__}")
    print(f"load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"minimum of {args.repeats} interleaved repeats:")
    for name, ms in best.items():
        print(f"  {name:20s} {ms:8.2f} ms  {ms / best['forward']:5.2f}x forward")


if __name__ == "__main__":
    main()
