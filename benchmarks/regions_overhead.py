"""What LinearRegionsAnalysis at its defaults adds to a short digits demo fit (issue 21: at most 10 %).

Runs the training of ``examples/demo_digits.py`` (``--epochs`` epochs, 4 probes, a record at
fit start and after every epoch) without a callback and with
``ProbeCallback(probe, [LinearRegionsAnalysis()])``, and, with ``--baseline DIR``, the same
callback from another checkout (say, ``main`` before a change), so that the change is
measured side by side. Every fit runs in its own process (``PYTHONPATH`` set to its
checkout), timed inside it from the Trainer's start to its end (imports excluded); after one
untimed warm-up fit of each kind, the kinds run in turn, the order rotating every repetition,
so that a slow phase of a shared machine hits every kind alike. It reports every fit's wall
time, the overhead against no callback from the fastest fits (the least disturbed) and from
the medians, and what the callback's hooks took per record.

    python benchmarks/regions_overhead.py [--epochs 3] [--repeats 3] [--baseline /path/to/other/checkout]
    python benchmarks/regions_overhead.py --records 0.01,0.005 [--baseline ...]

``--records`` times the analysis's record alone (``compute``, the minimum of ``--repeats``), for
each zoom, on the untrained demo CNN and after ``--epochs`` epochs, in each checkout's process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]


def child(epochs: int, with_callback: bool) -> None:
    """One fit in this process; prints its timings as JSON."""
    import logging
    import warnings

    sys.path.insert(0, str(HERE / "examples"))
    import demo_digits
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    from nsp_lightning import ProbeCallback
    from nsp_lightning.analyses.linear_regions import LinearRegionsAnalysis

    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    class Timed(ProbeCallback):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.hooks: list[float] = []

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            start = time.perf_counter()
            super().on_fit_start(trainer, pl_module)
            self.hooks.append(time.perf_counter() - start)

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            start = time.perf_counter()
            super().on_train_epoch_end(trainer, pl_module)
            self.hooks.append(time.perf_counter() - start)

    callbacks = []
    if with_callback:
        _, val = demo_digits.digits_loaders()
        callbacks = [Timed(next(iter(val))[0][: demo_digits.PROBES], [LinearRegionsAnalysis()])]
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        demo_digits.fit(root, epochs, callbacks)
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "hooks": callbacks[0].hooks if callbacks else []}))


def child_records(epochs: int, zooms: list[float], repeats: int) -> None:
    """Time ``LinearRegionsAnalysis.compute`` alone at fit start and after ``epochs`` epochs; prints JSON."""
    import logging
    import types
    import warnings

    sys.path.insert(0, str(HERE / "examples"))
    import demo_digits
    import torch
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    from nsp_lightning.analyses.linear_regions import LinearRegionsAnalysis

    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    _, val = demo_digits.digits_loaders()
    probes = next(iter(val))[0][: demo_digits.PROBES]
    torch.manual_seed(0)
    models = {0: demo_digits.DigitsCNN().eval()}
    with tempfile.TemporaryDirectory() as root:
        models[epochs] = demo_digits.fit(root, epochs, []).lightning_module.eval()
    rows = []
    for epoch, model in models.items():
        for zoom in zooms:
            analysis = LinearRegionsAnalysis(zoom=zoom)
            analysis.check(model, probes)
            context = types.SimpleNamespace(epoch=epoch)
            analysis.compute(model, probes, context)  # warm-up
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                record = analysis.compute(model, probes, context)
                seconds.append(time.perf_counter() - start)
            rows.append({"epoch": epoch, "zoom": zoom, "seconds": min(seconds), "regions": record.meta["regions"]})
    print(json.dumps(rows))


def run(checkout: Path | None, epochs: int) -> dict[str, Any]:
    """One fit in a fresh process: without a callback (``checkout`` None) or with that checkout's analysis."""
    env = {**os.environ, "PYTHONPATH": str(checkout or HERE), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "with" if checkout else "without",
           "--epochs", str(epochs)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def records(args: argparse.Namespace) -> None:
    """Each checkout's record time (minimum of ``--repeats``), per zoom, at fit start and after training."""
    checkouts = [HERE] + ([args.baseline.resolve()] if args.baseline else [])
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {cpu()}, {os.cpu_count()} logical CPUs, one torch thread; load average before: {load()}")
    table: dict[Path, list[dict[str, Any]]] = {}
    for checkout in checkouts:
        env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "records", "--records", args.records,
               "--epochs", str(args.epochs), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        table[checkout] = json.loads(out.strip().splitlines()[-1])
    print(f"load average after: {load()}")
    print("\n| epoch | zoom | regions per probe | " + " | ".join(f"{c} s" for c in checkouts) + " |")
    print("|---|---|---|" + "---|" * len(checkouts))
    for i, row in enumerate(table[HERE]):
        times = " | ".join(f"{table[c][i]['seconds']:.3f}" for c in checkouts)
        print(f"| {row['epoch']} | {row['zoom']:g} | {', '.join(map(str, row['regions']))} | {times} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per fit (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits of each kind (default 3)")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout whose analysis is timed too")
    parser.add_argument("--records", type=str, default=None,
                        help="instead of fits: time the analysis's records alone at these zooms (comma-separated), "
                             "at fit start and after --epochs epochs, in each checkout")
    parser.add_argument("--child", choices=("with", "without", "records"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "records":
        child_records(args.epochs, [float(z) for z in args.records.split(",")], args.repeats)
        return
    if args.child:
        child(args.epochs, args.child == "with")
        return
    if args.records:
        records(args)
        return
    kinds: dict[str, Path | None] = {"without callback": None, f"LinearRegionsAnalysis ({HERE})": HERE}
    if args.baseline:
        kinds[f"LinearRegionsAnalysis ({args.baseline.resolve()})"] = args.baseline.resolve()
    names = list(kinds)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {cpu()}, {os.cpu_count()} logical CPUs, one torch thread "
          f"per fit; Python {platform.python_version()}")
    print(f"load average before: {load()}")
    for name in names:  # warm-up: file caches, the dataset
        run(kinds[name], 1)
    fits: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            fits[name].append(run(kinds[name], args.epochs))
    print(f"load average after:  {load()}")
    print(f"\ndigits demo, {args.epochs} epochs, 4 probes, {args.repeats} fits of each kind, in rotating order")
    for name in names:
        print(f"  {name}: " + ", ".join("%.2f" % f["seconds"] for f in fits[name]) + " s")
    plain = [f["seconds"] for f in fits[names[0]]]
    for name in names[1:]:
        watched = [f["seconds"] for f in fits[name]]
        print(f"\n{name} against no callback:")
        for label, pick in (("min", min), ("median", statistics.median)):
            print(f"  {label:6s}: {pick(plain):.2f} s -> {pick(watched):.2f} s per fit, "
                  f"overhead {100 * (pick(watched) / pick(plain) - 1):+.1f} %")
        hooks = [h for f in fits[name] for h in f["hooks"]]
        share = statistics.median(sum(f["hooks"]) / f["seconds"] for f in fits[name])
        print(f"  the callback's hooks: {len(hooks) // len(watched)} records per fit, min {min(hooks):.2f} s, "
              f"median {statistics.median(hooks):.2f} s, max {max(hooks):.2f} s; their sum, median share of a fit: "
              f"{100 * share:.1f} %")


if __name__ == "__main__":
    main()
