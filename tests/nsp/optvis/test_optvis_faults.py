"""nsp.optvis under inference mode, on bfloat16 models, with bad arguments and images that
would not fit in memory (issue 22: 11, 12)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

import nsp.common.memory as memory
from nsp.optvis import visualize_channel

pytestmark = pytest.mark.reliability


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1), relu1=nn.ReLU(), conv2=nn.Conv2d(8, 16, 3, padding=1),
        pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(16, 10))).eval()


def test_a_render_inside_inference_mode_optimises_the_image():
    model = _net()
    with torch.inference_mode():
        render = visualize_channel(model, "conv2", 3, size=16, steps=8, transforms=None)
    assert render.values[-1].item() > render.initial_value.item()


def test_a_bfloat16_model_is_rendered_through_a_float32_image():
    model = _net().to(torch.bfloat16)
    render = visualize_channel(model, "conv2", 3, size=16, steps=8, transforms=None)
    assert render.images[-1].dtype == torch.float32 and torch.isfinite(render.images[-1]).all()
    assert render.values[-1].float().item() > render.initial_value.float().item()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lr": -1.0}, r"visualize_channel: expected lr to be a positive number, got -1.0"),
    ({"lr": float("nan")}, r"expected lr to be a positive number, got nan"),
    ({"seed": "0"}, r"visualize_channel: expected seed to be an int, got '0'"),
])
def test_bad_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        visualize_channel(_net(), "conv2", 0, size=8, steps=2, **kwargs)


def test_an_image_too_large_for_the_memory_limit_is_refused_with_an_estimate(monkeypatch):
    monkeypatch.setattr(memory, "MEMORY_LIMIT", 64 << 20)
    # 4096 x 4096: the two convolutions' activations alone are about 1.5 GiB.
    with pytest.raises(MemoryError, match=r"visualize_channel: rendering a 4096x4096 image needs about \d+\.\d GiB, "
                                          r"but only 64 MiB"):
        visualize_channel(_net(), "conv2", 0, size=4096, steps=2)
    visualize_channel(_net(), "conv2", 0, size=32, steps=2)
