"""Bad input to nsp.attribution gets a clear error, never a raw traceback from captum or torch."""

from __future__ import annotations

import builtins

import pytest
import torch
from torch import nn

pytest.importorskip("captum.attr")

from nsp.attribution import METHODS, GradCam, attribute  # noqa: E402


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


X = torch.randn(2, 1, 6, 6)


def test_unknown_method():
    with pytest.raises(ValueError, match=r"unknown method 'gradient'; expected one of 'saliency', "):
        attribute(_net(), X, "gradient")


def test_layer_not_in_the_model():
    with pytest.raises(ValueError, match=r"unknown layer '4' in `layer`: the model \(Sequential\) has no submodule "
                                         r"of that name; its layers are: 0, 1, 2, 3$"):
        attribute(_net(), X, "gradcam", layer="4")
    with pytest.raises(ValueError, match=r"unknown layer 'O' in `layer`"):
        attribute(_net(), X, "gradcam", layer="O")
    with pytest.raises(ValueError, match=r"`layer` \(Conv2d\) is not a submodule of the model \(Sequential\); "
                                         r"its layers are: 0, 1, 2, 3$"):
        attribute(_net(), X, "guided_gradcam", layer=nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match=r"'saliency' takes no layer"):
        attribute(_net(), X, "saliency", layer="0")


def test_layer_that_does_not_run():
    net = nn.Module()
    net.body, net.spare = _net(), nn.Conv2d(1, 1, 1)
    net.forward = net.body.forward
    with pytest.raises(ValueError, match=r"layer module 'spare' \(Conv2d\) does not run"):
        GradCam(net, "spare").attribute(X)


@pytest.mark.parametrize("target, match", [(3, r"target 3 is out of range for a model with 3 outputs"),
                                           (-1, r"target -1 is out of range"),
                                           ([0, 5], r"target 5 is out of range"),
                                           ([0, 1, 2], r"one target or one per input \(2\), got 3"),
                                           (torch.tensor([0.5, 1.0]), r"integer indices"),
                                           (1.0, r"expected target to be an int")])
@pytest.mark.parametrize("method", ["saliency", "gradcam", "occlusion"])
def test_target_out_of_range(method, target, match):
    with pytest.raises((ValueError, TypeError), match=match):
        attribute(_net(), X, method, target=target)


@pytest.mark.parametrize("method", list(METHODS))
def test_non_differentiable_input(method):
    with pytest.raises(TypeError, match=r"inputs has dtype torch.int64, which has no gradient"):
        attribute(_net(), torch.zeros(2, 1, 6, 6, dtype=torch.long), method)


def test_a_model_that_cuts_the_gradient():
    class Rounding(nn.Module):
        def forward(self, x):
            return _net()(x.detach())

    with pytest.raises(ValueError, match=r"does not depend differentiably on its input"):
        attribute(Rounding(), X, "saliency")


def test_bad_options_and_shapes():
    with pytest.raises(TypeError, match=r"unknown option\(s\) steps; 'saliency' takes no options"):
        attribute(_net(), X, "saliency", steps=3)
    with pytest.raises(ValueError, match=r"unknown sign='abs'"):
        attribute(_net(), X, "saliency", sign="abs")
    with pytest.raises(ValueError, match=r"channel 4 is out of range for layer module '0' \(Conv2d\) with 4"):
        attribute(_net(), X, "gradcam", layer="0", channels=[0, 4])
    with pytest.raises(ValueError, match=r"window \(7, 7\) is larger than the input's spatial shape \(6, 6\)"):
        attribute(_net(), X, "occlusion", window=7)
    with pytest.raises(ValueError, match=r"non-empty batch"):
        attribute(_net(), torch.randn(6), "saliency")
    with pytest.raises(ValueError, match=r"steps to be an int >= 1"):
        attribute(_net(), X, "integrated_gradients", steps=0)
    with pytest.raises(ValueError, match=r"no convolution"):
        attribute(nn.Linear(3, 2), torch.randn(2, 3), "gradcam")
    with pytest.raises(ValueError, match=r"\(N, classes\) or \(N,\)"):
        attribute(nn.Conv2d(1, 1, 1), X, "saliency")
    with pytest.raises(ValueError, match=r"the model's forward pass \(Sequential\) failed on inputs of shape "
                                         r"\(2, 3\): .*Expected 3D"):
        attribute(_net(), torch.randn(2, 3), "saliency")


def test_missing_captum_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_captum(name, *args, **kwargs):
        if name.startswith("captum"):
            raise ImportError("No module named 'captum'")
        return real_import(name, *args, **kwargs)

    import importlib

    monkeypatch.setattr(importlib, "import_module",
                        lambda name, *a: no_captum(name) if name.startswith("captum") else real_import(name))
    with pytest.raises(ImportError, match=r"pip install 'nsp-lightning\[attribution\]'"):
        attribute(_net(), X, "saliency")
