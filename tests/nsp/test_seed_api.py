"""The seed's Transformer and OutputLoader functions, and nsp.energy."""

import numpy as np
import pytest
import torch
from torch import nn

import nsp
import zoo


def _readme():
    net, x, ref = zoo.cached("readme_net", True)
    acts = nsp.Activations(net, x)
    return acts, nsp.NNGraph(acts), ref


def test_transformer_functions_agree_with_the_operator():
    acts, graph, ref = _readme()
    expected = np.concatenate([s.ravel() for s in ref.spectrum])
    via_operator = nsp.Transformer.get_fourier_coefficients(acts, inv_F=graph.get_transformer())
    via_zeta = nsp.Transformer.get_fourier_coefficients(acts, inv_F=nsp.Transformer.get_inv_fourier_matrix(graph))
    np.testing.assert_array_equal(via_operator.to_numpy(), expected)
    np.testing.assert_array_equal(via_zeta.to_numpy(), expected)
    fourier = nsp.Transformer.get_fourier_matrix(graph, graph.inv_F)
    np.testing.assert_allclose(fourier @ graph.inv_F.toarray(), np.eye(graph.number_of_nodes()), atol=1e-9)
    laplacian = nsp.Transformer.get_laplacian(graph).toarray()
    np.testing.assert_allclose(laplacian.sum(axis=1), 0, atol=1e-12)
    with pytest.raises(ValueError, match="needs `lu_piv`"):
        nsp.Transformer.get_fourier_coefficients(acts, type="laplacian")


@pytest.mark.parametrize("incl", [True, False])
def test_outputloader_round_trip(tmp_path, incl):
    net, x, _ = zoo.cached("pruned_cnn", incl)
    acts = nsp.Activations(net, x)
    graph = nsp.NNGraph(acts, INCL=incl)
    nsp.OutputLoader.save(graph, tmp_path / "sub" / "graph.npz")
    nsp.OutputLoader.save(acts, tmp_path / "acts.npz")
    graph2 = nsp.OutputLoader.load(tmp_path / "sub" / "graph.npz")
    acts2 = nsp.OutputLoader.load(tmp_path / "acts.npz")
    assert acts2.layernames == acts.layernames
    assert isinstance(acts2.layerdescriptions[1], str)
    assert graph2.number_of_edges() == graph.number_of_edges()
    assert set(graph2.edges()) == set(graph.edges())
    np.testing.assert_array_equal(graph2.transform(acts2).to_numpy(), graph.transform(acts).to_numpy())


def test_outputloader_refuses_foreign_files(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not written by save_npz|not an nsp"):
        nsp.OutputLoader.load(tmp_path / "other.npz")
    (tmp_path / "pickle.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ValueError):
        nsp.OutputLoader.load(tmp_path / "pickle.pkl")
    with pytest.raises(TypeError, match="expected Activations or an NNGraph"):
        nsp.OutputLoader.save({"a": 1}, tmp_path / "x.npz")


def test_energy_functions():
    layers = [np.array([3.0, 4.0]), np.zeros(3), np.array([1e200, -1e200])]
    np.testing.assert_array_equal(nsp.energy.spectral_energy(layers)[:2], [25.0, 0.0])
    logs = nsp.energy.log10_energy(layers)
    np.testing.assert_allclose(logs[[0, 2]], [np.log10(25.0), 400 + np.log10(2.0)])
    assert logs[1] == -np.inf
    share = nsp.energy.energy_share(layers)
    assert share.sum() == pytest.approx(1.0) and share[2] == pytest.approx(1.0)
    acts = nsp.Activations(nn.Sequential(nn.Linear(2, 1)), torch.ones(1, 2))
    np.testing.assert_allclose(nsp.energy.spectral_energy(acts), [2.0, sum(v**2 for v in acts.layeractivations[1].tolist())])
    with pytest.raises(TypeError, match="expected `layers`"):
        nsp.energy.spectral_energy(np.zeros(3))
