"""LinearRegionsAnalysis: region counts and partitions over training on two moons, read back from
TensorBoard and the records, against regioncam; its report and its argument checks."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning_helpers import TinyNet, probe, trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from nsp.regions.local_affine import NotPiecewiseLinearError
from nsp_lightning.analyses.linear_regions.analysis import LinearRegionsAnalysis

DOMAIN = (-1.5, 2.5, -1.0, 1.5)


class MoonsNet(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


def moons() -> DataLoader:
    from sklearn.datasets import make_moons

    x, y = make_moons(256, noise=0.1, random_state=0)
    return DataLoader(TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y)), batch_size=32)


def regioncam_count(model: MoonsNet) -> int:
    """regioncam's count on the same box: the box mapped onto its [-1, 1]^2 by the first layer."""
    import regioncam

    u0, u1, v0, v1 = DOMAIN
    scale = np.diag([(u1 - u0) / 2, (v1 - v0) / 2])
    centre = np.array([(u0 + u1) / 2, (v0 + v1) / 2])
    lin = [m for m in model.net if isinstance(m, nn.Linear)]
    w0, b0 = lin[0].weight.detach().double().numpy().T, lin[0].bias.detach().double().numpy()
    rc = regioncam.Regioncam(size=1.0)
    rc.linear((scale @ w0).astype(np.float32), (centre @ w0 + b0).astype(np.float32))
    for m in lin[1:]:
        rc.relu()
        rc.linear(m.weight.detach().numpy().T, m.bias.detach().numpy())
    return rc.num_faces


def test_region_counts_and_partitions_over_training(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nsp_lightning import ProbeCallback, read_records, report

    torch.manual_seed(0)
    probes = torch.tensor([[0.0, 0.5], [1.0, -0.3]])
    model = MoonsNet()
    callback = ProbeCallback(probes, [LinearRegionsAnalysis(domain=DOMAIN, resolution=64)])
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=3, logger=logger, callbacks=[callback]))
    trainer.fit(model, moons())
    log_dir = Path(trainer.log_dir)
    records = read_records(log_dir / "linear_regions")
    assert [r.epoch for r in records] == [0, 1, 2, 3]
    counts = np.array([r.arrays["regions"] for r in records])
    assert counts[-1, 0] == regioncam_count(model.eval())
    assert (counts[:, 0] == counts[:, 1]).all()  # one plane (the input space) for both probes
    assert len(set(counts[:, 0])) > 1  # training moved the regions

    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    for p in range(2):
        logged = [s.value for s in events.Scalars(f"linear_regions/probe_{p}/regions")]
        assert logged == [float(c) for c in counts[:, p]]
        assert f"linear_regions/probe_{p}/boundary_distance" not in events.Tags()["scalars"]  # noise: dropped
        images = events.Images(f"linear_regions/probe_{p}")
        assert [i.step for i in images] == [r.global_step for r in records]  # Lightning's global step
        for image, record in zip(images, records):
            pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
            np.testing.assert_array_equal(pixels, record.arrays["images"][p])
            # One colour per region (pattern colours; boundaries darkened): at least as many as regions seen.
            assert len(np.unique(pixels.reshape(-1, 3), axis=0)) >= min(50, record.arrays["regions"][p] // 4)

    html = report(log_dir, tmp_path / "report.html").read_text()
    assert 'id="linear-regions"' in html and "The partition per epoch" in html
    for p in range(2):
        assert html.count(f"probe {p}, epoch") == 4
    for r in records:
        assert f"epoch {r.epoch}: {int(r.arrays['regions'][0]):,} regions" in html


def test_planes_through_probes_of_a_cnn():
    """TinyNet (conv, ReLU, max-pool): the plane through each probe and the next two."""
    from nsp_lightning.probe.analysis import LogSink, ProbeContext

    torch.manual_seed(0)
    model = TinyNet().eval()
    x = probe(3)
    analysis = LinearRegionsAnalysis(zoom=None, resolution=32)
    analysis.check(model, x)
    with torch.no_grad():
        record = analysis.compute(model, x, ProbeContext(model, x, epoch=0, global_step=0))
    assert record.arrays["images"].shape == (3, 32 + 14, 32, 3)  # a 14-px title strip above the plane
    assert (record.arrays["regions"] > 1).all()
    assert "boundary_distance" not in record.arrays
    assert analysis.header()["planes"] == "the plane through each probe and the next two probes, in the 36-D input space"
    sink = LogSink("linear_regions", 0, True)
    analysis.log(record, sink)
    assert [tag for _, tag, _, _ in sink.items] == [f"linear_regions/probe_{p}" for p in range(3)]


def test_the_pictures_can_draw_the_class_decision_boundary():
    """class_boundary=True: red segments where the argmax of the two-moons logits changes, nowhere else."""
    from nsp_lightning.probe.analysis import ProbeContext

    torch.manual_seed(0)
    model = MoonsNet().eval()
    x = torch.tensor([[0.0, 0.5], [1.0, 0.0]])
    reds = []
    for flag in (False, True):
        analysis = LinearRegionsAnalysis(domain=DOMAIN, resolution=128, class_boundary=flag)
        analysis.check(model, x)
        image = analysis.compute(model, x, ProbeContext(model, x, epoch=0, global_step=0)).arrays["images"][0]
        red = (image[..., 0] > 200) & (image[..., 1] < 40) & (image[..., 2] < 40)
        reds.append(int(red.sum()))
        assert analysis.header()["class_boundary"] is flag
    # The probe's ring is red in both; the boundary (1.2 units long here) adds a red line two pixels wide.
    from nsp.regions import decision_boundary, linear_regions

    length = decision_boundary(linear_regions(model, domain=DOMAIN)).length()
    assert length > 1
    assert reds[1] - reds[0] > 0.5 * length * 128 / 2.5


def test_bad_arguments():
    with pytest.raises(ValueError, match="unbounded domain"):
        LinearRegionsAnalysis(domain=(0, np.inf, 0, 1))
    with pytest.raises(ValueError, match="`resolution` >= 8"):
        LinearRegionsAnalysis(resolution=2)
    with pytest.raises(ValueError, match="`zoom` > 0 or None"):
        LinearRegionsAnalysis(zoom=0)
    with pytest.raises(ValueError, match="`max_regions` to be an int >= 1"):
        LinearRegionsAnalysis(max_regions=0.5)
    with pytest.raises(ValueError, match="input space is 2-D: give `domain`"):
        LinearRegionsAnalysis().check(MoonsNet(), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="pass `spans`"):
        LinearRegionsAnalysis().check(TinyNet(), probe(2))
    with pytest.raises(ValueError, match="probe 0: .*degenerate plane"):
        x = probe(1)
        LinearRegionsAnalysis(spans=torch.stack([2 * x, 3 * x], dim=1)).check(TinyNet(), x)
    with pytest.raises(NotPiecewiseLinearError, match=r"'1' \(Tanh\)"):
        LinearRegionsAnalysis(domain=DOMAIN).check(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="lacks the array"):
        LinearRegionsAnalysis.read_record({"regions": np.zeros(2)}, {}, Path("r.npz"))


def test_the_default_box_is_a_small_square_around_the_probe():
    """zoom: a square centred on the probe (at (0, 0)), of side zoom × the three inputs' extent."""
    from nsp.regions import Plane
    from nsp_lightning.probe.analysis import ProbeContext

    torch.manual_seed(0)
    model, x = TinyNet().eval(), probe(3)
    analysis = LinearRegionsAnalysis(zoom=0.05, resolution=16)
    analysis.check(model, x)
    with torch.no_grad():
        record = analysis.compute(model, x, ProbeContext(model, x, epoch=0, global_step=0))
    for p in range(3):
        uv = Plane.through(x[p], x[(p + 1) % 3], x[(p + 2) % 3]).coordinates(torch.stack([x[p], x[(p + 1) % 3], x[(p + 2) % 3]]))
        half = 0.5 * 0.05 * np.ptp(uv, axis=0).max()
        np.testing.assert_allclose(record.arrays["domains"][p], [-half, half, -half, half], rtol=1e-12)
    assert "a square centred on the probe, of side 0.05 times" in analysis.header()["box"]
    # The default (issue 21: a record's cost on the digits demo): 0.35 % of the extent.
    assert LinearRegionsAnalysis().header()["zoom"] == 0.0035


def test_a_record_over_max_regions_is_refused_with_the_estimate_and_training_goes_on(tmp_path):
    """The first layer starts at zero (one region at the baseline); training makes more, which
    max_regions=1 refuses at every later record, with a warning that gives the estimate."""
    from nsp_lightning import ProbeCallback, read_records

    torch.manual_seed(0)
    model = MoonsNet()
    with torch.no_grad():
        model.net[0].weight.zero_()
        model.net[0].bias.fill_(0.5)
    probes = torch.tensor([[0.0, 0.5], [1.0, -0.3]])
    callback = ProbeCallback(probes, [LinearRegionsAnalysis(domain=DOMAIN, max_regions=1, resolution=16)],
                             dirpath=tmp_path / "records")
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=2, callbacks=[callback]))
    with pytest.warns(UserWarning, match=r"'linear_regions' could not take record 1 \(RegionBudgetError: "
                                         r"LinearRegionsAnalysis, probe 0: nsp.linear_regions: the box \(.*\) holds "
                                         r"about [\d,]+ regions \(extrapolated from [\d,]+ distinct activation patterns"):
        trainer.fit(model, moons())
    assert trainer.state.finished
    assert callback.failed_records == {"linear_regions": [1, 2]}
    records = read_records(tmp_path / "records" / "linear_regions")
    assert [r.epoch for r in records] == [0] and list(records[0].arrays["regions"]) == [1, 1]


def test_records_with_the_old_boundary_distance_stay_readable(tmp_path):
    arrays = {"regions": np.array([3, 4]), "density": np.ones(2), "boundary_distance": np.full(2, 1e-17),
              "images": np.zeros((2, 8, 8, 3), dtype=np.uint8)}
    record = LinearRegionsAnalysis.read_record(arrays, {"epoch": 0, "global_step": 0, "seconds": 0.1}, tmp_path / "r.npz")
    LinearRegionsAnalysis.check_record(record, {}, tmp_path / "r.npz")
    with pytest.raises(ValueError, match="boundary_distance"):
        bad = dict(arrays, boundary_distance=np.ones((2, 2)))
        LinearRegionsAnalysis.check_record(LinearRegionsAnalysis.read_record(
            bad, {"epoch": 0, "global_step": 0, "seconds": 0.1}, tmp_path / "r.npz"), {}, tmp_path / "r.npz")


def test_the_estimate_is_skipped_while_the_last_count_is_far_under_budget(monkeypatch):
    """The box is the same at every record: after a count of at most a quarter of max_regions the
    next record of that probe skips the grid scan, and its partition is the same; a count above it,
    a new fit (check) or a refused record brings the scan back."""
    import nsp.regions.partition as partition
    from nsp_lightning.probe.analysis import ProbeContext

    scans = []
    check_budget = partition.check_budget
    monkeypatch.setattr(partition, "check_budget", lambda *a, **k: (scans.append(1), check_budget(*a, **k))[1])
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = probe(3)
    context = ProbeContext(model, x, epoch=0, global_step=0)
    first_count = LinearRegionsAnalysis(zoom=None, resolution=16)
    first_count.check(model, x)
    counts = first_count.compute(model, x, context).arrays["regions"]
    budget = 4 * int(counts[1])  # probe 1 is at a quarter of it; the others above or below
    analysis = LinearRegionsAnalysis(zoom=None, resolution=16, max_regions=budget)
    analysis.check(model, x)
    scans.clear()
    first = analysis.compute(model, x, context)
    assert len(scans) == 3
    scans.clear()
    second = analysis.compute(model, x, context)
    assert len(scans) == int((counts > budget // 4).sum()) < 3
    np.testing.assert_array_equal(second.arrays["regions"], first.arrays["regions"])
    for p in range(3):
        np.testing.assert_allclose(second.arrays[f"p{p}_vertices"], first.arrays[f"p{p}_vertices"], rtol=1e-9, atol=1e-12)
    scans.clear()
    analysis.check(model, x)
    analysis.compute(model, x, context)
    assert len(scans) == 3
    # A refused record: the refused probe's next record scans again.
    assert counts[0] > 1 and 0 in analysis.last_counts
    analysis.max_regions = int(counts[0]) - 1
    with pytest.raises(ValueError, match="LinearRegionsAnalysis, probe 0: nsp.linear_regions"):
        analysis.compute(model, x, context)
    assert 0 not in analysis.last_counts
