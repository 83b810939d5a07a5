"""INCL=False leaf patterns built in slices of output rows equal the reference's edges."""

import pytest

import nsp
import reference as R
import zoo
from nsp.graph import rules


@pytest.mark.parametrize("name", ["pruned_cnn", "conv2d_groups", "conv1d_stride_pad_dilation", "maxpool2d_ceil_pad_dilation",
                                  "pruned_mlp", "batchnorm2d", "dead_relu", "adaptive_maxpool2d"])
def test_leaf_patterns_in_slices_match_the_reference(monkeypatch, name):
    monkeypatch.setattr(rules.leaf, "_EDGE_CHUNK", 5)
    net, x, ref = zoo.cached(name, False)
    graph = nsp.NNGraph(nsp.Activations(net, x), INCL=False)
    assert graph.number_of_edges() == ref.number_of_edges
    assert set(graph.edges()) == R.edge_node_pairs(ref.capture.shapes, ref.edges)
    for _, _, rel in graph.structure.blocks():
        assert rel.has_sorted_indices
