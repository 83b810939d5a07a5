"""Transforms chosen by name: register_transform, unregister_transform and using_transforms."""

from __future__ import annotations

import numpy as np
import pytest

import nsp
import zoo
from nsp.transforms import transformer
from nsp.transforms.base import GraphTransform
from nsp.transforms.transformer import TRANSFORMS


class Scaled(GraphTransform):
    """Twice the signal: a transform of one's own."""

    def __init__(self, n: int) -> None:
        self.n = n

    def _forward(self, signals):
        return 2 * signals

    def _inverse(self, spectra):
        return spectra / 2


def _scaled(graph):
    return Scaled(graph.structure.n)


def _graph_and_pattern():
    net, x, _ = zoo.cached("readme_net", True)
    acts = nsp.Activations(net, x)
    return nsp.NNGraph(acts), acts


def test_a_registered_transform_is_chosen_by_name_and_unregistered():
    before = list(TRANSFORMS.items())
    graph, acts = _graph_and_pattern()
    transformer.register_transform("scaled", _scaled)
    try:
        np.testing.assert_array_equal(graph.transform(acts, type="scaled").to_numpy(), 2 * acts.to_numpy())
        assert isinstance(nsp.Transformer.get_inv_fourier_matrix(graph, "scaled"), Scaled)
    finally:
        transformer.unregister_transform("scaled")
    assert list(TRANSFORMS.items()) == before
    with pytest.raises(ValueError, match=r"unknown transform type='scaled'; expected one of \('standard', 'laplacian'\)"):
        nsp.NNGraph(acts).get_transformer("scaled")


def test_a_transform_is_replaced_only_with_override():
    with pytest.raises(ValueError, match=r"register_transform: 'standard' already has a transform \(_causal\); "
                                         "pass override=True"):
        transformer.register_transform("standard", _scaled)
    with pytest.raises(TypeError, match="expected a function graph -> GraphTransform"):
        transformer.register_transform("mine", "not a function")


def test_using_transforms_restores_the_table_on_exit_and_on_an_exception():
    before = list(TRANSFORMS.items())
    graph, acts = _graph_and_pattern()
    with transformer.using_transforms({"standard": _scaled}):
        np.testing.assert_array_equal(graph.transform(acts).to_numpy(), 2 * acts.to_numpy())
    assert list(TRANSFORMS.items()) == before
    with pytest.raises(RuntimeError, match="inside"):
        with transformer.using_transforms({"scaled": _scaled}):
            raise RuntimeError("inside")
    assert list(TRANSFORMS.items()) == before
    exact = nsp.NNGraph(acts).transform(acts).to_numpy()
    assert not np.array_equal(exact, 2 * acts.to_numpy())


def test_a_transform_that_builds_no_graph_transform_is_refused_by_name():
    graph, _ = _graph_and_pattern()
    with transformer.using_transforms({"broken": lambda graph: np.eye(3)}):
        with pytest.raises(TypeError, match="the transform 'broken' built a ndarray, not a GraphTransform"):
            graph.get_transformer("broken")
