"""Tests of the Chebyshev band energies (nsp.transforms.laplacian_bands).

Band energies are compared with the dense ``LaplacianTransform``, with
band edges placed between eigenvalue clusters, and the documented error bound is checked
where it is tight: on diagonal operators whose eigenvalues sit exactly at the ends of the
gaps around the edges.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import aslinearoperator

import nsp
from nsp.transforms.laplacian import LaplacianSizeError, LaplacianTransform
from nsp.transforms.laplacian_bands import MAX_ORDER, LaplacianBands
from nsp.transforms.laplacian_operator import LaplacianOperator
from test_laplacian_operator import INCL, NETWORKS, graph_and_signal, reference_laplacian


def edges_between_clusters(transform: LaplacianTransform, bound: float, count: int) -> tuple[np.ndarray, float]:
    """Edges at the midpoints of the `count` widest gaps between clusters, and the least
    distance from any eigenvalue to an inner edge."""
    centres = transform.cluster_eigenvalues
    widest = np.sort(np.argsort(-np.diff(centres))[:count])
    inner = (centres[widest] + centres[widest + 1]) / 2
    distance = float(np.min(np.abs(transform.eigenvalues[:, None] - inner[None, :])))
    return np.concatenate([[0.0], inner, [bound]]), distance


def diagonal_bands(eigenvalues: np.ndarray, bound: float) -> LaplacianBands:
    return LaplacianBands(aslinearoperator(sp.diags_array(eigenvalues)), bound=bound)


# --- band energies against the dense transform --------------------------------------------


@pytest.mark.parametrize("incl", INCL)
@pytest.mark.parametrize("name", NETWORKS)
def test_band_energies_match_dense_transform(name: str, incl: bool) -> None:
    graph, s, _ = graph_and_signal(name, incl)
    dense = LaplacianTransform(graph.adjacency())
    op = LaplacianOperator(graph.structure)
    assert dense.eigenvalues[-1] <= op.spectrum_bound * (1 + 1e-12)
    assert op.spectrum_bound <= 2 * op.degrees.max()
    bands = LaplacianBands(op)
    edges, distance = edges_between_clusters(dense, bands.bound, 6)
    total = float(s @ s)
    tol = 1e-6
    estimate = bands.band_energies(s, edges, gap=distance, tol=tol)
    exact = dense.band_energies(s, edges)
    assert np.all(np.abs(estimate - exact) <= tol * total + 1e-12 * total)
    # The cumulative energies of the dense transform at the same boundaries.
    cumulative = dense.cumulative_energies(s)
    last_below = np.searchsorted(dense.cluster_eigenvalues, edges[1:], side="right") - 1
    np.testing.assert_allclose(np.cumsum(estimate), cumulative[last_below], rtol=0, atol=tol * total * len(estimate))


@pytest.mark.parametrize("name", ["readme_net", "pruned_cnn"])
def test_default_gaps_keep_the_guarantee(name: str) -> None:
    # Log-spaced edges at half-integers, default gaps and tolerance: the error of each band
    # is at most tol ||s||^2 plus the energy at eigenvalues inside the gaps of its edges.
    graph, s, _ = graph_and_signal(name, True)
    dense = LaplacianTransform(graph.adjacency())
    bands = LaplacianBands(LaplacianOperator(graph.structure))
    edges = np.array([0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, bands.bound])
    gaps = bands.gaps(edges)
    np.testing.assert_allclose(gaps[1:-1], [0.125, 0.25, 0.5, 1.0, 2.0, 4.0])
    coefficients = dense.forward(s)
    inside = np.abs(dense.eigenvalues[:, None] - edges[None, 1:-1]) < gaps[None, 1:-1]
    inside = np.pad(inside, ((0, 0), (1, 1)))
    near = np.array([np.sum(coefficients[inside[:, b] | inside[:, b + 1]] ** 2) for b in range(edges.size - 1)])
    error = np.abs(bands.band_energies(s, edges) - dense.band_energies(s, edges))
    total = float(s @ s)
    assert np.all(error <= 1e-3 * total + near + 1e-12 * total)


@pytest.mark.parametrize("incl", INCL)
def test_bands_spanning_the_spectrum_sum_to_the_signal_energy(incl: bool) -> None:
    graph, s, _ = graph_and_signal("conv_relu_maxpool2d", incl)
    bands = LaplacianBands(LaplacianOperator(graph.structure))
    for edges in ([0.0, bands.bound], [-1.0, 2.5, 7.5, 1e6], np.linspace(0, bands.bound, 9)):
        assert bands.band_energies(s, edges).sum() == pytest.approx(float(s @ s), rel=1e-12)


def test_moments_match_the_eigendecomposition() -> None:
    graph, s, ref = graph_and_signal("readme_net", True)
    lam, u = np.linalg.eigh(reference_laplacian(ref))
    bands = LaplacianBands(LaplacianOperator(graph.structure))
    order = 41
    mu = bands.moments(s, order)
    x = 2 * lam / bands.bound - 1
    expected = np.cos(np.arange(order + 1)[:, None] * np.arccos(np.clip(x, -1, 1))[None, :]) @ (u.T @ s) ** 2
    np.testing.assert_allclose(mu, expected, rtol=0, atol=1e-12 * float(s @ s) * order)
    assert mu[0] == pytest.approx(float(s @ s), rel=1e-15)


def test_batch_equals_stack_of_singles() -> None:
    graph, s, _ = graph_and_signal("pruned_cnn", False)
    bands = LaplacianBands(LaplacianOperator(graph.structure))
    batch = np.stack([s, -2 * s, np.random.default_rng(1).standard_normal(s.size)])
    edges = [0.0, 1.5, 4.5, bands.bound]
    together = bands.band_energies(batch, edges)
    assert together.shape == (3, 3)
    for row, signal in zip(together, batch):
        np.testing.assert_allclose(row, bands.band_energies(signal, edges), rtol=1e-13, atol=1e-13 * row.sum())
    np.testing.assert_allclose(together[1], 4 * together[0], rtol=1e-12)
    moments = bands.moments(batch, 10)
    assert moments.shape == (3, 11)
    np.testing.assert_allclose(bands.energies_from_moments(moments, [0.0, 1.0, bands.bound]).sum(axis=1),
                               np.sum(batch**2, axis=1), rtol=1e-13)


def test_large_graph_beyond_the_dense_transform() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 20 * 20, 10)).eval()
    torch.manual_seed(0)
    acts = nsp.Activations(net, torch.randn(1, 1, 40, 40))
    graph = nsp.NNGraph(acts)
    with pytest.raises(LaplacianSizeError):
        LaplacianTransform(graph.adjacency())
    bands = LaplacianBands(LaplacianOperator(graph.structure))
    s = acts.to_numpy()
    energies = bands.band_energies(s, [0.0, 0.5, 1.5, 4.5, 16.5, bands.bound], tol=1e-2)
    assert np.all(energies >= 0)
    assert energies.sum() == pytest.approx(float(s @ s), rel=1e-12)


# --- the error bound, where it is tight ---------------------------------------------------


def test_error_bound_holds_and_is_attained_at_the_gaps_ends() -> None:
    bound = 100.0
    edges = np.array([0.0, 0.5, 2.5, 30.5, 70.0, bound])
    probe = diagonal_bands(np.ones(1), bound)
    gaps = probe.gaps(edges)
    inner = edges[1:-1]
    # Eigenvalues exactly at the ends of every gap, and elsewhere away from the edges.
    eigenvalues = np.sort(np.concatenate([[0.0, bound, 15.0, 50.0], inner - gaps[1:-1], inner + gaps[1:-1]]))
    bands = diagonal_bands(eigenvalues, bound)
    for tol in (1e-2, 1e-4):
        order = bands.order(edges, tol=tol)
        bounds = bands.error_bound(edges, order)
        assert bounds.max() <= tol
        assert bands.error_bound(edges, int(np.floor(order / 2 ** 0.25))).max() > tol  # the lowest order that does
        # One eigenvector per signal: its estimate is the approximated indicator there.
        estimate = bands.band_energies(np.eye(eigenvalues.size), edges, tol=tol)
        exact = np.stack([(eigenvalues >= lo) & ((eigenvalues < hi) | (hi == bound))
                          for lo, hi in zip(edges[:-1], edges[1:])], axis=1)
        error = np.abs(estimate - exact).max(axis=0)
        assert np.all(error <= bounds * (1 + 1e-9) + 1e-14)
        assert np.all(error >= 0.99 * bounds)


def test_an_edge_on_an_eigenvalue_splits_its_energy() -> None:
    bands = diagonal_bands(np.array([0.0, 5.0, 10.0]), 10.0)
    estimate = bands.band_energies([0.0, 1.0, 0.0], [0.0, 5.0, 10.0])
    assert estimate.sum() == pytest.approx(1.0, rel=1e-12)
    assert 0.4 < estimate[0] < 0.6


def test_order_grows_slowly_with_accuracy_and_linearly_with_resolution() -> None:
    bands = diagonal_bands(np.ones(1), 100.0)
    orders = [bands.order([0.0, 50.0, 100.0], gap=1.0, tol=tol) for tol in (1e-2, 1e-4, 1e-6)]
    # About tol ** (-1/3): 100 ** (1/3) = 4.6 per two decades (the ladder's steps are 19%).
    assert 3 < orders[1] / orders[0] < 7 and 3 < orders[2] / orders[1] < 7
    finer = bands.order([0.0, 50.0, 100.0], gap=0.25, tol=1e-4)
    assert 3 * orders[1] < finer < 5 * orders[1]
    # The same gap near the bottom of the spectrum needs a far lower order.
    assert bands.order([0.0, 2.0, 100.0], gap=1.0, tol=1e-4) < orders[1] / 2


# --- arguments --------------------------------------------------------------------------


def test_repr_and_attributes() -> None:
    bands = diagonal_bands(np.arange(4.0), 3.0)
    assert (bands.n, bands.bound) == (4, 3.0)
    assert repr(bands) == "<LaplacianBands on 4 nodes, eigenvalues <= 3>"


@pytest.mark.parametrize(
    ("laplacian", "bound", "error", "pattern"),
    [
        (np.eye(3), 1.0, TypeError, "LinearOperator"),
        (aslinearoperator(np.ones((2, 3))), 1.0, ValueError, "shape"),
        (aslinearoperator(np.eye(2, dtype=complex)), 1.0, ValueError, "real"),
        (aslinearoperator(np.eye(2)), None, ValueError, "`bound`.*required"),
        (aslinearoperator(np.eye(2)), 0.0, ValueError, "`bound`"),
        (aslinearoperator(np.eye(2)), float("inf"), ValueError, "`bound`"),
        (aslinearoperator(np.eye(2)), True, ValueError, "`bound`"),
    ],
)
def test_bad_constructor_arguments(laplacian: object, bound: object, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        LaplacianBands(laplacian, bound)


def test_bad_call_arguments() -> None:
    bands = diagonal_bands(np.arange(3.0), 2.0)
    good = [0.0, 1.5, 2.0]
    for edges in ([1.0], [[0.0, 1.0]], [0.0, 0.0, 1.0], [0.0, np.nan]):
        with pytest.raises(ValueError, match="`edges`"):
            bands.band_energies(np.ones(3), edges)
    for signal in (np.ones(4), np.ones((2, 2, 3)), [1.0, np.inf, 0.0]):
        with pytest.raises(ValueError, match="`signal`"):
            bands.band_energies(signal, good)
    for gap in (0.0, -1.0, [1.0, 1.0], np.nan, "wide", True):
        with pytest.raises(ValueError, match="`gap`"):
            bands.order(good, gap=gap)
    for tol in (0.0, 1.0, -1e-3, True):
        with pytest.raises(ValueError, match="`tol`"):
            bands.order(good, tol=tol)
    for order in (0, 2.5, True):
        with pytest.raises(ValueError, match="`order`"):
            bands.moments(np.ones(3), order)
        with pytest.raises(ValueError, match="`order`"):
            bands.error_bound(good, order)
    with pytest.raises(ValueError, match="`moments`"):
        bands.energies_from_moments([1.0], good)
    with pytest.raises(ValueError, match=f"even order {MAX_ORDER}.*larger"):
        diagonal_bands(np.arange(3.0), 1e6).order([0.0, 5e5, 1e6], gap=1e-3, tol=1e-6)
