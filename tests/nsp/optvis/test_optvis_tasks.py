"""The netlens tasks of nsp.optvis against issue 15's acceptance: objectives met on the
trained digits CNN and on a random ResNet-18, style transfer, robustness, architectures."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from digits_cnn import digits, trained
from nsp import optvis
from nsp.optvis.optimize import forward, to_uint8


def _digits_net() -> nn.Module:
    model, accuracy = trained()
    assert accuracy > 0.9
    return optvis.normalized(model, [0.0], [1.0], size=8)


def _random_images(n: int, channels: int, size: int) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(1))


def _shift(images: torch.Tensor, d: int = 4) -> torch.Tensor:
    """The images moved ``d`` pixels right and down, the edge repeated."""
    return F.pad(images[..., :-d, :-d], [d, 0, d, 0], mode="replicate")


# ----------------------------------------------------------------------------- digits CNN


def test_visualize_class_on_the_digits_cnn_reaches_probability_0_9():
    net = _digits_net()
    for k in (0, 3, 8):  # 8 came closest to 0.9 in the measurements (0.989 at 128 steps)
        result = optvis.visualize_class(net, k, steps=64)
        probability = torch.softmax(net(result.image), dim=1)[0, k]
        assert probability >= 0.9, (k, float(probability))
        assert result.extra["probability"] == pytest.approx(float(probability), rel=1e-5)


def test_visualize_channel_on_the_digits_cnn_against_noise_and_random_images():
    """relu2:0 is a selective channel: off for most images (mean 0.020 over uniform noise) and
    for the nearly grey default start (zero gradient), on for the strokes it detects. Started
    from a Fourier image with more contrast, the default render (lucid's transforms, 256
    steps) reaches 45x the random images' mean (issue 15; relu2:7 from the grey start: 7.1x)."""
    net = _digits_net()
    objective = optvis.channel("relu2", 0)
    start = optvis.fourier_image((1, 1, 8, 8), sd=1.0, seed=0)
    start_value = optvis.evaluate(net, objective, start())
    result = optvis.visualize_channel(net, "relu2", 0, param=start)
    random_mean = optvis.evaluate(net, objective, _random_images(100, 1, 8)).mean()
    assert result.initial_value == pytest.approx(float(start_value[0]))
    assert start_value > 0  # on at the start, so the gradient is not zero
    assert result.value >= 10 * start_value  # measured 26x
    assert result.value >= 10 * random_mean  # measured 45x
    torch.testing.assert_close(result.value, optvis.evaluate(net, objective, result.image))


def test_ten_times_random_images_is_out_of_reach_for_the_digits_cnns_first_layer():
    """relu1 is a ReLU of one 3×3 convolution: no image in [0, 1] beats, at any position, the
    bias plus the positive weights the position sees. The mean of those per-position maxima
    bounds the channel's mean for every image, and for every channel it is below 10× the
    mean over 100 random images."""
    net = _digits_net()
    conv = net.model.conv1
    inside = F.pad(torch.ones(1, 1, 8, 8), [1, 1, 1, 1])
    positive = F.conv2d(inside, conv.weight.detach().clamp(min=0))[0]  # positive weights over in-bounds pixels
    bound = (positive + conv.bias.detach().view(-1, 1, 1)).clamp(min=0).mean((1, 2))
    for c in range(8):
        random_mean = optvis.evaluate(net, optvis.channel("relu1", c), _random_images(100, 1, 8)).mean()
        assert bound[c] < 10 * random_mean
    result = optvis.visualize_channel(net, "relu1", 3, steps=128, lr=0.1, transforms=None)
    assert result.initial_value < result.value <= bound[3] + 1e-5


def test_invert_on_the_digits_cnn_reduces_the_matching_loss_100_times():
    net = _digits_net()
    image = digits()[0][1500]
    result = optvis.invert(net, image, "pool", steps=100)
    assert result.extra["initial_match_loss"] >= 100 * result.extra["match_loss"]
    # The loss is the mean squared distance of the activations, recomputed here.
    acts = {}
    hook = net.model.pool.register_forward_hook(lambda m, i, o: acts.setdefault(len(acts), o.detach()))
    try:
        net(image[None])
        net(result.image)
    finally:
        hook.remove()
    assert result.extra["match_loss"] == pytest.approx(float((acts[0] - acts[1]).pow(2).mean()), rel=1e-4)


# ----------------------------------------------------------------------------- small CNN


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()).eval()


def _content_and_style(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    content = F.interpolate(torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(5)), size=size,
                            mode="bicubic").clamp(0, 1)
    yy, xx = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    style = torch.stack([0.5 + 0.5 * torch.sin(xx * 0.8), 0.5 + 0.5 * torch.sin((xx + yy) * 0.5),
                         0.5 + 0.5 * torch.cos(yy * 1.1)])[None]
    return content, style


def _gram(a: torch.Tensor) -> torch.Tensor:
    flat = a.reshape(a.shape[1], -1)
    return flat @ flat.T / flat.numel()


def test_style_transfer_reduces_the_style_loss_ten_times_and_keeps_the_content():
    net = _small_cnn()
    content, style = _content_and_style()
    layers = ["1", "3", "6", "8"]
    result = optvis.style_transfer(net, content, style, ["6"], layers, steps=50)
    e = result.extra
    assert e["initial_style_loss"] >= 10 * e["style_loss"]
    assert e["content_loss"] < e["style_image_content_loss"]
    # The losses, recomputed from the activations with plain tensor code.
    feats = {}
    hooks = [net[int(l)].register_forward_hook(lambda m, i, o, l=l: feats.__setitem__(l, o.detach())) for l in layers]
    try:
        net(style)
        style_grams = {l: _gram(feats[l]) for l in layers}
        net(content)
        content_6 = feats["6"]
        net(result.image)
    finally:
        for h in hooks:
            h.remove()
    style_loss = sum(float((_gram(feats[l]) - style_grams[l]).pow(2).mean()) for l in layers)
    assert e["style_loss"] == pytest.approx(style_loss, rel=1e-3)
    assert e["content_loss"] == pytest.approx(float((feats["6"] - content_6).pow(2).mean()), rel=1e-3)


def test_style_transfer_is_deterministic_under_a_seed():
    net = _small_cnn()
    content, style = _content_and_style(24)
    runs = [optvis.style_transfer(net, content, style, ["6"], ["1", "3"], steps=8, init="noise", seed=s).image
            for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


def test_deep_dream_amplifies_the_layer_octave_by_octave_and_writes_a_png(tmp_path):
    net = _small_cnn()
    image, _ = _content_and_style(40)
    result = optvis.deep_dream(net, image, "6", octaves=3, steps=8, lr=0.1, save=tmp_path / "dream.png")
    assert [tuple(i.shape[-2:]) for i in result.images] == [(20, 20), (29, 29), (40, 40)]
    assert result.value >= 1.3 * result.initial_value  # measured 1.55
    assert result.image.min() >= 0 and result.image.max() <= 1
    torch.testing.assert_close(result.value, optvis.evaluate(net, optvis.l2("6"), result.image))
    assert result.paths == [tmp_path / "dream.png"]
    assert np.array_equal(np.asarray(Image.open(result.paths[0])), to_uint8(result.image)[0])


def test_tasks_check_their_images():
    net = _small_cnn()
    with pytest.raises(ValueError, match=r"deep_dream: image must be in \[0, 1\]"):
        optvis.deep_dream(net, torch.full((3, 8, 8), 2.0), "6")
    with pytest.raises(ValueError, match=r"style_transfer: expected content_layers to be a non-empty list"):
        optvis.style_transfer(net, torch.rand(3, 8, 8), torch.rand(3, 8, 8), "6", ["1"])
    with pytest.raises(ValueError, match=r"invert: unknown layer 'conv9'"):
        optvis.invert(net, torch.rand(3, 8, 8), "conv9")
    with pytest.raises(ValueError, match=r"visualize_class: objective='softmax'"):
        optvis.visualize_class(net, 0, objective="softmax")


# ----------------------------------------------------------------------------- random ResNet-18


@functools.lru_cache(maxsize=1)
def _resnet18() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return optvis.normalized(torchvision.models.resnet18().eval(), optvis.IMAGENET_MEAN, optvis.IMAGENET_STD)


@functools.lru_cache(maxsize=None)
def _resnet_channel(transforms: str | None) -> optvis.Render:
    return optvis.visualize_channel(_resnet18(), "layer3", 5, size=64, steps=256, transforms=transforms)


@pytest.mark.slow
def test_visualize_channel_on_a_random_resnet18_against_noise_and_random_images():
    pytest.importorskip("torchvision")
    net, objective = _resnet18(), optvis.channel("layer3", 5)
    result = _resnet_channel(None)
    random_mean = optvis.evaluate(net, objective, _random_images(100, 3, 64)).mean()
    assert result.value >= 10 * result.initial_value  # measured 117×
    assert result.value >= 10 * random_mean  # measured 17.8×


@pytest.mark.slow
def test_visualize_class_on_a_random_resnet18_reaches_probability_0_9():
    pytest.importorskip("torchvision")
    result = optvis.visualize_class(_resnet18(), 3, size=64, steps=256, param="pixel", lr=0.1, transforms=None)
    assert result.extra["probability"] >= 0.9  # measured 0.92


@pytest.mark.slow
def test_invert_on_a_random_resnet18_reduces_the_matching_loss_100_times():
    pytest.importorskip("torchvision")
    image = F.interpolate(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(5)), size=64,
                          mode="bicubic").clamp(0, 1)
    result = optvis.invert(_resnet18(), image, "layer3", steps=100)
    assert result.extra["initial_match_loss"] >= 100 * result.extra["match_loss"]  # measured 298×


@pytest.mark.slow
def test_transformation_robustness_survives_a_four_pixel_shift():
    """lucid's argument: an image rendered under random transforms still excites the channel
    after a 4-pixel shift; one rendered without them loses most of what it had."""
    pytest.importorskip("torchvision")
    net, objective = _resnet18(), optvis.channel("layer3", 5)
    robust, plain = _resnet_channel("default"), _resnet_channel(None)
    noise = robust.initial_value
    assert torch.equal(noise, plain.initial_value)
    robust_shifted = optvis.evaluate(net, objective, _shift(robust.image))
    plain_shifted = optvis.evaluate(net, objective, _shift(plain.image))
    assert robust_shifted >= 5 * noise
    # The claim is about what each render keeps of its own value (measured 0.15 and 0.88 on
    # AMD EPYC). The two shifted values themselves are close (2.03 and 2.01 there), and their
    # order changed between CPUs, so they are not compared.
    assert plain_shifted / plain.value < 0.5 < robust_shifted / robust.value
    # The cost the README states: on a random network the default transforms keep the render
    # well above uniform noise but below the 10x reached without them (measured 2.9x and 17.8x).
    random_mean = optvis.evaluate(net, objective, _random_images(100, 3, 64)).mean()
    assert 2 * random_mean <= robust.value < 10 * random_mean <= plain.value


def _calibrate_batchnorm(model: nn.Module, size: int) -> nn.Module:
    """Batch-norm statistics of random images: with the defaults (mean 0, variance 1) a freshly
    built MobileNetV2's signal dies out, and every image gets the same logits."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average
    model.train()
    with torch.no_grad():
        model(torch.rand(16, 3, size, size, generator=torch.Generator().manual_seed(0)))
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "vgg11", "mobilenet_v2", "custom"])
def test_every_task_runs_on_torchvision_models_and_a_custom_cnn(name):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    if name == "custom":
        model, layer = nn.Sequential(_small_cnn(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5)), "0.6"
    else:
        model = getattr(torchvision.models, name)(num_classes=5)
        if name == "vgg11":
            # torchvision's features; a small classifier instead of 120 M parameters of Linear layers.
            model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 16), nn.ReLU(True), nn.Linear(16, 5))
        layer = {"resnet18": "layer2", "vgg11": "features.10", "mobilenet_v2": "features.6"}[name]
    net = optvis.normalized(_calibrate_batchnorm(model, 32), optvis.IMAGENET_MEAN, optvis.IMAGENET_STD, size=32)
    image, style = _content_and_style(32)
    # The channel most active on the starting image (a ReLU channel that is off everywhere cannot move).
    start = optvis.fourier_image((1, 3, 32, 32), seed=0)().detach()
    alive = int(forward(net, start, [layer])[layer][0].flatten(1).mean(1).argmax())
    # Few steps and no random transforms, so that each objective rises within the steps.
    for result in (optvis.visualize_channel(net, layer, alive, steps=4, transforms=None),
                   optvis.visualize_class(net, 2, steps=4, transforms=None),
                   optvis.deep_dream(net, image, layer, octaves=2, steps=8),
                   optvis.invert(net, image, layer, steps=3)):
        assert result.image.shape == (1, 3, 32, 32)
        assert result.value > result.initial_value
    styled = optvis.style_transfer(net, image, style, [layer], [layer], steps=3)
    assert styled.extra["style_loss"] < styled.extra["initial_style_loss"]
