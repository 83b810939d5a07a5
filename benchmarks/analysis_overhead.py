"""What each probe analysis, at its defaults, adds to the digits demo's epoch and fit (issue 21, #7).

The demo (``examples/demo_digits.py``: 1,437 training digits at 9 shifts, 809 steps of 16
per epoch, then 360 validation digits; 4 probes; a record after every epoch) is trained
without a callback and with one ``ProbeCallback`` running one analysis at its defaults:

    spectrum        SpectrumAnalysis()
    attribution     AttributionAnalysis()
    feature_vis     FeatureVisAnalysis(classes=range(10))   (it has no default targets)
    response_map    ResponseMapAnalysis()
    linear_regions  LinearRegionsAnalysis()

with a TensorBoardLogger, as the demo runs. Each fit runs in a child process (so that two
checkouts can be measured side by side: ``--baseline DIR`` runs the same fits with
``PYTHONPATH=DIR`` too, children of the two alternating), and each child runs one fit of
every kind it is given, in an order that rotates from child to child, after an untimed
one-epoch warm-up. Every child's fits without a callback are the reference of its fits
with one. Reported, per analysis:

- ``record``: the time a record after an epoch holds the training thread (the callback's
  ``on_train_epoch_end``), min and median over all records;
- ``epoch``: the epoch period (one epoch end to the next: training, validation and the
  record) with the analysis against without, from the medians of each kind's periods in
  one child, then the median over children: the primary figure, since the background
  writer's work (drawing and encoding images) costs the epoch through the shared CPU and
  the GIL, not only through the hook;
- ``fit``: the whole fit (fit start, the baseline record and the wait for the writer at
  the end included) against the fit without a callback, median over children of the
  paired ratios.

    python benchmarks/analysis_overhead.py [--epochs 8] [--repeats 3] [--kinds spectrum ...] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("none", "spectrum", "attribution", "feature_vis", "response_map", "linear_regions")


def _analysis(kind: str) -> Any:
    from nsp_lightning.analyses import (
        AttributionAnalysis,
        FeatureVisAnalysis,
        LinearRegionsAnalysis,
        ResponseMapAnalysis,
        SpectrumAnalysis,
    )

    return {
        "spectrum": SpectrumAnalysis,
        "attribution": AttributionAnalysis,
        "feature_vis": lambda: FeatureVisAnalysis(classes=range(10)),
        "response_map": ResponseMapAnalysis,
        "linear_regions": LinearRegionsAnalysis,
    }[kind]()


def _child(kinds: list[str], epochs: int) -> None:
    """Run one fit of each of ``kinds`` (after a warm-up) and print one JSON line per fit."""
    import logging
    import tempfile
    import warnings

    sys.path.insert(0, str(ROOT / "examples"))
    import demo_digits
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    from nsp_lightning import ProbeCallback

    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    class Timed(ProbeCallback):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.fit_start = 0.0
            self.records: list[float] = []

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            start = time.perf_counter()
            super().on_fit_start(trainer, pl_module)
            self.fit_start = time.perf_counter() - start

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            start = time.perf_counter()
            super().on_train_epoch_end(trainer, pl_module)
            self.records.append(time.perf_counter() - start)

    class EpochClock(pl.Callback):
        """Placed after the probe callback: each period includes the record taken at its end."""

        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self.marks.append(time.perf_counter())

    _, val = demo_digits.digits_loaders()
    probe = next(iter(val))[0][: demo_digits.PROBES]

    def fit(kind: str, n: int) -> dict[str, Any]:
        callback = None if kind == "none" else Timed(probe, [_analysis(kind)])
        clock = EpochClock()
        with tempfile.TemporaryDirectory() as root:
            start = time.perf_counter()
            demo_digits.fit(root, n, [callback, clock] if callback else [clock])
            seconds = time.perf_counter() - start
        return {
            "kind": kind,
            "fit": seconds,
            "periods": [b - a for a, b in zip(clock.marks, clock.marks[1:])],
            "fit_start": callback.fit_start if callback else 0.0,
            "records": callback.records if callback else [],
            "failed": callback.failed_records if callback else {},
        }

    fit("none", 1)  # warm-up: imports, allocator, the first TensorBoard writer
    for kind in kinds:
        print(json.dumps(fit(kind, epochs)), flush=True)


def _run_child(checkout: Path, kinds: list[str], epochs: int) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", *kinds, "--epochs", str(epochs)]
    run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"benchmark child in {checkout} failed:\n{run.stderr[-3000:]}")
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _summary(children: list[list[dict[str, Any]]], kinds: list[str]) -> None:
    print("| analysis | record on the training thread, min / median | epoch, none → with (median) | epoch overhead"
          " | fit, none → with (median) | fit overhead | failed records |")
    print("|---|---|---|---|---|---|---|")
    for kind in kinds:
        if kind == "none":
            continue
        records, epochs, fits, failed = [], [], [], set()
        base_epoch, with_epoch, base_fit, with_fit = [], [], [], []
        for fits_of_child in children:
            by = {f["kind"]: f for f in fits_of_child}
            none, mine = by["none"], by[kind]
            records += mine["records"]
            failed.update(f"{name} {epochs}" for name, epochs in mine["failed"].items())
            a, b = _median(none["periods"]), _median(mine["periods"])
            base_epoch.append(a)
            with_epoch.append(b)
            epochs.append(b / a - 1)
            base_fit.append(none["fit"])
            with_fit.append(mine["fit"])
            fits.append(mine["fit"] / none["fit"] - 1)
        print(
            f"| {kind} | {1000 * min(records):.0f} ms / {1000 * _median(records):.0f} ms"
            f" | {_median(base_epoch):.2f} → {_median(with_epoch):.2f} s | **{100 * _median(epochs):+.1f} %**"
            f" ({', '.join(f'{100 * e:+.1f}' for e in epochs)})"
            f" | {_median(base_fit):.1f} → {_median(with_fit):.1f} s | {100 * _median(fits):+.1f} %"
            f" | {', '.join(sorted(failed)) or 'none'} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="training epochs per fit (default 8, as the demo)")
    parser.add_argument("--repeats", type=int, default=3, help="child processes per checkout (default 3)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS[1:], default=list(KINDS[1:]), help="analyses to time")
    parser.add_argument("--baseline", type=Path, help="another checkout, timed with the same fits, alternating")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.epochs)
        return
    import platform

    import torch

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch"
          f" {torch.__version__} (one intra-op thread in the fits), Python {platform.python_version()}")
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    checkouts = {"this checkout": ROOT}
    if args.baseline is not None:
        checkouts = {f"baseline {args.baseline}": args.baseline.resolve(), **checkouts}
    kinds = ["none", *args.kinds]
    results: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in checkouts}
    for repeat in range(args.repeats):
        shift = repeat % len(kinds)
        order = kinds[shift:] + kinds[:shift]
        for name, checkout in checkouts.items():
            start = time.perf_counter()
            results[name].append(_run_child(checkout, order, args.epochs))
            print(f"  child {repeat + 1}/{args.repeats} of {name}: {time.perf_counter() - start:.0f} s,"
                  f" load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name in checkouts:
        print(f"\n{name} ({checkouts[name]}): digits demo, {args.epochs} epochs, {args.repeats} children\n")
        _summary(results[name], kinds)


if __name__ == "__main__":
    main()
