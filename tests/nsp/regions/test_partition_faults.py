"""linear_regions with bad options, a model whose input is not the plane, the meta device, and
a model left in train mode (issue 22: 10, 12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nsp.regions as R

pytestmark = pytest.mark.reliability

BOX = (-1, 1, -1, 1)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))


def test_a_model_whose_input_is_not_2d_needs_a_plane_and_says_so():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"linear_regions: without `plane` or `points` the plane is the input space "
                                         r"itself, so the model must take inputs of shape \(N, 2\)"):
        R.linear_regions(net, domain=BOX)
    points = [torch.rand(1, 3, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    assert R.linear_regions(net, points=points).areas().sum() > 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tol": -1.0}, r"`tol` to be a finite number >= 0, but got -1.0"),
    ({"tol": float("nan")}, r"`tol` to be a finite number >= 0, but got nan"),
    ({"margin": -1.0}, r"`margin` to be a finite number >= 0, but got -1.0"),
    ({"batch_size": 0}, r"`batch_size` to be an int >= 1, but got 0"),
    ({"backend": "fast"}, r"`backend` to be 'nsp' or 'regioncam', but got 'fast'"),
])
def test_bad_options_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=rf"nsp.linear_regions: expected {message}"):
        R.linear_regions(_mlp(), domain=BOX, **kwargs)


def test_a_model_on_the_meta_device_is_refused_by_name():
    with pytest.raises(ValueError, match=r"linear_regions: the model's '0.weight' is on the meta device"):
        R.linear_regions(_mlp().to("meta"), domain=BOX)


def test_a_model_in_train_mode_is_partitioned_as_deployed_and_left_in_train_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.5), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    net.eval()
    net[3].running_mean.uniform_(-0.5, 0.5)
    expected = np.sort(R.linear_regions(net, domain=BOX).areas())
    net.train()
    before = net[3].running_mean.clone()
    got = np.sort(R.linear_regions(net, domain=BOX).areas())
    assert net.training and all(m.training for m in net.modules())
    assert torch.equal(net[3].running_mean, before)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_a_stage_that_would_not_fit_in_memory_is_refused_with_its_estimate(monkeypatch):
    import nsp.common.memory as memory

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    R.linear_regions(net, domain=BOX)
    monkeypatch.setattr(memory, "MEMORY_LIMIT", 1 << 16)
    with pytest.raises(MemoryError, match=r"nsp.linear_regions: \S+relu with 64 units at [\d,]+ vertices needs about "
                                          r"\d+ MiB, but only 0 MiB"):
        R.linear_regions(net, domain=BOX)
