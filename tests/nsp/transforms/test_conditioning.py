"""The rounding-sensitivity indicator, against a dense exact computation."""

import numpy as np
import torch

import nsp
import reference
import zoo


def _dense_indicator(acts, ref_edges, seed=0):
    signal = acts.to_numpy()
    half_ulp = np.concatenate([np.spacing(np.abs(a.numpy().reshape(-1))).astype(np.float64) / 2 for a in acts.layeractivations])
    signs = np.where(np.random.default_rng(seed).random(signal.size) < 0.5, -1.0, 1.0)
    delta = np.where(signal != 0, signs * half_ulp, 0.0)
    sizes = [a.numel() for a in acts.layeractivations]
    layers = np.split(delta, np.cumsum(sizes)[:-1])
    moved = reference.exact_spectrum([d.reshape(a.shape) for d, a in zip(layers, acts.layeractivations)], ref_edges)
    base = reference.exact_spectrum(acts.layeractivations, ref_edges)
    out = []
    for m, b in zip(moved, base):
        nb, nm = np.linalg.norm(b.ravel()), np.linalg.norm(m.ravel())
        out.append(0.0 if nm == 0 and nb == 0 else (np.inf if nb == 0 else nm / nb))
    return np.array(out)


def test_matches_dense_exact_computation():
    net, x, ref = zoo.cached("basicblock_downsample", True)
    acts = nsp.Activations(net, x)
    kappa = nsp.rounding_sensitivity(nsp.NNGraph(acts), acts)
    np.testing.assert_allclose(kappa, _dense_indicator(acts, ref.edges), rtol=1e-9)


def test_sensitivity_grows_along_the_deep_tanh_chain():
    net, x, _ = zoo.cached("deep_tanh_chain", True)
    acts = nsp.Activations(net, x)
    kappa = nsp.rounding_sensitivity(nsp.NNGraph(acts), acts)
    tanh = [k for k, module in zip(kappa, acts.layerdescriptions) if isinstance(module, torch.nn.Tanh)]
    assert tanh[0] < 1e-6 and max(tanh[-3:]) > 10 * tanh[0]
    # Flatten's exact spectrum is 0 while its perturbation is not: no digit is determined.
    assert kappa[-1] == np.inf


def test_is_reproducible_and_depends_on_seed():
    net, x, _ = zoo.cached("readme_net", True)
    acts = nsp.Activations(net, x)
    graph = nsp.NNGraph(acts)
    a = nsp.rounding_sensitivity(graph, acts, seed=3)
    np.testing.assert_array_equal(a, nsp.rounding_sensitivity(graph, acts, seed=3))
    assert not np.array_equal(a, nsp.rounding_sensitivity(graph, acts, seed=4))
    assert np.all(a < 1e-5)
    zero = nsp.Activations(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.zeros(1, 2))
    assert nsp.rounding_sensitivity(nsp.NNGraph(zero), zero)[0] == 0.0
