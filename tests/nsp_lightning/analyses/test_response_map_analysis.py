"""ResponseMapAnalysis: its records against nsp.NeuralResponseMap, its report, its argument checks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning_helpers import TinyNet, probe

from nsp import NeuralResponseMap
from nsp_lightning.analyses.response_map.analysis import ResponseMapAnalysis
from nsp_lightning.probe.analysis import LogSink, ProbeContext, ReportContext
from nsp_lightning.report.sections import Film, Row, Section, Table

LAYERS = ["conv", "relu", "fc"]


def inputs(n: int = 48) -> torch.Tensor:
    return torch.randn(n, 1, 6, 6, generator=torch.Generator().manual_seed(7))


def records_of(analysis: ResponseMapAnalysis, model: torch.nn.Module, epochs: int, step: callable = None) -> list:
    """Run the analysis as the core does (setup, then compute and log per record) and read
    each record back as the core would."""
    x = probe(3)
    with torch.no_grad():
        analysis.setup(model, x, ProbeContext(model, x, epoch=0, global_step=0))
        records = []
        for epoch in range(epochs):
            if step:
                step(model)
            record = analysis.compute(model, x, ProbeContext(model, x, epoch=epoch, global_step=10 * epoch))
            sink = LogSink(analysis.prefix, epoch, True)
            analysis.log(record, sink)
            images = [tag for kind, tag, _, _ in sink.items if kind == "image"]
            assert images == [f"response_map/probe_{p}" for p in range(3)]
            meta = dict(record.meta, epoch=epoch, global_step=10 * epoch, seconds=0.0, __scalars__=list(record.scalars))
            arrays = dict(record.arrays, __scalars__=np.array(list(record.scalars.values()), dtype=np.float64))
            records.append(ResponseMapAnalysis.read_record(arrays, meta, Path("record.npz")))
    return records


def perturb(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("scale", ["record", "fit"])
def test_maps_are_the_response_maps_on_one_layout(scale):
    torch.manual_seed(0)
    model = TinyNet().eval()
    initial = copy.deepcopy(model)
    analysis = ResponseMapAnalysis(inputs(), LAYERS, resolution=40, scale=scale)
    records = records_of(analysis, model, 3, step=perturb)
    for record in records[1:]:
        np.testing.assert_array_equal(record.arrays["layout"], records[0].arrays["layout"])
        assert record.scalars == {} and not record.meta["refitted"]
    # The layout of the weights at fit start (t-SNE: 100 iterations exaggerated, then 150, by
    # default); the last maps those of the last weights.
    reference = NeuralResponseMap(initial, resolution=40)
    reference.train_map(inputs(), LAYERS, iterations=(100, 150))
    np.testing.assert_array_equal(reference.layout, records[0].arrays["layout"])
    initial.load_state_dict(model.state_dict())
    if scale == "record":
        reference.rescale(inputs())
    expected = np.stack([reference.generate_map(probe(3)[p : p + 1], "linear") for p in range(3)])
    np.testing.assert_allclose(records[-1].arrays["maps"], expected, atol=1e-6, equal_nan=True)
    assert not np.allclose(records[0].arrays["maps"], records[-1].arrays["maps"], equal_nan=True)
    layers = records[0].meta["layers"]
    assert layers == LAYERS
    assert [(layers[l], int(i)) for l, i in zip(records[0].arrays["neuron_layer"], records[0].arrays["neuron_index"])] == reference.neurons


def test_refit_moves_the_layout_a_little_and_logs_how_much():
    torch.manual_seed(0)
    model = TinyNet().eval()
    analysis = ResponseMapAnalysis(inputs(), LAYERS, resolution=32, refit=True, refit_iter=60)
    records = records_of(analysis, model, 3, step=perturb)
    assert records[0].scalars == {} and not records[0].meta["refitted"]
    for record in records[1:]:
        assert record.meta["refitted"]
        assert 0 <= record.scalars["procrustes_disparity"] < 0.5
    assert not np.array_equal(records[2].arrays["layout"], records[0].arrays["layout"])


def test_report_shows_maps_per_epoch_per_probe(tmp_path):
    torch.manual_seed(0)
    analysis = ResponseMapAnalysis(inputs(), LAYERS, resolution=24, refit=True, refit_iter=30)
    records = records_of(analysis, TinyNet().eval(), 2)
    steps = []
    section = ResponseMapAnalysis.report(records, analysis.header(), ReportContext(tmp_path, "response_map", steps.append))
    assert isinstance(section, Section) and section.id == "response-map"
    films = next(b for b in section.blocks if isinstance(b, Row)).blocks
    assert [f.caption for f in films] == ["probe 0", "probe 1", "probe 2"] and all(isinstance(f, Film) for f in films)
    assert [fr.label for fr in films[0].frames] == ["epoch 0 (global step 0)", "epoch 1 (global step 10)"]
    assert (films[0].frames[0].image.width, films[0].frames[0].image.height) == (24, 24)
    assert any(isinstance(b, Table) for b in section.blocks)
    assert len(steps) == ResponseMapAnalysis.report_steps(records, analysis.header())


def test_bad_arguments():
    model = TinyNet().eval()
    with pytest.raises(ValueError, match="B >= 3"):
        ResponseMapAnalysis(inputs(2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        ResponseMapAnalysis(inputs().numpy())
    with pytest.raises(ValueError, match="'linear' or 'nearest'"):
        ResponseMapAnalysis(inputs(), method="cubic")
    with pytest.raises(ValueError, match="unknown colormap"):
        ResponseMapAnalysis(inputs(), cmap="nope")
    with pytest.raises(ValueError, match=r"unknown layers \['conv9'\]"):
        ResponseMapAnalysis(inputs(), ["conv9"]).check(model, probe(2))
    with pytest.raises(ValueError, match="same kind"):
        ResponseMapAnalysis(torch.randn(5, 1, 7, 7)).check(model, probe(2))
    with pytest.raises(ValueError, match="pass `inputs`"):
        ResponseMapAnalysis().check(model, probe(2))
    with pytest.raises(ValueError, match="lacks the array"):
        ResponseMapAnalysis.read_record({"layout": np.zeros((3, 2))}, {}, Path("r.npz"))


def _fit(tmp_path: Path, refit: bool) -> tuple[Path, Any]:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning_helpers import loader, trainer_kwargs

    from nsp_lightning import ProbeCallback

    torch.manual_seed(0)
    analysis = ResponseMapAnalysis(inputs(), LAYERS, resolution=32, refit=refit, refit_iter=40)
    callback = ProbeCallback(probe(3), [analysis])
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=3, logger=logger, callbacks=[callback]))
    trainer.fit(TinyNet(lr=0.5), loader())
    return Path(trainer.log_dir), Path(trainer.log_dir) / "response_map"


def _projector(log_dir: Path) -> dict[int, dict[str, tuple[np.ndarray, list[list[str]]]]]:
    """Every embedding of TensorBoard's projector config (parsed with its own protobuf): by step, by tag."""
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    out: dict[int, dict[str, Any]] = {}
    for embedding in config.embeddings:
        tag, _, step = embedding.tensor_name.rpartition(":")
        layout = np.loadtxt(log_dir / embedding.tensor_path, delimiter="\t", ndmin=2)
        rows = [line.split("\t") for line in (log_dir / embedding.metadata_path).read_text().splitlines()]
        assert tag not in out.get(int(step), {})
        out.setdefault(int(step), {})[tag] = (layout, rows)
    return out


@pytest.mark.parametrize("refit", [False, True])
def test_callback_logs_maps_and_layouts_to_tensorboard(tmp_path, refit):
    """Images and projector files read back from TensorBoard: one layout at every record
    unless a refit was asked for; the images are the recorded maps."""
    import io

    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from image_text import find, has_text

    from nsp.response_map import to_rgb
    from nsp_lightning import read_records

    log_dir, record_dir = _fit(tmp_path, refit)
    records = read_records(record_dir)
    assert [r.epoch for r in records] == [0, 1, 2, 3]
    steps = [r.global_step for r in records]  # logged at Lightning's global step
    assert steps == sorted(set(steps))

    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    for p in range(3):
        images = events.Images(f"response_map/probe_{p}")
        assert [i.step for i in images] == steps
        for image, record in zip(images, records):
            pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
            # The recorded 32-px map, enlarged 7x to 224 px, within a card that names what it shows.
            assert find(pixels, to_rgb(record.arrays["maps"][p]).repeat(7, axis=0).repeat(7, axis=1)) is not None
            assert pixels.shape[1] >= 320
            counts = np.bincount(record.arrays["neuron_layer"], minlength=len(LAYERS))
            for line in [f"response_map · epoch {record.epoch} · step {record.global_step}", f"probe {p} · predicted ",
                         "0", "1", "response", "layers (nearest neuron)",
                         *(f"{name} ({count:,})" for name, count in zip(record.meta["layers"], counts))]:
                assert has_text(pixels, line), (p, record.epoch, line)
    assert not np.array_equal(records[0].arrays["maps"], records[-1].arrays["maps"])  # the network learnt

    projector = _projector(log_dir)
    # One embedding per layout: again at a record only where a refit moved it.
    assert sorted(projector) == (steps if refit else steps[:1])
    at_step = {r.global_step: r for r in records}
    layers = records[0].meta["layers"]
    assert len(layers) == 3
    for step, embeddings in projector.items():
        record = at_step[step]
        tags = ["response_map/layout/all", *(f"response_map/layout/{l:02d}_{name}" for l, name in enumerate(layers))]
        assert sorted(embeddings) == sorted(tags)
        for tag in tags:
            layout, rows = embeddings[tag]
            members = np.arange(len(record.arrays["layout"]))
            if not tag.endswith("/all"):
                members = np.flatnonzero(record.arrays["neuron_layer"] == int(tag.rsplit("/", 1)[1][:2]))
            # The layout as drawn, and a zero third column: the projector's 3-D PCA shows it flat.
            assert layout.shape == (len(members), 3) and len(members) > 0 and np.all(layout[:, 2] == 0)
            np.testing.assert_allclose(layout[:, :2], record.arrays["layout"][members], rtol=1e-6)
            assert rows[0] == ["layer", "index", "response of probe 0", "response of probe 1", "response of probe 2"]
            expected = [
                [f"{record.arrays['neuron_layer'][n]:02d}_{layers[record.arrays['neuron_layer'][n]]}",
                 str(record.arrays["neuron_index"][n])]
                for n in members
            ]
            assert [row[:2] for row in rows[1:]] == expected
            # Colour by a probe's response: the record's responses, 0 to 1.
            values = np.array([[float(v) for v in row[2:]] for row in rows[1:]])
            np.testing.assert_allclose(values, record.arrays["responses"][:, members].T, rtol=1e-3, atol=1e-6)
    if refit:
        assert all(not np.array_equal(projector[s]["response_map/layout/all"][0], projector[0]["response_map/layout/all"][0])
                   for s in steps[1:])
        disparity = [s.value for s in events.Scalars("response_map/procrustes_disparity")]
        assert len(disparity) == 3 and all(0 <= d < 0.5 for d in disparity)
    else:
        assert "response_map/procrustes_disparity" not in events.Tags()["scalars"]
        # The report's section: every probe's maps, a frame per record.
        from nsp_lightning import report

        html = report(log_dir, tmp_path / "report.html").read_text()
        assert 'id="response-map"' in html and "Neural response maps" in html
        assert html.count("probe 2, epoch") == 4


def test_a_resumed_run_continues_the_same_layout(tmp_path):
    """Resumed from a checkpoint, the layout is the first run's (taken back from its last
    record), not one fitted anew on the resumed weights."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning_helpers import loader, trainer_kwargs

    from nsp_lightning import ProbeCallback, read_records

    def run(max_epochs: int, ckpt_path: Path | None = None) -> Path:
        torch.manual_seed(0)
        callback = ProbeCallback(probe(3), [ResponseMapAnalysis(inputs(), LAYERS, resolution=16)],
                                 dirpath=tmp_path / "records")
        checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=-1)
        kwargs = trainer_kwargs(max_epochs=max_epochs, default_root_dir=tmp_path, callbacks=[callback, checkpoint],
                                enable_checkpointing=True)
        pl.Trainer(**kwargs).fit(TinyNet(lr=0.5), loader(), ckpt_path=ckpt_path)
        return tmp_path / "records" / "response_map"

    run(2)
    records = read_records(run(4, tmp_path / "ckpt" / "last.ckpt"))
    assert [r.epoch for r in records] == [0, 1, 2, 3, 4]
    for record in records[1:]:
        np.testing.assert_array_equal(record.arrays["layout"], records[0].arrays["layout"])
        np.testing.assert_array_equal(record.arrays["neuron_index"], records[0].arrays["neuron_index"])


def test_load_state_takes_back_a_layout_and_refuses_a_foreign_one():
    torch.manual_seed(0)
    model = TinyNet().eval()
    fitted = NeuralResponseMap(model, resolution=16)
    fitted.train_map(inputs(), LAYERS)
    state = fitted.state()
    restored = NeuralResponseMap(model, resolution=16)
    restored.load_state(inputs(), LAYERS, state)
    assert restored.neurons == fitted.neurons and restored.layers == fitted.layers
    np.testing.assert_array_equal(restored.scaled_responses(probe(3)), fitted.scaled_responses(probe(3)))
    np.testing.assert_array_equal(restored.map_values(np.linspace(0, 1, len(state["raw"]))),
                                  fitted.map_values(np.linspace(0, 1, len(state["raw"]))))
    with pytest.raises(ValueError, match="one entry per neuron"):
        NeuralResponseMap(model).load_state(inputs(), ["conv"], state)
    with pytest.raises(ValueError, match="`lo` must be finite"):
        NeuralResponseMap(model).load_state(inputs(), LAYERS, dict(state, lo=state["lo"][:-1]))
    with pytest.raises(ValueError, match=r"lacks the array\(s\) \['span'\]"):
        NeuralResponseMap(model).load_state(inputs(), LAYERS, {k: v for k, v in state.items() if k != "span"})


def test_the_metric_reaches_the_layout_and_the_header():
    model = TinyNet().eval()
    analysis = ResponseMapAnalysis(inputs(), LAYERS, resolution=16, metric="cosine")
    records_of(analysis, model, 1)
    assert analysis._map.metric == "cosine" and analysis.header()["metric"] == "cosine"
    assert "metric" not in ResponseMapAnalysis(inputs()).header()
