"""TensorBoard's PNG encoding runs off the training thread, in record order, and nothing is lost (issue 21, #7)."""

import pickle
import threading

import numpy as np
import pytest
from lightning_helpers import TinyNet, image_run, loader, probe, trainer_kwargs

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from nsp_lightning import SpectrumCallback, read_records
from nsp_lightning.analyses.spectrum import analysis as spectrum_analysis
from nsp_lightning.probe.sinks import events
from nsp_lightning.probe.sinks import BackgroundWriter, LogSink
from nsp_lightning.probe.sinks.writer import write_sinks


def sink(step: int) -> LogSink:
    s = LogSink("mine", step, enabled=True)
    s.text("t", f"step {step}")
    return s


def test_background_writer_returns_at_once_writes_in_order_and_reports_errors():
    release = threading.Event()
    written = []

    def write(s, writers):
        release.wait(10)
        if s.step == 2:
            raise OSError("disk full")
        written.append((s.step, threading.current_thread().name, writers))

    writer = BackgroundWriter(write, capacity=8)
    for step in range(5):
        writer.submit(sink(step), ["w"])  # returns although nothing can be written yet
    writer.submit(LogSink("mine", 9, enabled=False), ["w"])  # nothing to write: never queued
    assert written == []
    release.set()
    assert writer.close() == ["mine at step 2: OSError: disk full"]
    assert written == [(s, "nsp-tensorboard-writer", ["w"]) for s in (0, 1, 3, 4)]
    assert writer.close() == []  # errors are reported once
    writer.submit(sink(7), ["w"])  # a closed writer starts again
    assert writer.close() == [] and written[-1][0] == 7
    with pytest.raises(ValueError, match=r"BackgroundWriter\(capacity=0\)"):
        BackgroundWriter(capacity=0)


def test_scalars_of_runs_keep_finite_values_and_refuse_run_names_that_are_not_directory_names():
    s = LogSink("spectrum", 0, enabled=True)
    s.scalars("00_change/relative/probe_0", {"00_input": 0.5, "04_flatten": float("nan"), "05_fc": np.inf})
    assert s.items == [("scalars", "spectrum/00_change/relative/probe_0", {"00_input": 0.5}, {"run_prefix": "spectrum"})]
    with pytest.raises(ValueError, match=r"LogSink.scalars\('x'\): run names \['a/b', '..'\]"):
        s.scalars("x", {"a/b": 1.0, "..": 2.0})


class Boom(TinyNet):
    def on_train_epoch_start(self) -> None:
        if self.current_epoch == 2:
            raise RuntimeError("boom")


def images_by_step(log_dir, tag):
    """The steps of ``tag``'s images, from the run the drawing helper writes the spectrum's cards to."""
    return [e.step for e in image_run(log_dir).Images(tag)]


def test_images_are_drawn_and_encoded_off_the_training_thread_and_all_written_by_fit_end(tmp_path, monkeypatch):
    threads = set()
    write_image_events = events.write_image_events

    def spy(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return write_image_events(*args, **kwargs)

    cards = set()
    card_image, difference_card = spectrum_analysis.card_image, spectrum_analysis.difference_card

    def card(*args, **kwargs):
        cards.add(threading.current_thread().name)
        return card_image(*args, **kwargs)

    def difference(*args, **kwargs):
        cards.add(threading.current_thread().name)
        return difference_card(*args, **kwargs)

    drawn = set()
    change_chart = spectrum_analysis.change_chart

    def chart(*args, **kwargs):
        drawn.add(threading.current_thread().name)
        return change_chart(*args, **kwargs)

    # These cards are drawn here (a patched drawing cannot be sent to the helper), so written here too.
    monkeypatch.setattr(events, "write_image_events", spy)
    monkeypatch.setattr(spectrum_analysis, "card_image", card)
    monkeypatch.setattr(spectrum_analysis, "difference_card", difference)
    monkeypatch.setattr(spectrum_analysis, "change_chart", chart)
    cb = SpectrumCallback(probe(1), layers=["input", "fc"], dirpath=tmp_path / "rec")
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=2, logger=TensorBoardLogger(tmp_path, name="tb")), callbacks=[cb])
    trainer.fit(TinyNet(), loader())
    assert threads == {"nsp-tensorboard-writer"}
    # The cards, activations, spectra and differences alike, are drawn there, not in the hook.
    assert cards == {"nsp-tensorboard-writer"}
    # The change chart is drawn there too, at every record.
    assert drawn == {"nsp-tensorboard-writer"}
    assert not any(t.name == "nsp-tensorboard-writer" for t in threading.enumerate())  # ended at teardown
    pickle.dumps(cb)  # as ddp_spawn pickles callbacks: the closed writer holds no thread or queue
    steps = [r.global_step for r in read_records(tmp_path / "rec")]
    assert images_by_step(trainer.log_dir, "spectrum/05_fc/spectrum/probe_0") == steps
    assert images_by_step(trainer.log_dir, "spectrum/00_change/probe_0") == steps


def test_a_fit_that_raises_still_writes_every_record_it_took(tmp_path):
    cb = SpectrumCallback(probe(1), layers=["input", "fc"], dirpath=tmp_path / "rec")
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=4, logger=TensorBoardLogger(tmp_path, name="tb")), callbacks=[cb])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Boom(), loader())
    steps = [r.global_step for r in read_records(tmp_path / "rec")]
    assert len(steps) == 3  # the baseline and two epochs
    assert images_by_step(trainer.log_dir, "spectrum/00_input/activations/probe_0") == steps
    assert steps[0] == 0 and np.all(np.diff(steps) > 0)


def test_an_image_drawn_later_is_drawn_once_when_written_for_every_logger():
    calls = []

    def draw(width, fill=0):
        calls.append((width, fill))
        return np.full((2, width, 3), fill, dtype=np.uint8)

    s = LogSink("mine", 3, enabled=True)
    s.image_later("card", draw, 4, fill=9)
    LogSink("mine", 3, enabled=False).image_later("card", draw, 4)  # nothing drawn for no logger
    assert calls == [] and s.items[0][:2] == ("later", "mine/card")

    class Target:
        name = "target"

        def __init__(self):
            self.items = []

        def write(self, sink):
            self.items += sink.items

    targets = [Target(), Target()]
    write_sinks(s, targets)
    assert calls == [(4, 9)]
    for target in targets:
        [(kind, tag, image, options)] = target.items
        assert (kind, tag, options) == ("image", "mine/card", {"dataformats": "HWC"})
        assert np.array_equal(image, np.full((2, 4, 3), 9, dtype=np.uint8))
