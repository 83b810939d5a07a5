"""What SpectrumCallback adds to the fit time of the digits demo (target: at most 5 %).

Runs the training of ``examples/demo_digits.py`` with and without the callback at its
default settings, alternating, after one untimed warm-up run, and reports the fit times,
the overhead (from the fastest and from the median fits) and the time of one record.

    python benchmarks/callback_overhead.py [--epochs 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import demo_digits  # noqa: E402
from lightning.pytorch.utilities.warnings import PossibleUserWarning  # noqa: E402

from nsp_lightning import SpectrumCallback, read_records  # noqa: E402


def timed_fit(epochs: int, with_callback: bool) -> tuple[float, list[float]]:
    """Seconds of one fit, and the seconds of each record it took."""
    with tempfile.TemporaryDirectory() as root:
        callbacks = []
        if with_callback:
            _, val = demo_digits.digits_loaders()
            callbacks.append(SpectrumCallback(next(iter(val))[0][: demo_digits.PROBES]))
        start = time.perf_counter()
        demo_digits.fit(root, epochs, callbacks)
        seconds = time.perf_counter() - start
        records = [r.seconds for r in read_records(callbacks[0].dirpath)] if with_callback else []
    return seconds, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="training epochs per fit (default 8, as the demo)")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits of each kind (default 3)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    timed_fit(1, with_callback=True)  # warm-up: imports, allocator, first TensorBoard writer
    plain, watched, records = [], [], []
    for _ in range(args.repeats):
        plain.append(timed_fit(args.epochs, with_callback=False)[0])
        seconds, per_record = timed_fit(args.epochs, with_callback=True)
        watched.append(seconds)
        records.extend(per_record)
    print(f"digits demo, {args.epochs} epochs, {args.repeats} fits of each kind, alternating:")
    print(f"  without SpectrumCallback: {', '.join(f'{t:.2f}' for t in plain)} s")
    print(f"  with SpectrumCallback:    {', '.join(f'{t:.2f}' for t in watched)} s")
    # On a shared machine the minimum is the least disturbed run; the median shows the spread.
    for name, pick in (("min", min), ("median", statistics.median)):
        base, with_cb = pick(plain), pick(watched)
        print(f"  {name:6s}: {base:.2f} s -> {with_cb:.2f} s, overhead {100 * (with_cb / base - 1):+.1f} % of fit time")
    print(
        f"  one record ({len(records) // args.repeats} per fit): "
        f"min {min(records) * 1000:.0f} ms, median {statistics.median(records) * 1000:.0f} ms"
    )

if __name__ == "__main__":
    main()
