"""The drawing helper process: images drawn later are drawn there, exactly as here (issue 21, #7)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from drawing_jobs import process_id

from nsp_lightning.analyses.spectrum.cards import card_image, difference_card, fixed_decades
from nsp_lightning.probe.sinks import LogSink, drawer
from nsp_lightning.probe.sinks.writer import write_sinks


def test_registered_jobs_run_in_another_process_and_the_others_here():
    [there] = drawer.draw_images([(process_id, (), {})])
    assert int(there) != os.getpid()
    [here] = drawer.draw_images([(lambda: np.array(os.getpid()), (), {})])
    assert int(here) == os.getpid()
    [here] = drawer.draw_images([(os.getpid, (), {})])  # not registered with drawable()
    assert int(here) == os.getpid()
    assert drawer.draw_images([]) == []


def test_jobs_cross_the_pipe_as_json_and_npy_never_pickle(monkeypatch):
    from nsp.viz.scales import Decades

    args = (np.arange(6.0).reshape(2, 3), [1, (2.5, "x")], {"k": np.float32(3)}, None, True, b"\x89PNG")
    payload = drawer._pack_jobs([(card_image, args, {"fixed": Decades(-2, 3)})])
    assert b"pickle" not in payload and b"\x80\x05" not in payload[:2]
    [(draw, back, kwargs)] = drawer._unpack_jobs(payload)
    assert draw is card_image and kwargs == {"fixed": Decades(-2, 3)}
    assert np.array_equal(back[0], args[0]) and back[1:] == ([1, (2.5, "x")], {"k": 3.0}, None, True, b"\x89PNG")
    with pytest.raises(TypeError, match="not registered"):
        drawer._pack_jobs([(os.getpid, (), {})])
    def in_a_script() -> np.ndarray:
        return np.array(os.getpid())

    in_a_script.__module__ = "__main__"  # the helper's __main__ is not the caller's script
    monkeypatch.setitem(drawer._DRAWINGS, f"__main__:{in_a_script.__qualname__}", in_a_script)
    with pytest.raises(TypeError, match="importable module"):
        drawer._pack_jobs([(in_a_script, (), {})])
    assert int(drawer.draw_images([(in_a_script, (), {})])[0]) == os.getpid()
    with pytest.raises(TypeError, match="cannot be sent"):
        drawer._pack_jobs([(card_image, (object(),), {})])
    with pytest.raises(TypeError, match="an object array"):
        drawer._pack_jobs([(card_image, (np.array([None]),), {})])


def test_the_helper_refuses_a_function_or_a_class_nobody_registered():
    import json

    def crafted(tree):  # a payload as a hostile writer to the pipe would send it: JSON, no arrays
        head = json.dumps(tree).encode()
        return drawer._FRAME.pack(len(head)) + head

    with pytest.raises(TypeError, match="os:system is not registered"):
        drawer._unpack_jobs(crafted([["os:system", {"$t": ["echo hacked"]}, {"$d": {}}]]))
    popen = {"$c": "subprocess:Popen", "f": {"args": "ls"}}
    with pytest.raises(TypeError, match="subprocess:Popen is not registered"):
        drawer._unpack_jobs(crafted([["drawing_jobs:process_id", {"$t": []}, {"$d": {"x": popen}}]]))


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
        [image] = drawer.draw_images([(process_id, (), {})])
    assert int(image) == os.getpid()
    assert drawer._broken and drawer._helper is None
    [image] = drawer.draw_images([(process_id, (), {})])  # no second warning, drawn here
    assert int(image) == os.getpid()


def test_the_spectrum_analysis_logs_only_jobs_that_reach_the_helper():
    # A job that cannot be sent would be drawn on the writer thread, holding the GIL training needs.
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
    drawer._unpack_jobs(drawer._pack_jobs(later))
    assert not any(kind == "figure" for s in sinks for kind, _, _, _ in s.items)
