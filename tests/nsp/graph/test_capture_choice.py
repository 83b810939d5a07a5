"""Which modules ``layers='leaves'`` and predicates choose: the one-walk choice in
``nsp.graph.capture`` against its definition over ``named_modules()`` (issue 23)."""

from __future__ import annotations

import pytest
from torch import nn

from nsp.graph.capture import _choose
from nsp.graph.rules import is_leaf_module

torchvision = pytest.importorskip("torchvision")


class _Shared(nn.Module):
    """Shared modules under several names, a None child, and the parts of a module recorded whole."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2)
        self.proj = self.attn.out_proj  # first met inside attn: hidden, and not yielded again
        self.seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.again = self.seq
        self.empty = None
        self.items = nn.ModuleList([nn.Linear(4, 4), self.seq[0], nn.Sequential()])


def _defined(network: nn.Module, layers) -> list[tuple[str, int]]:
    """The choice by its definition: visible modules have no proper ancestor in `whole`."""
    modules = dict(network.named_modules())
    del modules[""]
    whole = {n for n, m in modules.items() if is_leaf_module(m)}
    visible = {n: m for n, m in modules.items()
               if not any(".".join(n.split(".")[:i]) in whole for i in range(1, n.count(".") + 1))}
    if layers == "leaves":
        return [(n, id(m)) for n, m in visible.items() if next(m.children(), None) is None or n in whole]
    return [(n, id(m)) for n, m in visible.items() if layers(n, m)]


@pytest.mark.parametrize("make", [_Shared, lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=10),
                                  lambda: torchvision.models.vit_b_16(num_classes=10)])
def test_leaves_and_predicates_choose_as_defined(make):
    net = make()
    for layers in ["leaves", lambda n, m: isinstance(m, (nn.Linear, nn.Conv2d)), lambda n, m: True]:
        assert [(n, id(m)) for n, m in _choose(net, layers)] == _defined(net, layers)


def test_parts_of_a_module_recorded_whole_and_repeats_are_not_chosen():
    names = [n for n, _ in _choose(_Shared(), lambda n, m: True)]
    assert names == ["attn", "seq", "seq.0", "seq.1", "items", "items.0", "items.2"]
    assert [n for n, _ in _choose(_Shared(), "leaves")] == ["attn", "seq.0", "seq.1", "items.0", "items.2"]
