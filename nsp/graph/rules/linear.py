"""Rules of linear maps: ``nn.Linear``, convolutions, ``F.linear``, ``matmul``/``bmm`` and ``einsum``."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from nsp.graph.relations import Term, ones_factor
from nsp.graph.rules.call import Call
from nsp.graph.rules.factors import broadcast_term, channel_groups, conv_padding, eye, union_of_terms, window_factor
from nsp.graph.rules.leaf import LeafRule, along, broadcast_keep
from nsp.graph.rules.registry import Rule, register_rule

__all__ = ["LinearRule", "ConvRule", "LinearFunctionRule", "MatmulRule", "EinsumRule", "MAX_DENSE_EINSUM"]


class LinearRule(LeafRule):
    """``nn.Linear`` on the last axis; a zero weight drops its edge."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        lead = in_shape[:-1]
        return Term(tuple(eye(d) for d in lead) + (ones_factor(out_shape[-1], in_shape[-1]),))

    def evidence(self, m, x):
        return m.weight.detach().cpu().numpy() != 0

    def kept(self, m, evidence, pairs, in_shape, out_shape):
        return broadcast_keep(along(len(pairs) - 1, len(pairs), evidence[pairs[-1]]), pairs)

    def cut_rows(self, m, evidence, term):
        # Without leading axes the first factor is the weight's rows.
        if len(term.factors) != 1:
            return None
        return np.flatnonzero(~evidence.all(axis=1))


class ConvRule(LeafRule):
    """Convolutions (any stride, padding, dilation, groups; zero padding); a zero weight drops its edges."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        if m.padding_mode != "zeros":
            raise call.unsupported(f"padding_mode='{m.padding_mode}' (only 'zeros')")
        return _conv_term(tuple(out_shape), tuple(in_shape), m.groups, tuple(m.kernel_size), tuple(m.stride),
                          conv_padding(m), tuple(m.dilation))

    def evidence(self, m, x):
        return m.weight.detach().cpu().numpy() != 0

    def kept(self, m, evidence, pairs, in_shape, out_shape):
        n = len(pairs)
        co, ci = pairs[0]
        pads = conv_padding(m)
        taps = tuple(
            along(f, n, (i - o * s + p) // d)
            for f, ((o, i), s, p, d) in enumerate(zip(pairs[1:], m.stride, pads, m.dilation), start=1)
        )
        keep = evidence[(along(0, n, co), along(0, n, ci % (in_shape[0] // m.groups))) + taps]
        return broadcast_keep(keep, pairs)

    def cut_rows(self, m, evidence, term):
        # The first factor is the output channels.
        return np.flatnonzero(~evidence.reshape(evidence.shape[0], -1).all(axis=1))


# A network repeats a few convolution geometries (ShuffleNet: 56 convolutions, 13 geometries);
# a term is immutable, so one per geometry serves every graph.
@functools.lru_cache(maxsize=1024)
def _conv_term(out_shape: tuple[int, ...], in_shape: tuple[int, ...], groups: int, kernel: tuple[int, ...],
               stride: tuple[int, ...], pads: tuple[int, ...], dilation: tuple[int, ...]) -> Term:
    """A convolution's structural term: its channel groups, then one window factor per spatial axis
    (every factor read-only, as the term is shared)."""
    factors = [channel_groups(out_shape[0], in_shape[0], groups)]
    for n_o, n_i, k, s, p, d in zip(out_shape[1:], in_shape[1:], kernel, stride, pads, dilation):
        factors.append(window_factor(n_o, n_i, k, s, p, d))
    return Term(tuple(factors))


class LinearFunctionRule(Rule):
    """``F.linear`` on the last axis, where the weight may itself come from the input."""

    aligned = True

    def relations(self, call):
        x, w = call.arg(0, "input"), call.arg(1, "weight")
        out = call.out_shape
        rels = []
        for t in call.inputs:
            if t is x:
                rels.append(Term(tuple(eye(n) for n in out[:-1]) + (ones_factor(out[-1], x.shape[-1]),)))
            else:
                raise call.unsupported("a weight or bias computed from the input")
        return rels


class MatmulRule(Rule):
    """``matmul``/``@``/``bmm`` of tensors with at least two axes, batch axes broadcast."""

    aligned = True

    def relations(self, call):
        a, b = call.arg(0, "input"), call.arg(1, "other", call.kwargs.get("mat2"))
        if a.dim() < 2 or b.dim() < 2:
            raise call.unsupported("a matrix product with a vector")
        out = call.out_shape
        batch = out[:-2]
        rels = []
        for t in call.inputs:
            lead = broadcast_term(tuple(t.shape[1:-2]), batch).factors if batch else ()
            if t is a:
                rels.append(Term(tuple(lead) + (eye(out[-2]), ones_factor(out[-1], a.shape[-1]))))
            else:
                rels.append(Term(tuple(lead) + (ones_factor(out[-2], b.shape[-2]), eye(out[-1]))))
        if len(call.inputs) == 1 and call.inputs[0] is a and b is a:
            raise call.unsupported("a product of a tensor with itself")
        return rels


class EinsumRule(Rule):
    """``torch.einsum``: an output position reads, in each operand, the positions that agree with
    it on the shared letters (every position along a summed letter). The batch letter must
    lead every operand derived from the input and the output."""

    def relations(self, call):
        equation = call.arg(0, "equation")
        operands = call.args[1:]
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = operands[0]
        equation = equation.replace(" ", "")
        if "..." in equation:
            raise call.unsupported("an ellipsis in the equation")
        lhs, _, out = equation.partition("->")
        letters = lhs.split(",")
        if not out:
            counts = {c: lhs.count(c) for c in lhs if c.isalpha()}
            out = "".join(sorted(c for c, n in counts.items() if n == 1))
        sizes = {c: n for spec, t in zip(letters, operands) if isinstance(t, torch.Tensor)
                 for c, n in zip(spec, t.shape)}
        rels = []
        for x in call.inputs:
            terms = [self._term(spec, out, sizes, call) for spec, t in zip(letters, operands) if t is x]
            rels.append(union_of_terms(terms))
        return rels

    @staticmethod
    def _term(spec: str, out: str, sizes: dict[str, int], call: Call) -> Term:
        if not spec or not out or spec[0] != out[0] or len(set(spec)) != len(spec):
            raise call.unsupported(f"operand '{spec}' of '{out}': the batch letter must lead both, and no "
                                   "letter may repeat within an operand (a diagonal)")
        spec, out = spec[1:], out[1:]
        shared = [c for c in out if c in spec]
        if shared != [c for c in spec if c in shared]:
            # The shared letters come in another order: one factor, if it is small.
            n_out, n_in = math.prod(sizes[c] for c in out), math.prod(sizes[c] for c in spec)
            if n_out * n_in > MAX_DENSE_EINSUM:
                raise call.unsupported(f"its letters '{spec}' -> '{out}' are reordered, and as one matrix the "
                                       f"relation needs {n_out * n_in:,} entries")
            o = np.indices(tuple(sizes[c] for c in out)).reshape(len(out), -1)
            i = np.indices(tuple(sizes[c] for c in spec)).reshape(len(spec), -1)
            f = np.ones((o.shape[1], i.shape[1]), dtype=bool)
            for c in shared:
                f &= o[out.index(c)][:, None] == i[spec.index(c)][None, :]
            return Term((f,))
        # Walk both sides: out-only letters are columns, summed letters rows, shared ones the identity.
        factors: list[np.ndarray] = []
        a = b = 0
        while a < len(out) or b < len(spec):
            if a < len(out) and out[a] not in spec:
                factors.append(ones_factor(sizes[out[a]], 1))
                a += 1
            elif b < len(spec) and spec[b] not in out:
                factors.append(ones_factor(1, sizes[spec[b]]))
                b += 1
            else:
                factors.append(eye(sizes[out[a]]))
                a += 1
                b += 1
        return Term(tuple(factors) or (eye(1),))


# Largest single factor an einsum with reordered letters is written as.
MAX_DENSE_EINSUM = 1 << 24


register_rule(nn.Linear, LinearRule())
register_rule([nn.Conv1d, nn.Conv2d], ConvRule())
register_rule("linear", LinearFunctionRule())
register_rule(["matmul", "__matmul__", "bmm"], MatmulRule())
register_rule("einsum", EinsumRule())
