"""Tests of the graph-Laplacian Fourier transform against an independent dense reference.

The reference builds L = D - W by hand from an edge list and decomposes it with
numpy.linalg.eigh. Eigenvectors of repeated eigenvalues are not unique, so coefficients
are compared only through quantities invariant inside an eigenvalue cluster: energies per
cluster, cumulative energies at cluster boundaries and energies per band.
"""

from __future__ import annotations

import re
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

import nsp.common.memory
import nsp.transforms.laplacian as laplacian_module
from nsp.transforms.base import GraphTransform
from nsp.transforms.laplacian import (
    LaplacianSizeError,
    LaplacianTransform,
    dense_eigh_bytes,
    eigenvalue_clusters,
    laplacian_matrix,
)

README_NET = Path(__file__).resolve().parents[2] / "data" / "readme-net.npz"


# --- the independent reference ----------------------------------------------------------


def reference_laplacian(n: int, edges: np.ndarray) -> np.ndarray:
    """L = D - W of the undirected simple graph on the directed edge list, by hand."""
    w = np.zeros((n, n))
    for u, v in edges:
        if u != v:
            w[u, v] = w[v, u] = 1.0
    return np.diag(w.sum(axis=1)) - w


def reference_decomposition(n: int, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.linalg.eigh(reference_laplacian(n, edges))


def adjacency(n: int, edges: np.ndarray) -> scipy.sparse.csr_array:
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    return scipy.sparse.csr_array((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))


# --- graph families, with and without repeated eigenvalues ------------------------------


def random_dag(n: int, p: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u, v = np.triu_indices(n, k=1)
    keep = rng.random(u.size) < p
    return np.stack([u[keep], v[keep]], axis=1)


def star(leaves: int) -> np.ndarray:
    # Eigenvalues 0, 1 (leaves - 1 times), leaves + 1.
    return np.stack([np.zeros(leaves, dtype=np.int64), np.arange(1, leaves + 1)], axis=1)


def disjoint_copies(edges: np.ndarray, n: int, copies: int) -> np.ndarray:
    # Every eigenvalue of one copy repeats `copies` times.
    return np.concatenate([edges + k * n for k in range(copies)])


def layered_net(widths: list[int]) -> np.ndarray:
    # Fully connected consecutive layers, like a stack of Linear layers: very degenerate.
    offsets = np.concatenate([[0], np.cumsum(widths)])
    out = []
    for a, b, wa, wb in zip(offsets[:-2], offsets[1:-1], widths[:-1], widths[1:]):
        for u in range(a, a + wa):
            for v in range(b, b + wb):
                out.append((u, v))
    return np.array(out)


GRAPHS = {
    "path-5": (5, np.array([(i, i + 1) for i in range(4)])),
    "dag-12": (12, random_dag(12, 0.3, seed=1)),
    "dag-60": (60, random_dag(60, 0.1, seed=2)),
    "dag-150-sparse": (150, random_dag(150, 0.02, seed=3)),
    "star-9": (10, star(9)),
    "3-copies-of-dag-7": (21, disjoint_copies(random_dag(7, 0.5, seed=4), 7, 3)),
    "4-copies-of-star-3": (16, disjoint_copies(star(3), 4, 4)),
    "layered-3-4-2": (9, layered_net([3, 4, 2])),
    "no-edges-6": (6, np.zeros((0, 2), dtype=np.int64)),
    "single-node": (1, np.zeros((0, 2), dtype=np.int64)),
}


@pytest.fixture(params=sorted(GRAPHS), ids=str)
def graph(request: pytest.FixtureRequest) -> tuple[int, np.ndarray]:
    return GRAPHS[request.param]


def signals(n: int, count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, n))


def reference_cumulative(eigenvectors: np.ndarray, s: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Reference energy at or below each cluster boundary: cumsum of (V^T s)^2."""
    return np.cumsum((s @ eigenvectors) ** 2, axis=-1)[..., bounds[1:] - 1]


# --- the Laplacian --------------------------------------------------------------------


def test_laplacian_matrix_matches_networkx(graph: tuple[int, np.ndarray]) -> None:
    n, edges = graph
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(map(tuple, edges))
    expected = nx.laplacian_matrix(g, nodelist=range(n)).toarray()
    np.testing.assert_array_equal(laplacian_matrix(adjacency(n, edges)).toarray(), expected)


def test_laplacian_ignores_direction_weights_duplicates_and_self_loops() -> None:
    edges = np.array([(0, 1), (1, 0), (1, 2), (2, 2), (3, 1)])
    weights = np.array([2.5, -1.0, 7.0, 3.0, 1.0])
    a = scipy.sparse.coo_array((weights, (edges[:, 0], edges[:, 1])), shape=(4, 4))
    expected = np.array([[1, -1, 0, 0], [-1, 3, -1, -1], [0, -1, 1, 0], [0, -1, 0, 1]], dtype=float)
    np.testing.assert_array_equal(laplacian_matrix(a).toarray(), expected)
    np.testing.assert_array_equal(laplacian_matrix(a.toarray()).toarray(), expected)
    np.testing.assert_array_equal(laplacian_matrix(a.toarray() != 0).toarray(), expected)
    assert LaplacianTransform(a).number_of_edges == 3


def test_explicit_zeros_are_not_edges() -> None:
    a = scipy.sparse.csr_array((np.array([0.0, 1.0]), (np.array([0, 1]), np.array([1, 2]))), shape=(3, 3))
    np.testing.assert_array_equal(laplacian_matrix(a).toarray(), [[0, 0, 0], [0, 1, -1], [0, -1, 1]])


# --- eigenvalues and eigenvectors -------------------------------------------------------


def test_eigenvalues_match_reference(graph: tuple[int, np.ndarray]) -> None:
    n, edges = graph
    expected, _ = reference_decomposition(n, edges)
    t = LaplacianTransform(adjacency(n, edges))
    np.testing.assert_allclose(t.eigenvalues, expected, rtol=0, atol=1e-12 * max(1.0, expected[-1]))
    assert np.all(np.diff(t.eigenvalues) >= 0)


def test_eigenpairs_satisfy_reference_laplacian(graph: tuple[int, np.ndarray]) -> None:
    n, edges = graph
    lap = reference_laplacian(n, edges)
    t = LaplacianTransform(adjacency(n, edges))
    u, lam = t.eigenvectors, t.eigenvalues
    np.testing.assert_allclose(lap @ u, u * lam, rtol=0, atol=1e-12 * max(1.0, lam[-1]))
    np.testing.assert_allclose(u.T @ u, np.eye(n), rtol=0, atol=1e-13)


def test_known_spectrum_of_a_star() -> None:
    t = LaplacianTransform(adjacency(10, star(9)))
    np.testing.assert_array_equal(t.cluster_bounds, [0, 1, 9, 10])
    np.testing.assert_allclose(t.cluster_eigenvalues, [0.0, 1.0, 10.0], rtol=0, atol=1e-12)


def test_known_spectrum_of_disjoint_copies() -> None:
    # Four copies of a 3-leaf star: 0 x4 (one per component), 1 x8, 4 x4.
    t = LaplacianTransform(adjacency(16, disjoint_copies(star(3), 4, 4)))
    np.testing.assert_array_equal(t.cluster_bounds, [0, 4, 12, 16])
    np.testing.assert_allclose(t.cluster_eigenvalues, [0.0, 1.0, 4.0], rtol=0, atol=1e-12)


# --- forward, inverse, batches ----------------------------------------------------------


def test_is_a_graph_transform() -> None:
    t = LaplacianTransform(adjacency(5, GRAPHS["path-5"][1]))
    assert isinstance(t, GraphTransform)
    assert t.n == 5


def test_inverse_undoes_forward(graph: tuple[int, np.ndarray]) -> None:
    n, edges = graph
    t = LaplacianTransform(adjacency(n, edges))
    s = signals(n, 4)
    np.testing.assert_allclose(t.inverse(t.forward(s)), s, rtol=0, atol=1e-12)
    np.testing.assert_allclose(t.forward(t.inverse(s)), s, rtol=0, atol=1e-12)


def test_forward_is_transposed_eigenvectors_times_signal(graph: tuple[int, np.ndarray]) -> None:
    n, edges = graph
    t = LaplacianTransform(adjacency(n, edges))
    s = signals(n, 1)[0]
    np.testing.assert_allclose(t.forward(s), t.eigenvectors.T @ s, rtol=0, atol=1e-13)


def test_parseval(graph: tuple[int, np.ndarray]) -> None:
    n, edges = graph
    t = LaplacianTransform(adjacency(n, edges))
    s = signals(n, 3, seed=7)
    np.testing.assert_allclose(np.linalg.norm(t.forward(s), axis=1), np.linalg.norm(s, axis=1), rtol=1e-13)


def test_batch_equals_stack_of_singles(graph: tuple[int, np.ndarray]) -> None:
    n, edges = graph
    t = LaplacianTransform(adjacency(n, edges))
    s = signals(n, 5, seed=3)
    for method in (t.forward, t.inverse, t.cluster_energies, t.cumulative_energies):
        batched = method(s)
        singles = np.stack([method(row) for row in s])
        assert batched.shape == singles.shape
        np.testing.assert_allclose(batched, singles, rtol=1e-13, atol=1e-13)
    edges_ = [0.0, 0.5, 2.0, 100.0]
    singles = np.stack([t.band_energies(row, edges_) for row in s])
    np.testing.assert_allclose(t.band_energies(s, edges_), singles, rtol=1e-13, atol=1e-13)


def test_shapes_follow_the_input() -> None:
    t = LaplacianTransform(adjacency(10, star(9)))
    assert t.forward(np.ones(10)).shape == (10,)
    assert t.forward(np.ones((3, 10))).shape == (3, 10)
    assert t.cluster_energies(np.ones(10)).shape == (3,)
    assert t.cumulative_energies(np.ones((2, 10))).shape == (2, 3)
    assert t.band_energies(np.ones((2, 10)), [0.0, 1.0, 2.0, 3.0, 20.0]).shape == (2, 4)


# --- invariant energies -----------------------------------------------------------------


def test_cumulative_energies_match_reference(graph: tuple[int, np.ndarray]) -> None:
    n, edges = graph
    _, vectors = reference_decomposition(n, edges)
    t = LaplacianTransform(adjacency(n, edges))
    s = signals(n, 4, seed=11)
    got = t.cumulative_energies(s)
    np.testing.assert_allclose(got, reference_cumulative(vectors, s, t.cluster_bounds), rtol=0, atol=1e-6)
    # Much tighter than the acceptance bound in practice.
    np.testing.assert_allclose(got, reference_cumulative(vectors, s, t.cluster_bounds), rtol=0, atol=1e-11 * n)
    np.testing.assert_allclose(got[:, -1], np.sum(s**2, axis=1), rtol=1e-13)


def test_cluster_energies_are_eigenspace_projections(graph: tuple[int, np.ndarray]) -> None:
    n, edges = graph
    _, vectors = reference_decomposition(n, edges)
    t = LaplacianTransform(adjacency(n, edges))
    s = signals(n, 1, seed=5)[0]
    bounds = t.cluster_bounds
    expected = [np.sum((vectors[:, a:b].T @ s) ** 2) for a, b in zip(bounds[:-1], bounds[1:])]
    np.testing.assert_allclose(t.cluster_energies(s), expected, rtol=0, atol=1e-11 * n)


def test_repeated_eigenvalues_are_exercised() -> None:
    # The degenerate families really have clusters with several eigenvalues.
    for name in ("star-9", "3-copies-of-dag-7", "4-copies-of-star-3", "layered-3-4-2", "no-edges-6"):
        n, edges = GRAPHS[name]
        assert np.max(np.diff(LaplacianTransform(adjacency(n, edges)).cluster_bounds)) > 1, name


def test_cluster_energies_do_not_depend_on_the_eigenbasis() -> None:
    # Rotating the eigenvectors inside the repeated eigenvalue 1 of a star changes the
    # coefficients but not the cluster energies.
    t = LaplacianTransform(adjacency(10, star(9)))
    s = signals(10, 1, seed=9)[0]
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 8)))
    rotated = t.eigenvectors.copy()
    rotated[:, 1:9] = rotated[:, 1:9] @ rotation
    coefficients = rotated.T @ s
    assert not np.allclose(coefficients, t.forward(s))
    energies = [coefficients[0] ** 2, np.sum(coefficients[1:9] ** 2), coefficients[9] ** 2]
    np.testing.assert_allclose(t.cluster_energies(s), energies, rtol=1e-12)


def test_band_energies_match_reference(graph: tuple[int, np.ndarray]) -> None:
    n, edges = graph
    values, vectors = reference_decomposition(n, edges)
    t = LaplacianTransform(adjacency(n, edges))
    s = signals(n, 2, seed=13)
    band_edges = np.array([-1.0, 0.5, 1.5, 3.0, 8.0, max(8.0, values[-1]) + 1.0])
    # Keep every reference eigenvalue clear of the edges so rounding cannot move it.
    assert np.min(np.abs(values[:, None] - band_edges[None, :])) > 1e-6
    band = np.searchsorted(band_edges, values, side="right") - 1
    expected = np.stack([np.bincount(band, weights=(row @ vectors) ** 2, minlength=5) for row in s])
    got = t.band_energies(s, band_edges)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-11 * n)
    np.testing.assert_allclose(got.sum(axis=1), np.sum(s**2, axis=1), rtol=1e-13)


def test_band_edges_on_a_repeated_eigenvalue_keep_the_cluster_whole() -> None:
    # Eigenvalues 0, 1 (x8), 10: an edge at exactly 1 puts the whole cluster in the
    # band it opens, and the last edge is inclusive, as in numpy.histogram.
    t = LaplacianTransform(adjacency(10, star(9)))
    s = signals(10, 1, seed=21)[0]
    clusters = t.cluster_energies(s)
    expected = [clusters[0], clusters[1] + clusters[2]]
    np.testing.assert_allclose(t.band_energies(s, [0.0, 1.0, 10.0]), expected, rtol=1e-13)
    np.testing.assert_allclose(t.band_energies(s, [1.0, 2.0]), [clusters[1]], rtol=1e-13)
    np.testing.assert_allclose(t.band_energies(s, [2.0, 3.0]), [0.0], rtol=0, atol=0)


def test_eigenvalue_clusters() -> None:
    np.testing.assert_array_equal(eigenvalue_clusters(np.array([0.0, 1.0, 1.0 + 1e-12, 3.0])), [0, 1, 3, 4])
    np.testing.assert_array_equal(eigenvalue_clusters(np.array([5.0])), [0, 1])
    np.testing.assert_array_equal(eigenvalue_clusters(np.zeros(4)), [0, 4])
    # The default tolerance scales with the largest eigenvalue: 1e-8 * 1e6 = 1e-2.
    np.testing.assert_array_equal(eigenvalue_clusters(np.array([0.0, 1e6, 1e6 + 1e-3])), [0, 1, 3])
    np.testing.assert_array_equal(eigenvalue_clusters(np.array([0.0, 1e6, 1e6 + 1e-3]), tol=1e-4), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="ascending"):
        eigenvalue_clusters(np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="`tol`"):
        eigenvalue_clusters(np.array([1.0]), tol=-1.0)
    with pytest.raises(ValueError, match="`eigenvalues`"):
        eigenvalue_clusters(np.array([0.0, np.nan]))


# --- the README network of the original package -----------------------------------------


@pytest.fixture(scope="module")
def readme_net() -> dict[str, np.ndarray]:
    with np.load(README_NET, allow_pickle=False) as data:
        return {key: data[key] for key in ("edges", "activations", "laplacian_eigenvalues", "spectrum_laplacian")}


def test_readme_net_eigenvalues(readme_net: dict[str, np.ndarray]) -> None:
    n = readme_net["activations"].size
    t = LaplacianTransform(adjacency(n, readme_net["edges"]))
    assert t.n == 74
    assert t.number_of_edges == len(readme_net["edges"]) == 584
    np.testing.assert_allclose(t.eigenvalues, readme_net["laplacian_eigenvalues"], rtol=0, atol=1e-11)


def test_readme_net_energies_per_cluster(readme_net: dict[str, np.ndarray]) -> None:
    n = readme_net["activations"].size
    t = LaplacianTransform(adjacency(n, readme_net["edges"]))
    s = readme_net["activations"]
    reference = readme_net["spectrum_laplacian"]
    bounds = t.cluster_bounds
    # The reference has repeated eigenvalues, so this is a real cluster comparison.
    assert np.max(np.diff(bounds)) > 1
    np.testing.assert_allclose(t.cumulative_energies(s), np.cumsum(reference**2)[bounds[1:] - 1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(t.cluster_energies(s), np.add.reduceat(reference**2, bounds[:-1]), rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.sum(t.forward(s) ** 2), np.sum(s**2), rtol=1e-13)


# --- properties on random graphs --------------------------------------------------------


@st.composite
def small_graphs(draw: st.DrawFn) -> tuple[int, np.ndarray]:
    n = draw(st.integers(1, 14))
    pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))
    edges = draw(st.lists(pairs, max_size=3 * n))
    return n, np.array(edges, dtype=np.int64).reshape(-1, 2)


@settings(max_examples=60, deadline=None)
@given(small_graphs(), st.integers(0, 2**32 - 1))
def test_random_graphs_match_reference(g: tuple[int, np.ndarray], seed: int) -> None:
    n, edges = g
    values, vectors = reference_decomposition(n, edges)
    t = LaplacianTransform(adjacency(n, edges))
    s = signals(n, 2, seed=seed)
    np.testing.assert_allclose(t.eigenvalues, values, rtol=0, atol=1e-12 * max(1.0, values[-1]))
    expected = reference_cumulative(vectors, s, t.cluster_bounds)
    np.testing.assert_allclose(t.cumulative_energies(s), expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(t.inverse(t.forward(s)), s, rtol=0, atol=1e-12)


# --- laziness and caching ---------------------------------------------------------------


def test_decomposition_is_lazy_and_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_eigh = laplacian_module.scipy.linalg.eigh

    def counting_eigh(*args, **kwargs):
        calls.append(kwargs.get("driver"))
        return real_eigh(*args, **kwargs)

    monkeypatch.setattr(laplacian_module.scipy.linalg, "eigh", counting_eigh)
    t = LaplacianTransform(adjacency(10, star(9)))
    assert calls == []
    assert "not yet decomposed" in repr(t)
    t.forward(np.ones(10))
    t.inverse(np.ones(10))
    t.cumulative_energies(np.ones(10))
    t.band_energies(np.ones(10), [0.0, 20.0])
    _ = t.eigenvalues, t.eigenvectors, t.cluster_eigenvalues
    assert calls == ["evd"]
    assert "decomposed" in repr(t) and "not yet" not in repr(t)


def test_cached_arrays_are_read_only() -> None:
    t = LaplacianTransform(adjacency(10, star(9)))
    for array in (t.eigenvalues, t.eigenvectors, t.cluster_bounds):
        with pytest.raises(ValueError):
            array[0] = 1


# --- size limit -------------------------------------------------------------------------


def test_size_limit_refuses_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("eigh must not run")

    monkeypatch.setattr(laplacian_module.scipy.linalg, "eigh", fail)
    with pytest.raises(LaplacianSizeError) as info:
        LaplacianTransform(adjacency(10, star(9)), max_nodes=9)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "N = 10 nodes" in message
    assert "2.4e-06 GB" in message  # 3 * 10**2 * 8 bytes
    assert "max_nodes=9" in message and "type='standard'" in message


def test_size_limit_default_on_a_large_graph() -> None:
    n = 20_000
    with pytest.raises(LaplacianSizeError, match=re.escape("N = 20,000 nodes")) as info:
        LaplacianTransform(scipy.sparse.csr_array((n, n)))
    assert "9.6 GB" in str(info.value)
    assert "max_nodes=12,000" in str(info.value)


def test_size_limit_is_inclusive() -> None:
    t = LaplacianTransform(adjacency(10, star(9)), max_nodes=10)
    assert t.eigenvalues.shape == (10,)


def test_memory_estimate_refuses_beyond_the_memory_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nsp.common.memory, "MEMORY_LIMIT", 1_000)  # caps nsp.memory.available_bytes()
    with pytest.raises(LaplacianSizeError, match="memory") as info:
        LaplacianTransform(adjacency(10, star(9)))
    assert "N = 10 nodes" in str(info.value)
    assert "1e-06 GB of memory available" in str(info.value)


def test_dense_eigh_bytes() -> None:
    assert dense_eigh_bytes(1_000) == 24_000_000


# --- bad inputs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "error", "pattern"),
    [
        (scipy.sparse.csr_array((3, 4)), ValueError, r"`adjacency`.*square.*\(3, 4\)"),
        (np.ones((3, 4)), ValueError, r"`adjacency`.*square.*\(3, 4\)"),
        (np.ones(3), ValueError, r"`adjacency`.*square"),
        (scipy.sparse.csr_array((0, 0)), ValueError, r"`adjacency` is empty"),
        (np.array([[0.0, np.nan], [0.0, 0.0]]), ValueError, r"`adjacency` contains non-finite"),
        (np.array([[0, "a"], ["b", 0]]), ValueError, r"`adjacency`.*dtype"),
        ([[0, 1], [0, 0]], TypeError, r"`adjacency`.*list"),
        (nx.DiGraph([(0, 1)]), TypeError, r"`adjacency`.*DiGraph"),
    ],
)
def test_bad_adjacency(bad: object, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        LaplacianTransform(bad)


@pytest.mark.parametrize("max_nodes", [0, -5, 2.5, True, "100"])
def test_bad_max_nodes(max_nodes: object) -> None:
    with pytest.raises(ValueError, match="`max_nodes`"):
        LaplacianTransform(adjacency(3, star(2)), max_nodes=max_nodes)


def test_bad_signals() -> None:
    t = LaplacianTransform(adjacency(10, star(9)))
    with pytest.raises(ValueError, match=r"`signal`.*\(10,\).*got \(9,\)"):
        t.forward(np.ones(9))
    with pytest.raises(ValueError, match=r"`spectrum`.*got \(2, 3\)"):
        t.inverse(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"`signal`.*got \(1, 2, 10\)"):
        t.forward(np.ones((1, 2, 10)))
    for bad in (np.nan, np.inf):
        s = np.ones(10)
        s[4] = bad
        for method in (t.forward, t.cluster_energies, t.cumulative_energies):
            with pytest.raises(ValueError, match="`signal`.*non-finite"):
                method(s)
        with pytest.raises(ValueError, match="`spectrum`.*non-finite"):
            t.inverse(s)
    with pytest.raises(ValueError, match=r"`signal`.*got \(11,\)"):
        t.band_energies(np.ones(11), [0.0, 1.0])


@pytest.mark.parametrize("edges", [[0.0], [[0.0, 1.0]], [1.0, 1.0], [2.0, 1.0], [0.0, np.inf], [np.nan, 1.0]])
def test_bad_band_edges(edges: list) -> None:
    t = LaplacianTransform(adjacency(10, star(9)))
    with pytest.raises(ValueError, match="`edges`"):
        t.band_energies(np.ones(10), edges)
