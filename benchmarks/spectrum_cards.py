"""Where the drawing helper's CPU goes in one spectrum record, part by part (issue 21, #7).

Runs the digits demo (``examples/demo_digits.py``) with ``SpectrumAnalysis()`` for a few
epochs, keeping every batch of images the callback sends to the drawing helper instead of
drawing them. Then, in this one process and in steady state (the first record and every
cache warmed by one pass), it times what the helper does for the last record: the cards
drawn, their PNG encoding, the change chart drawn and encoded, and the TensorBoard event
records written; and says the pixels and PNG bytes. CPU time (``time.process_time``), the
minimum over ``--repeats`` passes, so that load moves it little.

    python benchmarks/spectrum_cards.py [--epochs 3] [--repeats 5] [--save DIR] [--baseline DIR]

``--save DIR`` writes the last record's chart and probe 0's cards as PNG files, to look at;
``--baseline DIR`` measures another checkout the same way first, each in a child process
with its own checkout on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


def _record_jobs(epochs: int) -> tuple[list[Any], list[str]]:
    """The drawing jobs and their tags of the last record of a short demo fit."""
    sys.path.insert(0, str(ROOT / "examples"))
    import demo_digits

    from nsp_lightning import ProbeCallback
    from nsp_lightning.analyses import SpectrumAnalysis
    from nsp_lightning.probe.sinks import drawer

    batches: list[tuple[list[Any], list[str]]] = []

    def keep(jobs: Any, where: Any = None) -> list[None]:
        batches.append((list(jobs), list(where.tags) if where is not None else [""] * len(jobs)))
        return [None] * len(jobs)

    warnings.filterwarnings("ignore")
    # The callback's writer imports draw_images from the module at each call: this replaces it.
    drawer.draw_images = keep  # type: ignore[assignment]
    _, val = demo_digits.digits_loaders()
    probe = next(iter(val))[0][: demo_digits.PROBES]
    with tempfile.TemporaryDirectory() as root:
        demo_digits.fit(root, epochs, [ProbeCallback(probe, [SpectrumAnalysis()])])
    jobs = [job for batch, _ in batches[-1:] for job in batch]
    tags = [tag for _, batch_tags in batches[-1:] for tag in batch_tags]
    return jobs, tags


def _cpu(task: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        result = task()
        best = min(best, time.process_time() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--save", type=Path, help="write the chart and some cards here as PNG")
    parser.add_argument("--baseline", type=Path, help="another checkout, measured first")
    args = parser.parse_args()
    if args.baseline is not None:
        for checkout in (args.baseline.resolve(), ROOT):
            print(f"{checkout}:", flush=True)
            command = [sys.executable, str(Path(__file__).resolve()), "--epochs", str(args.epochs), "--repeats",
                       str(args.repeats)]
            env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
            run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=checkout)
            if run.returncode != 0:
                raise RuntimeError(f"child in {checkout} failed:\n{run.stderr[-3000:]}")
            print("\n".join(run.stdout.strip().splitlines()[-3:]), flush=True)
        return
    import numpy as np

    from nsp_lightning.probe.sinks import drawer
    from nsp_lightning.probe.sinks.events import write_image_events

    jobs, tags = _record_jobs(args.epochs)
    charts = [i for i, job in enumerate(jobs) if "chart" in job[0].__qualname__]
    cards = [i for i in range(len(jobs)) if i not in charts]

    def draw(indices: list[int]) -> list[Any]:
        return [drawer._draw_encoded(jobs[i]) for i in indices]

    def draw_only(indices: list[int]) -> list[Any]:
        # As drawn: an RGB array, or a PalettedImage (one byte a pixel) where the checkout draws those.
        return [jobs[i][0](*jobs[i][1], **jobs[i][2]) for i in indices]

    drawn = draw_only(cards)  # warms every cache
    card_draw, drawn = _cpu(lambda: draw_only(cards), args.repeats)
    from nsp.viz.png import encode_png

    def encode(image: Any) -> Any:
        return drawer.EncodedImage(encode_png(image), image.shape)
    card_encode, encoded = _cpu(lambda: [encode(image) for image in drawn], args.repeats)
    chart_all, chart = _cpu(lambda: draw(charts), args.repeats)
    everything = encoded + chart
    with tempfile.TemporaryDirectory() as out:
        order = cards + charts
        write, _ = _cpu(lambda: write_image_events([out], [tags[i] or f"image_{i}" for i in order],
                                                   [(e.png, e.shape) for e in everything], 1), args.repeats)
    pixels = sum(int(np.prod(image.shape)) for image in drawn)  # as RGB
    png = sum(len(e.png) for e in encoded)
    widths = sorted(image.shape[1] for image in drawn)
    total = card_draw + card_encode + chart_all + write
    print(f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}; {len(cards)} cards, {len(charts)} chart(s)")
    print(f"cards drawn {card_draw:.3f} s, encoded {card_encode:.3f} s; chart drawn and encoded {chart_all:.3f} s;"
          f" events written {write:.3f} s; total {total:.3f} s of CPU a record")
    print(f"card pixels {pixels / 1e6:.1f} MB, card PNG {png / 1e6:.2f} MB, chart PNG"
          f" {sum(len(e.png) for e in chart) / 1e6:.3f} MB; card widths {widths[0]}-{widths[-1]} px")
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
        for i, e in zip(charts, chart):
            (args.save / "chart.png").write_bytes(e.png)
        for i, e in zip(cards, encoded):
            if "probe_0" in tags[i] or not tags[i]:
                name = (tags[i] or f"card_{i}").replace("/", "_")
                (args.save / f"{name}.png").write_bytes(e.png)


if __name__ == "__main__":
    main()
