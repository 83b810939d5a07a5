"""Operation rules (nsp.rules): the registry, user rules, and rules checked against autograd."""

import numpy as np
import pytest
import torch
from torch import nn

import nsp
import nsp.graph.rules as rules
from test_structure_layers import _check_against_reference, exact_dag_spectrum, reference_blocks


class Shift(nn.Module):
    """A user module nsp has no rule for: out[i] = x[i - 1] * w (out[0] = 0)."""

    def __init__(self, n):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n))

    def forward(self, x):
        return torch.nn.functional.pad(x[..., :-1], (1, 0)) * self.w


class ShiftRule(rules.Rule):
    aligned = True

    def relations(self, call):
        n = call.in_shape()[-1]
        lead = [np.eye(d, dtype=bool) for d in call.in_shape()[:-1]]
        return [rules.Term(tuple(lead) + (np.eye(n, k=-1, dtype=bool),))]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.ReLU(), Shift(6), nn.Linear(6, 3)).eval(), torch.randn(1, 5)


@pytest.mark.parametrize("incl", [True, False])
def test_user_rule_for_a_module_matches_the_reference(incl):
    net, x = _net()
    with torch.no_grad():
        net[2].w[3] = 0.0  # a zero weight: INCL=False drops its edge, measured by autograd
    with rules.using({Shift: ShiftRule()}):
        acts = nsp.Activations(net, x, layers="leaves")
        assert acts.layernames == ["input", "0", "1", "2", "3"]  # Shift is recorded whole
        graph = nsp.NNGraph(acts, INCL=incl)
    blocks = reference_blocks(net, x, acts.layernames[1:], incl)
    assert {(l, k) for l, p in enumerate(graph.structure.parents) for k in p} == set(blocks)
    for (l, k), expected in blocks.items():
        rel = graph.structure.parents[l][k]
        np.testing.assert_array_equal(rel.dense() if incl else rel.toarray(), expected)
    exact = exact_dag_spectrum(acts.to_numpy(), blocks, [a.numel() for a in acts.layeractivations])
    np.testing.assert_allclose(graph.transform(acts).to_numpy(), exact, rtol=1e-12, atol=0)


class Cumprod(nn.Module):
    def forward(self, x):
        return torch.cumprod(x, dim=-1)


def test_an_op_without_a_rule_is_named_with_its_module_path():
    net = nn.Sequential(nn.Linear(5, 6), Cumprod(), nn.Linear(6, 3)).eval()
    acts = nsp.Activations(net, torch.randn(1, 5), layers="leaves")
    with pytest.raises(nsp.UnsupportedModuleError, match=r"'1' \(cumprod in Cumprod\): no rule"):
        nsp.NNGraph(acts)


def test_register_rule_validates_its_arguments():
    with pytest.raises(TypeError, match="expected a Rule"):
        rules.register_rule(Shift, object())
    with pytest.raises(TypeError, match="must be an nn.Module subclass, a function or its name"):
        rules.register_rule(3, ShiftRule())


def _registry():
    return list(rules.RULES.items())


def test_registering_an_op_that_has_a_rule_is_refused_without_override():
    before = _registry()
    with pytest.raises(ValueError, match=r"torch\.relu already has a rule \(ElementwiseFunctionRule, registered as "
                                         r"'relu'\); pass override=True"):
        rules.register_rule(torch.relu, ShiftRule())
    with pytest.raises(ValueError, match=r"'relu' already has a rule"):
        rules.register_rule("relu", ShiftRule())
    with pytest.raises(ValueError, match=r"torch\.nn\.modules\.linear\.Linear already has a rule \(LinearRule\)"):
        rules.register_rule(nn.Linear, ShiftRule())
    # A list that clashes anywhere registers none of its ops.
    with pytest.raises(ValueError, match="'sigmoid' already has a rule"):
        rules.register_rule([Shift, "sigmoid"], ShiftRule())
    assert _registry() == before


def test_override_gives_the_op_its_own_rule_and_unregister_takes_it_back():
    relu = rules.rule_for_function("relu")
    mine = ShiftRule()
    try:
        rules.register_rule(torch.relu, mine, override=True)
        assert rules.rule_for_function(torch.relu) is mine
        # The other functions of that name keep the rule of the name.
        assert rules.rule_for_function(torch.nn.functional.relu) is relu
    finally:
        rules.unregister_rule(torch.relu)
    assert rules.rule_for_function(torch.relu) is relu
    with pytest.raises(KeyError, match=r"torch\.relu has no rule of its own; its rule is registered as 'relu'"):
        rules.unregister_rule(torch.relu)
    with pytest.raises(KeyError, match="'no_such_op' has no rule"):
        rules.unregister_rule("no_such_op")


def test_an_op_object_and_its_name_hit_the_same_rule():
    relu = rules.rule_for_function("relu")
    assert relu is not None
    for op in (torch.relu, torch.nn.functional.relu, torch.Tensor.relu):
        assert rules.rule_for_function(op) is relu
    mine = ShiftRule()
    with rules.using({torch.special.erf: mine}):
        assert rules.rule_for_function(torch.special.erf) is mine
        assert rules.rule_for_function("special_erf") is mine
        with pytest.raises(ValueError, match=r"'special_erf' already has a rule \(ShiftRule, registered as "
                                             r"torch\._C\._special\.special_erf\)"):
            rules.register_rule("special_erf", ShiftRule())
    with rules.using({"special_erf": mine}):
        assert rules.rule_for_function(torch.special.erf) is mine
        with pytest.raises(ValueError, match="already has a rule"):
            rules.register_rule(torch.special.erf, ShiftRule())


def test_using_restores_the_registry_on_exit_and_on_an_exception():
    import nsp.rules

    assert nsp.rules.using is rules.using and nsp.rules.unregister_rule is rules.unregister_rule
    before = _registry()
    mine = ShiftRule()
    with rules.using({Shift: mine, torch.relu: mine, "relu": mine}):
        assert rules.rule_for_module(Shift(3)) is mine
        assert rules.rule_for_function(torch.nn.functional.relu) is mine
        rules.register_rule(Cumprod, mine)  # registered inside the block: undone too
        rules.unregister_rule(nn.Linear)  # removed inside the block: back after it
    assert _registry() == before
    with pytest.raises(RuntimeError, match="inside"):
        with rules.using({nn.Linear: mine}):
            rules.register_rule("my_op", mine)
            raise RuntimeError("inside")
    assert _registry() == before
    assert rules.rule_for_module(nn.Linear(2, 2)) is not mine
    with pytest.raises(TypeError, match="nsp.rules.using: expected a Rule"):
        with rules.using({Shift: object()}):
            pass
    assert _registry() == before


class Erf(nn.Module):
    def forward(self, x):
        return torch.special.erf(x)


def test_torch_special_erf_is_registrable_by_object():
    net = nn.Sequential(nn.Linear(3, 4), Erf(), nn.Linear(4, 2)).eval()
    acts = nsp.Activations(net, torch.randn(1, 3), layers="leaves")
    with pytest.raises(nsp.UnsupportedModuleError, match=r"special_erf in Erf\): no rule"):
        nsp.NNGraph(acts)
    with rules.using({torch.special.erf: rules.ElementwiseFunctionRule()}):
        graph = nsp.NNGraph(acts)
    assert graph.number_of_edges() == 3 * 4 + 4 + 4 * 2


class _Piece(nn.Module):
    """A conv, then ``fn`` of its output in ``forward``, then an Identity layer."""

    def __init__(self, fn):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.fn = fn
        self.b = nn.Identity()

    def forward(self, x):
        return self.b(self.fn(self.a(x)))


# One piece per function rule; shapes (1, 4, 5, 5) in, any shape out.
PIECES = {
    "mean_keepdim": lambda x: x.mean((2, 3), keepdim=True),
    "mean": lambda x: x.mean(-1),
    "sum": lambda x: x.sum(1),
    "amax": lambda x: x.amax(2),
    "adaptive_avg_pool2d": lambda x: torch.nn.functional.adaptive_avg_pool2d(x, 1),
    "max_pool2d": lambda x: torch.nn.functional.max_pool2d(x, 2),
    "avg_pool2d": lambda x: torch.nn.functional.avg_pool2d(x, 2),
    "flatten": lambda x: torch.flatten(x, 1),
    "se_gate": lambda x: x * torch.sigmoid(x.mean((2, 3), keepdim=True)),
    "add_broadcast": lambda x: x + x.mean(1, keepdim=True),
    "div_broadcast": lambda x: x / (2 + x.mean(3, keepdim=True)),
    "channels_last_layer_norm": lambda x: torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (4,)).permute(0, 3, 1, 2),
    "transpose": lambda x: x.transpose(2, 3),
    "channel_shuffle": lambda x: x.view(x.shape[0], 2, 2, 5, 5).transpose(1, 2).flatten(1, 2),
    "chunk": lambda x: x.chunk(2, dim=1)[1] * 2,
    "split_cat": lambda x: torch.cat(x.split([1, 3], dim=1)[::-1], dim=1),
    "narrow": lambda x: x.narrow(2, 1, 3),
    "slice": lambda x: x[:, 1:3, ::2, 1],
    "cat_spatial": lambda x: torch.cat([x, x[:, :, :2]], dim=2),
    "group_norm": lambda x: torch.nn.functional.group_norm(x, 2),
    "instance_norm": lambda x: torch.nn.functional.instance_norm(x),
    "softmax": lambda x: x.softmax(dim=1),
    "matmul": lambda x: x @ x.transpose(2, 3),
    "roll": lambda x: torch.roll(x, (1, 2), (2, 3)),
    "pad": lambda x: torch.nn.functional.pad(x, (1, 0, 0, 2)),
    "scaled_dot_product_attention": lambda x: torch.nn.functional.scaled_dot_product_attention(x, x, x),
    "causal_attention": lambda x: torch.nn.functional.scaled_dot_product_attention(x, x * 2, x, is_causal=True),
    "cumsum": lambda x: x.cumsum(2),
    "maximum": lambda x: torch.maximum(x, x.flip(3)),
    "log_softmax": lambda x: x.log_softmax(-1),
    "unbind": lambda x: x.unbind(1)[2] * 2,
    "stack": lambda x: torch.stack([x[:, 0], x[:, 3] * 2], dim=2),
    "expand": lambda x: x[:, :1].expand(-1, 4, -1, -1),
    "repeat": lambda x: x[:, :2].repeat(1, 2, 1, 1),
    "index_select": lambda x: torch.index_select(x, 2, torch.tensor([4, 0, 0])),
    "movedim": lambda x: x.movedim(1, -1),
    "select": lambda x: x.select(1, 2),
    "std": lambda x: x.std(1),
    "logsumexp": lambda x: x.logsumexp(3),
    "adaptive_max_pool2d": lambda x: torch.nn.functional.adaptive_max_pool2d(x, 2),
    "max_pool1d": lambda x: torch.nn.functional.max_pool1d(x.flatten(2), 3),
    "linear": lambda x: torch.nn.functional.linear(x, torch.linspace(0.1, 1.5, 15, dtype=x.dtype).reshape(3, 5)),
    "layer_norm_two_axes": lambda x: torch.nn.functional.layer_norm(x, (5, 5)),
    "sqrt": lambda x: (x * x + 1).sqrt(),
    "x_times_x": lambda x: x * x,
    "cat_twice": lambda x: torch.cat([x, x * 2, x], dim=1),
    "stack_twice": lambda x: torch.stack([x, x], dim=-1),
    "einsum_attention_scores": lambda x: torch.einsum("bchw,bcgw->bchg", x, x * 2),
    "einsum_transposed": lambda x: torch.einsum("bchw->bwhc", x).sigmoid(),
    "einsum_contract_list": lambda x: torch.einsum("bchw,bc->bhw", [x, x.mean((2, 3))]),
    "einsum_implicit": lambda x: torch.einsum("bhcw", x) * 2,
}


@pytest.mark.parametrize("incl", [True, False])
@pytest.mark.parametrize("piece", list(PIECES))
def test_function_rules_match_the_reference(piece, incl):
    from test_structure_layers import _check_against_reference

    torch.manual_seed(0)
    _check_against_reference(_Piece(PIECES[piece]).eval(), torch.randn(1, 2, 5, 5), "leaves", incl)


def test_readme_example_of_registering_a_rule_runs():
    from pathlib import Path

    text = (Path(__file__).parents[3] / "README.md").read_text()
    section = text.split("### Registering a rule", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    with rules.using({}):
        exec(compile(code, "README 'Registering a rule'", "exec"), namespace)
        assert rules.rule_for_module(namespace["RunningProduct"]()) is not None
    # Without the rule (the block took it away) the same network is refused by name.
    assert rules.rule_for_module(namespace["RunningProduct"]()) is None
    with pytest.raises(nsp.UnsupportedModuleError, match=r"cumprod in RunningProduct"):
        nsp.NNGraph(nsp.Activations(namespace["net"], torch.randn(1, 3), layers="leaves"))


class _SameShapesOtherWindows(nn.Module):
    """Convolutions whose input and output shapes are all 4 × 5 × 5 but whose windows, groups and
    dilations differ: their terms are shared per geometry, never per shape alone."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=2, dilation=2),
            nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Conv2d(4, 4, 3, padding=1, groups=4),
            nn.Conv2d(4, 4, (1, 3), padding=(0, 1)), nn.Conv2d(4, 4, (3, 1), padding=(1, 0)),
        )

    def forward(self, x):
        return self.convs(x)


@pytest.mark.parametrize("incl", [True, False])
def test_convolutions_of_one_shape_and_other_geometries_match_the_reference(incl):
    net, x = _SameShapesOtherWindows().eval(), torch.randn(1, 4, 5, 5)
    for _ in range(2):  # the second graph reads the terms the first one built
        _check_against_reference(net, x, "leaves", incl)


def test_grouped_and_depthwise_channel_factors_are_shared_and_match_the_reference():
    # A grouped convolution's channel factor is built once per shape and shared, read-only; a
    # depthwise one's is the shared identity. The relations and the exact spectrum match the
    # autograd reference for one, two and all groups.
    assert rules.channel_groups(6, 6, 6) is rules.eye_factor(6)
    assert rules.channel_groups(6, 4, 2) is rules.channel_groups(6, 4, 2)
    assert not rules.channel_groups(6, 4, 2).flags.writeable
    np.testing.assert_array_equal(rules.channel_groups(6, 4, 2), np.kron(np.eye(2, dtype=bool), np.ones((3, 2), bool)))
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.Conv2d(6, 3, 1),
    ).eval()
    x = torch.randn(1, 4, 5, 5)
    acts = nsp.Activations(net, x, layers="leaves")
    graph = nsp.NNGraph(acts)
    blocks = reference_blocks(net, x, acts.layernames[1:], True)
    for (l, k), expected in blocks.items():
        np.testing.assert_array_equal(graph.structure.parents[l][k].dense(), expected)
    exact = exact_dag_spectrum(acts.to_numpy(), blocks, [a.numel() for a in acts.layeractivations])
    np.testing.assert_allclose(graph.transform(acts).to_numpy(), exact, rtol=1e-12, atol=0)


def test_identity_windows_are_the_shared_identity_and_match_the_reference():
    # A 1×1 kernel at stride 1, and a 3×3 one on a 1 × 1 map, cover only their own position:
    # the window is the shared identity, which composing knows by id. Others are not.
    assert rules.window_factor(5, 5, 1, 1, 0, 1) is rules.eye_factor(5)
    assert rules.window_factor(1, 1, 3, 1, 1, 1) is rules.eye_factor(1)
    assert rules.window_factor(5, 5, 3, 1, 1, 1) is not rules.eye_factor(5)
    assert rules.window_factor(3, 5, 1, 2, 0, 1).shape == (3, 5)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 1), nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 2, 1),
    ).eval()
    _check_against_reference(net, torch.randn(1, 3, 4, 4), "leaves", True)
