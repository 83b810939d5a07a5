"""nsp.regions: the estimate before a partition (count, memory), max_regions, progress, and the titled
picture; region counts against a dense grid scan of activation patterns (brute force)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

import nsp.common.memory as memory
import nsp.common.progress as progress
import nsp.regions as R
from nsp.regions.estimate import pattern_keys
from nsp.regions.local_affine import activation_patterns
from region_models import cnn_plane, mlp, pool_cnn


def _grid_count(net: nn.Module, plane: R.Plane, domain: tuple, n: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Brute force: distinct activation patterns at the centres of an n×n grid, the grid's points and their keys."""
    u0, u1, v0, v1 = domain
    us = u0 + (np.arange(n) + 0.5) * (u1 - u0) / n
    vs = v0 + (np.arange(n) + 0.5) * (v1 - v0) / n
    uv = np.stack(np.meshgrid(us, vs, indexing="ij"), axis=-1).reshape(-1, 2)
    keys = np.concatenate([pattern_keys(activation_patterns(net, plane(uv[i: i + 20000]))[1])
                           for i in range(0, len(uv), 20000)])
    return len(np.unique(keys, axis=0)), uv, keys


CASES = [
    ("mlp 2-12-12", lambda: mlp(0, [2, 12, 12, 1]), lambda: R.Plane(torch.zeros(2, dtype=torch.float64),
                                                                        torch.eye(2, dtype=torch.float64)), (-2, 2, -2, 2)),
    ("mlp 2-24-24", lambda: mlp(1, [2, 24, 24, 1]), lambda: R.Plane(torch.zeros(2, dtype=torch.float64),
                                                                        torch.eye(2, dtype=torch.float64)), (-3, 3, -3, 3)),
    ("cnn", lambda: pool_cnn(0), lambda: cnn_plane(0), (-0.5, 1.5, -0.5, 1.5)),
]


@pytest.mark.parametrize("name, make_net, make_plane, domain", CASES, ids=[c[0] for c in CASES])
def test_counts_against_a_dense_grid_scan(name, make_net, make_plane, domain):
    """Every pattern a dense grid sees is one region's; the exact count is at least the grid's, and the
    grid misses no more regions than there are of under 25 cells' area (the only ones it can miss, short
    of slivers)."""
    net, plane = make_net(), make_plane()
    regions = R.linear_regions(net, plane=plane, domain=domain)
    seen, uv, keys = _grid_count(net, plane, domain, 600)
    u0, u1, v0, v1 = domain
    small = int((regions.areas() < 25 * (u1 - u0) * (v1 - v0) / 600**2).sum())
    assert len(regions) - small <= seen <= len(regions), (seen, len(regions), small)
    assert seen > 20
    # The region located at a grid point has that point's pattern.
    sample = np.random.default_rng(0).choice(len(uv), 300, replace=False)
    owner = regions.locate(uv[sample])
    region_keys = pattern_keys(regions.patterns)
    np.testing.assert_allclose(region_keys[owner], keys[sample], rtol=1e-12)


@pytest.mark.parametrize("name, make_net, make_plane, domain", CASES, ids=[c[0] for c in CASES])
def test_the_estimate_is_near_the_exact_count_and_above_its_grid(name, make_net, make_plane, domain):
    net, plane = make_net(), make_plane()
    exact = len(R.linear_regions(net, plane=plane, domain=domain))
    est = R.estimate_regions(net, plane, domain, grid=64)
    seen, _, keys = _grid_count(net, plane, domain, 64)
    assert est.seen == seen
    assert est.seen_coarse == len(np.unique(keys.reshape(64, 64, 2)[::2, ::2].reshape(-1, 2), axis=0))
    assert est.seen <= exact and est.seen <= est.regions
    assert 0.7 * exact <= est.regions <= 1.5 * exact, (est, exact)
    assert est.calls == tuple(R.linear_regions(net, plane=plane, domain=domain).calls)
    assert est.nbytes > 0


def test_a_box_over_max_regions_is_refused_with_the_estimate():
    net, plane, domain = CASES[1][1](), CASES[1][2](), CASES[1][3]
    exact = len(R.linear_regions(net, plane=plane, domain=domain))
    assert len(R.linear_regions(net, plane=plane, domain=domain, max_regions=exact)) == exact
    with pytest.raises(R.RegionBudgetError, match=r"holds about [\d,]+ regions \(extrapolated from [\d,]+ distinct "
                                                   r"activation patterns on a 32×32 grid.*\), more than max_regions=10 \(.*\); "
                                                   r"give a smaller `domain` or a larger `max_regions`") as err:
        R.linear_regions(net, plane=plane, domain=domain, max_regions=10)
    assert err.value.estimate.regions > 10


def test_a_partition_that_outgrows_an_underestimate_is_stopped(monkeypatch):
    import nsp.regions.partition as partition

    net, domain = CASES[1][1](), CASES[1][3]
    exact = len(R.linear_regions(net, domain=domain))
    low = R.RegionEstimate(regions=1, seen=1, seen_coarse=1, grid=32, nbytes=0, calls=("1:relu", "3:relu"))
    monkeypatch.setattr(partition, "estimate_regions", lambda *a, **k: low)
    with pytest.raises(R.RegionBudgetError, match=rf"holds [\d,]+ regions (after '\S+' \(call \d\)|while cutting at '\S+'), more than "
                                                   rf"max_regions={exact - 1:,} although estimated within it"):
        R.linear_regions(net, domain=domain, max_regions=exact - 1)


def test_a_box_over_the_memory_limit_is_refused_with_the_estimate(monkeypatch):
    net, domain = CASES[1][1](), CASES[1][3]
    monkeypatch.setattr(memory, "MEMORY_LIMIT", 1 << 10)
    with pytest.raises(MemoryError, match=r"the box \(.*\) with about [\d,]+ regions \(extrapolated from .* needs "
                                          r"about \d+ MiB, but only 0 MiB .*give a smaller `domain`"):
        R.linear_regions(net, domain=domain, max_regions=10**6)


def test_the_address_space_limit_counts_as_a_memory_limit():
    import resource
    import subprocess
    import sys

    code = ("import resource, nsp.common.memory as m\n"
            "resource.setrlimit(resource.RLIMIT_AS, (6 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))\n"
            "vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize:')][0].split()[1]) * 1024\n"
            "room = m.available_bytes()\n"
            "print(room <= (6 << 30) - vm + (64 << 20), room > 0)\n")
    if resource.getrlimit(resource.RLIMIT_AS)[1] not in (resource.RLIM_INFINITY,) and \
            resource.getrlimit(resource.RLIMIT_AS)[1] < 6 << 30:
        pytest.skip("the hard address-space limit is below 6 GiB")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]


def test_a_long_partition_reports_progress(monkeypatch, caplog):
    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    net, domain = CASES[1][1](), CASES[1][3]
    with caplog.at_level(logging.INFO, logger="nsp"):
        regions = R.linear_regions(net, domain=domain, max_regions=10**6)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"nsp: linear regions: layer {i + 1} of 2 ('{key}') done after 0 s" for i, key in
                     enumerate(regions.calls)], lines


def test_bad_estimate_options_are_refused_by_name():
    net, plane = CASES[0][1](), CASES[0][2]()
    with pytest.raises(ValueError, match="`grid` to be an even int >= 4"):
        R.estimate_regions(net, plane, (0, 1, 0, 1), grid=7)
    with pytest.raises(ValueError, match="`max_regions` to be an int >= 1 or None"):
        R.linear_regions(net, domain=(0, 1, 0, 1), max_regions=0)


def test_the_picture_draws_every_boundary_and_titles_the_count():
    """One line u = 0.25 (a 2-unit net whose units share it): the pixels under it are dark; the
    header holds text; a point marks the probe."""
    net = nn.Sequential(nn.Linear(2, 1), nn.ReLU()).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        net[0].bias.fill_(-0.25)
    regions = R.linear_regions(net, domain=(-1, 1, -1, 1))
    assert len(regions) == 2
    img = R.regions_picture(regions, 80, title="probe 0, epoch 3", probe=(-0.5, 0.5))
    header = img.shape[0] - 80
    assert img.shape == (80 + header, 80, 3) and img.dtype == np.uint8 and header > 0
    plane = img[header:].astype(int)
    column = int(round((0.25 + 1) / 2 * 80))  # the line's pixel column
    assert (plane[:, column - 1: column + 1].sum(axis=2).min(axis=1) < 200).all()  # dark all the way down
    assert (plane[:, 10].sum(axis=1) > 400).sum() >= 70  # a region's fill away from the line and the ring
    assert (img[:header].sum(axis=2) < 300).any()  # the title's text
    red = (plane[..., 0] > 180) & (plane[..., 1] < 60) & (plane[..., 2] < 60)
    ys, xs = np.nonzero(red)
    assert abs(xs.mean() - 20) < 2 and abs(ys.mean() - 20) < 2  # the ring around (-0.5, 0.5)


def test_without_the_estimate_the_partition_is_the_same_and_is_refused_as_it_outgrows_the_budget(monkeypatch):
    """estimate=False skips the grid scan (it must not run) but keeps the budget: a ReLU call stops as
    soon as the faces outnumber it (a cut at most doubles them), and every call is checked after."""
    import nsp.regions.partition as partition

    net, domain = CASES[1][1](), CASES[1][3]
    exact = R.linear_regions(net, domain=domain)

    def no_scan(*args, **kwargs):
        raise AssertionError("estimate_regions ran with estimate=False")

    monkeypatch.setattr(partition, "estimate_regions", no_scan)
    again = R.linear_regions(net, domain=domain, max_regions=len(exact), estimate=False)
    assert len(again) == len(exact)
    np.testing.assert_allclose(again.areas(), exact.areas(), rtol=1e-12)
    with pytest.raises(R.RegionBudgetError, match=r"holds ([\d,]+) regions while cutting at '1:relu', more than "
                                                   r"max_regions=10; give a smaller `domain`") as err:
        R.linear_regions(net, domain=domain, max_regions=10, estimate=False)
    assert 10 < int(str(err.value).split("holds ")[1].split(" ")[0]) <= 20 and err.value.estimate is None
    with pytest.raises(R.RegionBudgetError, match=rf"more than max_regions={len(exact) - 1:,}; give a smaller"):
        R.linear_regions(net, domain=domain, max_regions=len(exact) - 1, estimate=False)
    with pytest.raises(ValueError, match="expected `estimate` to be True or False, but got 'no'"):
        R.linear_regions(net, domain=domain, max_regions=10, estimate="no")


def test_the_max_pool_argmax_is_checked_against_the_memory_limit(monkeypatch):
    """Without the estimate nothing bounds the faces of a max-pool call before its merge: the
    argmax arrays over them are checked against the memory limit first."""
    asked = []
    require = memory.require
    monkeypatch.setattr(memory, "require", lambda need, what, advice: (asked.append((need, what)), require(need, what, advice)))
    regions = R.linear_regions(pool_cnn(0), plane=cnn_plane(0), domain=(-0.5, 1.5, -0.5, 1.5), max_regions=10**6,
                               estimate=False)
    argmax = [(need, what) for need, what in asked if "max-pool windows" in what]
    assert len(argmax) == 1 and argmax[0][0] >= 8 * len(regions) * 12
    monkeypatch.setattr(memory, "MEMORY_LIMIT", argmax[0][0] - 1)
    with pytest.raises(MemoryError, match="the argmax of 12 max-pool windows on [\\d,]+ faces"):
        R.linear_regions(pool_cnn(0), plane=cnn_plane(0), domain=(-0.5, 1.5, -0.5, 1.5), estimate=False,
                         max_regions=10**6)
