"""Saliency, Grad-CAM, guided backprop and guided Grad-CAM cost what captum costs (issue 23):
they check captum's own forward pass instead of running one of their own, and their maps
with the default target and layer equal captum's bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

captum_attr = pytest.importorskip("captum.attr")

from nsp.attribution import attribute  # noqa: E402
from nsp.attribution.guided_backprop import captum_guided_backprop  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")


def _net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5),
    ).eval()


X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(4))


def _forward_calls(model: nn.Module, method: str) -> int:
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        attribute(model, X, method)
    finally:
        handle.remove()
    return len(calls)


@pytest.mark.parametrize("method, captum_passes", [("saliency", 1), ("gradcam", 1), ("guided_backprop", 1),
                                                   ("guided_gradcam", 2)])
def test_no_forward_pass_besides_captums(method, captum_passes):
    model = _net()
    assert _forward_calls(model, method) == captum_passes


def _captum(method: str, model: nn.Module, layer: nn.Module, target: torch.Tensor) -> torch.Tensor:
    x = X.clone().requires_grad_()
    if method == "saliency":
        return captum_attr.Saliency(model).attribute(x, target=target, abs=False)
    if method == "gradcam":
        return captum_attr.LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    if method == "guided_backprop":
        return captum_guided_backprop()(model).attribute(x, target=target)
    both = captum_attr.GuidedGradCam(model, layer)
    both.guided_backprop = captum_guided_backprop()(model)
    return both.attribute(x, target=target)


@pytest.mark.parametrize("method", ["saliency", "gradcam", "guided_backprop", "guided_gradcam"])
def test_defaults_equal_captum_bit_for_bit(method):
    # Same batch, same kernels, same thread count: the same computation, so equal bits.
    model = _net()
    with torch.no_grad():
        target = model(X).argmax(1)
    assert len(set(target.tolist())) > 1
    expected = _captum(method, model, model[2], target).detach()
    assert expected.abs().max() > 0
    assert torch.equal(attribute(model, X, method), expected)


class _LastDefinedRunsFirst(nn.Module):
    """The last convolution defined runs first, and a convolution defined after it never
    runs: the layer a guess from the definitions would pick is not the default."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.late = nn.Conv2d(6, 4, 3, padding=1)
        self.early = nn.Conv2d(3, 6, 3, padding=1)
        self.unused = nn.Conv2d(4, 4, 1)
        self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.late(torch.relu(self.early(x))))


@pytest.mark.parametrize("method", ["gradcam", "guided_gradcam"])
def test_default_layer_when_the_last_defined_convolution_does_not_run_last(method):
    model = _LastDefinedRunsFirst().eval()
    if method == "guided_gradcam":
        model.forward = lambda x: model.head(model.late(model.head[0](model.early(x))))
    target = [0, 2, 1, 0]
    expected = attribute(model, X, method, target=target, layer="late")
    for _ in range(2):  # the first call finds the layer, the second starts from it
        assert torch.equal(attribute(model, X, method, target=target), expected)
    assert _forward_calls(model, method) == (1 if method == "gradcam" else 2)


def test_checks_still_refuse_in_captums_pass():
    model = _net()
    with pytest.raises(ValueError, match=r"target 7 is out of range for a model with 5 outputs"):
        attribute(model, X, "gradcam", target=7)
    with pytest.raises(ValueError, match=r"channel 9 is out of range for layer module '2' \(Conv2d\) with 8"):
        attribute(model, X, "gradcam", channels=9)
    # After a refusal inside captum's pass no hook is left on the model.
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch.equal(attribute(model, X, "saliency"), attribute(model, X, "saliency"))
