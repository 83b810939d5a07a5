"""nsp.optvis objectives, parameterisations and transforms, each against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nsp import optvis
from nsp.optvis import objectives as obj
from nsp.optvis import augment as T
from nsp.optvis.param import COLOR_CORRELATION


def _acts(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"conv": torch.randn(2, 3, 4, 5, generator=g), "fc": torch.randn(2, 6, generator=g),
            obj.OUTPUT: torch.randn(2, 4, generator=g), obj.INPUT: torch.rand(2, 3, 6, 7, generator=g)}


def test_objectives_against_direct_numpy():
    acts = _acts()
    a = acts["conv"].numpy()
    out = acts[obj.OUTPUT].numpy()
    x = acts[obj.INPUT].numpy()
    np.testing.assert_allclose(optvis.channel("conv", 2)(acts), a[:, 2].mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(optvis.channel("fc", 4)(acts), acts["fc"][:, 4], rtol=1e-6)
    np.testing.assert_allclose(optvis.neuron("conv", 1)(acts), a[:, 1, 2, 2], rtol=1e-6)
    np.testing.assert_allclose(optvis.neuron("conv", 1, x=4, y=0)(acts), a[:, 1, 0, 4], rtol=1e-6)
    np.testing.assert_allclose(optvis.l2("conv")(acts), (a ** 2).reshape(2, -1).mean(1), rtol=1e-6)
    np.testing.assert_allclose(optvis.class_logit(3)(acts), out[:, 3], rtol=1e-6)
    log_p = out[:, 3] - np.log(np.exp(out).sum(1))
    np.testing.assert_allclose(optvis.class_log_probability(3)(acts), log_p, rtol=1e-5)
    v = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(optvis.direction("conv", v)(acts), np.einsum("bchw,c->b", a, v) / 20, rtol=1e-5)
    target = np.ones_like(a[:1])
    np.testing.assert_allclose(optvis.match("conv", torch.from_numpy(target))(acts),
                               -((a - target) ** 2).reshape(2, -1).mean(1), rtol=1e-6)
    flat = a.reshape(2, 3, -1)
    gram = np.einsum("bcp,bdp->bcd", flat, flat) / (3 * 20)
    np.testing.assert_allclose(obj.gram(acts["conv"]), gram, rtol=1e-5)
    np.testing.assert_allclose(optvis.gram_match("conv", torch.zeros(1, 3, 3))(acts),
                               -(gram ** 2).reshape(2, -1).mean(1), rtol=1e-5)
    tv = np.abs(np.diff(x, axis=2)).reshape(2, -1).mean(1) + np.abs(np.diff(x, axis=3)).reshape(2, -1).mean(1)
    np.testing.assert_allclose(optvis.total_variation()(acts), -tv, rtol=1e-5)


def test_objective_algebra_and_batch_selection():
    acts = _acts()
    a, b = optvis.channel("conv", 0), optvis.class_logit(1)
    combined = 2 * a - b / 4 + (-a) + sum([a, b])
    expected = 2 * a(acts) - b(acts) / 4 - a(acts) + a(acts) + b(acts)
    torch.testing.assert_close(combined(acts), expected)
    assert combined.layers == ("conv", obj.OUTPUT)
    assert "channel conv:0" in repr(combined)
    selected = optvis.channel("conv", 0, batch=1)(acts)
    assert selected[0] == 0 and selected[1] == a(acts)[1]
    with pytest.raises(TypeError):
        a * "2"


def test_objective_checks_name_the_index_and_the_size():
    acts = _acts()
    with pytest.raises(ValueError, match=r"channel 3 out of range: layer 'conv' has 3 channels"):
        optvis.channel("conv", 3).check(acts)
    with pytest.raises(ValueError, match=r"class 4 out of range: the model has 4 classes"):
        (optvis.channel("conv", 0) + optvis.class_logit(4)).check(acts)
    with pytest.raises(ValueError, match=r"position \(x=5, y=0\) out of range: layer 'conv' is 4×5"):
        optvis.neuron("conv", 0, x=5, y=0).check(acts)
    with pytest.raises(ValueError, match=r"batch 2 out of range"):
        optvis.channel("conv", 0, batch=2).check(acts)
    with pytest.raises(ValueError, match=r"the vector has 2 entries; layer 'conv' has 3 channels"):
        optvis.direction("conv", [1.0, 2.0]).check(acts)
    with pytest.raises(ValueError, match=r"channel -1 out of range"):
        optvis.channel("conv", -1)
    with pytest.raises(TypeError, match=r"expected channel to be an int"):
        optvis.channel("conv", 1.5)


def test_batched_objectives_equal_the_sums_of_one_objective_per_image_and_their_gradients():
    g = torch.Generator().manual_seed(1)
    conv, out = torch.randn(5, 3, 4, 5, generator=g), torch.randn(5, 4, generator=g)
    a, o = conv.numpy().astype(np.float64), out.numpy().astype(np.float64)
    acts = {"conv": conv, obj.OUTPUT: out}
    # Images 3, 0, 4 get channels 2, 0, 2; images 1 and 2 nothing (0).
    expected = np.zeros(5)
    expected[[3, 0, 4]] = [a[3, 2].mean(), a[0, 0].mean(), a[4, 2].mean()]
    np.testing.assert_allclose(optvis.channel_batch("conv", [2, 0, 2], [3, 0, 4])(acts), expected, rtol=1e-6)
    log_p = o - np.log(np.exp(o).sum(1, keepdims=True))
    expected = np.zeros(5)
    expected[[1, 2]] = [log_p[1, 3], log_p[2, 0]]
    np.testing.assert_allclose(optvis.class_batch([3, 0], [1, 2])(acts), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(optvis.class_batch([1, 2, 3], kind="logit")(acts)[:3], [o[0, 1], o[1, 2], o[2, 3]])
    # The same gradient as the sum it replaces.
    for batched, summed in (
        (optvis.channel_batch("conv", [2, 0, 2], [3, 0, 4]),
         sum(optvis.channel("conv", c, batch=b) for c, b in ((2, 3), (0, 0), (2, 4)))),
        (optvis.class_batch([3, 0], [1, 2]), optvis.class_log_probability(3, batch=1) + optvis.class_log_probability(0, batch=2)),
    ):
        grads = []
        for objective in (batched, summed):
            leaves = {k: v.clone().requires_grad_() for k, v in acts.items()}
            objective(leaves).sum().backward()
            grads.append([leaves[k].grad if leaves[k].grad is not None else torch.zeros_like(v) for k, v in acts.items()])
        for mine, theirs in zip(*grads):
            torch.testing.assert_close(mine, theirs)


def test_batched_objectives_refuse_bad_targets_by_name():
    acts = _acts()
    with pytest.raises(ValueError, match=r"channel_batch\('conv', \[0, 3\]\): channel 3 out of range: layer 'conv' has 3"):
        optvis.channel_batch("conv", [0, 3]).check(acts)
    with pytest.raises(ValueError, match=r"class 4 out of range: the model has 4 classes"):
        optvis.class_batch([4]).check(acts)
    with pytest.raises(ValueError, match=r"batch 2 out of range"):
        optvis.class_batch([0], [2]).check(acts)
    with pytest.raises(ValueError, match=r"batch indices \[1, 1\] repeat"):
        optvis.class_batch([0, 1], [1, 1])
    with pytest.raises(ValueError, match=r"one batch index per class"):
        optvis.class_batch([0, 1], [0])
    with pytest.raises(ValueError, match=r"expected kind 'log_probability' or 'logit'"):
        optvis.class_batch([0], kind="probability")
    with pytest.raises(TypeError, match=r"expected channel to be an int"):
        optvis.channel_batch("conv", [1.5])


def _numpy_fourier(spectrum: np.ndarray, h: int, w: int) -> np.ndarray:
    """lucid's fft_image in numpy: scale by 1/max(f, 1/max(h, w)), inverse real FFT (orthonormal), / 4."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    scale = 1.0 / np.maximum(np.sqrt(fx ** 2 + fy ** 2), 1.0 / max(h, w))
    coefficients = (spectrum[..., 0] + 1j * spectrum[..., 1]) * scale
    return np.fft.irfft2(coefficients, s=(h, w), norm="ortho") / 4.0


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 3, 7, 9), (1, 1, 6, 5)])
def test_fourier_image_is_lucids_fft_image(shape):
    image = optvis.fourier_image(shape, seed=3, sd=0.5)
    spectrum = image.spectrum.detach().double().numpy()
    t = _numpy_fourier(spectrum, *shape[2:])
    if shape[1] == 3:
        t = np.einsum("bchw,dc->bdhw", t, COLOR_CORRELATION.double().numpy())
    expected = 1 / (1 + np.exp(-t))
    np.testing.assert_allclose(image().detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    # Every image of the batch starts from the same noise; another seed gives another.
    first = image().detach()
    assert torch.equal(first[0], first[-1])
    assert not torch.allclose(optvis.fourier_image(shape, seed=4, sd=0.5)(), first)


def test_decorrelation_matrix_is_lucids_normalised_svd_sqrt():
    svd_sqrt = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    np.testing.assert_allclose(COLOR_CORRELATION.numpy() * np.linalg.norm(svd_sqrt, axis=0).max(), svd_sqrt, rtol=1e-6)


@pytest.mark.parametrize("make", [optvis.pixel_image, optvis.fourier_image])
@pytest.mark.parametrize("channels", [1, 3])
def test_an_initial_image_is_reproduced_exactly(make, channels):
    init = torch.rand(1, channels, 9, 10, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    param = make((2, channels, 9, 10), init=init)
    torch.testing.assert_close(param().detach(), init.expand(2, -1, -1, -1), atol=2e-5, rtol=0)
    pixels = make((1, channels, 9, 10), seed=0)()
    assert pixels.min() >= 0 and pixels.max() <= 1


def test_param_errors():
    with pytest.raises(ValueError, match=r"decorrelate=True needs 3 channels"):
        optvis.pixel_image((1, 1, 4, 4), decorrelate=True)
    with pytest.raises(ValueError, match=r"expected an image shape \(B, C, H, W\)"):
        optvis.fourier_image((3, 4, 4))
    with pytest.raises(ValueError, match=r"init must be an image in \[0, 1\]"):
        optvis.pixel_image((1, 1, 4, 4), init=torch.full((1, 4, 4), 2.0))
    with pytest.raises(ValueError, match=r"init has shape \[1, 1, 5, 4\]"):
        optvis.pixel_image((1, 1, 4, 4), init=torch.zeros(1, 5, 4))


def test_transforms_against_direct_indexing():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 10, 12, generator=g)
    padded = T.pad(2)(x, g)
    assert padded.shape == (2, 3, 14, 16) and torch.all(padded[..., :2, :] == 0.5)
    assert torch.equal(padded[..., 2:-2, 2:-2], x)
    # jitter(d) is a crop of d pixels at the offsets the generator draws.
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    dy, dx = (int(v) for v in torch.randint(4, (2,), generator=g2))
    assert torch.equal(T.jitter(3)(x, g1), x[..., dy: dy + 7, dx: dx + 9])
    # A 90° rotation of a square image moves pixel centres onto pixel centres: rot90 exactly.
    square = torch.rand(1, 2, 8, 8, generator=g)
    rotated = T.random_rotate([90])(square, g)
    torch.testing.assert_close(rotated, torch.rot90(square, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    assert torch.equal(T.random_rotate([0])(square, g), square)
    assert T.random_scale([1.5])(x, g).shape == (2, 3, 15, 18)
    assert torch.equal(T.random_scale([1.0])(x, g), x)


def test_standard_transforms_are_lucids_at_128_pixels_and_scale_with_size():
    at128 = T.standard_transforms(128)
    assert [t.width if isinstance(t, T.Pad) else t.d for t in at128 if isinstance(t, (T.Pad, T.Jitter))] == [12, 8, 4]
    assert at128[0].value == 0.5
    assert at128[2].scales == [1 + (i - 5) / 50 for i in range(11)]
    assert at128[3].angles == [float(a) for a in list(range(-10, 11)) + 5 * [0]]
    at64 = T.standard_transforms(64)
    assert [at64[0].width, at64[1].d, at64[4].d] == [6, 4, 2]
    # Reproducible under the generator's seed.
    x = torch.rand(1, 3, 32, 32)
    run = [T.compose(T.standard_transforms(32))(x, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(run[0], run[1]) and (run[0].shape != run[2].shape or not torch.equal(run[0], run[2]))
    assert math.isclose(at64[2].scales[0], 0.9)
