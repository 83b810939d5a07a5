"""FeatureVisAnalysis at fit start on a bfloat16 model, with a layer that never runs and
with a size that would not fit in memory (issue 22: 5, 11, 12)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

import nsp.common.memory as memory
from nsp_lightning.analyses import FeatureVisAnalysis

pytestmark = pytest.mark.reliability


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, 8, 3, padding=1), relu1=nn.ReLU(), conv2=nn.Conv2d(8, 16, 3, padding=1),
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(16, 10)))
        self.unused = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_a_bfloat16_model_is_checked_through_its_normalisation():
    model = _Net().to(torch.bfloat16).eval()
    probes = torch.rand(2, 3, 16, 16)
    # mean and std are float32 buffers: the image they normalise must still reach the model as bfloat16.
    FeatureVisAnalysis({"net.conv2": [3]}, classes=[1], mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2],
                       steps=2).check(model, probes.bfloat16())


def test_a_layer_that_never_runs_is_refused_with_the_layers_that_ran():
    with pytest.raises(ValueError, match=r"layer\(s\) \['unused'\] did not run in the model's forward pass; the "
                                         r"modules that run are: net, net.conv1, net.relu1, net.conv2"):
        FeatureVisAnalysis({"unused": [0]}, steps=2).check(_Net().eval(), torch.rand(2, 3, 16, 16))


def test_a_size_too_large_for_the_memory_limit_is_refused_at_check_with_an_estimate(monkeypatch):
    monkeypatch.setattr(memory, "MEMORY_LIMIT", 64 << 20)
    with pytest.raises(MemoryError, match=r"FeatureVisAnalysis: rendering a 4096x4096 image needs about "
                                          r"\d+\.\d GiB, but only 64 MiB"):
        FeatureVisAnalysis({"net.conv2": [0]}, size=4096, steps=2).check(_Net().eval(), torch.rand(2, 3, 16, 16))
