"""Issue 23, option (c): the exact transform's limb arithmetic in numpy (as it is) against torch int64 ops.

``python benchmarks/limb_backends.py [--models M ...] [--repeats 5] [--threads 1 2] [--ops]``

For each model the exact forward transform (``INCL=True``) runs once with its limb kernels
wrapped, recording every call's operands and result: ``split_int64`` (a layer's values as
limbs), ``ProductKernel.accumulate`` (``Σ_K A_{L,K} ŝ_K``: axis sums, prefix sums of layer
totals, interval sums, dense factors), ``normalize`` (the carry pass), ``fit`` (the limb
count) and ``from_limbs`` (the correctly rounded float64). Each call is then replayed on
its recorded operands in numpy (nsp's own functions) and in torch int64
(``torch_limbs.py``, a line-for-line port) with each torch thread count asked for, every
backend's results checked bit for bit (``np.array_equal``: they are exact integers, and
the rounding is correct on both sides) against what the real transform produced. The
backends alternate within each repeat (numpy, torch on 1 thread, torch on 2, then again);
per call the minimum over the repeats is kept, of the process's CPU time and of wall
time, and summed per kernel.

One-thread figures are compared in CPU time, which moves little with the load of a shared
machine; torch on several threads can only gain in wall time, which on a loaded machine
depends on whether a second core is free (the load average is printed). The model's
one-thread forward pass, the pipeline (capture + ``NNGraph`` + transformer + transform)
and the transform alone are timed too (CPU, minimum of the repeats), so that the kernels'
share of the pipeline, and the pipeline's time if they ran in torch, can be read off.
Each model's torch replay also counts its operations other than views (on a device, each
would be a kernel launch); ``--ops`` times single operations on large limb arrays, each
library's cost per value without the per-call cost.

Models: ``resnet18-top`` (issue 23's acceptance case: ``benchmarks/networks.py``'s ResNet-18,
32×32, top-level layers), ``mobilenet_v2-leaves`` and ``densenet121-leaves`` (torchvision,
random weights, 32×32, every leaf, as ``benchmarks/zoo.py``), ``mlp`` (a two-layer MLP, for
the test that keeps this script working).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).parent))

import nsp  # noqa: E402
import nsp.transforms.causal as causal  # noqa: E402
import torch_limbs  # noqa: E402

KERNELS = ("split_int64", "accumulate", "normalize", "fit", "from_limbs")
MODELS = ("resnet18-top", "mobilenet_v2-leaves", "densenet121-leaves", "mlp")


@dataclass
class Call:
    """One kernel call of the real transform: its operands (never written to) and its result."""

    kernel: str
    args: tuple
    result: np.ndarray
    elements: int


def model(name: str) -> tuple[torch.nn.Module, torch.Tensor, dict]:
    """The network, its input and ``nsp.Activations``'s keyword arguments for ``name``."""
    torch.manual_seed(0)
    if name == "mlp":
        net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
        return net, torch.randn(1, 6), {}
    if name == "resnet18-top":
        from networks import resnet18
        from transform import _randomise_batchnorm

        return _randomise_batchnorm(resnet18()), torch.randn(1, 3, 32, 32), {}
    import torchvision
    from zoo import MODELS as ZOO

    arch, layers = name.split("-")
    net = getattr(torchvision.models, arch)(num_classes=10, **ZOO[arch]).eval()
    return net, torch.rand(1, 3, 32, 32), {} if layers == "top" else {"layers": layers}


def capture(op: Any, signal: np.ndarray) -> list[Call]:
    """Every limb-kernel call of ``op.forward(signal)``, in order; the spectrum is checked
    against an unwrapped run, so the recording changed nothing."""
    calls: list[Call] = []
    originals = {name: getattr(causal, name) for name in ("split_int64", "normalize", "fit", "from_limbs")}
    kernel = op._kernel

    def split(v: np.ndarray, b: int, k: int) -> np.ndarray:
        out = originals["split_int64"](v, b, k)
        calls.append(Call("split_int64", (v.copy(), b, k), out.copy(), out.size))
        return out

    def normalize(x: np.ndarray, b: int) -> None:
        before = x.copy()
        originals["normalize"](x, b)
        calls.append(Call("normalize", (before, b), x.copy(), x.size))

    def fit(x: np.ndarray, b: int) -> np.ndarray:
        before = x.copy()
        out = originals["fit"](x, b)
        calls.append(Call("fit", (before, b), out.copy(), before.size))
        return out

    def from_limbs(x: np.ndarray, b: int, emin: np.ndarray, int64: bool = False, out: Any = None) -> np.ndarray:
        result = originals["from_limbs"](x, b, emin, int64, out)
        calls.append(Call("from_limbs", (x.copy(), b, emin.copy(), int64), result.copy(), x.size))
        return result

    def accumulate(layer: int, xs: dict, acc: np.ndarray, sign: int, memo: dict) -> None:
        # The kernel never writes to the read layers or the memo's arrays, only to acc and to the memo dict.
        args = (layer, dict(xs), acc.copy(), sign, _memo_copy(memo))
        type(kernel).accumulate(kernel, layer, xs, acc, sign, memo)
        calls.append(Call("accumulate", args, acc.copy(), acc.size))

    expected = op.forward(signal)
    wrappers = {"split_int64": split, "normalize": normalize, "fit": fit, "from_limbs": from_limbs}
    try:
        for name, fn in wrappers.items():
            setattr(causal, name, fn)
        kernel.accumulate = accumulate
        got = op.forward(signal)
    finally:
        for name, fn in originals.items():
            setattr(causal, name, fn)
        del kernel.accumulate
    if not np.array_equal(got, expected, equal_nan=True):
        raise SystemExit("recording the kernel calls changed the spectrum")
    return calls


def _memo_copy(memo: dict) -> dict:
    # The memo's prefix list grows in place; its arrays are never written to.
    return {k: list(v) if k == "prefix" else v for k, v in memo.items()}


def _tensor(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, dict):
        return {k: _tensor(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tensor(v) for v in value]
    return value


def runner(call: Call, backend: str, kernel: Any, compiled: Any) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """``(prepare, run)``: ``prepare()`` copies what the call writes to (not timed) and returns
    the arguments; ``run(*args)`` is the timed kernel call, returning its result."""
    kind = call.kernel
    args = call.args if backend == "numpy" else tuple(_tensor(a) for a in call.args)
    if kind == "accumulate":
        layer, xs, acc, sign, memo = args
        if sign > 0:
            raise ValueError("torch_limbs.accumulate ports the forward transform only (sign < 0)")
        if backend == "numpy":
            return (lambda: (layer, xs, acc.copy(), sign, _memo_copy(memo)),
                    lambda *a: (kernel.accumulate(*a), a[2])[1])
        return (lambda: (layer, xs, acc.clone(), _memo_copy(memo)),
                lambda layer_, xs_, acc_, memo_: (torch_limbs.accumulate(kernel, compiled, layer_, xs_, acc_, memo_),
                                                  acc_)[1])
    lib = causal if backend == "numpy" else torch_limbs
    fn = getattr(lib, kind)
    copy = (lambda x: x.copy()) if backend == "numpy" else (lambda x: x.clone())
    if kind == "normalize":
        return (lambda: (copy(args[0]), args[1])), (lambda x, b: (fn(x, b), x)[1])
    if kind == "fit":
        return (lambda: (copy(args[0]), args[1])), fn
    return (lambda: args), fn


def replay(calls: list[Call], backends: list[tuple[str, int]], repeats: int, kernel: Any) -> dict:
    """Per backend, per call, the minimum over ``repeats`` of (CPU s, wall s); raises
    SystemExit if a backend's result differs from the recorded one in any bit."""
    compiled = torch_limbs.plans(kernel)
    runners = {b: [runner(c, b[0], kernel, compiled) for c in calls] for b in backends}
    best = {b: np.full((len(calls), 2), np.inf) for b in backends}
    for repeat in range(repeats + 1):
        for backend in backends:
            torch.set_num_threads(backend[1])
            for i, (call, (prepare, run)) in enumerate(zip(calls, runners[backend])):
                args = prepare()
                cpu, wall = time.process_time(), time.perf_counter()
                result = run(*args)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if repeat == 0:
                    # The first pass, a warm-up, checks every result.
                    got = result if isinstance(result, np.ndarray) else result.numpy()
                    if not np.array_equal(got, call.result, equal_nan=True):
                        raise SystemExit(f"{backend[0]} ({backend[1]} thread(s)): call {i} ({call.kernel}) differs "
                                         "from the transform's own result")
                else:
                    best[backend][i] = np.minimum(best[backend][i], (cpu, wall))
    torch.set_num_threads(1)
    return best


class _Count(TorchDispatchMode):
    """Counts the aten operations run under it that are not views (on a device, each a kernel launch)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


def operation_count(calls: list[Call], kernel: Any) -> int:
    """The aten operations, views left out, of one torch replay of ``calls``."""
    compiled = torch_limbs.plans(kernel)
    counter = _Count()
    for call in calls:
        prepare, run = runner(call, "torch", kernel, compiled)
        args = prepare()
        with counter:
            run(*args)
    return counter.count


def pipeline_times(net: torch.nn.Module, x: torch.Tensor, kwargs: dict, repeats: int) -> dict[str, float]:
    """CPU seconds, minimum of ``repeats``: forward pass, pipeline, transform alone."""
    acts = nsp.Activations(net, x, **kwargs)
    op = nsp.NNGraph(acts).get_transformer()
    signal = acts.to_numpy()

    def pipeline() -> None:
        a = nsp.Activations(net, x, **kwargs)
        nsp.NNGraph(a).get_transformer().forward(a.to_numpy())

    phases = {"forward": lambda: net(x), "pipeline": pipeline, "transform": lambda: op.forward(signal)}
    best = {}
    with torch.no_grad():
        for name, fn in phases.items():
            fn()
            times = []
            for _ in range(repeats):
                start = time.process_time()
                fn()
                times.append(time.process_time() - start)
            best[name] = min(times)
    return best


def report(name: str, calls: list[Call], best: dict, phases: dict[str, float]) -> None:
    """Per-kernel table (ms) and the pipeline's projected time with the kernels in torch."""
    backends = list(best)
    numpy_cpu = sum(best[backends[0]][:, 0])
    print(f"\n{name}: {len(calls)} kernel calls; forward {phases['forward'] * 1e3:.1f} ms, pipeline "
          f"{phases['pipeline'] * 1e3:.1f} ms, transform {phases['transform'] * 1e3:.1f} ms CPU; the kernels' "
          f"numpy CPU time is {numpy_cpu / phases['transform']:.0%} of the transform's")
    header = "| kernel | calls | int64 limbs | " + " | ".join(
        f"{b} {t}t CPU ms | {b} {t}t wall ms" for b, t in backends) + " | torch 1t ÷ numpy (CPU) |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for kernel in KERNELS + ("total",):
        rows = [i for i, c in enumerate(calls) if kernel in ("total", c.kernel)]
        if not rows:
            continue
        sums = {b: best[b][rows].sum(axis=0) * 1e3 for b in backends}
        cells = " | ".join(f"{sums[b][0]:.2f} | {sums[b][1]:.2f}" for b in backends)
        ratio = sums[backends[1]][0] / max(sums[backends[0]][0], 1e-9)
        print(f"| {kernel} | {len(rows)} | {sum(calls[i].elements for i in rows):,} | {cells} | {ratio:.2f}x |")
    for label, rows in (("under", [i for i, c in enumerate(calls) if c.elements < 1 << 14]),
                        ("of at least", [i for i, c in enumerate(calls) if c.elements >= 1 << 14])):
        if rows:
            ns, ts = (best[b][rows].sum(axis=0) * 1e3 for b in backends[:2])
            print(f"calls {label} 16,384 limbs: {len(rows)}, numpy {ns[0]:.2f} ms, torch 1t {ts[0]:.2f} ms CPU "
                  f"({(ts[0] - ns[0]) / len(rows) * 1e3:+.1f} µs a call)"
                  + "".join(f", torch {b[1]}t {best[b][rows, 1].sum() * 1e3:.2f} ms wall" for b in backends[2:]))
    free = phases["pipeline"] - numpy_cpu
    print(f"pipeline if the kernels took no time at all: {free * 1e3:.1f} ms ({phases['pipeline'] / free:.2f}x faster)")
    for b in backends[1:]:
        torch_cpu, torch_wall = best[b].sum(axis=0)
        projected = phases["pipeline"] - numpy_cpu + (torch_cpu if b[1] == 1 else torch_wall)
        print(f"pipeline with the kernels in torch on {b[1]} thread(s): {projected * 1e3:.1f} ms "
              f"({phases['pipeline'] / projected:.2f}x {'faster' if projected < phases['pipeline'] else 'slower'})")


def dispatch() -> str:
    """Each library's fixed cost of one small int64 operation (CPU µs, minimum of 2,000)."""
    a, t = np.arange(64, dtype=np.int64), torch.arange(64, dtype=torch.int64)
    costs = []
    for x in (a, t):
        times = []
        for _ in range(2000):
            start = time.process_time()
            x + x
            times.append(time.process_time() - start)
        costs.append(min(times) * 1e6)
    return f"one int64 addition of 64 elements: numpy {costs[0]:.1f} µs, torch {costs[1]:.1f} µs CPU"


def operations(n: int = 98_304) -> None:
    """One-thread CPU µs (minimum of 200) of the operations the kernels are made of, on two
    limbs of ``n`` values (ResNet-18's 3-limb layers have 98,304): the per-value cost of each
    library, without the per-call cost."""
    a = np.random.default_rng(0).integers(-(1 << 40), 1 << 40, size=(2, 1, n))
    f = a[0].astype(np.float64)
    t, tf = torch.from_numpy(a.copy()), torch.from_numpy(f.copy())
    pairs = {
        "x + y": (lambda: a[0] + a[1], lambda: t[0] + t[1]),
        "x += y (a limb, in place)": (lambda: a[0].__iadd__(a[1]), lambda: t[0].__iadd__(t[1])),
        "x >> 32": (lambda: a >> 32, lambda: t >> 32),
        "x & (2^32 - 1)": (lambda: a & 0xFFFFFFFF, lambda: t & 0xFFFFFFFF),
        "sum over the nodes": (lambda: a.sum(axis=2), lambda: t.sum(dim=2)),
        "cumulative sum": (lambda: np.cumsum(a, axis=2), lambda: t.cumsum(dim=2)),
        "min and max": (lambda: (a.min(), a.max()), lambda: torch.aminmax(t)),
        "int64 -> float64": (lambda: a.astype(np.float64), lambda: t.double()),
        "frexp": (lambda: np.frexp(f), lambda: torch.frexp(tf)),
    }
    print(f"\n| operation ({n:,} values, 2 limbs) | numpy µs | torch 1t µs | torch ÷ numpy |\n|---|---|---|---|")
    torch.set_num_threads(1)
    for name, fns in pairs.items():
        cost = []
        for fn in fns:
            times = []
            for _ in range(200):
                start = time.process_time()
                fn()
                times.append(time.process_time() - start)
            cost.append(min(times) * 1e6)
        print(f"| {name} | {cost[0]:.1f} | {cost[1]:.1f} | {cost[1] / cost[0]:.2f}x |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS[:3]))
    parser.add_argument("--repeats", type=int, default=5, help="timed replays of every call (minimum kept)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts")
    parser.add_argument("--ops", action="store_true", help="also time single operations on large limb arrays")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    backends = [("numpy", 1)] + [("torch", t) for t in args.threads]
    print(f"command: python benchmarks/limb_backends.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"torch {torch.__version__}, numpy {np.__version__}; load average {os.getloadavg()[0]:.2f}")
    print(dispatch())
    if args.ops:
        operations()
    for name in args.models:
        net, x, kwargs = model(name)
        acts = nsp.Activations(net, x, **kwargs)
        op = nsp.NNGraph(acts).get_transformer()
        calls = capture(op, acts.to_numpy())
        best = replay(calls, backends, args.repeats, op._kernel)
        report(name, calls, best, pipeline_times(net, x, kwargs, args.repeats))
        ops = operation_count(calls, op._kernel)
        print(f"torch operations other than views: {ops:,} ({ops / len(calls):.1f} a call)")
    print(f"\nevery backend's results bit-identical to the transform's own; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
