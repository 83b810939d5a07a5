"""nsp.regions.regioncam: ``linear_regions(backend="regioncam")`` against nsp's own partition region
by region, and against the network's activation patterns at every region's centre (float64); the
arrays it reads out of regioncam on first use, in either order and after pickling."""

import pickle

import numpy as np
import pytest
import torch
from torch import nn

from nsp.regions import linear_regions
from nsp.regions.local_affine import activation_patterns
from region_models import mlp, pattern_rows

pytest.importorskip("regioncam")


def _net() -> nn.Module:
    net = mlp(21, [2, 16, 16, 16, 3])
    net[3] = nn.LeakyReLU(0.1)
    return net


@pytest.mark.parametrize("domain", [(-1.0, 1.0, -1.0, 1.0), (-0.5, 1.5, -2.0, 0.25)])
def test_backend_equals_nsps_partition_region_by_region(domain):
    net = _net()
    ours = linear_regions(net, domain=domain)
    theirs = linear_regions(net, domain=domain, backend="regioncam")
    # The count first: regioncam's own, before any array is read.
    assert len(theirs) == len(ours) > 100 and theirs.calls == ours.calls == ["1:relu", "3:leaky_relu", "5:relu"]
    assert len(theirs.face_offsets) - 1 == len(theirs)
    # The same regions, matched by pattern: the same areas and centres to regioncam's float32.
    mine, other = pattern_rows(ours.patterns), pattern_rows(theirs.patterns)
    assert len(np.unique(other)) == len(theirs)
    a, b = np.argsort(mine), np.argsort(other)
    assert np.array_equal(mine[a], other[b])
    u0, u1, v0, v1 = domain
    box, scale = (u1 - u0) * (v1 - v0), max(u1 - u0, v1 - v0)
    np.testing.assert_allclose(theirs.areas()[b], ours.areas()[a], rtol=0, atol=1e-6 * box)
    np.testing.assert_allclose(theirs.interior_points()[b], ours.interior_points()[a], rtol=0, atol=1e-5 * scale)
    # Counter-clockwise polygons that tile the box.
    assert (theirs.areas() > 0).all()
    assert theirs.areas().sum() == pytest.approx(box, rel=1e-6)
    # Each region's pattern is the network's at its centre.
    _, pats = activation_patterns(net, theirs.plane(theirs.interior_points()))
    assert pats.keys() == theirs.patterns.keys()
    for key, p in pats.items():
        assert torch.equal(p, theirs.patterns[key]), key


def test_patterns_read_first_and_a_pickled_result_give_the_same_arrays():
    net, domain = _net(), (-0.5, 1.5, -2.0, 0.25)
    faces_first = linear_regions(net, domain=domain, backend="regioncam")
    reference = (faces_first.vertices.copy(), faces_first.face_vertices.copy(), faces_first.face_offsets.copy())
    patterns_first = linear_regions(net, domain=domain, backend="regioncam")
    # Pickled before anything was read: the arrays are read out of regioncam, whose objects do not pickle.
    pickled = pickle.loads(pickle.dumps(linear_regions(net, domain=domain, backend="regioncam")))
    for regions in (patterns_first, pickled):
        patterns = regions.patterns
        assert patterns.keys() == faces_first.patterns.keys()
        for key, p in patterns.items():
            assert torch.equal(p, faces_first.patterns[key]), key
        for got, want in zip((regions.vertices, regions.face_vertices, regions.face_offsets), reference):
            np.testing.assert_array_equal(got, want)
    # The affine maps replay the network (float64) at the vertices regioncam found.
    pts = pickled.interior_points()
    with torch.no_grad():
        out = net(pickled.plane(pts)).numpy()
    a = pickled.affine
    np.testing.assert_allclose(pts[:, :1] * a[:, 0] + pts[:, 1:] * a[:, 1] + a[:, 2], out, rtol=1e-6, atol=1e-6)
