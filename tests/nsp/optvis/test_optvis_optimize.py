"""nsp.optvis.render: the loop's guarantees (seed, thresholds, early stop, model left alone) and its errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nsp import optvis


class SmallCNN(nn.Module):
    """conv → ReLU → conv → ReLU → global pool → linear, 3 channels in, 5 classes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x):
        return self.head(self.features(x))


class Exploding(nn.Module):
    def forward(self, x):
        raise AssertionError("the forward pass should have stopped before this layer")


def test_render_is_reproducible_and_keeps_thresholds():
    net = SmallCNN()
    first = optvis.render(net, optvis.channel("features.3", 2), steps=12, thresholds=[4, 12], size=16, seed=1)
    again = optvis.render(net, optvis.channel("features.3", 2), steps=99, thresholds=[12, 4], size=16, seed=1)
    other = optvis.render(net, optvis.channel("features.3", 2), steps=12, size=16, seed=2)
    assert first.thresholds == [4, 12] and len(first.images) == 2 and len(first.losses) == 12
    for a, b in zip(first.images, again.images):
        assert torch.equal(a, b)
    assert not torch.equal(first.image, other.image)
    # The kept values are the objective of the kept images themselves, without transforms.
    torch.testing.assert_close(first.values[0], optvis.evaluate(net, optvis.channel("features.3", 2), first.images[0]))
    assert first.value > first.initial_value


def test_the_forward_pass_stops_after_the_last_layer_needed_and_the_model_is_left_alone():
    net = SmallCNN()
    net.head = Exploding()
    net.train()
    net.features[0].train(False)
    net.features[2].weight.grad = torch.ones_like(net.features[2].weight)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = optvis.render(net, optvis.channel("features.1", 0) + optvis.l2("features.3"), steps=3, size=12)
    assert result.image.shape == (1, 3, 12, 12)
    assert net.training and not net.features[0].training and net.features[1].training
    assert torch.equal(net.features[2].weight.grad, torch.ones_like(net.features[2].weight))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_in_place_relu_after_a_hooked_layer_does_not_break_the_gradient():
    net = SmallCNN()
    # features.2's output is changed in place by features.3 (ReLU(inplace=True)), and the
    # class objective needs the whole forward pass.
    objective = optvis.channel("features.2", 1) + optvis.class_logit(0)
    result = optvis.render(net, objective, steps=5, size=16, transforms=None)
    assert result.value > result.initial_value


def test_normalized_resizes_and_normalises_once():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return x.mean((2, 3))

    net = optvis.normalized(Recorder(), mean=[0.5, 0.25], std=[0.5, 2.0], size=(6, 4))
    image = torch.rand(1, 2, 9, 9)
    net(image)
    resized = nn.functional.interpolate(image, size=(6, 4), mode="bilinear", align_corners=False)
    expected = (resized - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / torch.tensor([0.5, 2.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(seen[-1], expected)
    result = optvis.render(net, optvis.class_logit(1), steps=2)
    assert result.image.shape == (1, 2, 6, 4)


def test_bad_input_gets_a_clear_error_before_any_step():
    net = SmallCNN()
    with pytest.raises(ValueError, match=r"unknown layer 'feature.3' in `layer`: the model \(SmallCNN\) has no "
                                         r"submodule of that name \(did you mean 'features.3'"):
        optvis.visualize_channel(net, "feature.3", 0, size=16)
    with pytest.raises(ValueError, match=r"nsp.optvis.channel\('features.3', 8\): channel 8 out of range: "
                                         r"layer 'features.3' has 8 channels"):
        optvis.visualize_channel(net, "features.3", 8, size=16)
    with pytest.raises(ValueError, match=r"class 5 out of range: the model has 5 classes"):
        optvis.visualize_class(net, 5, size=16)
    digits_like = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    with pytest.raises(ValueError, match=r"visualize_class: the model \(Sequential\) cannot take images of shape "
                                         r"\[1, 16, 16\].*nsp.optvis.normalized"):
        optvis.visualize_class(optvis.normalized(digits_like, [0.0], [1.0]), 3, size=16)
    with pytest.raises(ValueError, match=r"cannot take images of shape \[3, 8, 8\]"):
        optvis.visualize_class(digits_like, 3, size=8)
    with pytest.raises(ValueError, match=r"steps >= 1"):
        optvis.render(net, optvis.l2("features.1"), steps=0)
    with pytest.raises(ValueError, match=r"transforms='lucid'"):
        optvis.render(net, optvis.l2("features.1"), transforms="lucid")
    with pytest.raises(ValueError, match=r"expected a \.png path"):
        optvis.visualize_channel(net, "features.1", 0, size=8, steps=1, save="x.jpg")


def test_a_unit_that_is_off_for_the_whole_starting_image_is_reported():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    with torch.no_grad():
        net[0].bias.copy_(torch.tensor([-100.0, 100.0]))
    with pytest.warns(RuntimeWarning, match=r"\(channel 1:0\) has zero gradient at the starting image"):
        dead = optvis.render(net, optvis.channel("1", 0), steps=2, size=8)
    assert torch.equal(dead.image, dead.images[0]) and dead.value == 0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optvis.render(net, optvis.channel("1", 1), steps=2, size=8)
