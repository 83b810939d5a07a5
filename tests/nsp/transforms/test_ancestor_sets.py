"""INCL=False ancestor sets: sparse and dense row chunks against the dense reference closure.

The representation of each chunk (CSR indices or packed bitsets) and the chunk size are
forced here, so that every path, and every mixture of them, is checked on the same
networks: the sets themselves against ``reference.ancestor_matrices`` and the spectrum
against ``reference.exact_spectrum``.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from torch import nn

import nsp
import chunks
import reference as R
import zoo
from nsp.transforms import ancestor_sets
from nsp.transforms.ancestor_sets import AncestorSets

NETWORKS = ["conv_relu_maxpool2d", "pruned_cnn", "pruned_mlp", "dead_relu", "maxpool2d_ceil_pad_dilation",
            "conv2d_groups", "act_relu_in_block", "basicblock_downsample", "pruned_resnet", "readme_net"]


def _check(net, x, ref):
    acts = nsp.Activations(net, x)
    graph = nsp.NNGraph(acts, INCL=False)
    sets = AncestorSets(graph.structure)
    for layer, expected in enumerate(R.ancestor_matrices(ref.edges), start=1):
        got = np.zeros_like(expected)
        offsets = graph.structure.offsets
        for k, block in sets.blocks[layer].items():
            bits = np.unpackbits(block.to_bits().view(np.uint8), axis=1, count=block.n_cols).astype(bool)
            got[:, offsets[k]: offsets[k + 1]] = bits
            # The distinct rows read from the chunks (what later layers OR) give the same rows.
            distinct, classes = block.unique_bits()
            assert len({r.tobytes() for r in distinct}) == distinct.shape[0]
            np.testing.assert_array_equal(distinct[classes], block.to_bits())
        np.testing.assert_array_equal(got, expected, err_msg=graph.structure.names[layer])
    errors = R.relative_errors(graph.transform(acts).layeractivations, ref.spectrum)
    assert max(errors) <= 1e-9, errors


@pytest.mark.parametrize("mode,chunk", [("auto", 1 << 22), ("sparse", 7), ("dense", 5), ("alternate", 3)])
@pytest.mark.parametrize("name", NETWORKS)
def test_sets_and_spectrum_in_every_representation(monkeypatch, name, mode, chunk):
    chunks.force(monkeypatch, mode, chunk)
    net, x, ref = zoo.cached(name, False)
    _check(net, x, ref)


@settings(max_examples=15, deadline=None)
@given(zoo.random_networks())
def test_random_networks_with_mixed_chunks(case):
    _, net, x = case
    with pytest.MonkeyPatch.context() as monkeypatch:
        chunks.force(monkeypatch, "alternate", 11)
        _check(net, x, R.reference(net, x, incl=False))


def test_chunks_choose_the_smaller_form():
    # A wide conv layer's ancestors are a few positions each (sparse); the Linear layer
    # after it depends on everything before (dense).
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 30 * 30, 3)).eval()
    graph = nsp.NNGraph(nsp.Activations(net, torch.randn(1, 1, 32, 32)), INCL=False)
    sets = AncestorSets(graph.structure)
    assert not any(block.has_dense for block in sets.blocks[1].values())
    assert all(block.has_dense for block in sets.blocks[4].values())
    bitsets = sum(int(graph.structure.sizes[layer]) * int(graph.structure.offsets[layer]) / 8 for layer in range(5))
    assert sets.nbytes < bitsets / 4
    # Each layer's limbs are read once, by the next layer; the float64 copy serves the rest.
    assert sets.last_read == [1, 2, 3, 4, 4]


def test_progress_estimates_the_time_and_memory_left(monkeypatch, caplog):
    import logging

    from nsp.common import progress

    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    net, x, _ = zoo.cached("basicblock_downsample", False)
    graph = nsp.NNGraph(nsp.Activations(net, x), INCL=False)
    with caplog.at_level(logging.INFO, logger="nsp"):
        sets = AncestorSets(graph.structure)
    messages = [r.getMessage() for r in caplog.records if "ancestor sets:" in r.getMessage()]
    assert len(messages) == len(graph.structure.names) - 1
    assert all(" of ancestor sets so far; at this rate about " in m and " in all, against a limit of " in m
               for m in messages)
    # After the last layer nothing is left, and the extrapolation is what the sets hold.
    total = ancestor_sets._size(sets.nbytes)
    assert messages[-1].endswith(f"at this rate about 0 s more and {total} in all, against a limit of "
                                 f"{ancestor_sets._size(sets._limit[0])}")
