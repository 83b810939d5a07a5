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
  ``on_train_epoch_end``), min and median over all records, and its median against the
  median epoch period without a callback in the same child (the issue's "cost of a record
  against the demo's epoch", measured under the same load);
- ``epoch``: the epoch period (one epoch end to the next: training, validation and the
  record) with the analysis against without, from the medians of each kind's periods in
  one child, then the median over children: the primary figure, since the background
  writer's work (drawing and encoding images) costs the epoch through the shared CPU and
  the GIL, not only through the hook;
- ``CPU``: under load the wall times above follow the machine more than the code, so the
  CPU time of each epoch period is measured too: of the training thread (the hook's own
  work, without waiting for a core or the GIL) and of the whole process plus the drawing
  helper process (everything the analysis costs, wherever it runs, spread over the
  records), each against the fits without a callback;
- ``hooks ÷ fit``: the time the callback's hooks held the training thread in a fit (fit
  start: setup and the baseline record; every record) against the fit without a callback;
- ``fit``: the whole fit (fit start, the baseline record and the wait for the writer at
  the end included) against the fit without a callback, median over children of the
  paired ratios.

Where the spectrum's epoch overhead goes is measured with variants, each a kind of its
own (``--kinds spectrum spectrum/no-crc ...``), changed in the child for that fit only, by
patching (experiments, not settings):

    spectrum/no-images       no card or chart (``LogSink.image_later`` drops them)
    spectrum/no-image-events cards drawn and encoded, none written to TensorBoard
    spectrum/no-crc          TensorBoard's (and nsp's) event-record CRC-32C replaced by 0
    spectrum/no-histograms   no histogram (``LogSink.histogram`` drops them)

    python benchmarks/analysis_overhead.py [--epochs 8] [--repeats 3] [--kinds spectrum ...] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("none", "spectrum", "attribution", "feature_vis", "response_map", "linear_regions")
VARIANTS = ("no-images", "no-image-events", "no-crc", "no-histograms")


def _kind(text: str) -> str:
    """An analysis of KINDS, or ``spectrum/<variant>`` (argparse's type)."""
    analysis, _, variant = text.partition("/")
    if analysis not in KINDS[1:] or (variant and (analysis != "spectrum" or variant not in VARIANTS)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected one of {KINDS[1:]} or spectrum/<one of {VARIANTS}>")
    return text


@contextlib.contextmanager
def _variant(name: str) -> Iterator[None]:
    """Patch what the variant ``name`` leaves out, for one fit (an experiment: event files without CRCs are invalid)."""
    from tensorboard.summary.writer import record_writer

    from nsp_lightning.probe.sinks import sink, tensorboard_sink

    patches: list[tuple[Any, str, Any]] = []
    if name == "no-images":
        patches.append((sink.LogSink, "image_later", lambda self, *args, **kwargs: None))
    elif name == "no-image-events":
        patches.append((tensorboard_sink, "_write_image", lambda *args, **kwargs: None))
        try:
            from nsp_lightning.probe.sinks import events
        except ImportError:  # a checkout from before nsp's own event files
            pass
        else:
            patches.append((events, "write_image_events", lambda *args, **kwargs: None))
    elif name == "no-crc":
        patches.append((record_writer, "masked_crc32c", lambda data: 0))
        try:
            from nsp_lightning.probe.sinks import events
        except ImportError:
            pass
        else:
            patches.append((events, "crc32c_many", lambda messages: np.zeros(len(messages), np.uint32)))
    elif name == "no-histograms":
        patches.append((sink.LogSink, "histogram", lambda self, *args, **kwargs: None))
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    for owner, attr, value in patches:
        setattr(owner, attr, value)
    try:
        yield
    finally:
        for owner, attr, value in saved:
            setattr(owner, attr, value)


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
            self.marks: list[tuple[float, float, float]] = []

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            # Wall time, this (the training) thread's CPU time, and the CPU time of all of the process's threads.
            self.marks.append((time.perf_counter(), time.thread_time(), time.process_time()))

    _, val = demo_digits.digits_loaders()
    probe = next(iter(val))[0][: demo_digits.PROBES]

    try:
        from nsp_lightning.probe.sinks import drawer
    except ImportError:  # a checkout from before the drawing helper
        drawer = None
    if drawer is not None:
        # Started (its imports done) before the fits, as a process's first record starts it once for all fits.
        drawer.draw_images([(np.zeros, ((1, 1, 3),), {"dtype": np.uint8})])

    def helper_cpu() -> float:
        """The CPU seconds the drawing helper process has used so far (Linux: /proc)."""
        helper = getattr(drawer, "_helper", None)
        if helper is None:
            return 0.0
        with open(f"/proc/{helper.process.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def fit(kind: str, n: int) -> dict[str, Any]:
        analysis, _, variant = kind.partition("/")
        callback = None if kind == "none" else Timed(probe, [_analysis(analysis)])
        clock = EpochClock()
        helper = helper_cpu()
        with tempfile.TemporaryDirectory() as root, _variant(variant):
            start = time.perf_counter()
            demo_digits.fit(root, n, [callback, clock] if callback else [clock])
            seconds = time.perf_counter() - start
        marks = clock.marks
        return {
            "kind": kind,
            "fit": seconds,
            "periods": [b[0] - a[0] for a, b in zip(marks, marks[1:])],
            "thread_cpu": [b[1] - a[1] for a, b in zip(marks, marks[1:])],
            "process_cpu": [b[2] - a[2] for a, b in zip(marks, marks[1:])],
            "helper_cpu": helper_cpu() - helper,
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
    # In the checkout measured: a process started there (a drawing helper of an older checkout, say) imports its modules.
    run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=checkout)
    if run.returncode != 0:
        raise RuntimeError(f"benchmark child in {checkout} failed:\n{run.stderr[-3000:]}")
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _summary(children: list[list[dict[str, Any]]], kinds: list[str]) -> None:
    print("| analysis | record on the training thread, min / median | record ÷ epoch without (median)"
          " | epoch wall, none → with | epoch wall overhead"
          " | training thread CPU per epoch | all CPU per epoch (process + helper) | fit wall overhead"
          " | hooks ÷ fit without (fit start + records) | failed records |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        if kind == "none":
            continue
        records, shares, epochs, threads, cpus, fits, hooks, failed = [], [], [], [], [], [], [], set()
        base_epoch, with_epoch = [], []
        for fits_of_child in children:
            by = {f["kind"]: f for f in fits_of_child}
            none, mine = by["none"], by[kind]
            records += mine["records"]
            failed.update(f"{name} {epochs}" for name, epochs in mine["failed"].items())
            a, b = _median(none["periods"]), _median(mine["periods"])
            shares.append(_median(mine["records"]) / a)
            base_epoch.append(a)
            with_epoch.append(b)
            epochs.append(b / a - 1)
            threads.append(_median(mine["thread_cpu"]) / _median(none["thread_cpu"]) - 1)
            # The helper's CPU time spread over the fit's records (the baseline's included).
            helper = mine["helper_cpu"] / max(1, len(mine["records"]) + 1)
            cpus.append((_median(mine["process_cpu"]) + helper) / _median(none["process_cpu"]) - 1)
            fits.append(mine["fit"] / none["fit"] - 1)
            hooks.append((mine["fit_start"] + sum(mine["records"])) / none["fit"])
        print(
            f"| {kind} | {1000 * min(records):.0f} ms / {1000 * _median(records):.0f} ms"
            f" | **{100 * _median(shares):.1f} %** ({', '.join(f'{100 * e:.1f}' for e in shares)})"
            f" | {_median(base_epoch):.2f} → {_median(with_epoch):.2f} s | {100 * _median(epochs):+.1f} %"
            f" ({', '.join(f'{100 * e:+.1f}' for e in epochs)})"
            f" | **{100 * _median(threads):+.1f} %** ({', '.join(f'{100 * e:+.1f}' for e in threads)})"
            f" | {100 * _median(cpus):+.1f} % ({', '.join(f'{100 * e:+.1f}' for e in cpus)})"
            f" | {100 * _median(fits):+.1f} % | **{100 * _median(hooks):.1f} %** ({', '.join(f'{100 * e:.1f}' for e in hooks)})"
            f" | {', '.join(sorted(failed)) or 'none'} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="training epochs per fit (default 8, as the demo)")
    parser.add_argument("--repeats", type=int, default=3, help="child processes per checkout (default 3)")
    parser.add_argument("--kinds", nargs="+", type=_kind, default=list(KINDS[1:]),
                        help="analyses to time, and variants of the spectrum (spectrum/no-crc, ...)")
    parser.add_argument("--baseline", type=Path, help="another checkout, timed with the same fits, alternating")
    parser.add_argument("--json", type=Path, help="also write every fit's measurements to this file")
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
    if args.json is not None:
        args.json.write_text(json.dumps({name: results[name] for name in checkouts}, indent=1))
    for name in checkouts:
        print(f"\n{name} ({checkouts[name]}): digits demo, {args.epochs} epochs, {args.repeats} children\n")
        _summary(results[name], kinds)


if __name__ == "__main__":
    main()
