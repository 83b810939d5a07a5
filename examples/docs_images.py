"""Regenerate the README's pictures of the digits demo from what ``make demo`` wrote.

    python examples/docs_images.py [RUN_DIR] [--docs docs]

RUN_DIR is the demo's run directory (default: the newest ``out/demo_digits/digits/version_*``).
Writes, with a TensorBoard server and headless Chromium (Debian package ``chromium``):

- ``docs/tensorboard_change.png``: TensorBoard's time-series page (at twice the pixels,
  without the settings pane) filtered to the
  change-since-baseline chart of probe 0 (``spectrum/00_change/probe_0``), last record;
- ``docs/tensorboard_cards.png``: the same page filtered to conv2's cards of probe 0
  (activations and spectrum, with their colour bars);
- ``docs/report_screenshot.png``: the top of ``nsp-report``'s page for the run (run facts
  and the change since the baseline);

and prints the change since the baseline of every layer at the last record (probe 0), the
figures the README quotes. From a run of ``examples/response_maps_digits.py`` (``make
demo`` writes one; default: the newest ``out/response_maps/digits/version_*``, or
``--projector RUN``) it also writes ``docs/tensorboard_projector.png``: TensorBoard's
embedding projector opened on that run's layout (WebGL drawn by Chromium's software
renderer, SwiftShader).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

import nsp.transforms.energy
from nsp_lightning import read_records, report

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
# The projector draws with WebGL: Chromium's software GL instead of --disable-gpu.
WEBGL_FLAGS = ["--headless", "--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
               "--hide-scrollbars"]


def screenshot(url: str, path: Path, size: tuple[int, int], budget_ms: int = 20000, scale: int = 1,
               flags: list[str] = FLAGS) -> np.ndarray:
    """A headless Chromium screenshot, at ``scale`` device pixels per CSS pixel."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [CHROMIUM, *flags, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
             f"--force-device-scale-factor={scale}", f"--window-size={size[0]},{size[1]}", f"--screenshot={path}", url],
            check=True, capture_output=True, timeout=300,
        )
    return np.asarray(Image.open(path).convert("RGB"))


def card_screenshot(url: str, path: Path) -> None:
    """TensorBoard's page at twice the pixels (its image cards shrink images to fit), without the settings pane.

    The page loads images asynchronously: retried until the card holds an image.
    """
    for budget in (20000, 40000, 60000, 90000):
        pixels = screenshot(url, path, (1400, 600), budget_ms=budget, scale=2)[: 2 * 560, : 2 * 1140]
        card = pixels[2 * 170 :, 2 * 290 :]
        if len(np.unique(card.reshape(-1, 3), axis=0)) > 200:
            Image.fromarray(pixels).save(path, optimize=True)
            return
    raise RuntimeError(f"TensorBoard showed no image at {url} in 90 s of page time")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tensorboard(logdir: Path) -> tuple[subprocess.Popen, str]:
    """A TensorBoard server on ``logdir`` and its address."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port",
         str(port), "--samples_per_plugin", "images=100000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return server, f"http://127.0.0.1:{port}"


def projector_shot(run_dir: Path, docs: Path) -> None:
    """The projector on a response-map run: the layout of every neuron, flat in a 3-D PCA (100 % of the variance)."""
    server, base = start_tensorboard(run_dir)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if json.loads(urllib.request.urlopen(f"{base}/data/plugin/projector/runs", timeout=10).read()):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("TensorBoard listed no projector run within 120 s")
            time.sleep(1)
        screenshot(f"{base}/#projector", docs / "tensorboard_projector.png", (1400, 900), budget_ms=40000,
                   flags=WEBGL_FLAGS)
        print(docs / "tensorboard_projector.png")
    finally:
        server.kill()
        server.wait(timeout=30)


def tensorboard_shots(logdir: Path, run: str, docs: Path) -> None:
    server, base = start_tensorboard(logdir)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                tags = json.loads(urllib.request.urlopen(f"{base}/data/plugin/images/tags", timeout=10).read())
                # The cards and the chart are in their own run, which the drawing helper writes.
                if "spectrum/00_change/probe_0" in tags.get(f"{run}/spectrum_images", {}):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("TensorBoard did not list the demo's images within 120 s")
            time.sleep(1)
        for name, tag_filter in (("tensorboard_change.png", "00_change/probe_0"),
                                 ("tensorboard_cards.png", "04_conv2/.*/probe_0")):
            card_screenshot(f"{base}/?tagFilter={tag_filter}#timeseries", docs / name)
            print(docs / name)
    finally:
        server.kill()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", help="the demo's run directory")
    parser.add_argument("--docs", default="docs", help="where to write the pictures (default docs)")
    parser.add_argument("--projector", metavar="RUN",
                        help="a run of examples/response_maps_digits.py (default: the newest in out/response_maps)")
    args = parser.parse_args()
    run_dir = Path(args.run_dir) if args.run_dir else sorted(Path("out/demo_digits/digits").glob("version_*"))[-1]
    docs = Path(args.docs)
    maps_runs = sorted(Path("out/response_maps/digits").glob("version_*"))
    if args.projector or maps_runs:
        projector_shot(Path(args.projector) if args.projector else maps_runs[-1], docs)
    records = read_records(run_dir / "spectrum")
    change = nsp.energy.change_since(records[0].spectra[0], records[-1].spectra[0])
    print(f"change since the baseline at epoch {records[-1].epoch}, probe 0 (relative, decades, sign flips, "
          "log10 energy):")
    for l, name in enumerate(records[0].layernames):
        values = [change[m][l] for m in ("relative", "decades", "sign_flips", "log10_energy")]
        print(f"  {l:02d} {name:8s} " + "  ".join(f"{v:8.3g}" for v in values))
    tensorboard_shots(run_dir.parent.parent, f"{run_dir.parent.name}/{run_dir.name}", docs)
    page = report(run_dir, Path(tempfile.mkdtemp()) / "report.html")
    shot = screenshot(page.as_uri(), docs / "report_screenshot.png", (1280, 1500), budget_ms=5000)
    print(docs / "report_screenshot.png", shot.shape)


if __name__ == "__main__":
    main()
