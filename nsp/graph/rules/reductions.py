"""Rules of ops that mix positions along axes: reductions, softmax and cumulative sums, normalisation layers.

Each output reads its whole slice along the reduced or normalised axes (``cumsum``: the
slice up to it); the Jacobian is measured by autograd inside that structure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from nsp.graph.relations import Term, ones_factor
from nsp.graph.rules.call import Call
from nsp.graph.rules.elementwise import BinaryRule
from nsp.graph.rules.factors import eye
from nsp.graph.rules.jacobian import relation_csr
from nsp.graph.rules.registry import Rule, register_rule

__all__ = ["ReductionRule", "AxisRule", "NormRule"]


def _dims(call: Call, value: Any) -> list[int] | None:
    """Non-batch axes (numbered from 0 without the batch axis) named by ``dim``; None for all."""
    if value is None:
        return None
    ndim = call.inputs[0].dim()
    dims = [value] if isinstance(value, int) else list(value)
    dims = [d + ndim if d < 0 else d for d in dims]
    if 0 in dims:
        raise call.unsupported("it mixes the batch dimension")
    return [d - 1 for d in dims]


class ReductionRule(Rule):
    """``mean``/``sum``/``amax``/``max``... over axes: each output depends on its whole slice."""

    def __init__(self, structural: bool) -> None:
        self.structural = structural

    def relations(self, call):
        if isinstance(call.arg(1, "dim"), torch.Tensor) or len(call.inputs) > 1:
            return BinaryRule(linear=False).relations(call)
        dims = _dims(call, call.arg(1, "dim", call.kwargs.get("axis")))
        if dims is None:
            raise call.unsupported("a reduction over every axis mixes the batch dimension")
        shape = call.in_shape()
        return [Term(tuple(ones_factor(1, n) if a in dims else eye(n) for a, n in enumerate(shape)))]

    def patterns(self, call):
        return [relation_csr(self.relations(call)[0])] if self.structural else super().patterns(call)

    def fingerprint(self, call):
        return None if self.structural else super().fingerprint(call)


class AxisRule(Rule):
    """``softmax``/``log_softmax``/``cumsum``...: each output depends on its whole line along ``dim``."""

    aligned = True

    def __init__(self, causal: bool = False) -> None:
        self.causal = causal

    def relations(self, call):
        (x,) = call.inputs
        (dim,) = _dims(call, call.arg(1, "dim"))
        shape = call.in_shape()
        line = np.tril(np.ones((shape[dim],) * 2, dtype=bool)) if self.causal else ones_factor(shape[dim], shape[dim])
        return [Term(tuple(line if a == dim else eye(n) for a, n in enumerate(shape)))]


class NormRule(Rule):
    """Normalisation over groups of positions (LayerNorm, GroupNorm, InstanceNorm, functional forms)."""

    aligned = True

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def relations(self, call):
        shape = call.in_shape()
        m = call.target if isinstance(call.target, nn.Module) else None
        if self.kind == "instance" and ((m is not None and m.track_running_stats and not m.training)
                                        or (m is None and not call.arg(5, "use_input_stats", True))):
            return [Term.identity(shape)]  # running statistics: per position affine
        rel = self._groups(call, shape, m)
        if rel.nnz() == rel.n_out:
            # Groups of one position: x - mean(x) is identically 0, so the output is a constant.
            return [Term(tuple(np.zeros(f.shape, dtype=bool) for f in rel.factors))]
        return [rel]

    def _groups(self, call: Call, shape: tuple[int, ...], m: nn.Module | None) -> Term:
        """Which positions each output's statistics are taken over."""
        if self.kind == "layer":
            normalized = m.normalized_shape if m is not None else call.arg(1, "normalized_shape")
            k = len(normalized)
            return Term(tuple(eye(n) for n in shape[:-k]) + tuple(ones_factor(n, n) for n in shape[-k:]))
        if self.kind == "group":
            groups = m.num_groups if m is not None else call.arg(1, "num_groups")
            c = shape[0]
            block = (np.arange(c)[:, None] // (c // groups)) == (np.arange(c)[None, :] // (c // groups))
            return Term((block,) + tuple(ones_factor(n, n) for n in shape[1:]))
        return Term((eye(shape[0]),) + tuple(ones_factor(n, n) for n in shape[1:]))

    def check(self, call, incl):
        m = call.target
        if isinstance(m, nn.Module) and self.kind == "instance" and m.training and m.track_running_stats:
            raise call.unsupported("it updates running statistics in training mode; call network.eval() first")


register_rule(["mean", "sum", "nansum", "nanmean"], ReductionRule(structural=True))
register_rule(["amax", "amin", "max", "min", "logsumexp", "std", "var", "prod"], ReductionRule(structural=False))
register_rule(["softmax", "log_softmax", "_softmax"], AxisRule())
register_rule(["cumsum"], AxisRule(causal=True))
register_rule(nn.LayerNorm, NormRule("layer"))
register_rule("layer_norm", NormRule("layer"))
register_rule(nn.GroupNorm, NormRule("group"))
register_rule("group_norm", NormRule("group"))
register_rule([nn.InstanceNorm1d, nn.InstanceNorm2d], NormRule("instance"))
register_rule("instance_norm", NormRule("instance"))
