"""nsp.regions.linear_pieces: exact breakpoints along a segment (issue 24), against a dense scan of
activation patterns refined by bisection (brute force), a closed form, and regioncam's 1-D slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nsp.regions as R
from nsp.regions.local_affine import activation_patterns
from region_models import SmallCNN, mlp, pattern_rows


def _rows(net: nn.Module, segment: R.Segment, t: np.ndarray) -> np.ndarray:
    return np.concatenate([pattern_rows(activation_patterns(net, segment(t[i: i + 4096]))[1])
                           for i in range(0, len(t), 4096)] or [np.zeros(0, dtype=object)])


def _dense_breakpoints(net: nn.Module, segment: R.Segment, domain: tuple[float, float], n: int) -> np.ndarray:
    """Brute force: the pattern on a grid of ``n`` points; every change between neighbours is located
    by 50 bisection steps."""
    t = np.linspace(*domain, n)
    rows = _rows(net, segment, t)
    change = np.flatnonzero(rows[1:] != rows[:-1])
    lo, hi, left = t[change], t[change + 1], rows[change]
    for _ in range(50):
        mid = (lo + hi) / 2
        same = _rows(net, segment, mid) == left
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    return (lo + hi) / 2


def _check_against_scan(net: nn.Module, start: torch.Tensor, end: torch.Tensor, domain=(0.0, 1.0), n: int = 20_001):
    pieces = R.linear_pieces(net, start, end, domain=domain)
    segment = R.Segment(start, end)
    dense = _dense_breakpoints(net, segment, domain, n)
    # Two breakpoints within one grid step would hide each other from the scan: the models are
    # chosen so that they do not.
    assert np.diff(pieces.t).min() > 2 * (domain[1] - domain[0]) / (n - 1)
    assert len(dense) == len(pieces.breakpoints)
    np.testing.assert_allclose(pieces.breakpoints, dense, rtol=0, atol=1e-12 * (domain[1] - domain[0]) + 1e-13)
    # Every piece's pattern is the one at its points, and neighbouring pieces differ.
    middle = (pieces.t[:-1] + pieces.t[1:]) / 2
    _, pats = activation_patterns(net, segment(middle))
    assert pats.keys() == pieces.patterns.keys()
    for key, p in pats.items():
        assert torch.equal(p, pieces.patterns[key]), key
    rows = pattern_rows(pieces.patterns)
    assert (rows[1:] != rows[:-1]).all()
    # The affine map of each piece reproduces the network inside it.
    g = np.random.default_rng(0)
    ts = pieces.t[:-1] + g.uniform(0.05, 0.95, len(pieces)) * np.diff(pieces.t)
    with torch.no_grad():
        out = net(segment(ts)).reshape(len(ts), -1).numpy()
    a = pieces.affine.reshape(len(pieces), 2, -1)
    np.testing.assert_allclose(ts[:, None] * a[:, 0] + a[:, 1], out, rtol=1e-9, atol=1e-9)
    return pieces


def test_an_mlp_matches_a_dense_scan():
    net = mlp(3, [5, 16, 16, 16, 4])
    g = torch.Generator().manual_seed(1)
    start, end = torch.randn(2, 5, dtype=torch.float64, generator=g) * 2
    pieces = _check_against_scan(net, start, end)
    assert len(pieces) > 15


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1)])
def test_a_cnn_with_max_pool_and_a_residual_block_matches_a_dense_scan(pool):
    net = SmallCNN(pool).double().eval()
    g = torch.Generator().manual_seed(0)
    start, end = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=g)
    pieces = _check_against_scan(net, start, start + 0.3 * (end - start))
    assert len(pieces) > 10
    assert any("max_pool2d" in c for c in pieces.calls)


class _Abs(nn.Module):
    def forward(self, x):
        return torch.abs(x)


def test_a_point_and_a_direction_with_clamps_abs_and_leaky_relu():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(3, 12), nn.ReLU6(), nn.Linear(12, 12), nn.Hardtanh(-0.5, 0.5), nn.Linear(12, 8),
                        nn.LeakyReLU(0.1), nn.Linear(8, 6), _Abs(), nn.Linear(6, 2)).double().eval()
    x, d = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64), torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    pieces = _check_against_scan(net, x, x + d, domain=(-3.0, 3.0))
    assert pieces.t[0] == -3.0 and pieces.t[-1] == 3.0
    assert [c.split(":")[1] for c in pieces.calls] == ["hardtanh", "hardtanh", "leaky_relu", "abs"]  # ReLU6 calls hardtanh
    assert len(pieces) > 10


def test_one_hidden_layer_has_its_closed_form_breakpoints():
    net = mlp(5, [3, 7, 2])
    start, end = torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    w, b = net[0].weight.detach(), net[0].bias.detach()
    # unit i switches where w_i . (start + t (end - start)) + b_i = 0
    roots = (-(b + w @ start) / (w @ (end - start))).numpy()
    roots = np.sort(roots[(roots > -4) & (roots < 4)])
    pieces = R.linear_pieces(net, start, end, domain=(-4, 4))
    np.testing.assert_allclose(pieces.breakpoints, roots, rtol=0, atol=1e-12)
    assert pieces.locate([-4, roots[0], 4]).tolist() == [0, 1, len(pieces) - 1]
    assert pieces.locate([-5]).tolist() == [-1]
    np.testing.assert_allclose(pieces.lengths().sum(), 8 * float((end - start).norm()))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 3), width=st.integers(2, 12), d_in=st.integers(1, 4))
def test_random_mlps_match_a_dense_scan(seed, depth, width, d_in):
    net = mlp(seed, [d_in] + [width] * depth + [2])
    g = torch.Generator().manual_seed(seed)
    start, end = torch.randn(2, d_in, dtype=torch.float64, generator=g)
    pieces = R.linear_pieces(net, start, end)
    segment = R.Segment(start, end)
    dense = _dense_breakpoints(net, segment, (0.0, 1.0), 4001)
    # Every change the scan sees is an exact breakpoint, and every breakpoint changes the pattern.
    if len(dense):
        assert np.abs(dense[:, None] - pieces.breakpoints[None]).min(axis=1).max() <= 1e-12
    rows = pattern_rows(pieces.patterns)
    assert (rows[1:] != rows[:-1]).all()
    gap = np.diff(pieces.t).min()
    if gap > 2 / 4000:
        assert len(dense) == len(pieces.breakpoints)


def _regioncam_slice(net: nn.Module, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """regioncam's 1-D partition of [0, 1] (float32), the segment composed into the first layer."""
    regioncam = pytest.importorskip("regioncam")
    rc = regioncam.Regioncam1D((0.0, 1.0))
    for i, m in enumerate(net):
        if isinstance(m, nn.Linear):
            w, b = m.weight.detach().numpy().T, m.bias.detach().numpy()
            if i == 0:
                w, b = (end - start)[None] @ w, start @ w + b
            rc.linear(w.astype(np.float32), b.astype(np.float32))
        else:
            rc.relu()
    return np.sort(np.asarray(rc.inputs, dtype=np.float64))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 3), width=st.integers(2, 16))
def test_random_mlps_equal_regioncams_slice(seed, depth, width):
    net = mlp(seed, [4] + [width] * depth + [3])
    g = np.random.default_rng(seed)
    start, end = g.normal(size=(2, 4))
    pieces = R.linear_pieces(net, torch.from_numpy(start), torch.from_numpy(end))
    theirs = _regioncam_slice(net, start, end)
    close = np.diff(pieces.t).min() < 1e-4  # float32 may merge or drop breakpoints this close
    if not close:
        assert len(theirs) == len(pieces.t)
        np.testing.assert_allclose(theirs, pieces.t, atol=1e-5)  # float32: about 3e-7 seen


def test_bad_input_is_refused_by_name():
    net = mlp(0, [2, 4, 1])
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="degenerate segment"):
        R.linear_pieces(net, x, x)
    with pytest.raises(ValueError, match="one shape"):
        R.linear_pieces(net, x, torch.zeros(3))
    with pytest.raises(ValueError, match="domain"):
        R.linear_pieces(net, x, torch.ones(2), domain=(1, 0))
    with pytest.raises(ValueError, match="domain"):
        R.linear_pieces(net, x, torch.ones(2), domain=(0, float("inf")))
    with pytest.raises(ValueError, match="finite"):
        R.linear_pieces(net, x, torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ValueError, match="`tol`"):
        R.linear_pieces(net, x, torch.ones(2), tol=-1)
    with pytest.raises(TypeError, match="`model`"):
        R.linear_pieces(lambda z: z, x, torch.ones(2))
    with pytest.raises(ValueError, match=r"without the batch dimension"):
        R.linear_pieces(net, torch.zeros(1, 3), torch.ones(1, 3))
    with pytest.raises(NotImplementedError, match="linear_pieces does not split"):
        R.linear_pieces(_Maximum(), x, torch.ones(2))


class _Maximum(nn.Module):
    def forward(self, x):
        return torch.maximum(x, 2 * x - 1)
