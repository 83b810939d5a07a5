"""One sink per attached logger (issue 24): what TensorBoard gets, Weights & Biases, MLflow and CSV get too.

The acceptance test fits the digits with every analysis and four loggers at once, and reads
each back from disk with that logger's own format: TensorBoard's event files
(EventAccumulator), wandb's offline ``.wandb`` file (its protobuf records) and media files,
the MLflow file store (``MlflowClient.list_artifacts``), CSVLogger's ``media.csv`` and files.
"""

from __future__ import annotations

import csv
import io
import json
import re
import struct
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning_helpers import TinyNet, loader, probe, trainer_kwargs
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.tensorboard.summary import image as tensorboard_image

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from nsp_lightning import ProbeCallback, SpectrumCallback
from nsp_lightning.probe.sinks import LoggerSinks, LogSink, require, rgb_uint8
from nsp_lightning.probe.sinks.sink import file_name


class Other(Logger):
    """A logger nsp-lightning has no sink for: it takes scalars only."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "other"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append(dict(metrics))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


@pytest.mark.parametrize(
    ("image", "dataformats"),
    [
        (np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 13, "HWC"),
        (np.linspace(-0.2, 1.3, 2 * 4 * 3, dtype=np.float32).reshape(3, 2, 4), "CHW"),
        (torch.linspace(0, 1, 12).reshape(3, 4), "HW"),
        (np.random.default_rng(0).random((1, 5, 6)), "CHW"),
    ],
)
def test_rgb_uint8_gives_the_pixels_tensorboard_stores(image, dataformats):
    summary = tensorboard_image("t", np.asarray(image), dataformats=dataformats)
    stored = np.asarray(Image.open(io.BytesIO(summary.value[0].image.encoded_image_string)))
    assert np.array_equal(rgb_uint8(image, dataformats), stored)
    with pytest.raises(ValueError, match=r"rgb_uint8: expected an image laid out as 'HWC'.*'NHWC'"):
        rgb_uint8(np.zeros((1, 2, 2, 3)), "NHWC")


@pytest.mark.parametrize(
    ("image", "dataformats"),
    [
        (np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 13, "HWC"),
        (np.linspace(-0.2, 1.3, 2 * 4 * 3, dtype=np.float32).reshape(3, 2, 4), "CHW"),
        (torch.linspace(0, 1, 12).reshape(3, 4), "HW"),
        (np.random.default_rng(1).integers(0, 256, (37, 41, 3), dtype=np.uint8), "HWC"),
    ],
)
def test_tensorboard_images_hold_the_pixels_add_image_would_write(tmp_path, image, dataformats):
    # nsp encodes TensorBoard's images itself (issue 21, #7): same tag, step, size and pixels as add_image.
    from torch.utils.tensorboard import SummaryWriter

    from nsp_lightning.probe.sinks.tensorboard_sink import write_to_tensorboard

    sink = LogSink("nsp", 7, enabled=True)
    sink.image("a/b", image, dataformats=dataformats)
    writer = SummaryWriter(tmp_path)
    write_to_tensorboard(sink, [writer])
    writer.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    [event] = acc.Images("nsp/a/b")
    expected = tensorboard_image("t", np.asarray(image), dataformats=dataformats).value[0].image
    assert (event.step, event.width, event.height) == (7, expected.width, expected.height)
    stored = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))
    assert np.array_equal(stored, np.asarray(Image.open(io.BytesIO(expected.encoded_image_string))))


def test_file_names_keep_safe_characters_only():
    assert file_name("spectrum/01_net.0/activations/probe_0") == "spectrum/01_net.0/activations/probe_0"
    assert file_name("a b/../c:d//e") == "a_b/_../c_d/_/e"


def test_a_missing_package_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ModuleNotFoundError, match=r"WandbLogger needs the package 'wandb'.*nsp-lightning\[wandb\]"):
        require("wandb", "wandb", "WandbLogger")


def test_a_logger_without_a_sink_is_warned_about_once_naming_what_it_skips(tmp_path):
    other = Other()
    logger = TensorBoardLogger(tmp_path, name="tb")
    cb = SpectrumCallback(probe(1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pl.Trainer(**trainer_kwargs(max_epochs=2, logger=[logger, other]), callbacks=[cb]).fit(TinyNet(), loader())
    told = [str(w.message) for w in caught if "cannot take" in str(w.message)]
    assert len(told) == 1, told
    assert told[0].startswith("SpectrumCallback: Other (nsp-lightning writes media to TensorBoardLogger, WandbLogger,")
    entries = tensorboard_entries(Path(logger.log_dir))
    kinds = {"image": "images: ", "histogram": "histograms: ", "text": "text: "}
    for kind, tag, step in entries:
        assert kinds[kind] in told[0], (kind, tag)
    # At the first record, each kind's tags: eight named, the rest counted.
    for kind in ("image", "histogram"):
        first = sorted(tag for k, tag, step in entries if step == 0 and k == kind)
        named = [tag for tag in first if re.search(re.escape(tag) + r"(,|;| and|$)", told[0])]
        assert len(named) == min(len(first), 8)
        assert (f"and {len(first) - 8} more" in told[0]) == (len(first) > 8)
    # Its scalars still arrive.
    assert any("spectrum/log10_energy/probe_0/01_conv" in m for m in other.metrics)


def test_the_sinks_are_made_once_per_logger_and_forgotten_at_clear(tmp_path):
    csv_logger, other = CSVLogger(tmp_path), Other()
    sinks = LoggerSinks("X")
    first = sinks.sinks([csv_logger, other])
    assert [s.name for s in first] == ["CSVLogger"] and sinks.sinks([csv_logger, other])[0] is first[0]
    sink = LogSink("p", 3, enabled=True)
    sink.text("t", "x")
    with pytest.warns(UserWarning, match=r"X: Other .* Skipped at step 3: text: p/t$"):
        assert sinks.warn_skipped(sink, [csv_logger, other])
    assert sinks.warn_skipped(sink, [csv_logger, other]) is None  # once
    sinks.clear()
    assert sinks.sinks([csv_logger])[0] is not first[0]


# ---------------------------------------------------------------------------------------
# Reading each logger back from disk.


def tensorboard_entries(log_dir: Path, values: dict | None = None) -> set[tuple[str, str, int]]:
    """``(kind, tag, step)`` of every image, histogram and text in the run; ``values`` gets what each holds.

    Images drawn later are in the runs ``<prefix>_images`` (written by the drawing helper):
    they are read there, and no image is in two runs.
    """
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    found = set()
    values = {} if values is None else values
    image_runs = [acc]
    for run in sorted(log_dir.glob("*_images")):
        image_runs.append(EventAccumulator(str(run), size_guidance={"images": 0}))
        image_runs[-1].Reload()
    for run in image_runs:
        for tag in run.Tags()["images"]:
            for event in run.Images(tag):
                assert ("image", tag, event.step) not in found, f"{tag} at step {event.step} is in two runs"
                found.add(("image", tag, event.step))
                # As a viewer shows it: the spectrum's cards are palette PNGs, which decode to indices.
                values["image", tag, event.step] = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    for tag in acc.Tags()["histograms"]:
        for event in acc.Histograms(tag):
            found.add(("histogram", tag, event.step))
            values["histogram", tag, event.step] = event.histogram_value
    for name in acc.Tags()["tensors"]:
        if name.endswith("/text_summary"):
            for event in acc.Tensors(name):
                tag = name[: -len("/text_summary")]
                found.add(("text", tag, event.step))
                values["text", tag, event.step] = event.tensor_proto.string_val[0].decode()
    return found


def wandb_rows(run_dir: Path) -> list[dict]:
    """The history rows of an offline run, read from its ``.wandb`` file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, offset, pending, records = 32768, 7, b"", []
    while offset + 7 <= len(data):
        room = block - offset % block
        if room < 7:  # a block's tail too short for a header is padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset: offset + 7])
        chunk = data[offset + 7: offset + 7 + length]
        offset += 7 + length
        if kind in (1, 2):  # full, first
            pending = chunk
        else:  # middle, last
            pending += chunk
        if kind in (1, 4):
            records.append(pending)
    rows = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


WANDB_KINDS = {"image-file": "image", "histogram": "histogram", "table-file": "table"}


class DigitsModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                 nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


@pytest.mark.slow
def test_every_logger_gets_what_tensorboard_gets_from_a_digits_fit_with_all_analyses(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("openTSNE")
    pytest.importorskip("captum")
    pytest.importorskip("wandb")
    mlflow = pytest.importorskip("mlflow")
    from digits_cnn import digits

    from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
    from nsp_lightning.analyses import (
        AttributionAnalysis,
        FeatureVisAnalysis,
        LinearRegionsAnalysis,
        ResponseMapAnalysis,
        SpectrumAnalysis,
    )

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    # MLflow 3 keeps the file store for those who ask for it.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    x, y = digits()
    analyses = [
        SpectrumAnalysis(layers=["net.0", "net.1", "net.4"]),
        AttributionAnalysis(["saliency", "gradcam"], layer="net.0", sanity=False),
        FeatureVisAnalysis({"net.1": [0]}, [1], steps=4, size=8),
        ResponseMapAnalysis(x[1500:1600], ["net.1"], units="all", resolution=32, refit_iter=50, perplexity=5.0),
        LinearRegionsAnalysis(resolution=16),
    ]
    tensorboard = TensorBoardLogger(tmp_path, name="tb")
    run = WandbLogger(save_dir=str(tmp_path), offline=True, project="nsp")
    uri = f"file:{tmp_path / 'mlruns'}"
    mlflow_logger = MLFlowLogger(experiment_name="nsp", tracking_uri=uri)
    csv_logger = CSVLogger(tmp_path, name="csv")
    trainer = pl.Trainer(
        **trainer_kwargs(max_epochs=2, logger=[tensorboard, run, mlflow_logger, csv_logger], limit_val_batches=0),
        callbacks=[ProbeCallback((x[1600:1603], y[1600:1603]), analyses)],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(DigitsModule(), DataLoader(TensorDataset(x[:128], y[:128]), batch_size=64))
    told = [str(w.message) for w in caught if str(w.message).startswith("ProbeCallback:")]
    assert not [m for m in told if "cannot take" in m or "could not" in m], told
    run_dir = Path(run.experiment.dir).parent
    run.experiment.finish()

    values: dict = {}
    expected = tensorboard_entries(Path(tensorboard.log_dir), values)
    kinds = {kind for kind, _, _ in expected}
    assert kinds == {"image", "histogram", "text"}
    assert {tag.split("/")[0] for _, tag, _ in expected} == {a.prefix for a in analyses}
    assert all(file_name(tag) == tag for _, tag, _ in expected)  # artifact paths below are the tags

    # CSV: every entry in media.csv, each file beside metrics.csv holding what TensorBoard holds.
    directory = Path(csv_logger.experiment.metrics_file_path).parent
    with open(directory / "media.csv", newline="") as handle:
        index = list(csv.DictReader(handle))
    got = {(row["kind"], row["tag"], int(row["step"])) for row in index}
    assert got - {e for e in got if e[0] == "embedding"} == expected
    for row in index:
        key, path = (row["kind"], row["tag"], int(row["step"])), directory / row["path"]
        if row["kind"] == "image":
            assert np.array_equal(np.asarray(Image.open(path)), values[key])
        elif row["kind"] == "text":
            assert path.read_text() == values[key]
        elif row["kind"] == "histogram":
            with open(path, newline="") as handle:
                bins = list(csv.DictReader(handle))
            histogram = values[key]
            assert sum(int(b["count"]) for b in bins) == histogram.num
            assert float(bins[0]["left"]) == pytest.approx(histogram.min, abs=1e-12)
            assert float(bins[-1]["right"]) == pytest.approx(histogram.max, abs=1e-12)
    layouts = {(row["tag"], int(row["step"])) for row in index if row["kind"] == "embedding"}
    first = min(step for kind, tag, step in expected if tag == "response_map/probe_0")
    # One layout without a refit: every neuron and each layer's, at the first record only.
    assert layouts == {("response_map/layout/all", first), ("response_map/layout/00_net.1", first)}

    # MLflow: the artifacts of the run, listed through the client.
    client = mlflow.MlflowClient(tracking_uri=uri)
    artifacts, pending = [], [None]
    while pending:
        for item in client.list_artifacts(mlflow_logger.run_id, pending.pop()):
            (pending if item.is_dir else artifacts).append(item.path)
    got = set()
    for path in artifacts:
        top, rest = path.split("/", 1)
        if top == "images" and path.endswith(".png"):
            key, _, step = rest.split("+")[:3]
            entry = ("image", key.replace("~", "/"), int(step))
            local = client.download_artifacts(mlflow_logger.run_id, path, str(tmp_path / "download"))
            assert np.array_equal(np.asarray(Image.open(local)), values[entry])
        elif top in ("text", "histograms"):
            tag, step = rest.rsplit("/step_", 1)
            entry = ("text" if top == "text" else "histogram", tag, int(step.split(".")[0]))
            local = Path(client.download_artifacts(mlflow_logger.run_id, path, str(tmp_path / "download")))
            if top == "text":
                assert local.read_text() == values[entry]
            else:
                assert sum(json.loads(local.read_text())["counts"]) == values[entry].num
        else:
            assert top in ("embeddings", "images"), path
            continue
        got.add(entry)
    assert got == expected

    # Weights & Biases: the offline run's history rows, and the media files they name.
    got = set()
    for row in wandb_rows(run_dir):
        step = row.get("trainer/global_step")
        # A medium is stored flat: "<tag>/_type", "<tag>/path", ...
        for key in [k[: -len("/_type")] for k in row if k.endswith("/_type")]:
            value = {k[len(key) + 1:]: v for k, v in row.items() if k.startswith(key + "/")}
            kind = WANDB_KINDS.get(value["_type"])
            if kind is None:
                continue
            if kind == "table":
                table = json.loads((run_dir / "files" / value["path"]).read_text())
                if table["columns"] != ["step", "text"]:
                    assert key.startswith("response_map/layout/") and table["columns"][:2] == ["layer", "index"]
                    continue
                kind = "text"
                assert table["data"] == [[step, values["text", key, step]]]
            elif kind == "image":
                pixels = np.asarray(Image.open(run_dir / "files" / value["path"]))
                assert np.array_equal(pixels, values["image", key, step])
            else:
                assert sum(value["values"]) == values["histogram", key, step].num
            got.add((kind, key, step))
    assert got == expected
