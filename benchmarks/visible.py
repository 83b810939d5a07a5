"""Issue 11's figures: the Laplacian of the digits demo's CNN, and ``nsp-report`` on the demo run.

    python benchmarks/visible.py [RUN_DIR] [--skip-laplacian]

RUN_DIR is the digits demo's run (default: the newest ``out/demo_digits/digits/version_*``,
written by ``make demo``). Measures, in one process:

- the dense Laplacian eigendecomposition of the demo CNN's graph (one probe, top-level
  layers): on the idle cores only (``nsp.transforms.laplacian.eigh_threads``, what nsp
  does) and on every core (what it did before), with the machine's load average, and
  nsp's own estimate (``eigh_seconds``);
- ``nsp-report RUN_DIR`` as a command (a fresh interpreter, imports included), and
  ``import nsp_lightning.report`` alone, against ``import lightning.pytorch``;
- the seconds each of the run's records took in the callback (compute, cards, charts,
  write), from the records themselves.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import demo_digits  # noqa: E402

import nsp  # noqa: E402
import nsp.transforms.laplacian as laplacian  # noqa: E402
from nsp_lightning import read_records  # noqa: E402


def fresh(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def laplacian_times() -> None:
    torch.set_num_threads(1)
    _, val = demo_digits.digits_loaders()
    x = next(iter(val))[0][:1]
    acts = nsp.Activations(demo_digits.DigitsCNN().eval(), x)
    n = sum(a.numel() for a in acts.layeractivations)
    cores = len(os.sched_getaffinity(0))
    chosen = laplacian.eigh_threads()
    print(f"Laplacian of the demo CNN: {n:,} nodes; {cores} cores; load average {os.getloadavg()[0]:.1f};"
          f" eigh_threads() = {chosen}; estimate {laplacian.eigh_seconds(n, chosen):.1f} s")
    real = laplacian.eigh_threads
    for label, threads in (("idle cores (nsp)", chosen), ("every core (before)", cores)):
        laplacian.eigh_threads = lambda threads=threads: threads
        try:
            graph = nsp.NNGraph(acts)
            start = time.perf_counter()
            graph.transform(acts, type="laplacian")
            print(f"  {label:20s} {threads} thread(s): {time.perf_counter() - start:7.1f} s"
                  f"  (load average now {os.getloadavg()[0]:.1f})")
        finally:
            laplacian.eigh_threads = real


def report_times(run_dir: Path) -> None:
    with tempfile.TemporaryDirectory() as out:
        command = f"from nsp_lightning.report.cli import main; main([{str(run_dir)!r}, '-o', {out!r}, '-q'])"
        seconds = fresh(command)
    print(f"nsp-report {run_dir}: {seconds:.1f} s (a fresh interpreter, imports included)")
    report = fresh("import nsp_lightning.report")
    lightning = fresh("import lightning.pytorch")
    nothing = fresh("pass")
    print(f"  import nsp_lightning.report: {report:.2f} s; import lightning.pytorch: {lightning:.2f} s;"
          f" an empty interpreter: {nothing:.2f} s")
    records = read_records(run_dir / "spectrum")
    seconds = np.array([r.seconds for r in records])
    print(f"  records: {len(records)}, {records[0].num_probes} probes x {len(records[0].layernames)} layers;"
          f" seconds per record in the callback: median {np.median(seconds):.2f}, max {seconds.max():.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("--skip-laplacian", action="store_true")
    args = parser.parse_args()
    run_dir = Path(args.run_dir) if args.run_dir else sorted(Path("out/demo_digits/digits").glob("version_*"))[-1]
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}")
    report_times(run_dir)
    if not args.skip_laplacian:
        laplacian_times()


if __name__ == "__main__":
    main()
