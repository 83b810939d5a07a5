"""Response maps from any matrix: from_responses, add_neurons and metric= (issue 24)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from nsp import NeuralResponseMap
from nsp.response_map import metric_vectors
from nsp.response_map.responses import choose_layers, record
from test_response_map import digits, planted, small_cnn

pytest.importorskip("openTSNE")

LAYERS = ["1", "3", "6"]


@pytest.fixture(scope="module")
def digits_matrix():
    """The digits CNN's recorded neuron x input matrix and the map the model path fits on it."""
    net, x = small_cnn(), digits(120)
    nrm = NeuralResponseMap(net, seed=3, resolution=32)
    nrm.train_map(x, LAYERS)
    values, _ = record(net, choose_layers(net, LAYERS, x[:1], "test"), x, "channels", 256, "test")
    return nrm, values.T


def test_from_responses_gives_the_model_paths_layout_under_the_same_seed(digits_matrix):
    nrm, matrix = digits_matrix
    from_matrix = NeuralResponseMap.from_responses(torch.as_tensor(matrix), seed=3, resolution=32)
    np.testing.assert_allclose(from_matrix.layout, nrm.layout, rtol=0, atol=1e-9)
    assert [i for _, i in from_matrix.neurons] == [j for j, varies in enumerate(matrix.max(1) > matrix.min(1)) if varies]
    assert from_matrix.map_values(np.linspace(0, 1, len(from_matrix.layout)), "linear").shape == (32, 32)
    with pytest.raises(RuntimeError, match="made from a response matrix.*map_values"):
        from_matrix.generate_map(digits(2))


def test_from_responses_validates_the_matrix_and_names():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(12, 30))
    with pytest.raises(ValueError, match=r"shape \(neurons, inputs\), got \[12\]"):
        NeuralResponseMap.from_responses(m[:, 0])
    with pytest.raises(TypeError, match="real numpy array or tensor, got list"):
        NeuralResponseMap.from_responses(m.tolist())
    bad = m.copy()
    bad[[2, 7], 4] = np.nan
    with pytest.raises(ValueError, match=r"rows 2, 7 of `matrix` hold NaN or infinite values"):
        NeuralResponseMap.from_responses(bad)
    with pytest.raises(ValueError, match=r"got 3 name\(s\) for 12 rows"):
        NeuralResponseMap.from_responses(m, names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"got 2 input\(s\); at least 3"):
        NeuralResponseMap.from_responses(m[:, :2])
    with pytest.raises(ValueError, match="one of .*'cosine'.*got 'kendall'"):
        NeuralResponseMap.from_responses(m, metric="kendall")
    named = NeuralResponseMap.from_responses(m, names=[f"n{i}" for i in range(12)], perplexity=3, resolution=8)
    assert named.neurons[:2] == [("n0", 0), ("n1", 1)] and named.layers == []


def test_metric_vectors_dot_products_are_pearson_and_cosine():
    x = np.random.default_rng(1).normal(size=(40, 6)) + 0.5
    pearson, cosine = metric_vectors(x, "pearson"), metric_vectors(x, "cosine")
    np.testing.assert_allclose(pearson[0] @ pearson[3], pearsonr(x[:, 0], x[:, 3])[0], atol=1e-12)
    np.testing.assert_allclose(cosine @ cosine.T, (x.T @ x) / np.outer(*[np.linalg.norm(x, axis=0)] * 2), atol=1e-12)
    with pytest.raises(ValueError, match="zero over the inputs"):
        metric_vectors(np.zeros((5, 2)), "cosine")


@pytest.mark.parametrize("metric", ["spearman", "pearson", "cosine"])
def test_every_metric_keeps_planted_groups_together(metric):
    net, x, groups = planted(groups=4, size=20, inputs=100)
    nrm = NeuralResponseMap(net, metric=metric, resolution=8)
    layout = nrm.train_map(x, ["0"])
    d = ((layout[:, None] - layout[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :5]
    assert (groups[nearest] == groups[:, None]).mean() >= 0.9


def test_add_neurons_places_copies_of_laid_out_neurons_where_they_are(digits_matrix):
    _, matrix = digits_matrix
    nrm = NeuralResponseMap.from_responses(matrix, seed=3, resolution=32)
    before = nrm.layout.copy()
    rows = [i for _, i in nrm.neurons][:10]
    placed = nrm.add_neurons(matrix[rows] * 2 + 1)  # a monotone copy has the same ranks
    np.testing.assert_array_equal(nrm.layout, before)
    d = ((placed[:, None] - before[None]) ** 2).sum(-1)
    # Each copy lands closer to its original than to 90 % of the other neurons.
    rank = (d < d[np.arange(10), np.arange(10)][:, None]).sum(axis=1)
    assert (rank <= 0.1 * len(before)).all(), rank
    with pytest.raises(ValueError, match=r"expected `responses` of shape \(M, 120\)"):
        nrm.add_neurons(matrix[:3, :50])
    with pytest.raises(ValueError, match="constant"):
        nrm.add_neurons(np.ones((2, 120)))
    nrm.circle_projection()
    with pytest.raises(RuntimeError, match="fitted in this session"):
        nrm.add_neurons(matrix[rows])
