"""The TensorBoard sink writes charts of several runs on the writer thread while Lightning flushes on the training thread.

``SummaryWriter.flush()`` and ``close()`` iterate over ``SummaryWriter.all_writers``;
Lightning calls them on the training thread (``logger.save()`` at every checkpoint and
log interval) while the callback's :class:`BackgroundWriter` writes a record's
``LogSink.scalars`` charts. The interleaving is forced here, not left to chance: the
flush stops after its first writer until the writer thread has written a new run.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning.pytorch.loggers import TensorBoardLogger

from nsp_lightning.probe.sinks import LogSink, TensorBoardSink

# How long either thread waits for the other before the test fails (never reached when it passes).
PATIENCE = 10.0


class PausingDict(dict):
    """A dict whose ``values()`` iteration pauses after its first value until ``resume`` is set."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.paused, self.resume = threading.Event(), threading.Event()

    def values(self):
        iterator = iter(super().values())
        for value in iterator:
            yield value
            break
        self.paused.set()
        assert self.resume.wait(PATIENCE), "the writer thread did not write within the patience"
        yield from iterator


def chart(step: int) -> LogSink:
    sink = LogSink("spectrum", step, enabled=True)
    sink.scalars("00_change/relative/probe_0", {"00_input": 0.5 + step, "01_conv": 1.5 + step})
    return sink


def test_a_flush_on_the_training_thread_while_the_writer_thread_adds_runs_neither_fails(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb")
    target = TensorBoardSink(logger)
    writer = logger.experiment
    writer.all_writers = PausingDict(writer.all_writers)
    failed: list[BaseException] = []

    def write() -> None:
        try:
            assert writer.all_writers.paused.wait(PATIENCE), "the flush did not start"
            target.write(chart(0))
        except BaseException as err:  # reported on the test's thread
            failed.append(err)
        finally:
            writer.all_writers.resume.set()

    thread = threading.Thread(target=write)
    thread.start()
    logger.save()  # SummaryWriter.flush(): iterates over all_writers, pausing after the first
    thread.join(PATIENCE)
    assert not thread.is_alive() and not failed, failed

    # The runs hold their charts, written at the step, once the sink is closed.
    target.write(chart(1))
    target.close()
    logger.finalize("success")
    for run, first in (("spectrum_00_input", 0.5), ("spectrum_01_conv", 1.5)):
        acc = EventAccumulator(str(Path(logger.log_dir) / run))
        acc.Reload()
        scalars = acc.Scalars("spectrum/00_change/relative/probe_0")
        assert [(s.step, s.value) for s in scalars] == [(0, first), (1, first + 1)]
