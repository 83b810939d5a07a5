"""A real TensorBoard server shows what SpectrumCallback logged, every epoch of it."""

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from lightning_helpers import TinyNet, loader, probe, trainer_kwargs

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from nsp_lightning import SpectrumCallback

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
        deadline = time.monotonic() + 60
        while True:  # the server loads event files in the background
            image_tags = json.loads(get(base, "/data/plugin/images/tags")).get(run, {})
            if len(image_tags) == 5 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        expected = {f"nsp/{layer}/{kind}/probe_0" for kind in ("activations", "spectrum") for layer in ("01_conv", "05_fc")}
        expected.add("nsp/00_change/probe_0")
        assert set(image_tags) == expected
        scalar_tags = json.loads(get(base, "/data/plugin/scalars/tags"))[run]
        assert {"nsp/log10_energy/probe_0/conv", "nsp/log10_energy/probe_0/fc", "nsp/record_seconds"} <= set(
            scalar_tags
        )

        images = json.loads(get(base, "/data/plugin/images/images", run=run, tag="nsp/01_conv/spectrum/probe_0", sample=0))
        steps = [2 * epoch for epoch in range(EPOCHS + 1)]  # the global step: 2 batches an epoch
        assert [entry["step"] for entry in images] == steps
        png = get(base, "/data/plugin/images/individualImage?" + images[-1]["query"])
        assert png.startswith(b"\x89PNG\r\n\x1a\n")

        scalars = json.loads(get(base, "/data/plugin/scalars/scalars", run=run, tag="nsp/log10_energy/probe_0/fc"))
        assert [row[1] for row in scalars] == steps
        layout = json.loads(get(base, "/data/plugin/custom_scalars/layout"))
        assert layout["category"][0]["chart"][0]["multiline"]["tag"] == ["^nsp/change/relative/probe_0/"]
        assert layout["category"][1]["chart"][0]["multiline"]["tag"] == ["^nsp/log10_energy/probe_0/"]
    finally:
        server.kill()
        server.wait(timeout=30)
