"""A real TensorBoard server shows what SpectrumCallback logged, every epoch of it."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import matplotlib
import numpy as np
import pytest
from lightning_helpers import TinyNet, loader, probe, trainer_kwargs
from PIL import Image

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from nsp_lightning import SpectrumCallback

CHROMIUM = "/usr/bin/chromium"

EPOCHS = 11  # 12 records: more than the 10 image samples TensorBoard keeps by default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base: str, path: str, **query) -> bytes:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def wait_for(base: str, server: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"tensorboard exited with {server.returncode}: {server.stderr.read().decode()[-2000:]}")
        try:
            get(base, "/data/runs")
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"tensorboard did not answer within {seconds} s")


@pytest.mark.slow
def test_tensorboard_server_shows_every_epoch_with_the_documented_flag(tmp_path):
    cb = SpectrumCallback(probe(1), layers=["conv", "fc"])
    trainer = pl.Trainer(
        **trainer_kwargs(max_epochs=EPOCHS, logger=TensorBoardLogger(tmp_path, name="tb")), callbacks=[cb]
    )
    trainer.fit(TinyNet(), loader())

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--host", "127.0.0.1",
         "--port", str(port), "--samples_per_plugin", "images=100000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(base, server, 90)
        run = "tb/version_0"
        cards = f"{run}/spectrum_images"  # the run the drawing helper writes the cards to
        deadline = time.monotonic() + 60
        while True:  # the server loads event files in the background
            image_tags = json.loads(get(base, "/data/plugin/images/tags")).get(cards, {})
            if len(image_tags) == 7 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        expected = {f"spectrum/{layer}/{kind}/probe_0" for kind in ("activations", "spectrum", "difference") for layer in ("01_conv", "05_fc")}
        expected.add("spectrum/00_change/probe_0")
        assert set(image_tags) == expected
        scalar_tags = json.loads(get(base, "/data/plugin/scalars/tags"))[run]
        assert {"spectrum/log10_energy/probe_0/01_conv", "spectrum/log10_energy/probe_0/05_fc", "spectrum/record_seconds"} <= set(
            scalar_tags
        )

        images = json.loads(get(base, "/data/plugin/images/images", run=cards, tag="spectrum/01_conv/spectrum/probe_0", sample=0))
        steps = [2 * epoch for epoch in range(EPOCHS + 1)]  # the global step: 2 batches an epoch
        assert [entry["step"] for entry in images] == steps
        png = get(base, "/data/plugin/images/individualImage?" + images[-1]["query"])
        assert png.startswith(b"\x89PNG\r\n\x1a\n")

        scalars = json.loads(get(base, "/data/plugin/scalars/scalars", run=run, tag="spectrum/log10_energy/probe_0/05_fc"))
        assert [row[1] for row in scalars] == steps
        layout = json.loads(get(base, "/data/plugin/custom_scalars/layout"))
        assert layout["category"][0]["chart"][0]["multiline"]["tag"] == ["^spectrum/change/relative/probe_0/"]
        assert layout["category"][1]["chart"][0]["multiline"]["tag"] == ["^spectrum/log10_energy/probe_0/"]
    finally:
        server.kill()
        server.wait(timeout=30)


def rdbu_run(row: np.ndarray) -> int:
    """The longest run of pixels in ``row`` that steps through RdBu_r from its blue end to its red end."""
    lut = matplotlib.colormaps["RdBu_r"](np.arange(256), bytes=True)[:, :3].astype(int)
    distance = np.abs(row[:, None, :3].astype(int) - lut[None]).sum(axis=2)
    index = np.where(distance.min(axis=1) <= 24, distance.argmin(axis=1), -1)
    best = start = 0
    for x in range(1, len(index) + 1):
        if x == len(index) or index[x] < 0 or index[x] < index[x - 1] or index[start] < 0:
            if start < x and index[start] >= 0 and index[start] < 40 and index[x - 1] > 215:
                best = max(best, x - start)
            start = x
    return best


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: install the Debian package `chromium`")
def test_a_screenshot_of_the_time_series_page_shows_a_card_with_its_colour_bar(tmp_path):
    cb = SpectrumCallback(probe(1), layers=["conv", "fc"])
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=2, logger=TensorBoardLogger(tmp_path, name="tb")), callbacks=[cb])
    trainer.fit(TinyNet(), loader())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--host", "127.0.0.1",
         "--port", str(port), "--samples_per_plugin", "images=100000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(base, server, 90)
        deadline = time.monotonic() + 60
        while "spectrum/01_conv/spectrum/probe_0" not in json.loads(get(base, "/data/plugin/images/tags")).get(
            "tb/version_0/spectrum_images", {}
        ) and time.monotonic() < deadline:
            time.sleep(0.5)
        # The page loads its data and images asynchronously; a slow machine may need another try.
        for attempt in range(3):
            shot = tmp_path / f"timeseries-{attempt}.png"
            result = subprocess.run(
                [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", "--window-size=1400,900",
                 f"--screenshot={shot}", f"{base}/?tagFilter=01_conv/spectrum#timeseries"],
                capture_output=True, text=True, timeout=180,
            )
            assert result.returncode == 0, result.stderr[-2000:]
            pixels = np.asarray(Image.open(shot).convert("RGB"))
            if max(rdbu_run(row) for row in pixels[100:]) > 100:
                break
    finally:
        server.kill()
        server.wait(timeout=30)
    # TensorBoard's orange header, and in the page an image card whose colour bar runs from
    # RdBu_r's blue end to its red end, shrunk to the card but still over 100 pixels long.
    assert np.abs(pixels[5, 5].astype(int) - [0xF5, 0x7C, 0x00]).max() <= 12
    assert max(rdbu_run(row) for row in pixels[100:]) > 100


def line_hues(pixels: np.ndarray) -> dict[int, int]:
    """Pixels of strong colour in ``pixels`` by hue, in bins of 30 degrees."""
    rgb = pixels[..., :3].astype(float) / 255
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    strong = high - low > 0.3
    hue = np.degrees(np.arctan2(np.sqrt(3) * (rgb[..., 1] - rgb[..., 2]), 2 * rgb[..., 0] - rgb[..., 1] - rgb[..., 2]))
    bins, counts = np.unique(((hue[strong] % 360) // 30).astype(int), return_counts=True)
    return dict(zip(bins.tolist(), counts.tolist()))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: install the Debian package `chromium`")
def test_the_change_chart_at_default_card_width_draws_each_layer_in_its_own_colour(tmp_path):
    """One run per layer: TensorBoard colours the layers apart and lists them by name (issue 21, #2)."""
    pl.seed_everything(0)
    cb = SpectrumCallback(probe(1))
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=6, logger=TensorBoardLogger(tmp_path, name="tb")), callbacks=[cb])
    trainer.fit(TinyNet(), loader())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    layers = ["00_input", "01_conv", "02_relu", "03_pool", "04_flatten", "05_fc"]
    try:
        wait_for(base, server, 90)
        deadline = time.monotonic() + 60
        while len(json.loads(get(base, "/data/runs"))) < 2 + len(layers) and time.monotonic() < deadline:
            time.sleep(0.5)
        # The layers' runs in order, and the run of the cards (written by the drawing helper from the baseline on).
        listed, cards = json.loads(get(base, "/data/runs")), "tb/version_0/spectrum_images"
        assert cards in listed
        assert [run for run in listed if run != cards] == ["tb/version_0"] + [f"tb/version_0/spectrum_{name}" for name in layers]
        # Headless Chromium has no WebGL: TensorBoard's SVG charts (forceSVG) draw the same lines.
        for attempt in range(3):
            shot = tmp_path / f"change-{attempt}.png"
            result = subprocess.run(
                [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", "--window-size=1400,900",
                 f"--screenshot={shot}", f"{base}/?forceSVG=true&tagFilter=00_change/relative#timeseries"],
                capture_output=True, text=True, timeout=180,
            )
            assert result.returncode == 0, result.stderr[-2000:]
            pixels = np.asarray(Image.open(shot).convert("RGB"))
            # The chart's plot area in the first card at the default card width.
            hues = line_hues(pixels[215:450, 360:700])
            if sum(count > 40 for count in hues.values()) >= 3:
                break
    finally:
        server.kill()
        server.wait(timeout=30)
    assert sum(count > 40 for count in hues.values()) >= 3, hues
