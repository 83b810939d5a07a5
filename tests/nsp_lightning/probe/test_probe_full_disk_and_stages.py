"""Reliability (issue 22, findings 2, 6 and 12): a full disk, validate-then-fit, and two callbacks on one directory.

Part of the reliability suite (``pytest -m reliability``).
"""

import errno
import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning_helpers import TinyNet, loader, probe, trainer_kwargs
from lightning.pytorch.loggers import CSVLogger

from nsp.io import storage
from nsp.io.storage import RecordStore, RecordStoreError
from nsp_lightning import AnalysisRecord, ProbeAnalysis, ProbeCallback, read_records
from nsp_lightning.report.cli import main

pytestmark = pytest.mark.reliability


class Means(ProbeAnalysis):
    name = "means"

    def compute(self, model, probes, context):
        return AnalysisRecord(arrays={"out": context.outputs().numpy()}, scalars={"mean": float(context.outputs().mean())})


def run(trainer, method, model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        getattr(trainer, method)(model, loader())
    return [str(w.message) for w in caught]


def test_a_full_disk_after_the_baseline_skips_records_and_training_goes_on(tmp_path, monkeypatch):
    callback = ProbeCallback(probe(1), [Means()], dirpath=tmp_path)
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=3, logger=CSVLogger(tmp_path / "logs")), callbacks=[callback])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    class FillTheDisk(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            # Every write of the record store, the one that lists a record as failed included.
            monkeypatch.setattr(storage, "save_npz", full)
            monkeypatch.setattr(storage, "save_json", full)

    trainer.callbacks.append(FillTheDisk())
    messages = run(trainer, "fit", TinyNet())
    monkeypatch.undo()
    assert trainer.current_epoch == 3  # before: fit died at the end of epoch 0 with a raw OSError
    assert callback.failed_records == {"means": [1, 2, 3]}
    assert [r.epoch for r in read_records(tmp_path / "means")] == [0]
    assert any("could not take record 1 (OSError: [Errno 28] No space left on device)" in m for m in messages), messages
    assert any("record 1 of 'means' could not be listed as failed" in m and "No space left on device" in m
               for m in messages), messages
    metrics = (tmp_path / "logs" / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "means/record_failed" in metrics


class Validated(TinyNet):
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self(x), y))


def test_validate_then_fit_on_one_trainer_keeps_both_stages_records_in_one_series(tmp_path):
    callback = ProbeCallback(probe(1), [Means()], dirpath=tmp_path)
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=2), callbacks=[callback])
    model = Validated()
    run(trainer, "validate", model)
    # Before: RecordStoreError "... already holds a record series" at fit start.
    run(trainer, "fit", model)
    assert trainer.current_epoch == 2
    store = RecordStore(tmp_path / "means")
    assert [(e["name"], e.get("stage", "fit")) for e in store.entries()] == [
        ("epoch-000000", "validate"), ("epoch-000001", "fit"), ("epoch-000002", "fit")
    ]
    assert [r.epoch for r in read_records(tmp_path / "means")] == [0, 1, 2]
    assert main([str(tmp_path), "-q", "-o", str(tmp_path / "r.html")]) == 0
    # The fit's records stay a series of their own: a second fit on them is refused, as before.
    with pytest.raises(RecordStoreError, match="already holds a record series"):
        run(pl.Trainer(**trainer_kwargs(max_epochs=1), callbacks=[ProbeCallback(probe(1), [Means()], dirpath=tmp_path)]),
            "fit", Validated())


@pytest.mark.parametrize("dirpath", ["given", None])
def test_two_callbacks_on_one_directory_get_nsps_message_before_lightnings(tmp_path, dirpath):
    where = None if dirpath is None else tmp_path
    callbacks = [ProbeCallback(probe(1), [Means()], dirpath=where) for _ in range(2)]
    # Before: Lightning's "Found more than one stateful callback of type `ProbeCallback`", here.
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=1, default_root_dir=tmp_path), callbacks=callbacks)
    with pytest.raises(ValueError, match=r"ProbeCallback: its analysis 'means' and ProbeCallback's analysis 'means'"
                                         r" would both write to .*means; give the callbacks different `dirpath`s"):
        trainer.fit(TinyNet(), loader())


def test_a_full_disk_under_validate_skips_the_record_and_the_evaluation_goes_on(tmp_path, monkeypatch):
    callback = ProbeCallback(probe(1), [Means()], dirpath=tmp_path)
    trainer = pl.Trainer(**trainer_kwargs(), callbacks=[callback])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "save_json", full)
    messages = run(trainer, "validate", Validated())  # before: a raw OSError from the manifest's write
    assert callback.failed_records == {"means": [0]}
    assert any("the records of epoch 0 cannot be written" in m and "No space left on device" in m for m in messages)
