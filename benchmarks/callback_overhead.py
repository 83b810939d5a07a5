"""What SpectrumCallback adds to the fit time of the digits demo (target: at most 5 %).

Runs the training of ``examples/demo_digits.py`` (8 epochs, 4 probes, every layer, a
record after every epoch) with and without the callback at its default settings. After
one untimed warm-up fit of each kind it alternates them, swapping the order every
repetition (A B, B A, A B, ...), so that a slow phase of a shared machine hits both kinds
alike. It reports:

- every fit's wall time, and the overhead from the fastest fits of each kind (the primary
  figure: the least disturbed runs), from the median fits and as the median of the
  paired ratios;
- the same from epoch periods (one epoch end to the next: training, validation and the
  record), of which every fit gives several, so a disturbance of a few seconds spoils
  only one of them;
- what the callback's hooks took: at fit start (graph, transformer and the baseline
  record) and each record after an epoch, file write included, and their sum as a share
  of each fit.

    python benchmarks/callback_overhead.py [--epochs 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import demo_digits  # noqa: E402
import lightning  # noqa: E402
import lightning.pytorch as pl  # noqa: E402
import tensorboard  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.utilities.warnings import PossibleUserWarning  # noqa: E402

from nsp_lightning import SpectrumCallback  # noqa: E402


class TimedSpectrumCallback(SpectrumCallback):
    """SpectrumCallback that times its recording hooks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fit_start_seconds = 0.0
        self.record_seconds: list[float] = []

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        start = time.perf_counter()
        super().on_fit_start(trainer, pl_module)
        self.fit_start_seconds = time.perf_counter() - start

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        start = time.perf_counter()
        super().on_train_epoch_end(trainer, pl_module)
        self.record_seconds.append(time.perf_counter() - start)


class EpochClock(pl.Callback):
    """Notes the time at every training epoch's end; placed after the SpectrumCallback,
    so that each period includes the record taken at that epoch's end."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.marks.append(time.perf_counter())


@dataclass
class Fit:
    seconds: float
    periods: list[float]  # from one epoch end to the next
    callback: TimedSpectrumCallback | None


def timed_fit(epochs: int, with_callback: bool) -> Fit:
    """One fit of the demo, with or without the callback."""
    spectrum = None
    if with_callback:
        _, val = demo_digits.digits_loaders()
        spectrum = TimedSpectrumCallback(next(iter(val))[0][: demo_digits.PROBES])
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        demo_digits.fit(root, epochs, [spectrum, clock] if spectrum else [clock])
        seconds = time.perf_counter() - start
    periods = [b - a for a, b in zip(clock.marks, clock.marks[1:])]
    return Fit(seconds, periods, spectrum)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch intra-op threads {torch.get_num_threads()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, lightning {lightning.__version__}, "
        f"tensorboard {tensorboard.__version__}"
    )


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def ms(seconds: list[float]) -> str:
    return f"min {min(seconds) * 1000:.1f} ms, median {statistics.median(seconds) * 1000:.1f} ms"


def overhead(plain: list[float], watched: list[float], unit: str) -> None:
    # On a shared machine the fastest run is the least disturbed one: it is the primary figure.
    picks: list[tuple[str, Callable[[list[float]], float]]] = [("min", min), ("median", statistics.median)]
    for label, pick in picks:
        base, with_cb = pick(plain), pick(watched)
        print(f"  {label:6s}: {base:.2f} s -> {with_cb:.2f} s {unit}, overhead {100 * (with_cb / base - 1):+.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="training epochs per fit (default 8, as the demo)")
    parser.add_argument("--repeats", type=int, default=5, help="timed fits of each kind (default 5)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"load average before: {load()}")
    for kind in (False, True):  # warm-up: imports, allocator, the first TensorBoard writer
        timed_fit(1, with_callback=kind)
    print(f"machine: {machine()}")  # after a fit: the demo sets torch's thread count
    fits: dict[bool, list[Fit]] = {False: [], True: []}
    for repeat in range(args.repeats):
        for with_callback in (False, True) if repeat % 2 == 0 else (True, False):
            fits[with_callback].append(timed_fit(args.epochs, with_callback))
    print(f"load average after:  {load()}")

    plain, watched = fits[False], fits[True]
    print(f"\ndigits demo, {args.epochs} epochs, {args.repeats} fits of each kind, alternating (A B, B A, ...)")
    print("wall time of a fit:")
    print(f"  without SpectrumCallback: {', '.join(f'{f.seconds:.2f}' for f in plain)} s")
    print(f"  with SpectrumCallback:    {', '.join(f'{f.seconds:.2f}' for f in watched)} s")
    overhead([f.seconds for f in plain], [f.seconds for f in watched], "per fit")
    paired = statistics.median(w.seconds / p.seconds - 1 for w, p in zip(watched, plain))
    print(f"  median of the {args.repeats} paired ratios: overhead {100 * paired:+.1f} %")

    periods = {kind: [s for f in fits[kind] for s in f.periods] for kind in (False, True)}
    print(f"epoch periods (training, validation and the record; epochs 2-{args.epochs} of every fit):")
    overhead(periods[False], periods[True], "per epoch")

    callbacks = [f.callback for f in watched if f.callback is not None]
    print("the callback's hooks, in the fits with it:")
    print(f"  at fit start (graph, transformer, baseline record): {ms([c.fit_start_seconds for c in callbacks])}")
    records = [s for c in callbacks for s in c.record_seconds]
    print(f"  one record after an epoch ({len(records) // len(callbacks)} per fit): {ms(records)}")
    # Steadier than the difference of two noisy fit times, but blind to any cost outside the hooks.
    shares = [(c.fit_start_seconds + sum(c.record_seconds)) / f.seconds for c, f in zip(callbacks, watched)]
    print(f"  their sum as a share of the fit: min {100 * min(shares):.1f} %, median {100 * statistics.median(shares):.1f} %")


if __name__ == "__main__":
    main()
