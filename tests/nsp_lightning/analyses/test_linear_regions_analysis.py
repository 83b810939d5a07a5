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
        distance = [s.value for s in events.Scalars(f"linear_regions/probe_{p}/boundary_distance")]
        np.testing.assert_allclose(distance, [r.arrays["boundary_distance"][p] for r in records], rtol=1e-6)
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
    analysis = LinearRegionsAnalysis(resolution=32)
    analysis.check(model, x)
    with torch.no_grad():
        record = analysis.compute(model, x, ProbeContext(model, x, epoch=0, global_step=0))
    assert record.arrays["images"].shape == (3, 32, 32, 3)
    assert (record.arrays["regions"] > 1).all()
    assert (record.arrays["boundary_distance"] > 0).all()
    sink = LogSink("linear_regions", 0, True)
    analysis.log(record, sink)
    assert [tag for _, tag, _, _ in sink.items] == [f"linear_regions/probe_{p}" for p in range(3)]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unbounded domain"):
        LinearRegionsAnalysis(domain=(0, np.inf, 0, 1))
    with pytest.raises(ValueError, match="`resolution` >= 8"):
        LinearRegionsAnalysis(resolution=2)
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
