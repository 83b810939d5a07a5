"""Reliability (issue 10): nsp refuses by name what it cannot do, and never returns a wrong result.

Part of the reliability suite (``pytest -m reliability``); each test failed before its fix.
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import nsp
from nsp.common import memory
from nsp.transforms import ancestor_sets

pytestmark = pytest.mark.reliability


class _NoChildren(nn.Module):
    def forward(self, x):
        return 2 * x


# -- 3: networks without top-level children ----------------------------------------------------
@pytest.mark.parametrize("network", [nn.Sequential(), nn.Linear(4, 2), _NoChildren()], ids=["empty", "leaf", "custom"])
def test_network_without_children_is_refused_by_name(network):
    name = type(network).__name__
    with pytest.raises(ValueError, match=rf"no top-level child of the {name} ran.*nn\.Sequential\(module\)"):
        nsp.Activations(network, torch.randn(1, 4))
    with pytest.raises(ValueError, match=rf"no top-level child of the {name} ran"):
        nsp.Activations.from_batch(network, torch.randn(3, 4))


def test_wrapping_a_childless_network_works():
    acts = nsp.Activations(nn.Sequential(nn.Linear(4, 2)), torch.randn(1, 4))
    assert acts.shapes == [(4,), (2,)]


# -- 4: coefficients beyond the float64 range ---------------------------------------------------
def _overflowing():
    """ŝ(out) = 0 − 1.7e308 − 1.7e308 exactly: a finite signal whose spectrum float64 cannot hold."""
    net = nn.Sequential(nn.Linear(2, 1).double())
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.zero_()
    return nsp.Activations(net, torch.full((1, 2), 1.7e308, dtype=torch.float64))


def test_spectrum_beyond_float64_raises_structure_error_not_inf():
    acts = _overflowing()
    graph = nsp.NNGraph(acts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # before the fix: numpy's overflow warning and -inf
        with pytest.raises(nsp.StructureError, match=r"1 exact coefficient\(s\) of layer '0' exceed the float64 range"):
            graph.transform(acts)


def test_inverse_beyond_float64_raises_structure_error():
    acts = _overflowing()
    op = nsp.NNGraph(acts).get_transformer()
    with pytest.raises(nsp.StructureError, match=r"exceed the float64 range"):
        op.inverse(np.array([1.7e308, 1.7e308, 1.7e308]))


def test_a_finite_spectrum_near_the_range_is_still_returned():
    acts = _overflowing()
    spectrum = nsp.NNGraph(acts).get_transformer().forward(np.array([1.7e308, -1.7e308, 0.0]))
    np.testing.assert_array_equal(spectrum, [1.7e308, -1.7e308, 0.0])


# -- 5: memory estimated before allocating, against what is available -------------------------
def test_available_memory_is_read_from_the_system():
    available = memory.available_bytes()
    assert available is not None and 0 < available
    with open("/proc/meminfo") as handle:
        total = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("MemTotal:"))
    assert available <= total


def test_the_cgroup_room_is_read_again_after_a_second(monkeypatch):
    reads = []
    monkeypatch.setattr(memory, "_cgroup_room", lambda: reads.append(1) or 10_000)
    monkeypatch.setattr(memory, "_cgroup_read", [float("-inf"), None])
    assert memory.available_bytes() <= 10_000 and memory.available_bytes() <= 10_000
    assert len(reads) == 1
    monkeypatch.setattr(memory, "_CGROUP_REREAD_SECONDS", 0.0)
    memory.available_bytes()
    assert len(reads) == 2


def test_causal_transform_refuses_before_allocating(monkeypatch):
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    acts = nsp.Activations(net, torch.randn(1, 3, 16, 16))
    graph = nsp.NNGraph(acts)
    op = graph.get_transformer()
    monkeypatch.setattr(memory, "MEMORY_LIMIT", 100_000)
    calls = []
    monkeypatch.setattr(op, "_round", lambda *args: calls.append(args))
    with pytest.raises(MemoryError, match=r"exact transform of 1 signal\(s\) on this 5,[0-9]{3}-node graph needs about .* MiB, "
                       r"but only 0 MiB of memory is available"):
        graph.transform(acts)
    assert calls == []  # refused up front, not halfway


def test_causal_transform_estimate_is_an_upper_bound_of_what_it_uses():
    import tracemalloc

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(1152, 10))
    acts = nsp.Activations.from_batch(net, torch.randn(4, 3, 16, 16))
    for incl in (True, False):
        op = nsp.NNGraph(acts[0], INCL=incl).get_transformer()
        signals = np.stack([a.to_numpy() for a in acts])
        counts = op._limbs_per_layer(53 + 1100)
        estimate = op._peak_bytes(counts, 4, inverse=False)
        tracemalloc.start()
        op.forward(signals)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        # Within a factor of a few, so a refusal means the machine really is too small.
        assert 0.1 * estimate < peak < 3 * estimate, (incl, peak, estimate)


def test_ancestor_sets_refuse_against_available_memory_not_a_fixed_8_gib(monkeypatch):
    assert ancestor_sets.ANCESTOR_MEMORY_LIMIT is None
    # Local receptive fields: rows of a dense Linear share one ancestor set, which fits anywhere.
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    acts = nsp.Activations(net, torch.randn(1, 1, 16, 16))
    monkeypatch.setattr(memory, "available_bytes", lambda: 10_000)
    with pytest.raises(MemoryError, match=r"ancestor sets \(the memory available\): .* by layer '0', 1 of 3 "
                       r"\(estimated before allocating\)"):
        nsp.NNGraph(acts, INCL=False).get_transformer()
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 30)
    nsp.NNGraph(acts, INCL=False).get_transformer()


def test_networkx_view_refuses_beyond_memory_and_warns_when_large(monkeypatch):
    net = nn.Sequential(nn.Linear(200, 200))
    graph = nsp.NNGraph(nsp.Activations(net, torch.randn(1, 200)))
    monkeypatch.setattr(memory, "available_bytes", lambda: 1_000_000)
    with pytest.raises(MemoryError, match=r"networkx view .* 40,000-edge graph needs about .*graph\.adjacency\(\)"):
        list(graph.edges())
    monkeypatch.setattr(memory, "available_bytes", lambda: None)
    monkeypatch.setattr("nsp.graph.nngraph._EDGE_WARNING", 10_000)
    with pytest.warns(UserWarning, match=r"networkx view of 40,000 edges"):
        assert len(list(graph.edges())) == 40_000


# -- 11: training-mode layers --------------------------------------------------------------
@pytest.mark.parametrize("layers", [None, "leaves"])
def test_recording_a_train_mode_batchnorm_leaves_its_running_statistics_unchanged(layers):
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU()).train()
    before = {k: v.clone() for k, v in net[1].named_buffers()}
    patterns = nsp.Activations.from_batch(net, torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), layers)
    # Before: running_mean, running_var and num_batches_tracked moved, and NNGraph then refused the layer.
    for name, value in net[1].named_buffers():
        assert torch.equal(value, before[name]), name
    with pytest.raises(nsp.UnsupportedModuleError, match="BatchNorm1d"):
        nsp.NNGraph(patterns[0])


@pytest.mark.parametrize("module", [nn.Dropout(0.5), nn.RReLU(), nn.AlphaDropout(0.2)], ids=type)
@pytest.mark.parametrize("incl", [True, False])
def test_random_train_mode_layers_are_refused_in_both_modes(module, incl):
    net = nn.Sequential(nn.Linear(4, 3), module).train()
    acts = nsp.Activations(net, torch.randn(1, 4))
    # Before: INCL=True accepted them, and the spectrum was that of one random draw.
    with pytest.raises(nsp.UnsupportedModuleError, match=r"random in training mode.*call network.eval\(\) first"):
        nsp.NNGraph(acts, INCL=incl)
    net.eval()
    nsp.NNGraph(nsp.Activations(net, torch.randn(1, 4)), INCL=incl)
