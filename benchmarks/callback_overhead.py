"""What SpectrumCallback, and the probe core under it, add to the fit time of the digits demo (target: at most 5 %).

Runs the training of ``examples/demo_digits.py`` (8 epochs, 4 probes, every layer, a
record after every epoch) three ways: without a callback, with ``ProbeCallback`` running
an empty analysis (the core alone: probe, schedule, eval/no-grad/RNG isolation, logging,
an empty record file per record), and with ``SpectrumCallback`` at its default settings.
After one untimed warm-up fit of each kind it runs them in turn, rotating the order every
repetition, so that a slow phase of a shared machine hits every kind alike. It reports,
for each callback against no callback:

- every fit's wall time, and the overhead from the fastest fits of each kind (the primary
  figure: the least disturbed runs), from the median fits and as the median of the
  paired ratios;
- the same from epoch periods (one epoch end to the next: training, validation and the
  record), of which every fit gives several, so a disturbance of a few seconds spoils
  only one of them;
- what the callback's hooks took: at fit start (setup and the baseline record) and each
  record after an epoch, file write included, and their sum as a share of each fit.

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

from nsp_lightning import AnalysisRecord, ProbeAnalysis, ProbeCallback, SpectrumCallback  # noqa: E402


class Empty(ProbeAnalysis):
    """An analysis that computes nothing: what remains is the cost of the core."""

    name = "empty"

    def compute(self, model: Any, probes: Any, context: Any) -> AnalysisRecord:
        return AnalysisRecord()


class Timed:
    """Mixin for a probe callback: times its recording hooks."""

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


class TimedSpectrumCallback(Timed, SpectrumCallback):
    """SpectrumCallback that times its recording hooks."""


class TimedProbeCallback(Timed, ProbeCallback):
    """ProbeCallback that times its recording hooks."""


KINDS = ("without callback", "ProbeCallback, empty analysis", "SpectrumCallback")


@dataclass
class Fit:
    seconds: float
    periods: list[float]  # from one epoch end to the next
    callback: Timed | None


def timed_fit(epochs: int, kind: str) -> Fit:
    """One fit of the demo, with the callback of ``kind`` (one of ``KINDS``) or none."""
    callback: Timed | None = None
    if kind != KINDS[0]:
        _, val = demo_digits.digits_loaders()
        probe = next(iter(val))[0][: demo_digits.PROBES]
        callback = TimedSpectrumCallback(probe) if kind == KINDS[2] else TimedProbeCallback(probe, [Empty()])
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        demo_digits.fit(root, epochs, [callback, clock] if callback else [clock])
        seconds = time.perf_counter() - start
    periods = [b - a for a, b in zip(clock.marks, clock.marks[1:])]
    return Fit(seconds, periods, callback)


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
    for kind in KINDS:  # warm-up: imports, allocator, the first TensorBoard writer
        timed_fit(1, kind)
    print(f"machine: {machine()}")  # after a fit: the demo sets torch's thread count
    fits: dict[str, list[Fit]] = {kind: [] for kind in KINDS}
    for repeat in range(args.repeats):
        shift = repeat % len(KINDS)
        for kind in KINDS[shift:] + KINDS[:shift]:
            fits[kind].append(timed_fit(args.epochs, kind))
    print(f"load average after:  {load()}")

    print(f"\ndigits demo, {args.epochs} epochs, {args.repeats} fits of each kind, in rotating order")
    print("wall time of a fit:")
    for kind in KINDS:
        print(f"  {kind + ':':31s} {', '.join(f'{f.seconds:.2f}' for f in fits[kind])} s")
    plain = fits[KINDS[0]]
    periods = {kind: [s for f in fits[kind] for s in f.periods] for kind in KINDS}
    for kind in KINDS[1:]:
        watched = fits[kind]
        print(f"\n{kind} against no callback:")
        overhead([f.seconds for f in plain], [f.seconds for f in watched], "per fit")
        paired = statistics.median(w.seconds / p.seconds - 1 for w, p in zip(watched, plain))
        print(f"  median of the {args.repeats} paired ratios: overhead {100 * paired:+.1f} %")
        print(f"epoch periods (training, validation and the record; epochs 2-{args.epochs} of every fit):")
        overhead(periods[KINDS[0]], periods[kind], "per epoch")
        callbacks = [f.callback for f in watched if f.callback is not None]
        print("the callback's hooks, in the fits with it:")
        print(f"  at fit start (setup, baseline record): {ms([c.fit_start_seconds for c in callbacks])}")
        records = [s for c in callbacks for s in c.record_seconds]
        print(f"  one record after an epoch ({len(records) // len(callbacks)} per fit): {ms(records)}")
        # Steadier than the difference of two noisy fit times, but blind to any cost outside the hooks.
        shares = [(c.fit_start_seconds + sum(c.record_seconds)) / f.seconds for c, f in zip(callbacks, watched)]
        print(
            f"  their sum as a share of the fit: min {100 * min(shares):.2f} %,"
            f" median {100 * statistics.median(shares):.2f} %"
        )

if __name__ == "__main__":
    main()
