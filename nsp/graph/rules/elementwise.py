"""Rules of elementwise operations: activations, eval-mode dropout and batch norm, and broadcasting arithmetic.

Each output reads the input position it sits at (or broadcasts from); the Jacobian keeps
the positions where the derivative is nonzero (a ReLU at a negative input keeps none).
"""

from __future__ import annotations

from torch import nn

from nsp.graph.relations import Term
from nsp.graph.rules.factors import broadcast_term
from nsp.graph.rules.jacobian import diagonal_csr, elementwise_mask, relation_csr
from nsp.graph.rules.leaf import LeafRule, along, broadcast_keep, output_positions
from nsp.graph.rules.registry import Rule, StructuralRule, register_rule

__all__ = [
    "ELEMENTWISE_MODULES", "ElementwiseModuleRule", "PassthroughRule", "BatchNormRule", "ElementwiseFunctionRule",
    "DetachRule", "BinaryRule",
]

ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.SiLU, nn.Mish,
    nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.Threshold,
    nn.LogSigmoid,
)


class ElementwiseModuleRule(LeafRule):
    """Activation modules, identity in structure; the Jacobian keeps where the derivative is nonzero."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        if in_shape != out_shape:
            raise call.unsupported(f"input {in_shape} and output {out_shape} differ")
        return Term.identity(in_shape or (1,))

    def evidence(self, m, x):
        return elementwise_mask(m, x)

    def kept(self, m, evidence, pairs, in_shape, out_shape):
        return broadcast_keep(evidence.reshape(out_shape or (1,))[output_positions(pairs)], pairs)

    def check(self, call, incl):
        # In both modes: a random slope makes the recorded pattern itself random (INCL=True), and its
        # Jacobian that of another pass (INCL=False).
        if isinstance(call.target, nn.RReLU) and call.target.training:
            raise call.unsupported(
                "it is random in training mode, so the recorded pattern and its Jacobian are those of one random "
                "draw; call network.eval() first"
            )


class PassthroughRule(LeafRule):
    """Identity, Dropout (eval mode), Flatten and Unflatten: each output is one input."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        if not isinstance(m, (nn.Flatten, nn.Unflatten)) and in_shape != out_shape:
            raise call.unsupported(f"input {in_shape} and output {out_shape} differ")
        return Term.identity(in_shape or (1,))

    def check(self, call, incl):
        m = call.target
        if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout)) and (
            m.training and m.p > 0
        ):
            raise call.unsupported(
                "it is random in training mode, so the recorded pattern and its Jacobian are those of one random "
                "draw; call network.eval() first"
            )


class BatchNormRule(LeafRule):
    """BatchNorm in eval mode: per channel affine; a zero weight drops the channel."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        return Term.identity(in_shape or (1,))

    def evidence(self, m, x):
        return (m.weight.detach().cpu().numpy() != 0) if m.affine else None

    def kept(self, m, evidence, pairs, in_shape, out_shape):
        return broadcast_keep(along(0, len(pairs), evidence[pairs[0][0]]), pairs)

    def check(self, call, incl):
        m = call.target
        if m.training or m.running_mean is None:
            raise call.unsupported(
                "it normalises with batch statistics (training mode or no running stats), so its output depends on "
                "the whole batch; call network.eval() first"
            )


class ElementwiseFunctionRule(Rule):
    """Elementwise functions and methods (``F.relu``, ``torch.sigmoid``, ``x.clone()``...)."""

    aligned = True

    def relations(self, call):
        (x,) = call.inputs
        if tuple(x.shape) != tuple(call.output.shape):
            raise call.unsupported(f"it is not elementwise here: input {tuple(x.shape)}, output {tuple(call.output.shape)}")
        return [Term.identity(call.in_shape() or (1,))]

    def check(self, call, incl):
        if len(call.inputs) != 1:
            raise call.unsupported("an operation on several tensors derived from the input")
        if call.name == "batch_norm" and call.arg(5, "training", False):
            raise call.unsupported("batch statistics in training mode mix the batch; call network.eval() first")
        if call.name in ("dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d"):
            training = call.kwargs.get("training", False) or any(a is True for a in call.args[2:])
            if training:
                raise call.unsupported("functional dropout in training mode; call network.eval() first")

    def patterns(self, call):
        (x,) = call.inputs
        try:
            return [diagonal_csr(elementwise_mask(lambda t: call.run(t), x))]
        except RuntimeError as err:
            raise call.unsupported(f"autograd cannot differentiate it here ({err})") from None

    def fingerprint(self, call):
        return self.patterns(call)[0].indices


class DetachRule(StructuralRule):
    """``x.detach()``: the same values, so the identity; autograd sees no derivative, but the
    data still depends on the input (INCL=False measures no Jacobian here)."""

    aligned = True

    def relations(self, call):
        return ElementwiseFunctionRule.relations(self, call)


class BinaryRule(Rule):
    """``add``/``sub``/``mul``/``div``... with broadcasting: SE gates, gating, layer scale, residual sums."""

    aligned = True

    def __init__(self, linear: bool) -> None:
        self.linear = linear  # sums: the Jacobian entries are ±1, so the pattern is the structure

    def relations(self, call):
        out = call.out_shape
        rels = []
        for j in range(len(call.inputs)):
            shape = call.in_shape(j)
            if len(shape) > len(out):
                raise call.unsupported(f"input {shape} has more axes than the output {out}")
            rels.append(broadcast_term(shape, out))
        return rels

    def patterns(self, call):
        if len(call.inputs) == 1 and call.in_shape() == call.out_shape:
            (x,) = call.inputs
            return [diagonal_csr(elementwise_mask(lambda t: call.run(t), x))]
        if self.linear:
            return [relation_csr(r) for r in self.relations(call)]
        return super().patterns(call)

    def fingerprint(self, call):
        if len(call.inputs) == 1 and call.in_shape() == call.out_shape:
            return self.patterns(call)[0].indices
        return None if self.linear else super().fingerprint(call)


_SUM_NAMES = {"add", "add_", "__add__", "__iadd__", "__radd__", "sub", "sub_", "__sub__", "__isub__", "__rsub__"}
_ELEMENTWISE_NAMES = {
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu", "celu_",
    "gelu", "silu", "mish", "softplus", "softsign", "hardtanh", "hardtanh_", "hardsigmoid", "hardswish",
    "logsigmoid", "tanhshrink", "softshrink", "hardshrink", "threshold", "threshold_", "sigmoid", "sigmoid_",
    "tanh", "tanh_", "exp", "exp_", "abs", "abs_", "neg", "neg_", "__neg__", "__pos__", "clamp", "clamp_",
    "clip", "clip_", "contiguous", "clone", "float", "double", "half", "bfloat16", "to", "dropout",
    "alpha_dropout",
}


register_rule(list(ELEMENTWISE_MODULES), ElementwiseModuleRule())
register_rule([nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Flatten, nn.Unflatten],
              PassthroughRule())
register_rule([nn.BatchNorm1d, nn.BatchNorm2d], BatchNormRule())
register_rule(sorted(_ELEMENTWISE_NAMES), ElementwiseFunctionRule())
register_rule(["pow", "sqrt", "rsqrt", "square", "log", "log1p", "reciprocal", "sin", "cos", "erf", "sign",
               "hardswish_", "silu_", "gelu_", "mish_", "batch_norm"], ElementwiseFunctionRule())
register_rule("detach", DetachRule())
register_rule(sorted(_SUM_NAMES), BinaryRule(linear=True))
register_rule(["mul", "mul_", "__mul__", "__imul__", "__rmul__", "div", "div_", "__truediv__", "__itruediv__",
               "__rtruediv__", "multiply", "divide", "true_divide"], BinaryRule(linear=False))
register_rule(["maximum", "minimum"], BinaryRule(linear=False))
