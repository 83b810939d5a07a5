"""TensorBoard's HParams: the module's hyperparameters, the analyses' configuration and the metrics logged (issue 21, #3)."""

import glob
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from lightning_helpers import TinyNet, loader, probe, trainer_kwargs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from nsp_lightning import ProbeCallback
from nsp_lightning.probe.analysis import AnalysisRecord, ProbeAnalysis
from test_spectrum_tensorboard_server import free_port, wait_for


class Configured(ProbeAnalysis):
    name = "configured"

    def __init__(self, width: int = 3, method: str = "saliency") -> None:
        self.width, self.method = width, method

    def hparams(self):
        return {"width": self.width, "method": self.method, "exact": True}

    def compute(self, model, probes, context):
        return AnalysisRecord(scalars={"mean": float(context.outputs().mean())})


class LoggingNet(TinyNet):
    """TinyNet that saves its hyperparameters and logs its training loss, as most modules do."""

    def __init__(self, lr: float = 0.1, hidden: dict | None = None) -> None:
        super().__init__(lr)
        self.save_hyperparameters()

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss


def plugin(acc, tag):
    return plugin_data_pb2.HParamsPluginData.FromString(acc.PluginTagToContent("hparams")[tag])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("hparams")
    cb = ProbeCallback(probe(2), [Configured()])
    trainer = pl.Trainer(
        **trainer_kwargs(max_epochs=2, logger=TensorBoardLogger(tmp_path, name="tb")), callbacks=[cb]
    )
    trainer.fit(LoggingNet(hidden={"depth": 2}), loader())
    acc = EventAccumulator(trainer.log_dir, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return trainer, acc


def test_the_session_holds_the_module_hyperparameters_and_the_analyses_configuration(run):
    _, acc = run
    # TensorBoard keeps a run's first HParams summary only: the accumulator reads the first, as the server does.
    hparams = plugin(acc, "_hparams_/session_start_info").session_start_info.hparams
    assert hparams["lr"].number_value == pytest.approx(0.1)
    assert hparams["hidden/depth"].number_value == 2
    assert hparams["configured/width"].number_value == 3
    assert hparams["configured/method"].string_value == "saliency"
    assert hparams["configured/exact"].number_value == 1  # torch writes bools as numbers


def test_the_table_columns_are_the_metrics_the_module_logged_and_not_lightnings_placeholder(run):
    _, acc = run
    experiment = plugin(acc, "_hparams_/experiment").experiment
    columns = [m.name.tag for m in experiment.metric_infos]
    assert "train_loss" in columns and "hp_metric" not in columns
    assert "train_loss" in acc.Tags()["scalars"] and "hp_metric" not in acc.Tags()["scalars"]
    assert {h.name for h in experiment.hparam_infos} >= {"lr", "configured/width", "configured/method"}


def test_the_session_is_written_at_fit_start_before_any_metric(run):
    trainer, _ = run
    order = []
    for path in sorted(glob.glob(f"{trainer.log_dir}/events.out.tfevents.*")):
        for event in EventFileLoader(path).Load():
            order += [value.tag for value in event.summary.value]
    assert order.index("_hparams_/session_start_info") < order.index("configured/mean") < order.index("train_loss")
    # The session holds no metric value: the table reads each column from the run's scalars.
    assert order.count("_hparams_/session_start_info") == 2  # at fit start, and again (ignored) at the end
    assert order.index("_hparams_/experiment") > order.index("train_loss")


def test_other_loggers_get_the_configuration_merged_with_the_module_hyperparameters(tmp_path):
    csv = CSVLogger(tmp_path, name="csv")
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=1, logger=csv), callbacks=[ProbeCallback(probe(1), [Configured()])])
    trainer.fit(LoggingNet(), loader())
    assert csv.experiment.hparams["lr"] == pytest.approx(0.1)
    assert csv.experiment.hparams["configured/width"] == 3


def test_fast_dev_run_writes_no_hparams(tmp_path):
    trainer = pl.Trainer(
        **trainer_kwargs(fast_dev_run=True, logger=TensorBoardLogger(tmp_path, name="tb")),
        callbacks=[ProbeCallback(probe(1), [Configured()])],
    )
    trainer.fit(LoggingNet(), loader())
    assert not glob.glob(f"{tmp_path}/**/events.out.tfevents.*", recursive=True)


def post(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{base}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_tensorboards_hparams_dashboard_shows_the_configuration_and_a_training_metric_with_its_value(run):
    trainer, acc = run
    root = Path(trainer.log_dir).parent.parent
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(root), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(base, server, 90)
        deadline = time.monotonic() + 60
        while True:  # the server loads event files in the background
            experiment = post(base, "/data/plugin/hparams/experiment", {"experimentName": ""})
            if experiment.get("metricInfos") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert {h["name"] for h in experiment["hparamInfos"]} >= {"lr", "configured/width", "configured/method"}
        assert {"tag": "train_loss", "group": ""} in [m["name"] for m in experiment["metricInfos"]]
        groups = post(base, "/data/plugin/hparams/session_groups", {
            "experimentName": "",
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [{"metric": {"tag": "train_loss", "group": ""}}, {"hparam": "configured/method"}],
            "startIndex": 0,
            "sliceSize": 10,
        })["sessionGroups"]
    finally:
        server.kill()
        server.wait(timeout=30)
    assert len(groups) == 1
    assert groups[0]["hparams"]["configured/method"] == "saliency" and groups[0]["hparams"]["lr"] == pytest.approx(0.1)
    [value] = [m for m in groups[0]["metricValues"] if m["name"]["tag"] == "train_loss"]
    assert value["value"] == pytest.approx(acc.Scalars("train_loss")[-1].value)
