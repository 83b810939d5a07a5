"""nsp.regions: exact linear regions on a plane, against closed forms, brute force and regioncam."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from nsp.regions.local_affine import NotPiecewiseLinearError, activation_patterns
from nsp.regions import Plane, linear_regions, plot_regions, regions_rgb
from region_models import SmallCNN, mlp, pattern_rows


def _check_partition(net: nn.Module, regions, samples: int = 3) -> None:
    """Tiling, one pattern per region (sampled interior points), and distinct patterns."""
    u0, u1, v0, v1 = regions.domain
    areas = regions.areas()
    assert (areas > 0).all()
    assert abs(areas.sum() - (u1 - u0) * (v1 - v0)) <= 1e-9 * (u1 - u0) * (v1 - v0)
    pts, owner = regions.sample(samples, np.random.default_rng(0))
    _, pats = activation_patterns(net, regions.plane(pts))
    assert pats.keys() == regions.patterns.keys()
    for key, p in pats.items():
        assert torch.equal(p, regions.patterns[key][owner]), key
    keys = pattern_rows(regions.patterns)
    assert len(np.unique(keys)) == len(regions)  # activation regions are convex: one polygon each
    # The affine map of each region reproduces the network at its interior points.
    with torch.no_grad():
        out = net(regions.plane(pts)).reshape(len(pts), -1).numpy()
    a = regions.affine.reshape(len(regions), 3, -1)[owner]
    pred = pts[:, :1] * a[:, 0] + pts[:, 1:] * a[:, 1] + a[:, 2]
    np.testing.assert_allclose(pred, out, rtol=1e-9, atol=1e-9)


def _arrangement_count(w: np.ndarray, b: np.ndarray, box: tuple[float, float, float, float]) -> int:
    """Brute force for lines w.x + b = 0 in general position: within a convex box, each line that
    crosses the interior adds 1 + (its crossings with earlier lines inside the box) regions."""
    u0, u1, v0, v1 = box
    corners = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
    count = 1
    crosses = [np.ptp(np.sign(corners @ wi + bi)) == 2 for wi, bi in zip(w, b)]
    for i in range(len(w)):
        if not crosses[i]:
            continue
        count += 1
        for j in range(i):
            if crosses[j]:
                x = np.linalg.solve(np.stack([w[i], w[j]]), -np.array([b[i], b[j]]))
                count += int(u0 < x[0] < u1 and v0 < x[1] < v1)
    return count


@pytest.mark.parametrize("seed, units", [(0, 5), (1, 12), (2, 30)])
def test_one_hidden_layer_is_a_line_arrangement(seed, units):
    net = mlp(seed, [2, units, 1])
    w, b = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    # A box containing every crossing: Zaslavsky's count for n lines in general position.
    pts = [np.linalg.solve(np.stack([w[i], w[j]]), -np.array([b[i], b[j]])) for i, j in itertools.combinations(range(units), 2)]
    r = 1.5 * np.abs(pts).max() + 1
    regions = linear_regions(net, domain=(-r, r, -r, r))
    assert len(regions) == 1 + units + math.comb(units, 2)
    # A small box: brute force over the arrangement.
    box = (-0.7, 0.9, -0.8, 0.6)
    small = linear_regions(net, domain=box)
    assert len(small) == _arrangement_count(w, b, box)
    _check_partition(net, small)


@pytest.mark.parametrize("seed, widths", [(3, [2, 10, 10, 10, 2]), (4, [2, 16, 8, 16, 1]), (5, [2, 6, 6, 6, 6, 6, 3])])
def test_deeper_mlps_tile_and_share_patterns(seed, widths):
    net = mlp(seed, widths)
    _check_partition(net, linear_regions(net, domain=(-2, 2, -1.5, 2.5)))


def _grid_patterns(net, regions, size):
    u0, u1, v0, v1 = regions.domain
    us = u0 + (np.arange(size) + 0.5) * (u1 - u0) / size
    vs = v0 + (np.arange(size) + 0.5) * (v1 - v0) / size
    grid = np.stack(np.meshgrid(us, vs), axis=-1).reshape(-1, 2)
    keys = []
    for chunk in np.array_split(grid, 16):
        keys.append(pattern_rows(activation_patterns(net, regions.plane(chunk))[1]))
    return np.unique(np.concatenate(keys))


def test_grid_1024_finds_no_pattern_the_partition_lacks():
    net = mlp(6, [2, 12, 12, 12, 1])
    regions = linear_regions(net, domain=(-1, 1, -1, 1))
    found = _grid_patterns(net, regions, 1024)
    assert np.isin(found, pattern_rows(regions.patterns)).all()
    assert len(found) <= len(regions)


def _regioncam_partition(net: nn.Module, size: float):
    regioncam = pytest.importorskip("regioncam")
    rc = regioncam.Regioncam(size=size)
    for m in net:
        if isinstance(m, nn.Linear):
            rc.linear(m.weight.detach().numpy().T.astype(np.float32), m.bias.detach().numpy().astype(np.float32))
        else:
            rc.relu()
    return rc


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 3), width=st.integers(2, 16))
def test_random_mlps_equal_regioncam(seed, depth, width):
    net = mlp(seed, [2] + [width] * depth + [2])
    regions = linear_regions(net, domain=(-1, 1, -1, 1))
    rc = _regioncam_partition(net, 1.0)
    assert len(regions) == rc.num_faces
    # regioncam's face patterns: the sign of each pre-activation layer at a face's centroid.
    xy = np.asarray(rc.vertex_inputs, dtype=np.float64)
    centroids = np.array([xy[list(f.vertex_ids)].mean(axis=0) for f in rc.faces])
    rc_pats = {}
    for layer, key in zip(range(1, 2 * depth, 2), regions.patterns):
        a = np.asarray(rc.face_activations(layer))  # (faces, 3, units): [u, v, 1] @ a
        pre = np.einsum("fi,fiu->fu", np.concatenate([centroids, np.ones((len(centroids), 1))], axis=1), a)
        rc_pats[key] = torch.from_numpy(pre > 0)
    assert np.array_equal(np.unique(pattern_rows(rc_pats)), np.unique(pattern_rows(regions.patterns)))


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1), nn.AvgPool2d(2)])
def test_cnn_plane_through_three_inputs(pool):
    net = SmallCNN(pool).double().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=g)
    points = [x[0], x[0] + 0.15 * (x[1] - x[0]), x[0] + 0.15 * (x[2] - x[0])]
    regions = linear_regions(net, points=points)
    assert len(regions) > 50
    assert any("max_pool2d" in c for c in regions.calls) == isinstance(pool, nn.MaxPool2d)
    _check_partition(net, regions)
    found = _grid_patterns(net, regions, 256)
    assert np.isin(found, pattern_rows(regions.patterns)).all()
    # The probe sits at (0, 0); its region's map is the local affine map's restriction to the plane.
    assert regions.locate(np.zeros((1, 2)))[0] >= 0


def test_distance_to_boundary_and_density_one_layer():
    net = mlp(8, [2, 9, 1])
    w, b = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    regions = linear_regions(net, domain=(-3, 3, -3, 3))
    probe = np.array([0.1, -0.2])
    feet = probe - ((w @ probe + b) / (w * w).sum(axis=1))[:, None] * w
    dist = np.abs(w @ probe + b) / np.linalg.norm(w, axis=1)
    inside = (np.abs(feet) < 3).all(axis=1)
    assert regions.distance_to_boundary(probe) == pytest.approx(dist[inside].min(), rel=1e-9)
    assert regions.count_near(probe, 1e-9) == 1
    assert regions.count_near(probe, 100.0) == len(regions)
    assert regions.density_near(probe, 1.0) == pytest.approx(regions.count_near(probe, 1.0) / math.pi)


def test_pictures():
    net = mlp(9, [2, 8, 8, 2])
    regions = linear_regions(net, domain=(-1, 1, -1, 1))
    fig, ax = plot_regions(regions, decision=lambda out: 1 / (1 + np.exp(-(out[:, 0] - out[:, 1]))), probe=(0, 0))
    from matplotlib.collections import PolyCollection
    from matplotlib.contour import ContourSet

    polys = [c for c in ax.collections if type(c) is PolyCollection]
    assert len(polys) == 1 and len(polys[0].get_paths()) == len(regions)
    assert any(isinstance(c, ContourSet) for c in ax.collections)  # the decision boundary
    img = regions_rgb(regions, size=128, boundaries=False)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    # Each pixel has the colour of the region under its centre (row 0 at the top).
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 128, 50), rng.integers(0, 128, 50)
    centres = np.stack([-1 + (cols + 0.5) / 64, 1 - (rows + 0.5) / 64], axis=1)
    expected = (regions.colors()[regions.locate(centres)] * 255).astype(np.uint8)
    assert (img[rows, cols] == expected).all()
    assert len(np.unique(img.reshape(-1, 3), axis=0)) >= 0.8 * len(regions)


def test_bad_input():
    net = mlp(0, [2, 4, 1])
    with pytest.raises(ValueError, match="unbounded domain"):
        linear_regions(net)
    with pytest.raises(ValueError, match="unbounded domain"):
        linear_regions(net, domain=(-1, math.inf, -1, 1))
    with pytest.raises(ValueError, match="empty domain"):
        linear_regions(net, domain=(1, -1, -1, 1))
    cnn = SmallCNN(nn.MaxPool2d(2)).eval()
    x = torch.randn(1, 8, 8)
    with pytest.raises(ValueError, match="collinear"):
        linear_regions(cnn, points=[x, 2 * x, 3 * x])
    with pytest.raises(NotPiecewiseLinearError, match=r"'1' \(Tanh\) calls tanh"):
        linear_regions(nn.Sequential(nn.Linear(2, 3), nn.Tanh()), domain=(-1, 1, -1, 1))
    with pytest.raises(NotImplementedError, match=r"'pool:max_pool2d' is a max-pool with ceil_mode=True"):
        linear_regions(SmallCNN(nn.MaxPool2d(3, 2, ceil_mode=True)).eval(), points=[x, x + 1, x - torch.rand(1, 8, 8)])
    with pytest.raises(ValueError, match="collinear"):
        Plane.through(torch.zeros(3), torch.ones(3), 2 * torch.ones(3))


def test_regioncam_backend_gives_the_same_partition():
    pytest.importorskip("regioncam")
    net = mlp(11, [2, 10, 10, 3])
    net[3] = nn.LeakyReLU(0.1)
    domain = (-0.5, 1.5, -2.0, 0.25)
    ours = linear_regions(net, domain=domain)
    theirs = linear_regions(net, domain=domain, backend="regioncam")
    assert len(theirs) == len(ours) and theirs.calls == ours.calls == ["1:relu", "3:leaky_relu"]
    assert np.array_equal(np.unique(pattern_rows(theirs.patterns)), np.unique(pattern_rows(ours.patterns)))
    assert theirs.areas().sum() == pytest.approx(2.0 * 2.25, rel=1e-6)  # regioncam computes in float32
    assert (theirs.areas() > 0).all()
    with pytest.raises(NotImplementedError, match="backend='nsp'"):
        linear_regions(SmallCNN(nn.MaxPool2d(2)).eval(), points=[torch.randn(1, 8, 8) for _ in range(3)], backend="regioncam")


def test_a_max_pool_window_whose_first_tap_loses_keeps_its_true_argmax():
    """Regression (found on the digits demo, where border pixels are constant on every plane): the
    tournament's running maximum was written into the first tap's own values when the window was
    the first of its call to be cut, so the first tap looked like the maximum everywhere and
    every face took it as the argmax."""
    net = nn.Sequential(nn.MaxPool2d(2), nn.Flatten()).double().eval()
    probe = torch.zeros(1, 4, 4, dtype=torch.float64)
    probe[0, 1, 0] = 0.5                       # tap 4 of window (0, 0): constant on the plane
    a, b = probe.clone(), probe.clone()
    a[0, 1, 1] = 1.0                           # tap 5 varies: above tap 4 on one side of u = 0.5
    b[0, 3, 3] = 1.0                           # another window, so that the plane is not degenerate
    regions = linear_regions(net, points=[probe, a, b], domain=(-1, 2, -1, 2))
    _check_partition(net, regions)
    windows = regions.patterns["0:max_pool2d"][:, 0, 0, 0]
    assert set(windows.tolist()) == {4, 5}


class _ReluPool(nn.Module):
    """conv → ReLU → max-pool → conv → ReLU → linear; ``apart`` puts ``+ 0`` between the ReLU and the
    pool, which changes nothing but makes the pool's input a new tensor."""

    def __init__(self, apart: bool):
        super().__init__()
        torch.manual_seed(3)
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)
        self.apart = apart

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = F.max_pool2d(h + 0 if self.apart else h, 2)
        return self.fc(torch.relu(self.conv2(h)).flatten(1))


def test_a_pool_fed_by_a_relu_reads_its_values_without_a_forward_pass(monkeypatch):
    """The max-pool's input at the vertices comes from the ReLU's values (affine on the faces its cuts
    started from) instead of a forward pass: the same partition as with the forward pass."""
    import nsp.regions.partition as partition

    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=g)
    points = [x[0], x[0] + 0.2 * (x[1] - x[0]), x[0] + 0.2 * (x[2] - x[0])]
    passes = []

    def counted(model, params, plane, uv, index, *args, **kwargs):
        passes.append(len(uv))
        return evaluate(model, params, plane, uv, index, *args, **kwargs)

    evaluate = partition.evaluate
    monkeypatch.setattr(partition, "evaluate", counted)
    results = {}
    for apart in (False, True):
        net = _ReluPool(apart).double().eval()
        passes.clear()
        results[apart] = linear_regions(net, points=points)
        results[apart, "full passes"] = sum(n > 4 for n in passes)
        _check_partition(net, results[apart])
    chained, apart = results[False], results[True]
    assert len(chained) == len(apart) > 50
    # The forward pass over every vertex before the pool is skipped (and only that one).
    assert results[True, "full passes"] == results[False, "full passes"] + 1
    np.testing.assert_array_equal(np.sort(pattern_rows(chained.patterns)), np.sort(pattern_rows(apart.patterns)))
    np.testing.assert_allclose(np.sort(chained.areas()), np.sort(apart.areas()), rtol=1e-9, atol=1e-15)


def test_a_partition_runs_the_model_once_at_the_corners_and_once_per_call_it_cannot_derive():
    """One pass at the box's corners finds the calls, their sizes and which take the previous call's
    output; the first call's input is read from it and the pool's from the ReLU's values, so only
    the second ReLU needs a pass over the vertices (there were a pass per call at the corners, too)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=g)
    net = _ReluPool(apart=False).double().eval()
    runs = []
    handle = net.register_forward_pre_hook(lambda module, args: runs.append(len(args[0])))
    try:
        regions = linear_regions(net, points=[x[0], x[0] + 0.2 * (x[1] - x[0]), x[0] + 0.2 * (x[2] - x[0])])
    finally:
        handle.remove()
    assert runs[0] == 4 and len(runs) == 2 and runs[1] > 4, runs
    assert len(regions.calls) == 3
    _check_partition(net, regions)
