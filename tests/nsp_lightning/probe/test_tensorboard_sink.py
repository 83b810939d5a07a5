"""The TensorBoard sink: the projector's points, and charts of several runs written while Lightning flushes.

The race: ``SummaryWriter.flush()`` and ``close()`` iterate over ``SummaryWriter.all_writers``;
Lightning calls them on the training thread (``logger.save()`` at every checkpoint and
log interval) while the callback's :class:`BackgroundWriter` writes a record's
``LogSink.scalars`` charts. The interleaving is forced here, not left to chance: the
flush stops after its first writer until the writer thread has written a new run.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning.pytorch.loggers import TensorBoardLogger

from nsp_lightning.probe.sinks import LogSink, TensorBoardSink, projector_points

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


def read_projector(log_dir: Path) -> list[tuple[str, np.ndarray, list[list[str]]]]:
    """Each embedding of the projector's config, parsed with TensorBoard's own protobuf: tag, points, metadata rows."""
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    return [
        (e.tensor_name, np.loadtxt(log_dir / e.tensor_path, delimiter="\t", ndmin=2),
         [line.split("\t") for line in (log_dir / e.metadata_path).read_text().splitlines()])
        for e in config.embeddings
    ]


def test_a_2_d_layout_reaches_the_projector_with_a_zero_third_column_and_its_metadata(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb")
    target = TensorBoardSink(logger)
    layout = np.random.default_rng(0).normal(size=(7, 2))
    sink = LogSink("response_map", 4, enabled=True)
    sink.embedding("layout/all", layout, [[f"{i % 2:02d}_l", str(i), f"{i / 10:.4g}"] for i in range(7)],
                   ["layer", "index", "response of probe 0"])
    sink.embedding("wide", np.arange(12.0).reshape(3, 4), ["a", "b", "c"])
    target.write(sink)
    target.close()
    logger.finalize("success")
    (tag, points, rows), (wide_tag, wide, labels) = read_projector(Path(logger.log_dir))
    assert tag == "response_map/layout/all:00004"
    # PCA over 3 columns, the third constant: the layout lies in the plane of the first two components.
    assert points.shape == (7, 3) and np.all(points[:, 2] == 0)
    np.testing.assert_allclose(points[:, :2], layout, rtol=1e-6)
    assert rows[0] == ["layer", "index", "response of probe 0"] and rows[3] == ["00_l", "2", "0.2"]
    # Points of 3 or more columns are the projector's as they are.
    assert wide_tag == "response_map/wide:00004" and np.array_equal(wide, np.arange(12.0).reshape(3, 4))
    assert [row[0] for row in labels] == ["a", "b", "c"]


@pytest.mark.parametrize("columns", [1, 2, 3, 5])
def test_projector_points_pad_to_3_columns_with_zeros_only_where_fewer(columns):
    points = torch.arange(4.0 * columns, dtype=torch.float64).reshape(4, columns)
    padded = projector_points(points)
    assert padded.shape == (4, max(3, columns)) and padded.dtype == torch.float64
    assert torch.equal(padded[:, :columns], points) and not padded[:, columns:].any()


@pytest.mark.parametrize("key", ["images", "a/b", "..", ""])
def test_a_chart_of_several_runs_refuses_a_run_that_is_no_directory_or_the_cards_run(key):
    from nsp_lightning.probe.sinks import LogSink

    with pytest.raises(ValueError, match="not names of a directory.*'images' is the run of the images drawn later"):
        LogSink("mine", 0, enabled=True).scalars("chart", {key: 1.0, "fine": 2.0})
