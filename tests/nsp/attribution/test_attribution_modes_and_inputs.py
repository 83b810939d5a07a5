"""attribute() on models handed over in train mode, on Conv1d layers, with numpy targets, on
the meta device, and occlusion with a window smaller than the default stride (issue 22)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("captum.attr")

from nsp.attribution import attribute  # noqa: E402

pytestmark = pytest.mark.reliability


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)).train()


@pytest.mark.parametrize("method", ["saliency", "gradcam", "occlusion", "integrated_gradients"])
def test_a_model_in_train_mode_is_explained_as_deployed_and_left_as_it_was(method):
    model, x = _bn_net(), torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ours = attribute(model, x, method, target=2)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats untouched
    torch.testing.assert_close(ours, attribute(model.eval(), x, method, target=2))


def test_dropout_in_train_mode_gives_the_same_map_twice():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10)).train()
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(attribute(model, x, "saliency", target=0), attribute(model, x, "saliency", target=0))
    assert model.training


class _Conv1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(2, 4, 3, stride=2, padding=1)
        self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8, 3))

    def forward(self, x):
        return self.head(self.conv(x))


def test_gradcam_upsamples_a_conv1d_map_linearly_and_refuses_a_2d_mode():
    model, x = _Conv1d().eval(), torch.rand(2, 2, 16)
    cam = attribute(model, x, "gradcam", target=1)
    up = attribute(model, x, "gradcam", target=1, upsample=True)
    assert cam.shape == (2, 1, 8) and up.shape == (2, 1, 16)
    torch.testing.assert_close(up, nn.functional.interpolate(cam, size=16, mode="linear"))
    with pytest.raises(ValueError, match=r"GradCam: upsample='bilinear' interpolates maps with 2 spatial dimension"
                                         r"\(s\), but this layer's have 1; use True or one of nearest, area, linear"):
        attribute(model, x, "gradcam", target=1, upsample="bilinear")


def test_numpy_integer_targets_are_targets():
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval(), torch.rand(2, 1, 2, 2)
    expected = attribute(model, x, "saliency", target=[2, 1])
    assert torch.equal(attribute(model, x, "saliency", target=np.array([2, 1])), expected)
    assert torch.equal(attribute(model, x, "saliency", target=[np.int64(2), np.int32(1)]), expected)
    assert torch.equal(attribute(model, x, "saliency", target=np.int64(2)), attribute(model, x, "saliency", target=2))
    with pytest.raises(TypeError, match="got a bool"):
        attribute(model, x, "saliency", target=np.bool_(True))


def test_inputs_on_the_meta_device_are_refused_by_name():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"nsp.attribution.Saliency: inputs are on the meta device"):
        attribute(model, torch.empty(2, 1, 2, 2, device="meta"), "saliency")


def test_occlusion_strides_default_to_half_the_window_and_never_exceed_it():
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval(), torch.rand(2, 1, 8, 8)
    small = attribute(model, x, "occlusion", target=0, window=2)  # captum's own default stride 4 would refuse
    torch.testing.assert_close(small, attribute(model, x, "occlusion", target=0, window=2, stride=1))
    # A linear model's occlusion with a window of one element is weight x (input - baseline).
    torch.testing.assert_close(attribute(model, x, "occlusion", target=0, window=1),
                               (model[1].weight[0].reshape(1, 1, 8, 8) * x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"Occlusion: stride \(4, 4\) is larger than the window \(2, 2\)"):
        attribute(model, x, "occlusion", target=0, window=2, stride=4)
