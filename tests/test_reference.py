"""Self-checks of the independent reference (tests/support/reference.py) and the zoo.

The reference must reproduce what the original package computed where it was right
(tests/data), agree with independent constructions (networkx reachability, autograd's own
Jacobian, the window formulas of the PyTorch documentation, hand-computed spectra), and
show the float64 failure that motivates the exact transform.
"""

import math

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from torch import nn

import reference as R
import zoo

# torch warns that padding='same' with an even kernel copies the input; zoo nets do that on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
SMALL = [n for n, e in zoo.ZOO.items() if not e.slow]


def _split(vector, shapes):
    offs = R.offsets(shapes)
    return [np.asarray(vector[offs[i]:offs[i + 1]], dtype=np.float64).reshape(s) for i, s in enumerate(shapes)]


# --------------------------------------------------------------------------- the original's outputs

@pytest.mark.parametrize("name", [
    "readme", pytest.param("mnist_tutorial", marks=pytest.mark.slow)])
def test_reproduces_original_package(name):
    net, x, data = zoo.load_npz_network(name)
    cap = R.capture(net, x)
    assert cap.names == list(data["layer_names"])
    assert [str(list(s)) for s in cap.shapes] == list(data["layer_shapes"])
    vector = np.concatenate([t.double().numpy().ravel() for t in cap.layers])
    # float32 forward passes round differently on different CPUs: compare the spectrum of
    # the stored values.
    np.testing.assert_allclose(vector, data["activations"], rtol=1e-5, atol=1e-6)

    edges = R.edge_matrices(cap, incl=True)
    original = data["edges"].astype(np.int64)
    np.testing.assert_array_equal(R.edge_array(edges), original[np.lexsort((original[:, 1], original[:, 0]))])

    spectrum = R.exact_spectrum(_split(data["activations"], cap.shapes), edges)
    errors = R.relative_errors(_split(data["spectrum_standard"], cap.shapes), spectrum)
    assert max(errors) <= 1e-15, errors


def test_readme_net_is_the_seed_architecture():
    net, x, _ = zoo.load_npz_network("readme")
    assert [type(m) for m in net.children()] == [nn.Conv2d, nn.Conv2d, nn.Linear]
    assert x.shape == (1, 1, 4, 4)
    with pytest.raises(ValueError, match="unknown name 'resnet'"):
        zoo.load_npz_network("resnet")


# --------------------------------------------------------------------------- hand-computed spectra

def _linear(weight, bias):
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return layer


def test_two_input_linear():
    net = nn.Sequential(_linear([[0.5, -2.0]], [0.25])).eval()
    a, b = 3.0, 1.5
    ref = R.reference(net, torch.tensor([[a, b]]), incl=True)
    o = 0.5 * a - 2.0 * b + 0.25
    assert ref.number_of_edges == 2
    assert R.edge_node_pairs(ref.capture.shapes, ref.edges) == {((0, 0), (1, 0)), ((0, 1), (1, 0))}
    np.testing.assert_array_equal(np.concatenate([s.ravel() for s in ref.spectrum]), [a, b, o - a - b])


def test_chain_and_diamond():
    # x -> (y1, y2) -> z: s_hat(y_i) = y_i - x and s_hat(z) = z - y1 - y2 + x.
    net = nn.Sequential(_linear([[2.0], [-1.0]], [0.5, 0.0]), _linear([[1.0, 1.0]], [-0.25]),
                        _linear([[4.0]], [0.0])).eval()
    ref = R.reference(net, torch.tensor([[1.5]]), incl=True)
    x = 1.5
    y1, y2 = 2 * x + 0.5, -x
    z = y1 + y2 - 0.25
    w = 4 * z
    # w's ancestors are everything before it, so s_hat(w) = w - z (the signal telescopes).
    expected = [x, y1 - x, y2 - x, z - y1 - y2 + x, w - z]
    np.testing.assert_array_equal(np.concatenate([s.ravel() for s in ref.spectrum]), expected)


def test_exact_where_float64_cancels():
    # a = 2**60 and b = 1 give o = fl32(2**60 + 1) = 2**60; s_hat(o) = o - a - b = -1 exactly,
    # but in float64 a + b rounds to 2**60 and the forward substitution returns 0.
    net = nn.Sequential(_linear([[1.0, 1.0]], [0.0])).eval()
    cap = R.capture(net, torch.tensor([[2.0**60, 1.0]]))
    edges = R.edge_matrices(cap, incl=True)
    assert R.exact_spectrum(cap.layers, edges)[1].tolist() == [-1.0]
    assert R.float64_spectrum(cap.layers, edges)[1].tolist() == [0.0]


def test_rounds_once():
    # s_hat(o) = 0 - 1 - 2**-80 is rounded once, to -1.0; the integers keep the 2**-80.
    edges = [np.ones((1, 2), dtype=bool)]
    layers = [np.array([1.0, 2.0**-80]), np.array([0.0])]
    hats, shift = R.mobius_integers(layers, edges)
    assert shift == 80
    assert hats[1].tolist() == [-(2**80) - 1]
    assert R.exact_spectrum(layers, edges)[1].tolist() == [-1.0]


def test_relative_errors_zero_layer_rule():
    zero = [np.zeros(3)]
    assert R.relative_errors([np.zeros(3)], zero) == [0.0]
    assert R.relative_errors([np.array([0.0, 1e-300, 0.0])], zero) == [math.inf]
    assert R.relative_errors([np.array([1.0, 1.0])], [np.array([1.0, 2.0])]) == [pytest.approx(1 / math.sqrt(5))]


# --------------------------------------------------------------------------- exactness of the inversion

def _check_inversion(ref):
    # The zeta transform of the integer spectrum gives back the integer signal, exactly.
    hats, shift = R.mobius_integers(ref.capture.layers, ref.edges)
    flat = np.concatenate(hats)
    signal, _ = R.mobius_integers(ref.capture.layers, [np.zeros_like(e) for e in ref.edges])
    for layer, (anc, hat) in enumerate(zip(R.ancestor_matrices(ref.edges), hats[1:]), start=1):
        rebuilt = [h + sum(flat[:row.size][row].tolist()) for h, row in zip(hat.tolist(), anc)]
        assert rebuilt == signal[layer].tolist()


@pytest.mark.parametrize("name", ["readme_net", "tiny_resnet", "cross_block", "pruned_cnn"])
@pytest.mark.parametrize("incl", [True, False])
def test_zeta_inverts_mobius(name, incl):
    _check_inversion(zoo.cached(name, incl)[2])


@pytest.mark.parametrize("name", ["readme_net", "tiny_resnet", "cross_block", "dead_relu"])
@pytest.mark.parametrize("incl", [True, False])
def test_ancestors_match_networkx(name, incl):
    ref = zoo.cached(name, incl)[2]
    offs = R.offsets(ref.capture.shapes)
    graph = nx.DiGraph()
    graph.add_nodes_from(range(int(offs[-1])))
    graph.add_edges_from(R.edge_array(ref.edges).tolist())
    for layer, anc in enumerate(R.ancestor_matrices(ref.edges), start=1):
        for i, row in enumerate(anc):
            assert set(np.flatnonzero(row).tolist()) == nx.ancestors(graph, int(offs[layer]) + i)


@pytest.mark.parametrize("name", zoo.params([n for n in SMALL if n != "resnet50_narrow"]))
def test_float64_agrees_on_shallow_networks(name):
    net, x, ref = zoo.cached(name, True)
    if x.dtype != torch.float32:
        # Sums of a few float32 values are exact in float64; float64 activations are not
        # (see test_float64_fails_on_float64_activations).
        return
    errors = R.relative_errors(R.float64_spectrum(ref.capture.layers, ref.edges), ref.spectrum)
    assert max(errors) <= 1e-12, errors


def test_float64_fails_on_a_resnet50_layout():
    # Its global pool maps a 1x1 map one-to-one, so the exact spectrum there is 0; float64
    # forward substitution leaves the rounding of the ResNet stages' sums instead.
    ref = zoo.cached("resnet50_narrow", True)[2]
    pool = ref.capture.names.index("avgpool")
    assert not ref.spectrum[pool].any()
    assert np.abs(R.float64_spectrum(ref.capture.layers, ref.edges)[pool]).max() > 0


@pytest.mark.slow
def test_float64_fails_on_deep_tanh_chain():
    ref = zoo.cached("deep_tanh_chain", True)[2]
    assert ref.capture.names[-1] == "16" and len(ref.capture.layers) == 18
    errors = R.relative_errors(R.float64_spectrum(ref.capture.layers, ref.edges), ref.spectrum)
    # Layers: 0 input, odd = conv k, even >= 2 = tanh after conv k, 17 = Flatten.
    assert max(errors[:7]) <= 1e-14, errors
    assert max(errors[1:17:2]) <= 1e-14, errors
    # The error grows by about two decades per tanh layer from the fifth conv on. Where it
    # starts depends on the activations' last bits, which differ between CPU kernels (layer
    # 8's error is 2e-8 with AVX-512's tanh and 0 with ATEN_CPU_CAPABILITY=default).
    tanh = [errors[k] for k in range(10, 17, 2)]
    assert tanh[0] > 1e-10 and all(b > 10 * a for a, b in zip(tanh, tanh[1:])), errors
    assert errors[16] > 1e-2
    assert not np.any(ref.spectrum[17])
    assert errors[17] == math.inf
    # The spectrum of the last conv reaches ~1e12 while |s| <= 1.
    assert np.abs(ref.spectrum[15]).max() > 1e9


def test_float64_fails_on_float64_activations():
    ref = zoo.cached("float64_cnn", True)[2]
    assert ref.capture.names[-2:] == ["5", "6"]
    errors = R.relative_errors(R.float64_spectrum(ref.capture.layers, ref.edges), ref.spectrum)
    # The Flatten layer's exact spectrum is 0; float64 substitution leaves rounding noise.
    assert not np.any(ref.spectrum[6]) and errors[6] == math.inf


# --------------------------------------------------------------------------- edges

@pytest.mark.parametrize("name", zoo.params())
def test_incl_false_within_incl_true(name):
    loose, strict = zoo.cached(name, True)[2].edges, zoo.cached(name, False)[2].edges
    for e_true, e_false in zip(loose, strict):
        assert not np.any(e_false & ~e_true)


@pytest.mark.parametrize("name", ["relu_inplace", "tiny_resnet", "bottleneck", "act_hardtanh_in_block",
                                  "conv_relu_maxpool2d", "maxpool2d_ceil_pad_dilation", "pruned_cnn",
                                  "adaptive_maxpool1d", "batchnorm1d_features", "view_linear"])
def test_jacobian_matches_autograd_functional(name):
    net, x, ref = zoo.cached(name, False)
    for module, inp, edges in zip(ref.capture.modules, ref.capture.inputs, ref.edges):
        full = torch.autograd.functional.jacobian(lambda t, m=module: m(t.clone()), inp, vectorize=True)
        full = full.reshape(edges.shape)
        np.testing.assert_array_equal((full != 0).numpy(), edges)
        torch.testing.assert_close(R.jacobian(module, inp), full, rtol=1e-5, atol=1e-6)


def _window_1d(n_in, n_out, kernel, stride, padding, dilation):
    """Output o reads input o*stride - padding + k*dilation for k < kernel, inside [0, n_in)."""
    pattern = np.zeros((n_out, n_in), dtype=bool)
    for o in range(n_out):
        for k in range(kernel):
            i = o * stride - padding + k * dilation
            if 0 <= i < n_in:
                pattern[o, i] = True
    return pattern


def _pool_len(n, kernel, stride, padding, dilation, ceil_mode):
    span = n + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    # PyTorch drops a last window that would start inside the right padding.
    if ceil_mode and (out - 1) * stride >= n + padding:
        out -= 1
    return out


@pytest.mark.parametrize("n", [7, 8, 11])
@pytest.mark.parametrize("kernel,stride,padding,dilation", [
    (2, 1, 0, 1), (2, 2, 0, 1), (3, 2, 1, 1), (3, 1, 1, 2), (3, 3, 1, 2), (4, 2, 2, 1), (2, 3, 1, 3)])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_structural_pools_and_convs_match_window_formula(n, kernel, stride, padding, dilation, ceil_mode):
    out_len = _pool_len(n, kernel, stride, padding, dilation, ceil_mode)
    expected = np.kron(np.eye(2, dtype=bool), _window_1d(n, out_len, kernel, stride, padding, dilation))
    inp = torch.randn(1, 2, n)
    maxpool = nn.MaxPool1d(kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    np.testing.assert_array_equal(R.structural_edges(maxpool, inp), expected)
    if dilation == 1:
        for include in (False, True):
            avgpool = nn.AvgPool1d(kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=include)
            np.testing.assert_array_equal(R.structural_edges(avgpool, inp), expected)
    if not ceil_mode:
        # Zero weights still count: a conv's pattern is its window, whatever the weights.
        conv = nn.Conv1d(2, 3, kernel, stride, padding, dilation)
        with torch.no_grad():
            conv.weight.zero_()
        conv_expected = np.tile(_window_1d(n, out_len, kernel, stride, padding, dilation), (3, 2))
        np.testing.assert_array_equal(R.structural_edges(conv, inp), conv_expected)


@pytest.mark.parametrize("n,size", [(7, 3), (7, 4), (5, 9), (8, 1), (6, 6)])
def test_structural_adaptive_pools_match_window_formula(n, size):
    expected = np.zeros((size, n), dtype=bool)
    for o in range(size):
        expected[o, (o * n) // size: -((-(o + 1) * n) // size)] = True
    inp = torch.randn(1, 1, n)
    for pool in (nn.AdaptiveAvgPool1d(size), nn.AdaptiveMaxPool1d(size)):
        np.testing.assert_array_equal(R.structural_edges(pool, inp), expected)


def test_structural_conv2d_is_product_of_axes():
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2)
    inp = torch.randn(1, 4, 7, 6)
    rows = _window_1d(7, 4, 3, 2, 1, 1)
    cols = _window_1d(6, 6, 2, 1, 1, 2)
    channels = np.kron(np.eye(2, dtype=bool), np.ones((3, 2), dtype=bool))
    expected = np.kron(channels, np.kron(rows, cols))
    np.testing.assert_array_equal(R.structural_edges(conv, inp), expected)


def test_structural_elementwise_and_residual():
    inp = torch.randn(1, 2, 3, 3)
    for act in (nn.Softshrink(5.0), nn.Threshold(10.0, 0.0), nn.LogSigmoid(), nn.Hardshrink(9.0)):
        np.testing.assert_array_equal(R.structural_edges(act, inp), np.eye(18, dtype=bool))
    block = zoo.BasicBlock(2, 2)
    with torch.no_grad():
        block.conv2.weight.zero_()
    # Two 3x3 convs see a 5x5 neighbourhood; the skip path adds the pixel itself.
    pattern = R.structural_edges(block.eval(), torch.randn(1, 2, 6, 6))
    rows = _window_1d(6, 6, 5, 1, 2, 1)
    np.testing.assert_array_equal(pattern, np.kron(np.ones((2, 2), dtype=bool), np.kron(rows, rows)))


def test_structural_cross_block_is_not_a_product():
    pattern = R.structural_edges(zoo.CrossBlock(1), torch.randn(1, 1, 5, 5))
    centre = pattern[12].reshape(5, 5)
    expected = np.zeros((5, 5), dtype=bool)
    expected[2, 1:4] = expected[1:4, 2] = True
    np.testing.assert_array_equal(centre, expected)


def test_structural_does_not_touch_the_module():
    bn = nn.BatchNorm2d(2).eval()
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    R.structural_edges(bn, torch.randn(1, 2, 3, 3))
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k


# --------------------------------------------------------------------------- capture

def test_capture_survives_inplace_children():
    net, x, ref = zoo.cached("relu_inplace", True)
    cap = ref.capture
    assert cap.names == ["input", "0", "1", "2", "3"]
    # The ReLU's recorded input is the conv output, negatives included.
    assert torch.equal(cap.inputs[1][0], cap.layers[1])
    assert (cap.layers[1] < 0).any()
    assert torch.equal(cap.layers[2], cap.layers[1].clamp(min=0))


def test_capture_errors():
    with pytest.raises(ValueError, match="batch of one"):
        R.capture(nn.Sequential(nn.ReLU()), torch.zeros(2, 3))

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.act(x))

    with pytest.raises(ValueError, match="'act' ran more than once"):
        R.capture(Twice(), torch.zeros(1, 3))

    class Pairs(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool1d(2)
            self.fc = nn.Linear(2, 1)

        def forward(self, x):
            return self.fc(self.pool(x)[..., :2])

    with pytest.raises(ValueError, match="child 'fc' received 2 values but the previous layer has 3"):
        R.capture(Pairs(), torch.zeros(1, 1, 6))


def test_zoo_is_deterministic_and_small():
    for name, entry in zoo.ZOO.items():
        _, net, x = zoo.build(name)
        _, net2, x2 = zoo.build(name)
        assert torch.equal(x, x2), name
        assert not net.training, name
        for (k, a), (_, b) in zip(net.state_dict().items(), net2.state_dict().items()):
            assert torch.equal(a, b), (name, k)
        if not entry.slow:
            nodes = x.numel() + sum(t.numel() for t in R.capture(net, x).layers[1:])
            assert nodes <= 3000, (name, nodes)


@settings(max_examples=15, deadline=None)
@given(zoo.random_networks())
def test_random_networks(case):
    name, net, x = case
    strict = R.reference(net, x, incl=False)
    loose = R.reference(net, x, incl=True)
    for e_true, e_false in zip(loose.edges, strict.edges):
        assert not np.any(e_false & ~e_true)
    _check_inversion(loose)
    _check_inversion(strict)
