"""NNGraph: the networkx view, node ids, seed attributes and clear errors."""

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nsp
import reference
import zoo


def _graph(name="basicblock_downsample", incl=True):
    net, x, ref = zoo.cached(name, incl)
    return nsp.NNGraph(nsp.Activations(net, x), INCL=incl), ref


@pytest.mark.parametrize("incl", [True, False])
def test_networkx_view_matches_reference_edges(incl):
    graph, ref = _graph(incl=incl)
    assert graph.__dict__.get("_pending")
    expected = reference.edge_node_pairs(ref.capture.shapes, ref.edges)
    assert set(graph.edges()) == expected
    assert graph.number_of_edges() == len(expected)
    assert list(graph.nodes) == sorted(graph.nodes, key=graph.node_id)
    assert nx.is_directed_acyclic_graph(graph)


def test_replacing_the_storage_resets_networkx_cached_views():
    graph, _ = _graph("readme_net")
    node = next(iter(graph.nodes))
    assert len(graph.succ) == len(graph.pred) == graph.number_of_nodes()  # cached views of the materialised view
    graph._adj = {node: {}}
    graph._pred = {node: {}}
    assert graph._succ is graph._adj
    assert dict(graph.succ) == dict(graph.adj) == {node: {}}
    assert dict(graph.pred) == {node: {}}


def test_counts_do_not_materialise_the_view():
    graph, ref = _graph()
    assert graph.number_of_edges() == ref.number_of_edges
    assert graph.number_of_nodes() == len(graph) == sum(int(np.prod(s)) for s in ref.capture.shapes)
    assert graph.__dict__.get("_pending")


def test_node_id_is_the_position_in_node_order():
    graph, _ = _graph("readme_net")
    for i, node in enumerate(graph.nodes):
        assert graph.node_id(node) == i
    with pytest.raises(KeyError, match="not a node"):
        graph.node_id((99, 0))


def test_inv_f_is_the_zeta_matrix_of_the_reference():
    graph, ref = _graph("readme_net")
    n = graph.number_of_nodes()
    dense = np.eye(n, dtype=bool)
    for anc in reference.ancestor_matrices(ref.edges):
        dense[anc.shape[1]: anc.shape[1] + anc.shape[0], : anc.shape[1]] = anc
    np.testing.assert_array_equal(graph.inv_F.toarray() != 0, dense)


def test_copy_is_a_plain_graph_with_a_clear_error():
    graph, _ = _graph("readme_net")
    other = graph.copy()
    assert other.number_of_edges() == graph.number_of_edges()
    with pytest.raises(ValueError, match="no network structure"):
        other.transform(nsp.Activations(*zoo.cached("readme_net", True)[:2]))


class _Cumprod(nn.Module):
    def forward(self, x):
        return torch.cumprod(x, dim=-1)


def test_unsupported_child_names_its_path_and_type():
    net = nn.Sequential(nn.Linear(4, 4), nn.Sequential(_Cumprod()))
    acts = nsp.Activations(net, torch.randn(1, 4))
    with pytest.raises(nsp.UnsupportedModuleError, match=r"'1\.0' \(cumprod in _Cumprod\): no rule.*register_rule"):
        nsp.NNGraph(acts)


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return torch.cat([F.relu(self.a(x)), x], dim=1)


class _Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return torch.cumprod(x * torch.sigmoid(self.a(x)), dim=-1)


def test_unsupported_operation_in_a_block_names_the_op():
    acts = nsp.Activations(nn.Sequential(_Gate()), torch.randn(1, 1, 3, 3))
    with pytest.raises(nsp.UnsupportedModuleError, match=r"'0' \(cumprod in _Gate\): no rule"):
        nsp.NNGraph(acts)


@pytest.mark.parametrize("incl", [True, False])
def test_channel_concatenation_matches_reference(incl):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 1, 1), _Concat(), nn.Conv2d(3, 2, 3)).eval()
    x = torch.randn(1, 1, 5, 5)
    acts = nsp.Activations(net, x)
    graph = nsp.NNGraph(acts, INCL=incl)
    ref = reference.reference(net, x, incl)
    assert set(graph.edges()) == reference.edge_node_pairs(ref.capture.shapes, ref.edges)
    assert max(reference.relative_errors(graph.transform(acts).layeractivations, ref.spectrum)) <= 1e-9


def test_unused_unsupported_op_is_harmless():
    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            self.last_softmax = F.softmax(x, dim=1)  # not on the path to the output
            return self.fc(x)

    acts = nsp.Activations(nn.Sequential(Aux()), torch.randn(1, 3))
    assert nsp.NNGraph(acts).number_of_edges() == 9


def test_batchnorm_in_training_mode_is_refused():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    acts = nsp.Activations(net.train(), torch.randn(1, 1, 3, 3))
    with pytest.raises(nsp.UnsupportedModuleError, match=r"'1' \(BatchNorm2d\).*network.eval\(\)"):
        nsp.NNGraph(acts)


@pytest.mark.parametrize("incl", [True, False])
def test_a_crop_between_children_is_followed_through_the_parents_dataflow(incl):
    class Crop(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x)[:, :, :2, :2].flatten(1))

    from test_structure_layers import reference_blocks

    net, x = Crop().eval(), torch.randn(1, 1, 3, 3)
    acts = nsp.Activations(net, x)
    # Before: refused, 'fc' received 4 values but 'conv' has 9.
    assert acts.layernames == ["input", "conv", "fc"]
    graph = nsp.NNGraph(acts, INCL=incl)
    blocks = reference_blocks(net, x, acts.layernames[1:], incl)
    assert set(blocks) == {(1, 0), (2, 1)}
    fc = graph.structure.parents[2][1]
    np.testing.assert_array_equal(fc.dense() if incl else fc.toarray(), blocks[(2, 1)])
    assert blocks[(2, 1)].sum(axis=1).tolist() == [4, 4]


def test_non_finite_activations_are_refused_by_name():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.fill_(float("inf"))
    acts = nsp.Activations(net, torch.ones(1, 2))
    graph = nsp.NNGraph(acts)
    with pytest.raises(ValueError, match=r"layer '0' has 2 non-finite activation"):
        graph.transform(acts)


def test_transform_of_another_network_is_refused():
    graph, _ = _graph("readme_net")
    other = nsp.Activations(nn.Sequential(nn.Linear(2, 1)), torch.ones(1, 2))
    with pytest.raises(ValueError, match="do not match the graph"):
        graph.transform(other)
    with pytest.raises(ValueError, match="unknown transform type='fourier'"):
        graph.get_transformer("fourier")


def test_laplacian_transform_through_the_seed_api():
    graph, _ = _graph("readme_net")
    net, x, _ = zoo.cached("readme_net", True)
    acts = nsp.Activations(net, x)
    coefficients = graph.transform(acts, type="laplacian").to_numpy()
    op = graph.get_transformer("laplacian")
    assert graph.lu_piv is op
    np.testing.assert_allclose(np.sum(coefficients**2), np.sum(acts.to_numpy() ** 2))
    assert np.all(np.diff(op.eigenvalues) >= 0)


@pytest.mark.parametrize("incl", [True, False])
def test_batched_probes_match_single_probes(incl):
    net, x, _ = zoo.cached("basicblock_downsample", incl)
    probes = torch.cat([x, torch.randn_like(x), 3 * torch.randn_like(x)])
    patterns = nsp.Activations.from_batch(net, probes)
    graph = nsp.NNGraph(patterns[0], INCL=incl)
    spectra = graph.transform(patterns)
    for pattern, spectrum in zip(patterns, spectra):
        np.testing.assert_array_equal(spectrum.to_numpy(), graph.transform(pattern).to_numpy())
    # Each probe's own INCL=False graph, from the same batched recording, is exact too.
    for p, pattern in enumerate(patterns):
        own = nsp.NNGraph(pattern, INCL=incl)
        expected = reference.reference(net, probes[p: p + 1], incl)
        assert own.number_of_edges() == expected.number_of_edges
        # A batched forward may round differently from a single one: compare on the same values.
        exact = reference.exact_spectrum(pattern.layeractivations, expected.edges)
        errors = reference.relative_errors(own.transform(pattern).layeractivations, exact)
        assert max(errors) <= 1e-9


def test_laplacian_bands_agree_with_the_dense_transform():
    graph, _ = _graph("readme_net")
    net, x, _ = zoo.cached("readme_net", True)
    signal = nsp.Activations(net, x).to_numpy()
    dense = graph.get_transformer("laplacian")
    # Edges between eigenvalue clusters, where the Chebyshev estimate is sharp.
    values = np.unique(np.round(dense.eigenvalues, 6))
    edges = np.concatenate([[-1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1]])[::4]
    bands = graph.laplacian_bands()
    assert graph.laplacian_bands() is bands
    np.testing.assert_allclose(
        bands.band_energies(signal, edges, tol=1e-6), dense.band_energies(signal, edges), atol=1e-4 * signal @ signal
    )
