"""nsp.regions.decision_boundary: the exact class boundary on a plane (issue 24), against a dense grid
of argmax (brute force), the argmax on either side of every segment, a closed form, and regioncam."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nsp.regions as R
from region_models import SmallCNN, mlp


def _argmax(net: nn.Module, plane: R.Plane, uv: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = net(plane(uv)).reshape(len(uv), -1)
    return (out[:, 0] > 0).long().numpy() if out.shape[1] == 1 else out.argmax(dim=1).numpy()


def _crosses(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(n, S)``: whether segment ``p[i] q[i]`` meets segment ``a[j] b[j]`` (closed)."""
    def side(o, d, x):  # the sign of the cross product (d - o) x (x - o)
        return np.sign((d[..., 0] - o[..., 0]) * (x[..., 1] - o[..., 1]) - (d[..., 1] - o[..., 1]) * (x[..., 0] - o[..., 0]))
    p, q, a, b = p[:, None], q[:, None], a[None], b[None]
    return (side(p, q, a) * side(p, q, b) <= 0) & (side(a, b, p) * side(a, b, q) <= 0)


def _check_against_dense_argmax(net: nn.Module, regions: R.Regions, n: int = 200) -> R.DecisionBoundary:
    boundary = R.decision_boundary(regions)
    plane = regions.plane
    u0, u1, v0, v1 = regions.domain
    # 1. Just either side of every segment's midpoint, the network predicts the segment's two classes.
    mid = (boundary.start + boundary.end) / 2
    d = boundary.end - boundary.start
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1) / np.linalg.norm(d, axis=1, keepdims=True)
    step = 1e-7 * max(u1 - u0, v1 - v0)
    sides = np.sort(np.stack([_argmax(net, plane, mid + step * normal), _argmax(net, plane, mid - step * normal)],
                             axis=1), axis=1)
    long = np.linalg.norm(d, axis=1) > 1e3 * step  # a segment shorter than that may end within the step
    np.testing.assert_array_equal(sides[long], boundary.classes[long])
    # 2. Between neighbouring grid points of a dense scan whose argmax differs, a segment crosses.
    us = u0 + (np.arange(n) + 0.5) * (u1 - u0) / n
    vs = v0 + (np.arange(n) + 0.5) * (v1 - v0) / n
    uv = np.stack(np.meshgrid(us, vs, indexing="xy"), axis=-1)          # (n, n, 2), rows along v
    label = _argmax(net, plane, uv.reshape(-1, 2)).reshape(n, n)
    pairs = [(uv[:, :-1][label[:, :-1] != label[:, 1:]], uv[:, 1:][label[:, :-1] != label[:, 1:]]),
             (uv[:-1][label[:-1] != label[1:]], uv[1:][label[:-1] != label[1:]])]
    changed = 0
    for p, q in pairs:
        changed += len(p)
        if len(p):
            assert _crosses(p, q, boundary.start, boundary.end).any(axis=1).all()
    # 3. Conversely, every segment long enough is seen by the scan: some changing pair crosses it.
    if len(boundary):
        seen = np.zeros(len(boundary), dtype=bool)
        for p, q in pairs:
            if len(p):
                seen |= _crosses(p, q, boundary.start, boundary.end).any(axis=0)
        assert seen[np.linalg.norm(d, axis=1) > 3 * (u1 - u0) / n].all()
    assert (changed > 0) == (len(boundary) > 0)
    return boundary


def test_an_mlp_with_four_classes_matches_a_dense_argmax():
    net = mlp(7, [2, 16, 16, 4])
    regions = R.linear_regions(net, domain=(-6, 6, -6, 6))
    boundary = _check_against_dense_argmax(net, regions)
    assert len(np.unique(boundary.classes, axis=0)) == 5  # all four classes, with junctions of three
    assert boundary.length() > 1


@pytest.mark.slow
def test_a_cnn_plane_through_three_inputs_matches_a_dense_argmax():
    net = SmallCNN(nn.MaxPool2d(2)).double().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=g)
    regions = R.linear_regions(net, points=[x[0], x[1], x[2]], margin=0.2)
    boundary = _check_against_dense_argmax(net, regions)
    assert len(boundary) > 0


def test_a_sign_classifier_boundary_is_its_zero_line():
    net = mlp(9, [2, 12, 1])
    regions = R.linear_regions(net, domain=(-2, 2, -2, 2))
    boundary = _check_against_dense_argmax(net, regions)
    assert (boundary.classes == [0, 1]).all()
    with torch.no_grad():
        at = net(regions.plane(np.concatenate([boundary.start, boundary.end])))
    np.testing.assert_allclose(at.numpy(), 0, atol=1e-9)


def test_two_linear_classes_give_one_straight_segment():
    net = nn.Linear(2, 3).double()
    with torch.no_grad():
        net.weight[:] = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
        net.bias[:] = torch.tensor([0.0, 0.0, -5.0])   # class 2 never wins in the box
    boundary = R.decision_boundary(R.linear_regions(net, domain=(-1, 1, -2, 1)))
    assert boundary.classes.tolist() == [[0, 1]]
    assert boundary.length() == pytest.approx(3.0)
    np.testing.assert_allclose(np.concatenate([boundary.start, boundary.end])[:, 0], 0, atol=1e-15)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 2), width=st.integers(2, 12), classes=st.integers(2, 5))
def test_random_mlps_equal_regioncams_decision_boundary(seed, depth, width, classes):
    regioncam = pytest.importorskip("regioncam")
    net = mlp(seed, [2] + [width] * depth + [classes])
    boundary = R.decision_boundary(R.linear_regions(net, domain=(-1, 1, -1, 1)))
    rc = regioncam.Regioncam(size=1.0)
    for m in net:
        if isinstance(m, nn.Linear):
            rc.linear(m.weight.detach().numpy().T.astype(np.float32), m.bias.detach().numpy().astype(np.float32))
        else:
            rc.relu()
    rc.decision_boundary()
    theirs = sum(e.length for e in rc.edges if e.is_decision_boundary)
    assert boundary.length() == pytest.approx(theirs, rel=1e-4, abs=1e-5)  # regioncam computes in float32


def test_an_output_that_is_not_logits_is_refused():
    net = nn.Sequential(nn.Linear(2, 4), nn.Unflatten(1, (2, 2))).double()
    with pytest.raises(ValueError, match=r"\(N, classes\)"):
        R.decision_boundary(R.linear_regions(net, domain=(-1, 1, -1, 1)))


def _svg_polygons(root) -> list[np.ndarray]:
    paths = root.findall(f"{SVG}g[@id='regions']/{SVG}path")
    return [np.array([[float(c) for c in pt.split(",")] for pt in p.get("d")[1:-1].split("L")]) for p in paths]


SVG = "{http://www.w3.org/2000/svg}"


def test_the_svg_has_one_path_per_region_and_the_boundary_as_segments(tmp_path):
    import xml.etree.ElementTree as ET

    net = mlp(7, [2, 16, 16, 4])
    regions = R.linear_regions(net, domain=(-6, 6, -3, 3))
    out = tmp_path / "regions.svg"
    text = R.regions_svg(regions, out, size=600, title="mlp", probe=(1.0, 0.5), class_boundary=True)
    assert out.read_text(encoding="utf-8") == text
    root = ET.fromstring(text)  # well-formed XML
    assert root.tag == f"{SVG}svg"
    assert root.find(f"{SVG}title").text == f"mlp: {len(regions):,} linear regions"
    assert float(root.get("width")) == 600 and float(root.get("height")) > 300  # 2:1 box, and the title strip
    polygons = _svg_polygons(root)
    assert len(polygons) == len(regions)
    # The paths are the regions' polygons, scaled 50 px per unit, v upwards, below the title strip;
    # their shoelace areas tile the plane's 600 × 300 px.
    top = float(root.get("height")) - 300
    for i in (0, len(regions) // 2, len(regions) - 1):
        expected = (regions.polygon(i) - [-6, 3]) * [50, -50] + [0, top]
        np.testing.assert_allclose(polygons[i], expected, atol=1e-3)
    areas = np.array([0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1)))
                      for p in polygons])
    assert areas.sum() == pytest.approx(600 * 300, rel=1e-6)
    lines = root.findall(f"{SVG}g[@id='class-boundary']/{SVG}line")
    boundary = R.decision_boundary(regions)
    assert len(lines) == len(boundary) > 0
    length = sum(math.dist((float(e.get("x1")), float(e.get("y1"))), (float(e.get("x2")), float(e.get("y2")))) for e in lines)
    assert length == pytest.approx(boundary.length() * 50, rel=1e-4)
    assert root.find(f"{SVG}circle[@id='probe']") is not None
    # Without the options: no boundary group, no probe.
    plain = ET.fromstring(R.regions_svg(regions))
    assert plain.find(f"{SVG}g[@id='class-boundary']") is None and plain.find(f"{SVG}circle") is None
    with pytest.raises(ValueError, match="`size`"):
        R.regions_svg(regions, size=4)


def test_the_pictures_draw_the_class_boundary_in_red():
    net = mlp(7, [2, 16, 16, 4])
    regions = R.linear_regions(net, domain=(-6, 6, -6, 6))
    with_boundary = R.regions_picture(regions, 200, class_boundary=True)
    without = R.regions_picture(regions, 200)
    red = (with_boundary[..., 0] > 200) & (with_boundary[..., 1] < 40) & (with_boundary[..., 2] < 40)
    assert red.sum() > 2 * 200 and not ((without[..., 0] > 200) & (without[..., 1] < 40)).any()
    fig, ax = R.plot_regions(regions, class_boundary=True)
    assert len(ax.collections) == 2 and len(ax.collections[1].get_segments()) == len(R.decision_boundary(regions))
