"""What SpectrumCallback adds to the fit time of the digits demo (target: at most 5 %).

Runs the training of ``examples/demo_digits.py`` (8 epochs, 4 probes, every layer, a
record after every epoch) with and without the callback at its default settings. After
one untimed warm-up fit of each kind it alternates them, swapping the order every
repetition (A B, B A, A B, ...), so that a slow phase of a shared machine hits both kinds
alike. It reports every fit time, the overhead from the fastest fits (the primary
figure: the least disturbed runs), from the median fits and as the median of the paired
ratios, and what the callback's hooks took: at fit start (graph, transformer and the
baseline record) and each record after an epoch, file write included.

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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import demo_digits  # noqa: E402
import lightning  # noqa: E402
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


def timed_fit(epochs: int, with_callback: bool) -> tuple[float, TimedSpectrumCallback | None]:
    """Seconds of one fit of the demo, and its callback (None without)."""
    callback = None
    if with_callback:
        _, val = demo_digits.digits_loaders()
        callback = TimedSpectrumCallback(next(iter(val))[0][: demo_digits.PROBES])
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        demo_digits.fit(root, epochs, [callback] if callback else [])
        return time.perf_counter() - start, callback


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, lightning {lightning.__version__}, "
        f"tensorboard {tensorboard.__version__}"
    )


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def ms(seconds: list[float]) -> str:
    return f"min {min(seconds) * 1000:.1f} ms, median {statistics.median(seconds) * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="training epochs per fit (default 8, as the demo)")
    parser.add_argument("--repeats", type=int, default=5, help="timed fits of each kind (default 5)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {machine()}")
    print(f"load average before: {load()}")
    for kind in (False, True):  # warm-up: imports, allocator, the first TensorBoard writer
        timed_fit(1, with_callback=kind)
    plain: list[float] = []
    watched: list[float] = []
    callbacks: list[TimedSpectrumCallback] = []
    for repeat in range(args.repeats):
        for with_callback in (False, True) if repeat % 2 == 0 else (True, False):
            seconds, callback = timed_fit(args.epochs, with_callback)
            (watched if with_callback else plain).append(seconds)
            if callback is not None:
                callbacks.append(callback)
    print(f"load average after:  {load()}")

    print(f"\ndigits demo, {args.epochs} epochs, {args.repeats} fits of each kind, alternating (A B, B A, ...):")
    print(f"  without SpectrumCallback: {', '.join(f'{t:.2f}' for t in plain)} s")
    print(f"  with SpectrumCallback:    {', '.join(f'{t:.2f}' for t in watched)} s")
    # On a shared machine the fastest fit is the least disturbed one: it is the primary figure.
    for name, pick in (("min", min), ("median", statistics.median)):
        base, with_cb = pick(plain), pick(watched)
        print(
            f"  {name:6s}: {base:.2f} s -> {with_cb:.2f} s, overhead {100 * (with_cb / base - 1):+.1f} % of fit time"
            f" (epoch {base / args.epochs:.2f} s without)"
        )
    paired = statistics.median(w / p - 1 for w, p in zip(watched, plain))
    print(f"  median of the {args.repeats} paired ratios: overhead {100 * paired:+.1f} %")
    print("\nthe callback's hooks, over all timed fits with it:")
    print(f"  at fit start (graph, transformer, baseline record): {ms([c.fit_start_seconds for c in callbacks])}")
    records = [s for c in callbacks for s in c.record_seconds]
    print(f"  one record after an epoch ({len(records) // len(callbacks)} per fit): {ms(records)}")


if __name__ == "__main__":
    main()
