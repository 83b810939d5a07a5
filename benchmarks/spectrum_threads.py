"""Where the CPU time of the digits demo with ``SpectrumAnalysis()`` goes, thread by thread (issue 21, #7).

One fit of the demo (``examples/demo_digits.py``, a record after every epoch, a
TensorBoardLogger) per child process; at its end, the CPU time of every thread of the
process (Linux: ``/proc/self/task``), named by its Python class and name (TensorBoard's
event writer is ``_AsyncWriterThread``; the callback's is ``nsp-tensorboard-writer``),
and of the drawing helper process. Under load the wall time follows the machine, but
the CPU time a thread takes for the same work moves far less: it says which thread holds
the work, and so which work waits for the GIL beside training (every thread of the
training process but the helper's work, which is another process).

The helper's CPU a record counts its start (a Python interpreter importing torch and
nsp) over the fit's few records; its *steady state* is measured after the fit, by sending
it the last record's images three more times (drawn, encoded and written again).

    python benchmarks/spectrum_threads.py [--epochs 3] [--repeats 2] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _cpu_of(stat: str) -> float:
    """User plus system CPU seconds from a ``/proc/.../stat`` line."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child(epochs: int) -> None:
    import tempfile
    import threading
    import warnings

    sys.path.insert(0, str(ROOT / "examples"))
    import demo_digits

    from nsp_lightning import ProbeCallback
    from nsp_lightning.analyses import SpectrumAnalysis
    from nsp_lightning.probe.sinks import drawer

    warnings.filterwarnings("ignore")
    names = {threading.get_native_id(): "training (main)"}
    start = threading.Thread.start

    def named_start(self: threading.Thread, *args: Any, **kwargs: Any) -> None:
        start(self, *args, **kwargs)
        names[self.native_id] = f"{type(self).__name__} {self.name}"

    threading.Thread.start = named_start  # type: ignore[method-assign]
    sent: list[tuple[Any, Any]] = []
    draw_images = drawer.draw_images

    def keep(jobs: Any, events: Any = None) -> Any:
        sent[:] = [(jobs, events)]
        return draw_images(jobs, events)

    drawer.draw_images = keep  # the writer looks it up in the module at each record
    _, val = demo_digits.digits_loaders()
    probe = next(iter(val))[0][: demo_digits.PROBES]
    with tempfile.TemporaryDirectory() as root:
        began = time.perf_counter()
        demo_digits.fit(root, epochs, [ProbeCallback(probe, [SpectrumAnalysis()])])
        wall = time.perf_counter() - began
        # The helper in steady state: the last record's images sent to it again (drawn, encoded and written).
        steady = []
        helper = getattr(drawer, "_helper", None)
        if helper is not None and sent:
            for _ in range(3):
                before = _cpu_of(Path(f"/proc/{helper.process.pid}/stat").read_text())
                draw_images(*sent[0])
                steady.append(_cpu_of(Path(f"/proc/{helper.process.pid}/stat").read_text()) - before)
    threads: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as handle:
            name = names.get(int(tid), "other")
            threads[name] = threads.get(name, 0.0) + _cpu_of(handle.read())
    # Threads that ended before the fit did (TensorBoard's writer, closed with the logger) are no longer listed.
    ended = time.process_time() - sum(threads.values())
    helper = getattr(drawer, "_helper", None)
    helper_cpu = 0.0
    if helper is not None:
        with open(f"/proc/{helper.process.pid}/stat") as handle:
            helper_cpu = _cpu_of(handle.read())
    print(json.dumps({"wall": wall, "records": epochs + 1, "threads": threads, "ended": ended, "helper": helper_cpu,
                      "steady": steady}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="another checkout, run alternately with this one")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.epochs)
        return
    checkouts = {"this checkout": ROOT}
    if args.baseline is not None:
        checkouts = {f"baseline {args.baseline}": args.baseline.resolve(), **checkouts}
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for repeat in range(args.repeats):
        for name, checkout in checkouts.items():
            env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
            command = [sys.executable, str(Path(__file__).resolve()), "--child", "--epochs", str(args.epochs)]
            run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=checkout)
            if run.returncode != 0:
                raise RuntimeError(f"child in {checkout} failed:\n{run.stderr[-3000:]}")
            result = json.loads(run.stdout.strip().splitlines()[-1])
            per = result["records"]
            parts = ", ".join(f"{thread} {seconds / per:.3f}" for thread, seconds in
                              sorted(result["threads"].items(), key=lambda item: -item[1]) if seconds > 0)
            print(f"{name}, child {repeat + 1}: fit {result['wall']:.1f} s, {per} records; CPU s a record: {parts},"
                  f" ended threads {result['ended'] / per:.3f}, drawing helper {result['helper'] / per:.3f}"
                  f" (steady state: {', '.join(f'{s:.3f}' for s in result.get('steady', []))} s a record)"
                  f" (load {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
