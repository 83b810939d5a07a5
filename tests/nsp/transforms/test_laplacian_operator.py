"""Tests of the structured Laplacian operator (nsp.transforms.laplacian_operator).

The operator is compared entry by entry with ``L = D - W`` built by hand from the
reference edges of ``tests/support/reference.py`` (Jacobians of each child, independent of
nsp.structure).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

import nsp
import nsp.transforms.laplacian_operator as laplacian_operator
import reference
import zoo
from nsp.graph.relations import Relation, Term
from nsp.graph.structure import NetworkStructure
from nsp.transforms.laplacian_operator import LaplacianOperator

NETWORKS = ["readme_net", "basicblock_downsample", "conv_relu_maxpool2d", "pruned_cnn", "cross_block"]
INCL = [True, False]


def reference_laplacian(ref: reference.Reference) -> np.ndarray:
    """``D - W`` of the undirected graph of the reference edges, by hand."""
    n = int(reference.offsets(ref.capture.shapes)[-1])
    w = np.zeros((n, n))
    for u, v in reference.edge_array(ref.edges):
        w[u, v] = w[v, u] = 1.0
    return np.diag(w.sum(axis=1)) - w


def graph_and_signal(name: str, incl: bool) -> tuple[nsp.NNGraph, np.ndarray, reference.Reference]:
    net, x, ref = zoo.cached(name, incl)
    acts = nsp.Activations(net, x)
    return nsp.NNGraph(acts, INCL=incl), acts.to_numpy(), ref


@pytest.mark.parametrize("incl", INCL)
@pytest.mark.parametrize("name", NETWORKS)
def test_operator_equals_reference_laplacian(name: str, incl: bool) -> None:
    graph, s, ref = graph_and_signal(name, incl)
    assert graph.structure.shapes == ref.capture.shapes
    expected = reference_laplacian(ref)
    op = LaplacianOperator(graph.structure)
    n = expected.shape[0]
    assert op.shape == (n, n)
    np.testing.assert_allclose(op @ np.eye(n), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(op.degrees, np.diag(expected), rtol=0, atol=0)
    v = np.random.default_rng(0).standard_normal((n, 3))
    scale = np.abs(expected).sum(axis=1).max() * np.abs(v).max()
    np.testing.assert_allclose(op.matmat(v), expected @ v, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(op.matvec(s), expected @ s, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(op.rmatvec(s), expected @ s, rtol=0, atol=1e-12 * scale)


def test_operator_on_layers_with_several_parents() -> None:
    # layers="leaves" on a residual block: layers feed later ones other than their successor.
    net, x, _ = zoo.cached("basicblock_downsample", True)
    acts = nsp.Activations(net, x, layers="leaves")
    for incl in INCL:
        graph = nsp.NNGraph(acts, INCL=incl)
        assert any(len(p) > 1 or any(k != layer - 1 for k in p) for layer, p in enumerate(graph.structure.parents))
        src, dst = graph.structure.edge_arrays()
        w = np.zeros((graph.structure.n,) * 2)
        w[src, dst] = w[dst, src] = 1.0
        np.testing.assert_array_equal(LaplacianOperator(graph.structure) @ np.eye(w.shape[0]), np.diag(w.sum(1)) - w)


@pytest.mark.parametrize("name", ["readme_net", "cross_block"])
def test_large_factors_are_applied_as_sparse_matrices(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(laplacian_operator, "_DENSE_FACTOR_ENTRIES", 0)
    graph, _, ref = graph_and_signal(name, True)
    op = LaplacianOperator(graph.structure)
    assert any(sp.issparse(f) for *_, (_, _, down), _ in op._blocks for _, f in down)
    np.testing.assert_allclose(op @ np.eye(op.shape[0]), reference_laplacian(ref), rtol=0, atol=1e-12)


def test_overlapping_terms_of_a_union_count_once() -> None:
    # Two terms sharing the pairs (0, 1) and (1, 2): a plain sum of the terms would give 2 there.
    a = Term((np.array([[1, 1, 0], [0, 0, 1]], dtype=bool),))
    b = Term((np.array([[0, 1, 1], [0, 0, 1]], dtype=bool),))
    structure = NetworkStructure(["input", "out"], [(3,), (2,)], True, [{}, {0: Relation((a, b), 2, 3)}])
    w = np.zeros((5, 5))
    w[3, [0, 1, 2]] = w[4, 2] = 1.0
    w = w + w.T
    np.testing.assert_array_equal(LaplacianOperator(structure) @ np.eye(5), np.diag(w.sum(1)) - w)


def test_a_relabelled_term_is_applied_as_the_matrix_it_stands_for() -> None:
    # A channels-last permutation (2, 3, 2) -> (3, 2, 2) after a random mix, as one term
    # with its in axes relabelled (Term.in_order); the matrix comes from numpy's kron and
    # transpose, not from nsp.
    rng = np.random.default_rng(0)
    factors = (rng.random((3, 3)) < 0.5, rng.random((2, 2)) < 0.5, np.eye(2, dtype=bool))
    term = Term(factors, (2, 0, 1))
    kron = np.kron(np.kron(factors[0], factors[1]), factors[2])
    matrix = kron.reshape(12, 3, 2, 2).transpose(0, 3, 1, 2).reshape(12, 12)
    structure = NetworkStructure(["input", "out"], [(2, 3, 2), (3, 2, 2)], True, [{}, {0: Relation.of(term)}])
    w = np.zeros((24, 24))
    w[12:, :12] = matrix
    w = w + w.T
    np.testing.assert_array_equal(LaplacianOperator(structure) @ np.eye(24), np.diag(w.sum(1)) - w)


def test_structured_operator_forms_no_edge_list_or_dense_relation(monkeypatch: pytest.MonkeyPatch) -> None:
    graph, s, ref = graph_and_signal("cross_block", True)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("LaplacianOperator formed an edge list or a dense relation")

    for cls in (Term, Relation):
        monkeypatch.setattr(cls, "edges", forbidden)
        monkeypatch.setattr(cls, "dense", forbidden)
    monkeypatch.setattr(NetworkStructure, "edge_arrays", forbidden)
    expected = reference_laplacian(ref) @ s
    actual = LaplacianOperator(graph.structure).matvec(s)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_spectrum_bound_of_a_star_is_exact() -> None:
    # Linear(5, 1): a star with 5 leaves, eigenvalues 0, 1 (4 times) and 6 = d + m at the centre.
    net = torch.nn.Sequential(torch.nn.Linear(5, 1))
    op = LaplacianOperator(nsp.NNGraph(nsp.Activations(net, torch.ones(1, 5))).structure)
    assert op.spectrum_bound == 6.0
    np.testing.assert_allclose(np.linalg.eigvalsh(op @ np.eye(6)), [0, 1, 1, 1, 1, 6], atol=1e-12)


def test_linear_operator_interface() -> None:
    graph, _, ref = graph_and_signal("readme_net", True)
    op = LaplacianOperator(graph.structure)
    assert isinstance(op, LinearOperator)
    assert op.dtype == np.float64
    assert repr(op) == "<74x74 LaplacianOperator with dtype=float64>"
    assert op.T is op and op.H is op
    assert op.matvec(np.ones((74, 1))).shape == (74, 1)
    np.testing.assert_allclose(op.matvec(np.ones(74)), 0.0, atol=1e-12)
    largest = eigsh(op, k=1, which="LA", return_eigenvectors=False)[0]
    assert largest == pytest.approx(np.linalg.eigvalsh(reference_laplacian(ref))[-1], rel=1e-9)


def test_operator_is_still_importable_from_laplacian_bands() -> None:
    from nsp.transforms import laplacian_bands

    assert laplacian_bands.LaplacianOperator is LaplacianOperator
    assert "LaplacianOperator" in laplacian_bands.__all__


def test_operator_rejects_a_non_structure() -> None:
    with pytest.raises(TypeError, match="NetworkStructure"):
        LaplacianOperator(np.eye(3))
