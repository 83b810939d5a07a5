"""Recording activation patterns: layers, order, copies and errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nsp


class _TwoStage(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(2).eval()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(x))


def test_layers_names_shapes_and_order():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    acts = nsp.Activations(net, torch.randn(1, 1, 4, 4))
    assert acts.layernames == ["input", "0", "1", "2"]
    assert acts.layerdescriptions[0] == "Input[1, 1, 4, 4]"
    assert acts.layerdescriptions[1] is net[0]
    assert acts.shapes == [(1, 4, 4), (2, 2, 2), (8,), (3,)]


def test_in_place_ops_do_not_overwrite_recorded_layers():
    net = _TwoStage().eval()
    x = torch.randn(1, 2, 3, 3)
    acts = nsp.Activations(net, x)
    expected_bn = net.bn(x)[0]
    torch.testing.assert_close(acts.layeractivations[1], expected_bn)
    torch.testing.assert_close(acts.layeractivations[2], F.relu(expected_bn))
    assert (acts.layeractivations[1] < 0).any()


def test_vector_round_trip():
    net = nn.Sequential(nn.Linear(3, 2), nn.Tanh())
    acts = nsp.Activations(net, torch.randn(1, 3))
    vector = acts.to_vector()
    assert isinstance(vector, list) and len(vector) == 7
    again = acts.to_activations(np.array(vector) * 2)
    torch.testing.assert_close(again.layeractivations[1], acts.layeractivations[1].double() * 2)
    assert again.layernames == acts.layernames
    with pytest.raises(ValueError, match="has 6 values, but the pattern has 7 nodes"):
        acts.to_activations(vector[:-1])


def test_batch_of_more_than_one_input_is_refused():
    with pytest.raises(ValueError, match=r"single input with a batch dimension of size 1, got shape \[2, 3\]"):
        nsp.Activations(nn.Linear(3, 2), torch.randn(2, 3))


def test_bad_argument_types():
    with pytest.raises(TypeError, match="`network` to be a torch.nn.Module"):
        nsp.Activations(lambda x: x, torch.randn(1, 3))
    with pytest.raises(TypeError, match="`input` to be a torch.Tensor"):
        nsp.Activations(nn.Linear(3, 2), [[1.0, 2.0, 3.0]])


def test_child_called_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(self.fc(x))

    with pytest.raises(ValueError, match="child 'fc' .* ran more than once"):
        nsp.Activations(Twice(), torch.randn(1, 3))


def test_child_with_tuple_output_records_its_first_output():
    net = nn.Sequential(nn.MaxPool2d(2, return_indices=True))
    x = torch.randn(1, 1, 4, 4)
    acts = nsp.Activations(net, x)
    torch.testing.assert_close(acts.layeractivations[1], F.max_pool2d(x, 2)[0])
    assert nsp.NNGraph(acts).number_of_edges() == 16


def test_child_without_tensor_output_is_refused():
    class Nothing(nn.Module):
        def forward(self, x):
            return None

    net = nn.Sequential(Nothing())
    with pytest.raises(TypeError, match="child '0' \\(Nothing\\) returned NoneType"):
        nsp.Activations(net, torch.randn(1, 3))


def _common_hooks() -> list[int]:
    """The sizes of torch's tables of forward hooks common to all modules."""
    from torch.nn.modules import module

    return [len(module._global_forward_pre_hooks), len(module._global_forward_hooks),
            len(module._global_forward_hooks_with_kwargs), len(module._global_forward_hooks_always_called)]


@pytest.mark.parametrize("layers", [None, "leaves"])
def test_hooks_are_removed_even_after_an_error(layers):
    before = _common_hooks()
    block = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    net = nn.Sequential(block, nn.Linear(4, 3))
    with pytest.raises(RuntimeError):
        nsp.Activations(net, torch.randn(1, 3), layers)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    assert _common_hooks() == before
    net[1] = net[0]
    with pytest.raises(ValueError):
        nsp.Activations(net, torch.randn(1, 3))
    assert not net[0]._forward_hooks and not net[0]._forward_pre_hooks
    assert _common_hooks() == before


def test_from_batch_equals_single_recordings():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))
    x = torch.randn(3, 1, 4, 4)
    patterns = nsp.Activations.from_batch(net, x)
    assert len(patterns) == 3
    for p, pattern in enumerate(patterns):
        single = nsp.Activations(net, x[p: p + 1])
        assert pattern.layernames == single.layernames
        assert pattern.layerdescriptions[0] == single.layerdescriptions[0]
        for a, b in zip(pattern.layeractivations, single.layeractivations):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"\(P, \*input_shape\) with P >= 1"):
        nsp.Activations.from_batch(net, torch.randn(0, 1, 4, 4))


class _Logged(torch.Tensor):
    """A tensor subclass that notes every torch function it sees."""

    seen: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(getattr(func, "__name__", str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


def _mode_calls_and_mlp(monkeypatch) -> tuple[list[str], nn.Module, torch.Tensor]:
    """The names of the torch functions the recorder's mode sees from now on, a small MLP and its input."""
    from nsp.graph import dataflow

    calls: list[str] = []
    real = dataflow.Recorder.__torch_function__
    monkeypatch.setattr(dataflow.Recorder, "__torch_function__",
                        lambda self, func, *a, **k: (calls.append(getattr(func, "__name__", "")), real(self, func, *a, **k))[1])
    torch.manual_seed(0)
    return calls, nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), torch.randn(1, 3)


def test_modules_recorded_whole_run_without_the_recorders_mode_but_with_a_subclass_own(monkeypatch):
    # The recorder steps off the torch-function stack inside a module it records whole
    # (its internals are never recorded): only its own mode, not a tensor subclass's handler.
    calls, net, x = _mode_calls_and_mlp(monkeypatch)
    nsp.Activations(net, x, "leaves")
    assert "linear" not in calls and "relu" not in calls
    _Logged.seen = []
    acts = nsp.Activations(net, x.as_subclass(_Logged))
    assert "linear" in _Logged.seen and "relu" in _Logged.seen
    assert torch.equal(acts.layeractivations[-1].as_subclass(torch.Tensor), net(x)[0].detach())


def test_a_layers_copy_and_shape_bypass_the_recorders_mode_but_not_a_subclass_own(monkeypatch):
    # Reading each chosen layer (its copy, its shape) is nsp's own work: the mode steps off
    # for it (it cost three Python dispatches per layer); a subclass's handler still sees it.
    calls, net, x = _mode_calls_and_mlp(monkeypatch)
    acts = nsp.Activations(net, x, "leaves")
    assert calls == []
    assert torch.overrides._get_current_function_mode() is None
    assert nsp.NNGraph(acts).number_of_edges() == 3 * 4 + 4 + 4 * 2
    _Logged.seen = []
    nsp.Activations(net, x.as_subclass(_Logged), "leaves")
    assert "detach" in _Logged.seen and "to" in _Logged.seen


def test_the_recorders_mode_is_restored_when_a_module_recorded_whole_raises():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2))
    with pytest.raises(RuntimeError):
        nsp.Activations(net, torch.randn(1, 3))
    assert torch.overrides._get_current_function_mode() is None
    acts = nsp.Activations(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), torch.randn(1, 3))
    assert acts.layernames == ["input", "0", "1"] and nsp.NNGraph(acts).number_of_edges() == 16


class _ScaledBetween(nn.Module):
    """The parent doubles the first child's output in place before the second child reads it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.ReLU()

    def forward(self, x):
        h = self.a(x)
        h.mul_(2)
        return self.b(h)


def test_a_childs_input_is_what_it_received_also_when_its_parent_wrote_into_the_last_output():
    # A child's input is the previous child's copied output only while that output is
    # unchanged: here the parent doubled it in place in between.
    torch.manual_seed(0)
    net, x = _ScaledBetween(), torch.randn(1, 3)
    acts = nsp.Activations(net, x)
    out = net.a(x)[0].detach()
    assert torch.equal(acts.layeractivations[1], out)
    assert torch.equal(acts._layerinputs[2], 2 * out)
    assert torch.equal(acts._layerinputs[1], x[0])


class _DoubleInPlace(nn.Module):
    def forward(self, x):
        return x.mul_(2)


def test_building_an_incl_false_graph_leaves_the_pattern_as_it_was():
    # The INCL=False replay runs the child's x.mul_(2) on its recorded input, which is the
    # previous layer's recorded output: on a copy of it.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), _DoubleInPlace(), nn.ReLU())
    acts = nsp.Activations(net, torch.randn(1, 3))
    before = [a.clone() for a in acts.layeractivations]
    first = nsp.NNGraph(acts, INCL=False).number_of_edges()
    assert all(torch.equal(a, b) for a, b in zip(acts.layeractivations, before))
    assert nsp.NNGraph(acts, INCL=False).number_of_edges() == first


class _Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 1)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("layers", [None, "leaves"])
def test_a_users_pre_hook_on_an_inner_module_is_part_of_the_dataflow(layers):
    # The hook reverses the conv's input: output position i reads input position 3 - i.
    # The recorder's hooks run after the module's own, so the flip is recorded.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 1, 1), _Inner())
    handle = net[1].conv.register_forward_pre_hook(lambda m, a: (a[0].flip(-1),))
    try:
        acts = nsp.Activations(net, torch.randn(1, 1, 4), layers)
        adjacency = nsp.NNGraph(acts).adjacency().toarray()
    finally:
        handle.remove()
    last, before = slice(len(adjacency) - 4, None), slice(len(adjacency) - 8, len(adjacency) - 4)
    block = adjacency[before, last] + adjacency[last, before].T
    assert (block != 0).astype(int).tolist() == np.fliplr(np.eye(4, dtype=int)).tolist()
