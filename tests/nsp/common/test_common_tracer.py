"""nsp.common.tracer: the op tracer that capture, local_affine and attribution share."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from nsp.common.tracer import ModuleTracer, map_leaves, tensors_in, trace


class _Calls(ModuleTracer):
    """Records the path of the module that made each call to torch.tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.events: list[str] = []

    def entered(self, path: str, module: nn.Module, args: tuple) -> None:
        self.events.append(f"+{path}")

    def left(self, module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        self.events.append(f"-{self.path}")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.tanh:
            self.seen.append(self.path)
        return func(*args, **(kwargs or {}))


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = _Block(), _Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.b(self.a(x)))


def _common_hooks() -> list[int]:
    """The sizes of torch's tables of forward hooks common to all modules."""
    from torch.nn.modules import module

    return [len(module._global_forward_pre_hooks), len(module._global_forward_hooks),
            len(module._global_forward_hooks_with_kwargs), len(module._global_forward_hooks_always_called)]


@pytest.mark.parametrize("shared", [False, True])
def test_each_call_is_attributed_to_the_module_that_made_it(shared):
    before = _common_hooks()
    net, tracer = _Net(), _Calls()
    with tracer.watching(net.named_modules(), shared), tracer:
        net(torch.ones(1, 3))
    assert tracer.seen == ["a", "b", ""]
    assert tracer.events == ["+", "+a", "+a.fc", "-a.fc", "-a", "+b", "+b.fc", "-b.fc", "-b", "-"]
    assert tracer.stack == []
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    assert _common_hooks() == before


def test_common_hooks_trace_only_the_thread_that_watched():
    net, tracer = _Net(), _Calls()
    with tracer.watching(net.named_modules(), shared=True):
        other = threading.Thread(target=net, args=(torch.ones(1, 3),))
        other.start()
        other.join()
        assert tracer.events == []
        net(torch.ones(1, 3))
    assert tracer.events[:3] == ["+", "+a", "+a.fc"] and tracer.stack == []


@pytest.mark.parametrize("shared", [False, True])
def test_the_stack_stays_balanced_when_a_forward_raises_and_the_model_goes_on(shared):
    class Fallback(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.risky, self.safe = _Block(), _Block()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            try:
                return self.risky(x[:, :2])
            except RuntimeError:
                return self.safe(x)

    net, tracer = Fallback(), _Calls()
    with tracer.watching(net.named_modules(), shared), tracer:
        net(torch.ones(1, 3))
    assert tracer.seen == ["safe"]
    assert tracer.stack == []


def test_hooks_without_the_mode_cost_no_torch_call():
    net, tracer = _Net(), _Calls()
    with tracer.watching(net.named_modules()):
        net(torch.ones(1, 3))
    assert tracer.seen == [] and tracer.events[:2] == ["+", "+a"]


def test_trace_counts_calls_and_finds_functional_relus():
    class Reused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act = nn.Linear(3, 3), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.act(self.fc(self.act(x))))

    net = Reused()
    traced = trace(net, torch.ones(2, 3), watch_relus=True)
    assert traced.calls[net.act] == 2 and traced.calls[net.fc] == 1
    assert traced.order == [net, net.act, net.fc]
    assert traced.output_shapes[net.fc] == (2, 3)
    assert [(f.module, f.kind, f.function) for f in traced.functional_relus] == [("", "Reused", "torch.relu")]
    assert trace(net, torch.ones(2, 3)).functional_relus == []


def test_pytree_helpers():
    a, b = torch.ones(1), torch.zeros(2)
    assert [t is x for t, x in zip(tensors_in((a, {"k": [3, b]})), (a, b))] == [True, True]
    assert map_leaves(lambda v: v * 2, (1, {"k": [2]})) == (2, {"k": [4]})


@pytest.mark.parametrize("watch_relus", [False, True])
def test_trace_leaves_no_hooks(watch_relus):
    net = _Net()
    trace(net, torch.ones(1, 3), watch_relus=watch_relus)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


def test_tensors_in_and_map_leaves_agree_with_pytree_on_plain_and_other_nodes():
    from collections import OrderedDict, namedtuple

    from torch.utils._pytree import tree_flatten, tree_map

    pair = namedtuple("pair", "a b")
    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    for value in [((a, 1), {"z": b, "y": [c, "s"]}), (pair(b, a), [OrderedDict(q=c, p=a)]), torch.max(c, 0), a]:
        assert [id(t) for t in tensors_in(value)] == [id(t) for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]
        assert map_leaves(repr, value) == tree_map(repr, value)


def test_tensors_in_and_map_leaves_fast_leaves_and_nested_other_nodes_agree_with_pytree():
    # The walks skip scalar leaves and sizes by type and give up on an unplain node met
    # deep inside (a namedtuple in a list): each must still match pytree.
    from collections import namedtuple

    from torch.utils._pytree import tree_flatten, tree_map

    pair = namedtuple("pair", "a b")
    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    values = [
        (a, torch.Size([2, 3]), [slice(0, 1), Ellipsis, None], {"d": torch.float32, "v": torch.device("cpu"), "c": c}),
        [torch.nn.Parameter(b), (1.5, True, "s", torch.contiguous_format, torch.strided)],
        torch.Size([4]),
        [c, [a, pair(b, a)], c],
        {"k": (c, [torch.max(c, 0)])},
        ((), [], {}),
        3,
    ]
    for value in values:
        assert [id(t) for t in tensors_in(value)] == [id(t) for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]
        assert map_leaves(repr, value) == tree_map(repr, value)
