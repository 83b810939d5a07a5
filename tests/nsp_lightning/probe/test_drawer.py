"""The drawing helper process: images drawn later are drawn there, exactly as here (issue 21, #7)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from nsp_lightning.analyses.spectrum.cards import card_image, difference_card, fixed_decades
from nsp_lightning.probe.sinks import LogSink, drawer
from nsp_lightning.probe.sinks.writer import write_sinks


def test_jobs_run_in_another_process_and_unpicklable_ones_here():
    [there] = drawer.draw_images([(os.getpid, (), {})])
    assert int(there) != os.getpid()
    [here] = drawer.draw_images([(lambda: os.getpid(), (), {})])
    assert int(here) == os.getpid()
    assert drawer.draw_images([]) == []


def test_cards_drawn_in_the_helper_are_the_cards_drawn_here():
    rng = np.random.default_rng(0)
    spectrum, baseline, acts = (rng.standard_normal((4, 3, 3)) * 10.0 ** rng.integers(-3, 4, (4, 3, 3)) for _ in range(3))
    fixed = fixed_decades([[acts]], [[baseline]])
    jobs = [
        (card_image, ("activations", acts, "01_conv · activations · probe 0"), {"fixed": fixed["activations"][0]}),
        (card_image, ("spectrum", spectrum, "01_conv · spectrum · probe 0"), {"fixed": fixed["spectrum"][0]}),
        (difference_card, (spectrum, baseline, "01_conv · difference"),
         {"baseline_epoch": 0, "threshold_of": fixed["spectrum"][0]}),
    ]
    drawn = drawer.draw_images(jobs)
    for (draw, args, kwargs), image in zip(jobs, drawn):
        # Encoded as PNG in the helper: the pixels decode exactly (Pillow reads them back).
        assert isinstance(image, drawer.EncodedImage)
        expected = draw(*args, **kwargs)
        assert image.shape == expected.shape and np.array_equal(np.asarray(image), expected)
        assert np.asarray(image, dtype=np.float32).dtype == np.float32


def test_a_drawing_that_fails_is_reported_and_the_others_are_written():
    sink = LogSink("mine", 2, enabled=True)
    sink.image_later("bad", np.full, (-1, 1, 3), 0)
    sink.image_later("good", np.full, (2, 2, 3), 7, dtype=np.uint8)
    sink.text("t", "kept")
    written = []

    class Target:
        name = "target"

        def write(self, s):
            written.extend((kind, tag) for kind, tag, _, _ in s.items)

    with pytest.raises(RuntimeError, match=r"drawing mine/bad: .*full: ValueError"):
        write_sinks(sink, [Target()])
    assert written == [("image", "mine/good"), ("text", "mine/t")]


def test_a_helper_that_dies_leaves_drawing_to_this_thread_with_a_warning(monkeypatch):
    monkeypatch.setattr(drawer, "_helper", None)
    monkeypatch.setattr(drawer, "_broken", False)
    helper = drawer._the_helper()
    assert helper is not None
    helper.process.kill()
    helper.process.wait()
    with pytest.warns(RuntimeWarning, match="drawing helper process failed"):
        [image] = drawer.draw_images([(os.getpid, (), {})])
    assert int(image) == os.getpid()
    assert drawer._broken and drawer._helper is None
    [image] = drawer.draw_images([(os.getpid, (), {})])  # no second warning, drawn here
    assert int(image) == os.getpid()


def test_the_spectrum_analysis_logs_only_jobs_that_reach_the_helper():
    # A job that does not pickle would be drawn on the writer thread, holding the GIL training needs.
    from lightning_helpers import TinyNet, probe

    from nsp_lightning.analyses import SpectrumAnalysis
    from nsp_lightning.probe.analysis import ProbeContext

    model, batch = TinyNet(), probe(2)
    analysis = SpectrumAnalysis()
    analysis.check(model, batch)
    sinks = []
    for epoch in (0, 1):
        context = ProbeContext(model, batch, epoch=epoch, global_step=epoch)
        if epoch == 0:
            analysis.setup(model, batch, context)
        sink = LogSink("nsp", epoch, enabled=True)
        analysis.log(analysis.compute(model, batch, context), sink)
        sinks.append(sink)
    later = [value for s in sinks for kind, _, value, _ in s.items if kind == "later"]
    assert len(later) > 10
    pickle.loads(pickle.dumps(later))
    assert not any(kind == "figure" for s in sinks for kind, _, _, _ in s.items)
