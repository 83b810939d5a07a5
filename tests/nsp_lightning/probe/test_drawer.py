"""The drawing helper process: images drawn later are drawn there, exactly as here (issue 21, #7)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from drawing_jobs import float_image, pid_image, pid_of, process_id
from lightning_helpers import image_run

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
    [(draw, back, kwargs)], events = drawer._unpack_jobs(payload)
    assert events is None
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
        head = json.dumps({"$d": {"jobs": tree, "events": None}}).encode()
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
        expected = np.asarray(draw(*args, **kwargs))
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


def cards_in(run) -> dict[str, np.ndarray]:
    """Each image tag of the TensorBoard run directory ``run``: its last image, decoded."""
    import io

    from PIL import Image

    acc = image_run(run.parent, run.name[: -len("_images")])
    return {tag: np.asarray(Image.open(io.BytesIO(acc.Images(tag)[-1].encoded_image_string)))
            for tag in acc.Tags()["images"]}


def test_with_image_events_the_helper_writes_them_and_sends_back_only_what_is_kept(tmp_path):
    runs = [str(tmp_path / "one" / "mine_images"), str(tmp_path / "two" / "mine_images")]
    jobs = [(pid_image, (4,), {}), (pid_image, (6,), {}), (float_image, (), {})]
    events = drawer.ImageEvents(runs, ["mine/a", "mine/b", "mine/float"], 5, keep=False)
    a, b, refused = drawer.draw_images(jobs, events)
    assert a is None and b is None  # written there: no PNG came back
    assert isinstance(refused, drawer.DrawingError) and "expected a uint8 (H, W, 3 or 4) image" in str(refused)
    for run in runs:
        cards = cards_in(tmp_path / run)
        assert sorted(cards) == ["mine/a", "mine/b"] and cards["mine/b"].shape == (1, 6, 3)
        assert pid_of(cards["mine/a"]) == drawer._helper.process.pid != os.getpid()  # drawn and written there
    [kept] = drawer.draw_images(jobs[:1], drawer.ImageEvents(runs[:1], ["mine/a"], 6, keep=True))
    assert isinstance(kept, drawer.EncodedImage) and np.array_equal(np.asarray(kept), cards_in(tmp_path / runs[0])["mine/a"])


def test_without_the_helper_this_process_writes_the_image_events(tmp_path, monkeypatch):
    monkeypatch.setattr(drawer, "_helper", None)
    monkeypatch.setattr(drawer, "_broken", True)  # as after a helper that could not start
    run = tmp_path / "mine_images"
    local = lambda: np.zeros((1, 1, 3), np.uint8)  # cannot be sent: drawn here either way
    assert drawer.draw_images([(pid_image, (3,), {}), (local, (), {})],
                              drawer.ImageEvents([str(run)], ["mine/p", "mine/l"], 0, keep=False)) == [None, None]
    cards = cards_in(run)
    assert sorted(cards) == ["mine/l", "mine/p"] and pid_of(cards["mine/p"]) == os.getpid()


def test_images_drawn_later_reach_a_tensorboard_run_of_their_own_and_every_other_logger(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from nsp_lightning.probe.sinks import TensorBoardSink

    class Logger:
        def __init__(self):
            self.experiment = SummaryWriter(str(tmp_path / "tb"))

    class Pixels:
        name, takes = "pixels", frozenset({"image"})

        def __init__(self):
            self.items = []

        def image_runs(self, sink):
            return []

        def write(self, sink):
            self.items += sink.items

    sink = LogSink("spec/x", 4, enabled=True)
    sink.image_later("card", pid_image, 5)
    sink.image("plain", np.zeros((2, 2, 3), np.uint8))
    tensorboard, other = TensorBoardSink(Logger()), Pixels()
    write_sinks(sink, [tensorboard, other])
    tensorboard.logger.experiment.close()
    assert sorted(cards_in(tmp_path / "tb" / "spec_x_images")) == ["spec/x/card"]  # "/" in the prefix as "_"
    main = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    main.Reload()
    assert main.Tags()["images"] == ["spec/x/plain"]  # the card is not written twice
    [(kind, tag, card, options), plain] = other.items
    assert (kind, tag, options["in_image_runs"]) == ("image", "spec/x/card", True)
    assert np.array_equal(np.asarray(card), cards_in(tmp_path / "tb" / "spec_x_images")["spec/x/card"])
    assert plain[:2] == ("image", "spec/x/plain")
    only = LogSink("spec/x", 5, enabled=True)
    only.image_later("card", pid_image, 5)
    write_sinks(only, [tensorboard])  # no other logger: the card does not come back
    assert only.items == []


def test_the_helper_imports_this_process_s_modules_not_a_checkout_in_the_working_directory(tmp_path, monkeypatch):
    # A helper started from a directory holding another nsp_lightning must not import that one.
    (tmp_path / "nsp_lightning").mkdir()
    (tmp_path / "nsp_lightning" / "__init__.py").write_text("raise ImportError('the wrong checkout')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(drawer, "_helper", None)
    monkeypatch.setattr(drawer, "_broken", False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a helper that failed would warn
        [image] = drawer.draw_images([(process_id, (), {})])
    assert int(image) == drawer._helper.process.pid != os.getpid()
    drawer.stop_drawing()
