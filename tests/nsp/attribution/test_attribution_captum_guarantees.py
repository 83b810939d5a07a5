"""nsp's guarantees on captum's menu (issue 24): several and tuple inputs,
additional_forward_args, integer-like targets, inference and train mode, exact
deconvolution on in-place, reused and ReLU6 modules, and refusals that name the module
where a captum rule would silently be wrong."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

captum_attr = pytest.importorskip("captum.attr")
torchvision = pytest.importorskip("torchvision")

from nsp.attribution import CAPTUM_TABLE, METHODS, attribute  # noqa: E402
from nsp.attribution.captum_methods import CaptumSpec  # noqa: E402
from test_attribution_architectures import _FunctionalNet, _zoo  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class _TwoInputs(nn.Module):
    """f(a, b, scale) = (A a + B b) * scale: two attributed inputs and one extra argument."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(4, 3, bias=False), nn.Linear(2, 3, bias=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
        return (self.a(a) + self.b(b)) * scale


A = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
B = torch.randn(5, 2, generator=torch.Generator().manual_seed(2))
SCALE = torch.linspace(0.5, 2.5, 5).unsqueeze(1)  # one per input: expanded with the batch


@pytest.mark.parametrize("name", ["saliency", "input_x_gradient", "integrated_gradients", "deeplift",
                                  "feature_ablation", "shapley_value_sampling", "guided_backprop",
                                  "deconvolution", "smoothgrad", "gradient_shap"])
def test_tuple_inputs_and_additional_forward_args_give_the_closed_form(name):
    model = _TwoInputs().eval()
    options = {"baselines": (torch.zeros(1, 4), torch.zeros(1, 2))} if name == "gradient_shap" else {}
    if name == "smoothgrad":
        options = {"noise": 0.0, "samples": 2}
    ours = attribute(model, (A, B), name, target=1, additional_forward_args=(SCALE,), **options)
    assert isinstance(ours, tuple) and len(ours) == 2
    gradient = name in ("saliency", "guided_backprop", "deconvolution", "smoothgrad")
    for got, x, w in zip(ours, (A, B), (model.a.weight[1], model.b.weight[1])):
        expected = (w * SCALE).detach().expand_as(x) if gradient else (w * SCALE * x).detach()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_tuple_inputs_equal_captum_bit_for_bit():
    model = _TwoInputs().eval()
    ours = attribute(model, (A, B), "deeplift", target=[0, 1, 2, 0, 1], additional_forward_args=SCALE)
    theirs = captum_attr.DeepLift(model).attribute((A.clone(), B.clone()), target=[0, 1, 2, 0, 1],
                                                   additional_forward_args=SCALE)
    assert all(torch.equal(o, t.detach()) for o, t in zip(ours, theirs))


def test_a_non_tuple_extra_argument_is_one_argument_and_scalars_pass_through():
    model = _TwoInputs().eval()
    once = attribute(model, (A, B), "saliency", target=0, additional_forward_args=3.0)
    torch.testing.assert_close(once[0], (3 * model.a.weight[0]).detach().expand_as(A))


def test_methods_that_take_one_tensor_refuse_a_tuple_by_name():
    model = _TwoInputs().eval()
    with pytest.raises(TypeError, match=r"Occlusion: 'occlusion' takes one input tensor, got a tuple of 2"):
        attribute(model, (A, B), "occlusion")
    with pytest.raises(TypeError, match=r"'occlusion' takes no additional_forward_args"):
        attribute(nn.Linear(4, 3), A, "occlusion", window=1, additional_forward_args=(1.0,))
    with pytest.raises(ValueError, match=r"must share their batch size.*\(5, 4\), \(3, 2\)"):
        attribute(model, (A, B[:3]), "saliency")
    with pytest.raises(TypeError, match=r"inputs\[1\] has dtype torch.int64"):
        attribute(model, (A, B.long()), "saliency")
    with pytest.raises(ValueError, match=r"forward pass \(_TwoInputs\) failed on inputs of shape \(5, 4\)"):
        attribute(model, A, "deeplift")


@pytest.mark.parametrize("target", [np.int64(2), np.int32(2), torch.tensor(2), np.array(2), [np.int16(2)] * 5,
                                    torch.tensor([2] * 5, dtype=torch.int32)])
@pytest.mark.parametrize("name", ["input_x_gradient", "feature_ablation", "layer_conductance", "neuron_conductance"])
def test_any_integer_like_target(name, target):
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    options = {"layer": "0"} if name.startswith(("layer", "neuron")) else {}
    if name.startswith("neuron"):
        options["neuron_selector"] = (1,)
    assert torch.equal(attribute(model, A, name, target=target, **options),
                       attribute(model, A, name, target=2, **options))


def _options(spec: CaptumSpec) -> dict:
    """What each table method needs on the (5, 4) inputs A, for a model whose layer '0' is Linear(4, 6)."""
    options: dict = {"layer": "0"} if spec.family != "primary" else {}
    if spec.family == "neuron":
        options["neuron_selector"] = (1,)
    if spec.name.endswith(("deeplift_shap", "gradient_shap")):
        options["baselines"] = torch.zeros(3, 4)
    if spec.name in ("lime", "kernel_shap"):
        options["n_samples"] = 20
    return options


@pytest.mark.parametrize("spec", [s for s in CAPTUM_TABLE if s.name != "layer_feature_permutation"] +
                         [CaptumSpec("deconvolution", "Deconvolution", "primary")], ids=lambda s: s.name)
def test_inference_mode_and_train_mode_are_handled(spec):
    pytest.importorskip("sklearn")
    torch.manual_seed(0)
    # captum's LRP has no rule for batch norm (nor nn.Identity): a second ReLU in its place.
    norm = nn.ReLU() if spec.rule == "lrp" else nn.BatchNorm1d(6)
    model = nn.Sequential(nn.Linear(4, 6), norm, nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3)).train()
    before = copy.deepcopy(model.state_dict())
    name, options = spec.name, _options(spec)
    target = 1 if getattr(METHODS[name], "takes_target", lambda: True)() else None
    with torch.inference_mode():
        ours = attribute(model, A, name, target=target, **options)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(ours, attribute(model.eval(), A, name, target=target, **options))


class _DeconvolutionReLU(torch.autograd.Function):
    """ReLU (or ReLU6) whose backward is the deconvolution rule, written out."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, top: float) -> torch.Tensor:  # type: ignore[override]
        return x.clamp(0, top)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad.clamp(min=0), None


class _DeconvolutionModule(nn.Module):
    def __init__(self, top: float) -> None:
        super().__init__()
        self.top = top

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _DeconvolutionReLU.apply(x, self.top)


def reference_deconvolution(model: nn.Module, x: torch.Tensor, target: list[int]) -> torch.Tensor:
    """Deconvolution by module replacement: out-of-place ReLUs with the rule as their backward."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, (nn.ReLU, nn.ReLU6)):
                setattr(parent, name, _DeconvolutionModule(6.0 if isinstance(child, nn.ReLU6) else float("inf")))
    x = x.clone().requires_grad_()
    out = model(x)
    (grad,) = torch.autograd.grad(out[torch.arange(len(target)), target].sum(), x)
    return grad


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_deconvolution_is_exact_on_in_place_reused_and_relu6_modules(name):
    model, x = _zoo(name)
    target = [2, 5]
    expected = reference_deconvolution(model, x, target)
    ours = attribute(model, x, "deconvolution", target=target)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    vanilla = attribute(model, x, "saliency", target=target)
    assert not torch.allclose(ours, vanilla, rtol=1e-2, atol=1e-3 * float(expected.abs().max()))
    # captum's own deconvolution is right on ResNet's in-place, reused ReLUs, but skips the
    # ReLU6 modules of MobileNetV2 (1.62 relative error measured).
    theirs = captum_attr.Deconvolution(model).attribute(x.clone().requires_grad_(), target=target)
    assert torch.allclose(theirs, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max())) == (
        name == "resnet18")


def test_captum_deconvolution_alone_ignores_relu6():
    torch.manual_seed(0)
    relu6 = nn.Sequential(nn.Linear(4, 6), nn.ReLU6(), nn.Linear(6, 3)).eval()
    expected = reference_deconvolution(relu6, A, [1] * 5)
    torch.testing.assert_close(attribute(relu6, A, "deconvolution", target=1), expected)
    theirs = captum_attr.Deconvolution(relu6).attribute(A.clone().requires_grad_(), target=1)
    assert not torch.allclose(theirs, expected)


def test_an_in_place_relu_keeps_the_forward_values_of_a_tensor_read_again():
    class ReadAgain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.inner, self.relu, self.outer = nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 3)

        def forward(self, x):
            h = self.inner(x)
            y = self.relu(h)  # rewrites h: the next line reads relu(h) twice
            return self.outer(y + h)

    model = ReadAgain().eval()
    seen = []
    handle = model.outer.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    attribute(model, A, "deconvolution", target=0)
    model(A)
    handle.remove()
    torch.testing.assert_close(seen[0], seen[1])


@pytest.mark.parametrize("name", ["deeplift", "deeplift_shap", "lrp", "layer_deeplift", "neuron_deeplift",
                                  "neuron_guided_backprop", "neuron_deconvolution", "deconvolution"])
def test_rule_methods_refuse_a_functional_relu_by_module(name):
    options = {"baselines": torch.zeros(2, 3, 8, 8)} if name == "deeplift_shap" else {}
    if name.startswith(("layer", "neuron")):
        options["layer"] = "stem.0"
    if name.startswith("neuron"):
        options["neuron_selector"] = (0, 1, 1)
    with pytest.raises(ValueError, match=rf"module 'block' \(_FunctionalBlock\) computes a ReLU with "
                                         rf"torch\.nn\.functional\.relu.*{name!r} applies its rule"):
        attribute(_FunctionalNet(), torch.randn(2, 3, 8, 8), name, target=None if "neuron" in name else 0,
                  **options)


def test_deeplift_refuses_a_reused_nonlinearity_and_relu6_by_name():
    class Reused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.l1, self.l2, self.l3, self.act = nn.Linear(4, 5), nn.Linear(5, 5), nn.Linear(5, 3), nn.ReLU()

        def forward(self, x):
            return self.l3(self.act(self.l2(self.act(self.l1(x)))))

    with pytest.raises(ValueError, match=r"DeepLift: module 'act' \(ReLU\) runs 2 times per forward pass; captum's "
                                         r"DeepLift keeps one call's activations per module"):
        attribute(Reused().eval(), A, "deeplift", target=0)
    relu6 = nn.Sequential(nn.Linear(4, 6), nn.ReLU6(), nn.Linear(6, 3)).eval()
    with pytest.raises(ValueError, match=r"module '1' \(ReLU6\) is a ReLU6, for which captum's DeepLift has no rule"):
        attribute(relu6, A, "layer_deeplift", target=0, layer="0")
    # A reused linear layer is no problem for DeepLift (its rule is the gradient).
    shared = nn.Linear(4, 4)
    ok = attribute(nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 3)).eval(), A, "deeplift", target=0)
    assert ok.shape == A.shape


def test_bad_options_are_named():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    with pytest.raises(ValueError, match=r"GradientShap: 'gradient_shap' needs the option\(s\) baselines"):
        attribute(model, A, "gradient_shap")
    with pytest.raises(TypeError, match=r"unknown option\(s\) steps; 'deeplift' takes multiply_by_inputs, eps, "
                                        r"baselines, custom_attribution_func"):
        attribute(model, A, "deeplift", steps=3)
    with pytest.raises(ValueError, match=r"LayerActivation: 'layer_activation' explains a layer or a neuron, not "
                                         r"an output: it takes no target"):
        attribute(model, A, "layer_activation", target=1, layer="0")
    with pytest.raises(ValueError, match=r"NeuronGradient: neuron_selector \(1, 2\) has 2 index\(es\), but layer "
                                         r"module '0' \(Linear\) has outputs of shape \(N, 6\): give 1"):
        attribute(model, A, "neuron_gradient", layer="0", neuron_selector=(1, 2))
    with pytest.raises(ValueError, match=r"neuron_selector 6 is out of range"):
        attribute(model, A, "neuron_gradient", layer="0", neuron_selector=6)
    with pytest.raises(TypeError, match=r"expected neuron_selector to be an int, a tuple"):
        attribute(model, A, "neuron_gradient", layer="0", neuron_selector=1.5)
    with pytest.raises(ValueError, match=r"FeatureAblation: captum's FeatureAblation failed \(baselines\): "):
        attribute(model, A, "feature_ablation", baselines=torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"'input_x_gradient' takes no layer"):
        attribute(model, A, "input_x_gradient", layer="0")
    with pytest.raises(TypeError, match=r"expected seed to be an int or None"):
        attribute(model, A, "lime", seed=0.5)


def test_the_deeplift_modules_are_captums():
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

    from nsp.attribution.captum_methods import DEEPLIFT_NONLINEAR

    assert set(DEEPLIFT_NONLINEAR) == set(SUPPORTED_NON_LINEAR)


@pytest.mark.parametrize("name", ["neuron_guided_backprop", "neuron_deconvolution"])
def test_neuron_variants_use_the_exact_relu_rules(name):
    from test_attribution_architectures import reference_guided_backprop

    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU6(), nn.Linear(6, 6), nn.ReLU(inplace=True), nn.Linear(6, 5),
                          nn.Linear(5, 3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(4.0)  # some inputs of the ReLU6 above 6
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(5))
    assert (model[0](x) > 6).any()
    reference = reference_guided_backprop if name == "neuron_guided_backprop" else reference_deconvolution
    expected = reference(model[:5], x, [2] * len(x))  # the network up to the neuron's layer '4'
    ours = attribute(model, x, name, layer="4", neuron_selector=(2,))
    torch.testing.assert_close(ours, expected)
    captum_cls = getattr(captum_attr, "NeuronGuidedBackprop" if "guided" in name else "NeuronDeconvolution")
    theirs = captum_cls(model, model[4]).attribute(x.clone().requires_grad_(), (2,))
    assert not torch.allclose(theirs, expected)  # captum skips the ReLU6
