"""Guided backprop and guided Grad-CAM on real architectures: in-place ReLUs, reused ReLU
modules (torchvision's ResNet), ReLU6 (MobileNetV2), a ReLU whose input is also a skip
connection, and functional ReLUs (refused by name). The references here use no hooks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

captum_attr = pytest.importorskip("captum.attr")
torchvision = pytest.importorskip("torchvision")

from nsp.attribution import attribute  # noqa: E402
from test_attribution_ground_truth import randomize_batchnorm  # noqa: E402


class _GuidedReLUFunction(torch.autograd.Function):
    """ReLU (or ReLU6) whose backward is guided backprop's rule, written out."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, top: float) -> torch.Tensor:  # type: ignore[override]
        mask = (x > 0) & (x < top)
        ctx.save_for_backward(mask)
        return x.clamp(0, top)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        return grad.clamp(min=0) * mask, None


class _GuidedReLU(nn.Module):
    def __init__(self, top: float) -> None:
        super().__init__()
        self.top = top

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GuidedReLUFunction.apply(x, self.top)


def reference_guided_backprop(model: nn.Module, x: torch.Tensor, target: list[int]) -> torch.Tensor:
    """Guided backprop by module replacement: a copy of the model whose ReLU and ReLU6
    modules are out-of-place ReLUs with the guided backward, differentiated by autograd."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, _GuidedReLU(6.0))
            elif isinstance(child, nn.ReLU):
                setattr(parent, name, _GuidedReLU(float("inf")))
    x = x.clone().requires_grad_()
    out = model(x)
    (grad,) = torch.autograd.grad(out[torch.arange(len(target)), target].sum(), x)
    return grad


def _zoo(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    make = {"resnet18": torchvision.models.resnet18, "vgg11": torchvision.models.vgg11,
            "mobilenet_v2": torchvision.models.mobilenet_v2}[name]
    model = make(num_classes=6)
    if name == "vgg11":
        # torchvision's features, with its in-place ReLUs; a small classifier of the same
        # layout instead of 120 M parameters of Linear layers.
        model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 16), nn.ReLU(True), nn.Dropout(), nn.Linear(16, 6))
    model = randomize_batchnorm(model).eval()
    size = 32 if name == "vgg11" else 48  # the last feature map is 2x2 for every model
    return model, torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


ZOO_LAYERS = {"resnet18": "layer4", "vgg11": "features.18", "mobilenet_v2": "features.17"}


@pytest.mark.parametrize("name", list(ZOO_LAYERS))
def test_guided_backprop_and_guided_gradcam_on_torchvision_models(name):
    model, x = _zoo(name)
    target = [2, 5]
    reused = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    assert all(m.inplace for m in reused)  # the in-place case is the one tested
    expected = reference_guided_backprop(model, x, target)
    vanilla = attribute(model, x, "saliency", target=target)
    assert not torch.allclose(expected, vanilla, rtol=1e-2, atol=1e-3 * float(expected.abs().max()))

    guided = attribute(model, x, "guided_backprop", target=target)
    torch.testing.assert_close(guided, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))

    cam = attribute(model, x, "gradcam", target=target, layer=ZOO_LAYERS[name])
    assert cam.shape[:2] == (2, 1) and cam.shape[2] > 1
    both = attribute(model, x, "guided_gradcam", target=target, layer=ZOO_LAYERS[name])
    torch.testing.assert_close(both, expected * F.interpolate(cam, x.shape[2:], mode="nearest"),
                               rtol=1e-4, atol=1e-6 * float(both.abs().max()))


def test_reused_relu_modules_are_really_reused_in_resnet():
    model, x = _zoo("resnet18")
    calls: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda m, i, o: calls.append(m)) for m in model.modules()
               if isinstance(m, nn.ReLU)]
    model(x)
    for h in handles:
        h.remove()
    assert len(calls) > len(set(map(id, calls)))


def test_captum_alone_is_wrong_where_the_relu_input_also_feeds_a_skip():
    # h feeds both the ReLU and the skip: captum rectifies h's whole gradient.
    class SkipAroundReLU(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.relu, self.outer = nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3)

        def forward(self, x):
            h = self.inner(x)
            return self.outer(self.relu(h) - 2 * h)

    torch.manual_seed(2)
    model, x = SkipAroundReLU(), torch.randn(4, 6)
    expected = reference_guided_backprop(model, x, [0, 1, 2, 0])
    ours = attribute(model, x, "guided_backprop", target=[0, 1, 2, 0])
    torch.testing.assert_close(ours, expected)
    with pytest.warns(UserWarning):
        captum = captum_attr.GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=[0, 1, 2, 0])
    assert not torch.allclose(captum, expected)


def manual_guided_backprop(layers: list[nn.Module], x: torch.Tensor, target: list[int]) -> torch.Tensor:
    """Guided backprop through a chain by hand: each linear piece's vector-Jacobian product,
    and at each ReLU the gradient masked by the forward pass and clamped at 0."""
    inputs = []
    h = x
    with torch.no_grad():
        for layer in layers:
            inputs.append(h)
            h = layer(h)
    grad = F.one_hot(torch.tensor(target), h.shape[1]).to(h)
    for layer, inp in zip(reversed(layers), reversed(inputs)):
        if isinstance(layer, nn.ReLU):
            grad = grad.clamp(min=0) * (inp > 0)
        else:
            inp = inp.clone().requires_grad_()
            (grad,) = torch.autograd.grad(layer(inp), inp, grad)
    return grad


def test_guided_backprop_equals_a_manual_backward_pass():
    torch.manual_seed(3)
    layers = [nn.Conv2d(2, 5, 3), nn.ReLU(), nn.Conv2d(5, 4, 3, stride=2), nn.ReLU(inplace=True), nn.Flatten(),
              nn.Linear(4 * 3 * 3, 7), nn.ReLU(), nn.Linear(7, 3)]
    x = torch.randn(3, 2, 9, 9)
    expected = manual_guided_backprop(layers, x, [0, 2, 1])
    torch.testing.assert_close(attribute(nn.Sequential(*layers), x, "guided_backprop", target=[0, 2, 1]), expected)


class _FunctionalBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(x)) + x


class _FunctionalNet(nn.Module):
    def __init__(self, call: str = "F.relu") -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())
        self.block = _FunctionalBlock()
        self.head = nn.Linear(3 * 8 * 8, 4)
        self.call = call

    def forward(self, x):
        h = self.block(self.stem(x))
        if self.call == "x.relu()":
            h = h.relu()
        elif self.call == "torch.relu_":
            h = torch.relu_(h)
        elif self.call == "F.relu6":
            h = F.relu6(h)
        return self.head(h.flatten(1))


@pytest.mark.parametrize("method", ["guided_backprop", "guided_gradcam", "guided_smoothgrad"])
def test_functional_relu_is_refused_naming_the_module(method):
    with pytest.raises(ValueError, match=r"module 'block' \(_FunctionalBlock\) computes a ReLU with "
                                         r"torch\.nn\.functional\.relu.*nn\.ReLU module"):
        attribute(_FunctionalNet(), torch.randn(2, 3, 8, 8), method, layer="block.conv" if "cam" in method else None)


@pytest.mark.parametrize("call, label", [("x.relu()", "Tensor.relu"), ("torch.relu_", "torch.relu_"),
                                         ("F.relu6", "functional.relu6")])
def test_every_spelling_of_a_functional_relu_is_found(call, label):
    with pytest.raises(ValueError, match=rf"block.*and 1 more place.*_FunctionalNet"):
        attribute(_FunctionalNet(call), torch.randn(2, 3, 8, 8), "guided_backprop")
    net = _FunctionalNet(call)
    net.block = nn.Sequential(net.block.conv, nn.ReLU())
    with pytest.raises(ValueError, match=rf"the model's own forward \(_FunctionalNet\) computes a ReLU with \S*{label}"):
        attribute(net, torch.randn(2, 3, 8, 8), "guided_backprop")


def test_functional_relus_do_not_matter_to_unguided_methods():
    net = _FunctionalNet()
    a = attribute(net, torch.randn(2, 3, 8, 8), "saliency")
    assert a.shape == (2, 3, 8, 8)


def test_gradcam_refuses_a_reused_module_and_names_its_parent():
    model, x = _zoo("resnet18")
    with pytest.raises(ValueError, match=r"'layer4\.1\.relu' \(ReLU\) runs 2 times.*parent 'layer4\.1'"):
        attribute(model, x, "gradcam", layer="layer4.1.relu")


def test_gradcam_default_layer_is_the_last_convolution():
    model, x = _zoo("resnet18")
    torch.testing.assert_close(attribute(model, x, "gradcam", target=1),
                               attribute(model, x, "gradcam", target=1, layer="layer4.1.conv2"))
