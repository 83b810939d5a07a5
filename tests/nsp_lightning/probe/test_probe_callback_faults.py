"""Reliability (issue 10, problems 10 and 11): a monitoring callback never ends training, and smaller faults.

Part of the reliability suite (``pytest -m reliability``).
"""

import math
import random
import warnings

import numpy as np
import pytest
import torch
from lightning_helpers import TinyNet, loader, probe, trainer_kwargs

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from nsp.io.storage import RecordStore
from nsp_lightning import AnalysisRecord, ProbeAnalysis, ProbeCallback, SpectrumCallback, read_records
from nsp_lightning.report.html import report

pytestmark = pytest.mark.reliability


class Diverging(TinyNet):
    """Its weights become NaN during the second epoch."""

    def training_step(self, batch, batch_idx):
        if self.current_epoch == 1:
            with torch.no_grad():
                self.fc.weight.fill_(math.nan)
        return super().training_step(batch, batch_idx)


class Failing(ProbeAnalysis):
    """Raises at record 2 only."""

    name = "failing"

    def compute(self, model, probes, context):
        if context.epoch == 2:
            raise RuntimeError("the analysis broke")
        return AnalysisRecord(scalars={"ok": 1.0})


def fit(callbacks, model=None, ckpt_path=None, **overrides):
    trainer = pl.Trainer(**trainer_kwargs(**overrides), callbacks=callbacks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model or TinyNet(), loader(), ckpt_path=ckpt_path)
    return trainer, [str(w.message) for w in caught]


# -- 10: a monitoring callback must not end training ----------------------------------------
def test_non_finite_weights_skip_the_record_and_training_and_checkpoints_go_on(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    callback = SpectrumCallback(probe(2), dirpath=tmp_path / "spectrum")
    trainer, messages = fit([callback, checkpoint], Diverging(), max_epochs=3, enable_checkpointing=True,
                            logger=CSVLogger(tmp_path / "logs"))
    # Before: the callback raised at the end of epoch 2, and fit stopped before ModelCheckpoint saved it.
    assert trainer.current_epoch == 3
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "epoch=2-step=6.ckpt"
    ]
    assert [r.epoch for r in read_records(tmp_path / "spectrum")] == [0, 1]
    assert callback.failed_records == {"spectrum": [2, 3]}
    assert any("could not take record 2" in m and "['conv.weight', 'conv.bias', 'fc.weight', 'fc.bias'] hold"
               " non-finite values" in m for m in messages)
    failures = RecordStore(tmp_path / "spectrum").failures()
    assert [f["name"] for f in failures] == ["epoch-000002", "epoch-000003"]
    metrics = (tmp_path / "logs" / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "spectrum/record_failed" in metrics
    page = report(tmp_path / "spectrum", tmp_path / "r.html").read_text(encoding="utf-8")
    assert "epoch-000003.npz was not recorded: ValueError: the model&#x27;s parameters" in page


def test_an_analysis_that_raises_is_skipped_for_that_record_only(tmp_path):
    callback = ProbeCallback(probe(1), [Failing()], dirpath=tmp_path)
    trainer, messages = fit([callback], max_epochs=3)
    assert trainer.current_epoch == 3
    assert [r.epoch for r in read_records(tmp_path / "failing")] == [0, 1, 3]
    assert RecordStore(tmp_path / "failing").failures() == [
        {"name": "epoch-000002", "error": "RuntimeError: the analysis broke"}
    ]


def test_on_error_raise_stops_training(tmp_path):
    callback = ProbeCallback(probe(1), [Failing()], dirpath=tmp_path, on_error="raise")
    with pytest.raises(RuntimeError, match="the analysis broke"):
        fit([callback], max_epochs=3)
    with pytest.raises(ValueError, match=r"ProbeCallback\(on_error='ignore'\): expected one of \('warn', 'raise'\)"):
        ProbeCallback(probe(1), [Failing()], on_error="ignore")


# -- 11: smaller faults ------------------------------------------------------------------------
def test_a_complex_probe_is_refused_not_its_imaginary_part_dropped():
    import nsp

    with pytest.raises(TypeError, match=r"`input` is complex \(torch.complex64\).*imaginary"):
        nsp.Activations(torch.nn.Sequential(torch.nn.Identity()), torch.ones(1, 4, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"ProbeCallback\(probe\): the probe is complex"):
        ProbeCallback(torch.ones(2, 4, dtype=torch.complex64), [Failing()])


class NoisyInEval(TinyNet):
    """Draws random numbers in its forward pass, in eval mode too."""

    def forward(self, x):
        return super().forward(x) + 0.01 * torch.rand(1) + 0.01 * float(np.random.rand()) + 0.01 * random.random()


def test_probing_a_model_that_draws_random_numbers_leaves_training_unchanged(tmp_path):
    def train(callbacks):
        pl.seed_everything(0, verbose=False)
        model = NoisyInEval()
        fit(callbacks, model, max_epochs=2)
        return model, (torch.rand(1).item(), np.random.rand(), random.random())

    watched, after_watched = train([ProbeCallback(probe(2), [Failing()], epochs=[1], dirpath=tmp_path)])
    plain, after_plain = train([])
    assert after_watched == after_plain
    for a, b in zip(watched.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)


def test_resuming_from_a_checkpoint_written_without_the_callback_warns_and_starts_with_that_state(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit([checkpoint], max_epochs=2, enable_checkpointing=True)
    callback = SpectrumCallback(probe(2), dirpath=tmp_path / "spectrum")
    trainer, messages = fit([callback], max_epochs=3, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    # Before: silently a series of one record, 3, without a baseline.
    assert any("checkpoint with no record series to continue" in m and "starts with record 2" in m for m in messages), messages
    assert [r.epoch for r in read_records(tmp_path / "spectrum")] == [2, 3]


@pytest.mark.slow
def test_under_ddp_spawn_the_launching_process_sees_the_records(tmp_path):
    callback = SpectrumCallback(probe(1), epochs=[2])
    trainer = pl.Trainer(**trainer_kwargs(strategy="ddp_spawn", devices=1, max_epochs=2, default_root_dir=tmp_path),
                         callbacks=[callback])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(TinyNet(), loader())
    # Before: recorded_epochs == [] and dirpath is None here, in the process that called fit.
    assert callback.recorded_epochs == [0, 2]
    assert callback.dirpath == str(tmp_path / "spectrum")  # logger=False: the log dir is default_root_dir
    assert [r.epoch for r in read_records(callback.dirpath)] == [0, 2]
