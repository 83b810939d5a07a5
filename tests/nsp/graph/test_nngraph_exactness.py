"""Acceptance: nsp's graph and causal spectrum against the independent dense reference.

For every zoo network and both ``INCL`` values, ``nsp.NNGraph(nsp.Activations(net, x))``
must have exactly the reference's nodes and edges, and ``graph.transform`` must give the
exact spectrum to a per-layer relative error of 1e-9 (a layer whose exact spectrum is zero
must come back exactly zero). The two networks of the original package must also
reproduce its stored activations, edges and spectrum.
"""

import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings

import nsp
import reference as R
import zoo

# torch warns that padding='same' with an even kernel copies the input; zoo nets do that on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
INCL = [pytest.param(True, id="INCL=True"), pytest.param(False, id="INCL=False")]
TOLERANCE = 1e-9
# Nets small enough to check node_id for every node.
SMALL = [n for n, e in zoo.ZOO.items() if not e.slow]


@functools.lru_cache(maxsize=None)
def _core(name, incl):
    net, x, ref = zoo.cached(name, incl)
    acts = nsp.Activations(net, x)
    return acts, nsp.NNGraph(acts, INCL=incl), ref


def _check_activations(acts, cap):
    assert acts.layernames == cap.names
    assert len(acts.layeractivations) == len(cap.layers)
    for mine, theirs in zip(acts.layerdescriptions[1:], cap.modules):
        assert mine is theirs
    for got, want, name in zip(acts.layeractivations, cap.layers, cap.names):
        assert tuple(got.shape) == tuple(want.shape), name
        np.testing.assert_array_equal(got.double().numpy(), want.double().numpy(), err_msg=name)


def _check_graph(graph, ref):
    shapes = ref.capture.shapes
    assert graph.number_of_nodes() == int(R.offsets(shapes)[-1])
    assert graph.number_of_edges() == ref.number_of_edges
    assert set(graph.edges()) == R.edge_node_pairs(shapes, ref.edges)


def _check_spectrum(graph, acts, ref):
    spectrum = graph.transform(acts)
    assert spectrum.layernames == ref.capture.names
    for got, want in zip(spectrum.layeractivations, ref.spectrum):
        assert got.dtype == torch.float64
        assert tuple(got.shape) == want.shape
    errors = R.relative_errors(spectrum.layeractivations, ref.spectrum)
    assert max(errors) <= TOLERANCE, dict(zip(ref.capture.names, errors))


@pytest.mark.parametrize("name", zoo.params())
def test_activations(name):
    acts, _, ref = _core(name, True)
    _check_activations(acts, ref.capture)


@pytest.mark.parametrize("incl", INCL)
@pytest.mark.parametrize("name", zoo.params())
def test_edges(name, incl):
    _, graph, ref = _core(name, incl)
    _check_graph(graph, ref)


@pytest.mark.parametrize("name", zoo.params(SMALL))
def test_node_order_and_ids(name):
    _, graph, ref = _core(name, True)
    shapes = ref.capture.shapes
    expected = [(layer, *index) for layer, shape in enumerate(shapes) for index in np.ndindex(shape)]
    assert list(graph.nodes) == expected
    assert [graph.node_id(node) for node in expected] == list(range(len(expected)))


@pytest.mark.parametrize("incl", INCL)
@pytest.mark.parametrize("name", zoo.params())
def test_spectrum(name, incl):
    acts, graph, ref = _core(name, incl)
    _check_spectrum(graph, acts, ref)


@settings(max_examples=20, deadline=None)
@given(zoo.random_networks())
def test_random_networks(case):
    _, net, x = case
    for incl in (True, False):
        ref = R.reference(net, x, incl)
        acts = nsp.Activations(net, x)
        _check_activations(acts, ref.capture)
        graph = nsp.NNGraph(acts, INCL=incl)
        _check_graph(graph, ref)
        _check_spectrum(graph, acts, ref)


def _id_pairs_to_nodes(shapes, pairs):
    nodes = [(layer, *index) for layer, shape in enumerate(shapes) for index in np.ndindex(tuple(shape))]
    return {(nodes[a], nodes[b]) for a, b in pairs.tolist()}


@pytest.mark.parametrize("name,zoo_name", [
    ("readme", "readme_net"), pytest.param("mnist_tutorial", "mnist_tutorial_net", marks=pytest.mark.slow)])
def test_matches_original_package(name, zoo_name):
    net, x, data = zoo.load_npz_network(name)
    acts = nsp.Activations(net, x)
    assert acts.layernames == list(data["layer_names"])
    assert [str(list(a.shape)) for a in acts.layeractivations] == list(data["layer_shapes"])
    # The float32 forward pass rounds differently on different CPUs (the kernels torch
    # picks depend on the instruction set), so the values agree to float32 rounding and
    # the spectra are compared on the stored values.
    np.testing.assert_allclose(np.asarray(acts.to_vector(), dtype=np.float64), data["activations"], rtol=1e-5, atol=1e-6)

    graph = nsp.NNGraph(acts)
    shapes = [tuple(a.shape) for a in acts.layeractivations]
    assert graph.number_of_edges() == len(data["edges"])
    assert set(graph.edges()) == _id_pairs_to_nodes(shapes, data["edges"])

    spectrum = graph.get_transformer().forward(data["activations"])
    offs = R.offsets(shapes)
    layers = [spectrum[offs[i]:offs[i + 1]] for i in range(len(shapes))]
    stored = [data["spectrum_standard"][offs[i]:offs[i + 1]] for i in range(len(shapes))]
    # The stored spectrum is float64 forward substitution, right to ~1e-16 on these
    # shallow networks (tests/test_reference.py checks it against the exact one).
    assert max(R.relative_errors(layers, stored)) <= 1e-12
    own = graph.transform(acts).layeractivations
    assert max(R.relative_errors(own, zoo.cached(zoo_name, True)[2].spectrum)) <= TOLERANCE
