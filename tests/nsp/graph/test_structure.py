"""INCL=False leaf patterns built in slices of output rows equal the reference's edges; INCL=True
relations through BatchNorm and activations equal the general path's."""

import dataclasses

import pytest
import torch
from torch import nn

import nsp
import reference as R
from test_structure_layers import _check_against_reference
import zoo
from nsp.graph import rules, structure


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


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)) + x)


class _ChannelsLast(nn.Module):
    """Activations applied with the channels last (ConvNeXt's detour), then BatchNorm."""

    def __init__(self):
        super().__init__()
        self.conv, self.act, self.gelu, self.bn = nn.Conv2d(2, 3, 2), nn.ReLU(), nn.GELU(), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.gelu(self.act(self.conv(x).permute(0, 2, 3, 1)))
        return self.bn(y.permute(0, 3, 1, 2))


def _terms(structure):
    """Every relation of a structure, factor by factor (shape, dtype, bytes) with its other fields."""
    out = []
    for parents in structure.parents:
        for k, rel in sorted(parents.items()):
            for term in rel.terms:
                fields = {f.name: getattr(term, f.name) for f in dataclasses.fields(term)}
                factors = [(f.shape, f.dtype.str, f.tobytes()) for f in fields.pop("factors")]
                out.append((k, rel.n_out, rel.n_in, factors, repr(fields)))
    return out


@pytest.mark.parametrize("layers", [None, "leaves"])
@pytest.mark.parametrize("make", [lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), _Block()),
                                  lambda: nn.Sequential(_ChannelsLast(), nn.ReLU(inplace=True))], ids=["block", "channels_last"])
def test_batchnorm_and_activations_keep_their_input_relations_as_the_general_path_composes_them(monkeypatch, make, layers):
    # INCL=True takes BatchNorm and activation modules' relations straight from their input;
    # the general path (the rule's identity term, composed) must give the same relations.
    torch.manual_seed(0)
    net = make().eval()
    acts = nsp.Activations(net, torch.randn(1, 1 if isinstance(net[0], nn.Conv2d) else 2, 5, 5), layers)
    fast = _terms(nsp.NNGraph(acts).structure)
    monkeypatch.setattr(structure, "_COPY_RULES", ())
    assert _terms(nsp.NNGraph(acts).structure) == fast


def test_the_tensors_an_op_reads_each_once_in_order():
    # One tensor argument (nearly every op) takes a shortcut past the tree walk; keyword
    # arguments, nested lists and repeats take the walk.
    from nsp.graph.dataflow import Op, Ref

    a, b, c = Ref(-1), Ref(0), Ref(2, 1)

    def op(args, kwargs=None):
        return Op("function", torch.add, args, kwargs or {}, (1,), "", "")

    assert structure._refs(op((b,))) == [b]
    assert structure._refs(op((b,), {"other": a})) == [b, a]
    assert structure._refs(op(([c, a, c], 1))) == [c, a]
    assert structure._refs(op((b, 2.0, b), {"alpha": 3})) == [b]
    assert structure._refs(op((1.0,))) == []


class _Reshapes(nn.Module):
    """Views that split and merge axes in place, a channel shuffle (a view after a transpose and
    copies), a copy in the tensor's own order and a flatten, between convolutions."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, groups=4), nn.Linear(16, 3)

    def forward(self, x):
        y, n = self.a(x), x.shape[0]
        y = y.view(n, 2, 2, 5, 5).reshape(n, 4, 25).unflatten(2, (5, 5))
        y = y.view(n, 2, 2, 5, 5).transpose(1, 2).clone().contiguous().view(n, 4, 5, 5)
        return self.fc(torch.flatten(self.b(y.clone())[..., :2, :2], 1))


@pytest.mark.parametrize("shortcut, off", [("ReshapeRule", type("NotReshape", (), {})), ("_COPY_METHODS", frozenset())],
                         ids=["reshape", "copy"])
@pytest.mark.parametrize("layers", [None, "leaves"])
def test_reshapes_and_copies_keep_their_input_relations_as_the_general_path_composes_them(monkeypatch, layers, shortcut,
                                                                                         off):
    # INCL=True takes a view's or reshape's relations straight from its input, a transpose
    # kept aside applied first, and a copy's (contiguous, clone) with the transpose still
    # aside; the general path (the rules' identity, composed) must agree.
    torch.manual_seed(0)
    net, x = _Reshapes().eval(), torch.randn(1, 2, 5, 5)
    acts = nsp.Activations(net, x, layers)
    fast = _terms(nsp.NNGraph(acts).structure)
    monkeypatch.setattr(structure, shortcut, off)
    assert _terms(nsp.NNGraph(acts).structure) == fast
    monkeypatch.undo()
    _check_against_reference(net, x, "leaves" if layers else [n for n, _ in net.named_children()], True)


def test_a_reshape_that_moves_the_batch_is_still_refused():
    class Fold(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return self.a(x).reshape(2, 1, 5, 5)

    with pytest.raises(rules.UnsupportedModuleError, match="moves the batch dimension"):
        nsp.NNGraph(nsp.Activations(nn.Sequential(Fold()), torch.randn(1, 2, 5, 5)))
