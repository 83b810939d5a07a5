"""nsp.NeuralResponseMap: the seed's calls, the layout's meaning, griddata semantics, errors.

References are our own, dense and obviously right: ``scipy.stats.spearmanr``'s full matrix,
``scipy.interpolate.griddata`` on the same grid, the original's CircleProjection formula
read point by point from an untouched copy, and hand-computed channel means.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from scipy.interpolate import griddata
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from torch import nn

from nsp import NeuralResponseMap
from nsp.response_map import spearman_vectors, to_rgb
from nsp.response_map.layout import circle_projection


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 24),
        nn.Tanh(),
        nn.Linear(24, 10),
    )


def digits(n: int = 120) -> torch.Tensor:
    from sklearn.datasets import load_digits

    x = load_digits().data[:n].reshape(-1, 1, 8, 8) / 16.0
    return torch.tensor(x, dtype=torch.float32)


def planted(groups: int = 8, size: int = 40, inputs: int = 200, noise: float = 0.5, seed: int = 0):
    """A linear layer whose neuron i copies hidden signal g(i) plus its own noise input."""
    n = groups * size
    g = np.repeat(np.arange(groups), size)
    weight = torch.zeros(n, groups + n)
    weight[torch.arange(n), torch.as_tensor(g)] = 1.0
    weight[torch.arange(n), groups + torch.arange(n)] = noise
    layer = nn.Linear(groups + n, n, bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    net = nn.Sequential(layer, nn.Identity())
    x = torch.randn(inputs, groups + n, generator=torch.Generator().manual_seed(seed))
    return net, x, g


def test_seed_readme_calls(tmp_path, monkeypatch):
    """The seed README's calls, with its arguments, on a PyTorch CNN; the image files checked."""
    import matplotlib.image

    monkeypatch.chdir(tmp_path)
    model = small_cnn()
    inputs = digits()
    nrm = NeuralResponseMap(model)
    nrm.TrainMap(inputs, list(model.children())[:2])
    assert nrm.layers == ["0", "1"] and len(nrm.layout) == 16
    figure = nrm.GenerateMap(inputs[1:2])
    figure.savefig("one.png")
    nrm.GenerateMap(inputs, method="linear", file="map.png")
    nrm.CircleProjection()
    nrm.GenerateMap(inputs[1:2], file="circle.png")

    viridis = to_rgb(np.linspace(0, 1, 256)[None, :])[0].astype(float) / 255
    for name in ["one.png", "map.png", "circle.png"]:
        image = matplotlib.image.imread(tmp_path / name)[..., :3]
        assert image.shape[:2] == (500, 500)  # size=(5, 5) inches at 100 dpi
        pixels = image.reshape(-1, 3)
        coloured = pixels[np.abs(pixels - 1).max(axis=1) > 0.02]
        assert len(coloured) > 0.2 * len(pixels), name  # the map, not an empty figure
        # Every drawn pixel is a viridis colour (antialiased edges aside): the map, vmin 0, vmax 1.
        distance = np.abs(coloured[:, None, :] - viridis[None, ::8, :]).max(axis=2).min(axis=1)
        assert np.mean(distance < 0.05) > 0.97, name
    # The mean map over all inputs is not the map of one input.
    assert not np.array_equal(nrm.generate_map(inputs[1:2]), nrm.generate_map(inputs))


def test_spearman_vectors_against_scipy():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=(40, 12)).astype(float)  # many ties
    x[:, 3] = np.exp(rng.normal(size=40))
    u = spearman_vectors(x)
    rho = spearmanr(x)[0]
    np.testing.assert_allclose(u @ u.T, rho, atol=1e-12)
    d2 = ((u[:, None] - u[None]) ** 2).sum(-1)
    np.testing.assert_allclose(d2, 2 * (1 - rho), atol=1e-12)
    with pytest.raises(ValueError, match="constant"):
        spearman_vectors(np.ones((5, 3)))


@pytest.fixture(scope="module")
def planted_map():
    net, x, groups = planted()
    nrm = NeuralResponseMap(net)
    nrm.train_map(x, ["0"])
    return nrm, x, groups


def test_planted_groups_are_neighbours(planted_map):
    """≥ 90 % of each neuron's 10 nearest map neighbours come from its own group."""
    nrm, _, groups = planted_map
    layout = nrm.layout
    assert [i for _, i in nrm.neurons] == list(range(len(groups)))
    d = ((layout[:, None] - layout[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :10]
    share = (groups[nearest] == groups[:, None]).mean()
    assert share >= 0.9, share


def test_trustworthiness_against_correlation_distance(planted_map):
    from sklearn.manifold import trustworthiness

    nrm, x, _ = planted_map
    values = nrm.model[0](x).detach().numpy()
    distance = 1 - spearmanr(values)[0]  # the dense N×N reference, small N only
    np.fill_diagonal(distance, 0)
    score = trustworthiness(distance, nrm.layout, n_neighbors=10, metric="precomputed")
    assert score >= 0.9, score


def test_layout_is_reproducible_and_scaled(planted_map):
    nrm, x, _ = planted_map
    again = NeuralResponseMap(nrm.model).train_map(x, ["0"])
    np.testing.assert_array_equal(again, nrm.layout)
    other = NeuralResponseMap(nrm.model, seed=1).train_map(x, ["0"])
    assert not np.array_equal(other, nrm.layout)
    np.testing.assert_allclose(nrm.layout.min(axis=0), [-1, -1])
    np.testing.assert_allclose(nrm.layout.max(axis=0), [1, 1])


def test_a_shorter_schedule_is_openTSNEs_with_those_iterations_and_keeps_the_planted_groups(planted_map):
    from sklearn.manifold import trustworthiness

    nrm, x, groups = planted_map
    full = NeuralResponseMap(nrm.model).train_map(x, ["0"], iterations=(250, 500))
    np.testing.assert_array_equal(full, nrm.layout)  # openTSNE's own schedule is the default
    short = NeuralResponseMap(nrm.model).train_map(x, ["0"], iterations=(100, 150))
    assert not np.array_equal(short, full)
    # ResponseMapAnalysis's schedule still puts each planted group together, judged against the
    # dense correlation distance.
    d = ((short[:, None] - short[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (groups[np.argsort(d, axis=1)[:, :10]] == groups[:, None]).mean() >= 0.9
    values = nrm.model[0](x).detach().numpy()
    distance = 1 - spearmanr(values)[0]
    np.fill_diagonal(distance, 0)
    assert trustworthiness(distance, short, n_neighbors=10, metric="precomputed") >= 0.9
    for bad in [(100,), (100, 0), (-1, 10), (1.5, 10), "250"]:
        with pytest.raises(ValueError, match=r"train_map: expected `iterations` to be None or two ints"):
            NeuralResponseMap(nrm.model).train_map(x, ["0"], iterations=bad)


@pytest.mark.parametrize("method", ["linear", "nearest"])
def test_maps_equal_griddata(planted_map, method):
    """A map is griddata on the layout's grid, with row 0 at the top (no vertical flip)."""
    nrm, _, _ = planted_map
    nrm = _copy_with_resolution(nrm, 150)
    values = np.random.default_rng(2).random(len(nrm.layout))
    ours = nrm.map_values(values, method)
    layout = nrm.layout
    gx, gy = np.meshgrid(
        np.linspace(layout[:, 0].min(), layout[:, 0].max(), 150),
        np.linspace(layout[:, 1].min(), layout[:, 1].max(), 150),
    )
    expected = griddata(layout, values, (gx, gy), method=method)
    if method == "nearest":  # the original blanks 'nearest' outside the convex hull
        expected[np.isnan(griddata(layout, values, (gx, gy), method="linear"))] = np.nan
    np.testing.assert_allclose(ours, expected[::-1], atol=1e-12, equal_nan=True)
    # No vertical flip: interpolating each neuron's own y gives y, falling from the top row down.
    heights = nrm.map_values(layout[:, 1], "linear")
    rows = np.broadcast_to(np.linspace(layout[:, 1].max(), layout[:, 1].min(), 150)[:, None], heights.shape)
    finite = np.isfinite(heights)
    np.testing.assert_allclose(heights[finite], rows[finite], atol=1e-9)


def _copy_with_resolution(nrm: NeuralResponseMap, resolution: int) -> NeuralResponseMap:
    import copy

    other = copy.copy(nrm)
    other.resolution, other._grid = resolution, None
    return other


def test_responses_are_scaled_channel_means():
    model = small_cnn()
    x = digits(60)
    nrm = NeuralResponseMap(model)
    nrm.train_map(x, ["2"])
    with torch.no_grad():
        conv = model[2](model[1](model[0](x))).mean(dim=(2, 3)).double().numpy()
    lo, hi = conv.min(0), conv.max(0)
    keep = hi > lo
    expected = np.clip((conv[:7] - lo) / np.where(keep, hi - lo, 1), 0, 1).mean(0)[keep]
    np.testing.assert_allclose(nrm.responses(x[:7]), expected, atol=1e-6)
    assert nrm.neurons == [("2", int(c)) for c in np.flatnonzero(keep)]

    # rescale: the range over other inputs, for the same neurons and layout.
    layout = nrm.layout.copy()
    nrm.rescale(x[:20])
    lo, hi = conv[:20].min(0)[keep], conv[:20].max(0)[keep]
    expected = np.clip((conv[:7][:, keep] - lo) / np.where(hi > lo, hi - lo, 1), 0, 1).mean(0)
    np.testing.assert_allclose(nrm.responses(x[:7]), expected, atol=1e-6)
    np.testing.assert_array_equal(nrm.layout, layout)

    units = NeuralResponseMap(model, units="all")
    units.train_map(x, ["0"])
    assert len(units.layout) > 8 * 8 * 4  # one neuron per element, not per channel
    assert all(name == "0" and 0 <= i < 8 * 8 * 8 for name, i in units.neurons)


def test_default_layers_leave_out_the_output():
    model = small_cnn()
    nrm = NeuralResponseMap(model)
    nrm.train_map(digits(60))
    assert nrm.layers == [str(i) for i in range(7)]  # model.layers[1:-1]'s meaning: not the logits


def test_circle_projection_is_order_independent():
    rng = np.random.default_rng(3)
    layout = rng.uniform(-1, 1, size=(300, 2))
    ours = circle_projection(layout)
    # The original's formula, each point's sector extent read from the untouched layout.
    sector = np.round((np.arctan2(layout[:, 1], layout[:, 0]) + np.pi) / (2 * np.pi), 2)
    expected = np.array(
        [p / np.linalg.norm(np.abs(layout[sector == s]).max(axis=0)) for p, s in zip(layout, sector)]
    )
    np.testing.assert_allclose(ours, expected, atol=1e-12)
    order = rng.permutation(300)
    np.testing.assert_allclose(circle_projection(layout[order]), ours[order], atol=1e-12)
    assert np.linalg.norm(ours, axis=1).max() <= 1 + 1e-12

    # The original overwrote points while reading them: its result depended on their order.
    def original(points):
        points = points.copy()
        angles = np.round((np.arctan2(points[:, 1], points[:, 0]) + np.pi) / (2 * np.pi), 2)
        for i in range(len(points)):
            points[i] = points[i] / np.sqrt(sum(np.abs(points[angles == angles[i]]).max(axis=0) ** 2))
        return points

    assert not np.allclose(original(layout[order]), original(layout)[order])


def test_refit_keeps_layout_aligned(planted_map):
    nrm, x, _ = planted_map
    import copy

    other = copy.deepcopy(nrm)
    before = other.layout.copy()
    disparity = other.refit(x, n_iter=50)
    assert disparity < 0.01, disparity
    assert other.layout.shape == before.shape


def test_train_mode_restored_and_tuple_layer_rejected():
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 3))
    model.train()
    nrm = NeuralResponseMap(model)
    nrm.train_map(torch.randn(30, 4))
    assert model.training and model[1].training
    lstm = nn.LSTM(4, 8, batch_first=True)
    with pytest.raises(TypeError, match="returned tuple"):
        NeuralResponseMap(nn.Sequential(lstm)).train_map(torch.randn(10, 5, 4), ["0"])


def test_bad_input_errors():
    model = small_cnn()
    x = digits(40)
    nrm = NeuralResponseMap(model)
    with pytest.raises(RuntimeError, match="call TrainMap"):
        nrm.GenerateMap(x[1:2])
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        nrm.TrainMap(x, ["conv9"])
    with pytest.raises(ValueError, match="not a submodule"):
        nrm.TrainMap(x, [nn.ReLU()])
    with pytest.raises(ValueError, match="at least 3 are needed"):
        nrm.TrainMap(x[:2], ["0"])
    with pytest.raises(ValueError, match=r"failed on `inputs` of shape \[40, 1, 7, 7\]"):
        nrm.TrainMap(x[:, :, :7, :7], ["0"])
    with pytest.raises(TypeError, match="torch.Tensor"):
        nrm.TrainMap(x.numpy(), ["0"])
    nrm.TrainMap(x, ["0", "1"])
    with pytest.raises(ValueError, match=r"shape \(B, 1, 8, 8\)"):
        nrm.GenerateMap(x[1])
    with pytest.raises(ValueError, match="'nearest' or 'linear'"):
        nrm.GenerateMap(x[1:2], method="cubic")
    with pytest.raises(ValueError, match="unknown colormap"):
        nrm.GenerateMap(x[1:2], cmap="no-such-map")
    dead = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        dead[0].bias.fill_(-100.0)
    with pytest.raises(ValueError, match="only 0 of 8 neurons vary"):
        NeuralResponseMap(dead).TrainMap(torch.rand(20, 3), ["1"])


def test_missing_opentsne_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openTSNE", None)
    with pytest.raises(ImportError, match=r"nsp-lightning\[response-maps\]"):
        NeuralResponseMap(small_cnn()).TrainMap(digits(30), ["0"])


def test_torchvision_resnet_layers():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=10)
    x = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    nrm = NeuralResponseMap(model)
    layout = nrm.train_map(x, ["layer1", "layer2.1.conv2"])
    assert nrm.layers == ["layer1", "layer2.1.conv2"]
    assert len(layout) == len(nrm.neurons) <= 64 + 128
    assert np.isfinite(nrm.generate_map(x[:1], method="linear")).any()


def test_refit_after_drift_stays_closer_than_a_fit_from_scratch(planted_map):
    """Weights drift: a refit from the previous layout moves neurons less than a new fit."""
    import copy

    from scipy.spatial import procrustes

    nrm, x, _ = planted_map
    drifted = copy.deepcopy(nrm)
    with torch.no_grad():
        weight = drifted.model[0].weight
        weight.add_(0.2 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(5)) * (weight != 0))
    refitted = drifted.refit(x)
    scratch = NeuralResponseMap(drifted.model, seed=3).train_map(x, ["0"])
    from_scratch = procrustes(nrm.layout, scratch)[2]
    assert refitted < from_scratch / 3, (refitted, from_scratch)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(3, 30),
    st.integers(2, 8),
    st.integers(0, 2**31 - 1),
    st.sampled_from([2, 5, 1000]),
)
def test_spearman_vectors_random(inputs, neurons, seed, levels):
    x = np.random.default_rng(seed).integers(0, levels, size=(inputs, neurons)).astype(float)
    x[0] = levels + np.arange(neurons)  # above every other value, and x[1] below: no constant neuron
    x[1] = -1.0
    u = spearman_vectors(x)
    rho = np.atleast_2d(spearmanr(x)[0])
    np.testing.assert_allclose(u @ u.T, rho if neurons > 2 else np.array([[1, rho[0, 0]], [rho[0, 0], 1]]), atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(5, 200), st.integers(0, 2**31 - 1))
def test_circle_projection_random_layouts(n, seed):
    rng = np.random.default_rng(seed)
    layout = rng.normal(size=(n, 2)) * rng.uniform(0.1, 3, size=2)
    ours = circle_projection(layout)
    order = rng.permutation(n)
    np.testing.assert_allclose(circle_projection(layout[order]), ours[order], atol=1e-12)
    assert np.linalg.norm(ours, axis=1).max() <= 1 + 1e-12
    # Angles are kept: each point moves along its own ray.
    np.testing.assert_allclose(np.arctan2(ours[:, 1], ours[:, 0]), np.arctan2(layout[:, 1], layout[:, 0]), atol=1e-12)


def test_layer_regions_are_the_nearest_neurons_layers_on_the_maps_grid():
    """Against a dense search: every grid point's distance to every neuron."""
    from image_text import has_text

    from nsp.response_map import layer_regions, map_card

    rng = np.random.default_rng(0)
    layout, layer = rng.normal(size=(40, 2)), rng.integers(0, 3, 40)
    inside = rng.random((24, 24)) < 0.8
    regions = layer_regions(layout, layer, inside)
    xs = np.linspace(layout[:, 0].min(), layout[:, 0].max(), 24)
    ys = np.linspace(layout[:, 1].max(), layout[:, 1].min(), 24)  # row 0 at the top, as the maps
    for r in range(24):
        for c in range(24):
            nearest = np.argmin(((layout - [xs[c], ys[r]]) ** 2).sum(1))
            assert regions[r, c] == (layer[nearest] if inside[r, c] else -1)
    grid = np.where(inside, rng.random((24, 24)), np.nan)
    card = map_card(grid, regions, ["conv", "relu", "fc"], title=["probe 0 · label 3"], counts=[5, 30, 5],
                    bar_label="scaled")
    for line in ("probe 0 · label 3", "conv (5)", "relu (30)", "fc (5)", "0", "1", "scaled", "response"):
        assert has_text(card, line), line
    with pytest.raises(ValueError, match="map_card"):
        map_card(grid, regions[:-1], ["conv", "relu", "fc"])
    with pytest.raises(ValueError, match="layer_regions"):
        layer_regions(layout, layer[:-1], inside)
