"""nsp.attribution's method registry: register_method, unregister_method and using_methods."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("captum.attr")

import nsp.attribution as attribution  # noqa: E402
from nsp.attribution import METHODS, Saliency, attribute  # noqa: E402


class Doubled(Saliency):
    """Saliency times two: a method of one's own."""

    name = "doubled"

    def _attribute(self, inputs, target):
        return 2 * super()._attribute(inputs, target)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).eval()


X = torch.randn(2, 1, 2, 3)


def test_a_registered_method_is_chosen_by_name_and_unregistered():
    before = list(METHODS.items())
    attribution.register_method("doubled", Doubled)
    try:
        assert METHODS["doubled"] is Doubled
        torch.testing.assert_close(attribute(_net(), X, "doubled"), 2 * attribute(_net(), X, "saliency"))
    finally:
        attribution.unregister_method("doubled")
    assert list(METHODS.items()) == before
    with pytest.raises(ValueError, match="unknown method 'doubled'"):
        attribute(_net(), X, "doubled")
    with pytest.raises(KeyError, match="nsp.attribution.unregister_method: 'doubled' has no method"):
        attribution.unregister_method("doubled")


def test_a_method_is_replaced_only_with_override():
    with pytest.raises(ValueError, match=r"nsp.attribution.register_method: 'saliency' already has a method "
                                         r"\(Saliency\); pass override=True"):
        attribution.register_method("saliency", Doubled)
    with pytest.raises(TypeError, match="expected a subclass of nsp.attribution.Attribution"):
        attribution.register_method("mine", object)
    assert METHODS["saliency"] is Saliency


def test_using_methods_restores_the_table_on_exit_and_on_an_exception():
    before = list(METHODS.items())
    with attribution.using_methods({"saliency": Doubled, "doubled": Doubled}):
        assert METHODS["saliency"] is Doubled
        torch.testing.assert_close(attribute(_net(), X, "saliency"), attribute(_net(), X, "doubled"))
    assert list(METHODS.items()) == before
    with pytest.raises(RuntimeError, match="inside"):
        with attribution.using_methods({"doubled": Doubled}):
            raise RuntimeError("inside")
    assert list(METHODS.items()) == before
