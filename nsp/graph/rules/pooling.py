"""Rules of pools and nearest upsampling, as modules and as functions.

A pool's output reads its window (or its adaptive bin); a max-pool's Jacobian keeps each
window's argmax. A functional pool is analysed as the module with the same arguments.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import torch.nn.functional as F
from torch import nn

from nsp.graph.relations import Term
from nsp.graph.rules.call import Call
from nsp.graph.rules.factors import adaptive_factor, eye, window_factor
from nsp.graph.rules.leaf import LeafRule, along, broadcast_keep, output_positions
from nsp.graph.rules.registry import Rule, register_rule, rule_for_module

__all__ = ["PoolRule", "AdaptivePoolRule", "UpsampleRule", "FunctionalPoolRule"]


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


class PoolRule(LeafRule):
    """Max and average pools over windows; a max-pool's Jacobian keeps each window's argmax."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        nd = len(in_shape) - 1
        k = _tuple(m.kernel_size, nd)
        s = _tuple(m.stride if m.stride is not None else m.kernel_size, nd)
        p = _tuple(m.padding, nd)
        d = _tuple(getattr(m, "dilation", 1), nd)
        factors = [eye(in_shape[0])]
        for n_o, n_i, kk, ss, pp, dd in zip(out_shape[1:], in_shape[1:], k, s, p, d):
            factors.append(window_factor(n_o, n_i, kk, ss, pp, dd))
        return Term(tuple(factors))

    def evidence(self, m, x):
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
            fn = F.max_pool1d_with_indices if isinstance(m, nn.MaxPool1d) else F.max_pool2d_with_indices
            return fn(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)[1].reshape(-1).cpu().numpy()
        return None

    def kept(self, m, evidence, pairs, in_shape, out_shape):
        return _argmax_kept(evidence, pairs, in_shape, out_shape)


def _argmax_kept(evidence: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]], in_shape: tuple[int, ...],
                 out_shape: tuple[int, ...]) -> np.ndarray:
    """Which pairs join a window's output to the input it picked (``evidence``: that input, flat within its channel)."""
    n = len(pairs)
    flat = sum(along(f, n, i * math.prod(in_shape[f + 1:])) for f, (_, i) in enumerate(pairs[1:], start=1))
    return broadcast_keep(evidence.reshape(out_shape)[output_positions(pairs)] == flat, pairs)


class AdaptivePoolRule(LeafRule):
    """Adaptive average and max pools; an adaptive max-pool's Jacobian keeps each window's argmax."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        factors = [eye(in_shape[0])]
        factors += [adaptive_factor(n_o, n_i) for n_o, n_i in zip(out_shape[1:], in_shape[1:])]
        return Term(tuple(factors))

    def evidence(self, m, x):
        if isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
            fn = F.adaptive_max_pool1d_with_indices if isinstance(m, nn.AdaptiveMaxPool1d) else F.adaptive_max_pool2d_with_indices
            return fn(x, m.output_size, True)[1].reshape(-1).cpu().numpy()
        return None

    def kept(self, m, evidence, pairs, in_shape, out_shape):
        return _argmax_kept(evidence, pairs, in_shape, out_shape)


class UpsampleRule(LeafRule):
    """``nn.Upsample`` in 'nearest' mode: each output copies one input."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        if m.mode != "nearest":
            raise call.unsupported(f"mode='{m.mode}' (only 'nearest')")
        factors = [eye(in_shape[0])]
        scales = _tuple(m.scale_factor, len(in_shape) - 1) if m.scale_factor is not None else None
        for axis, (n_o, n_i) in enumerate(zip(out_shape[1:], in_shape[1:])):
            # torch's 'nearest' reads floor(o / scale), or floor(o * n_in / n_out) for a size.
            o = np.arange(n_o)
            source = np.floor(o / float(scales[axis])).astype(np.int64) if scales else (o * n_i) // n_o
            factors.append(np.minimum(source, n_i - 1)[:, None] == np.arange(n_i)[None, :])
        return Term(tuple(factors))


class FunctionalPoolRule(Rule):
    """Functional pools (``F.max_pool2d``, ``F.avg_pool2d``, ``F.adaptive_avg_pool2d``...) by their module's rule."""

    def __init__(self, make: Callable[[Call], nn.Module]) -> None:
        self.make = make

    def _module_call(self, call: Call) -> tuple[Rule, Call]:
        m = self.make(call)
        return rule_for_module(m), replace(call, target=m, args=(call.inputs[0],), kwargs={})

    def relations(self, call):
        rule, inner = self._module_call(call)
        return rule.relations(inner)

    def patterns(self, call):
        rule, inner = self._module_call(call)
        return rule.patterns(inner)

    def fingerprint(self, call):
        rule, inner = self._module_call(call)
        return rule.fingerprint(inner)


def _pool_module(kind: str, nd: int) -> Callable[[Call], nn.Module]:
    def make(call: Call) -> nn.Module:
        a = call.arg
        if kind == "max":
            cls = nn.MaxPool1d if nd == 1 else nn.MaxPool2d
            return cls(a(1, "kernel_size"), a(2, "stride"), a(3, "padding", 0), a(4, "dilation", 1),
                       ceil_mode=a(5, "ceil_mode", False))
        if kind == "avg":
            cls = nn.AvgPool1d if nd == 1 else nn.AvgPool2d
            return cls(a(1, "kernel_size"), a(2, "stride"), a(3, "padding", 0), a(4, "ceil_mode", False))
        if kind == "adaptive_avg":
            return (nn.AdaptiveAvgPool1d if nd == 1 else nn.AdaptiveAvgPool2d)(a(1, "output_size"))
        return (nn.AdaptiveMaxPool1d if nd == 1 else nn.AdaptiveMaxPool2d)(a(1, "output_size"))
    return make


register_rule([nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d], PoolRule())
register_rule([nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d],
              AdaptivePoolRule())
register_rule(nn.Upsample, UpsampleRule())
for _nd in (1, 2):
    register_rule([f"max_pool{_nd}d", f"_max_pool{_nd}d"], FunctionalPoolRule(_pool_module("max", _nd)))
    register_rule(f"avg_pool{_nd}d", FunctionalPoolRule(_pool_module("avg", _nd)))
    register_rule(f"adaptive_avg_pool{_nd}d", FunctionalPoolRule(_pool_module("adaptive_avg", _nd)))
    register_rule([f"adaptive_max_pool{_nd}d", f"_adaptive_max_pool{_nd}d"],
                  FunctionalPoolRule(_pool_module("adaptive_max", _nd)))
