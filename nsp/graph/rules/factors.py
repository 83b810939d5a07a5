"""Per-axis 0/1 factors that several op families build their relations from.

A relation's factor maps one output axis to one input axis (:class:`~nsp.graph.relations.Term`);
the windows of convolutions and pools, the bins of adaptive pools, channel groups and
broadcasting are each one such factor, shared here by the rules of every family.
"""

from __future__ import annotations

import functools

import numpy as np
from torch import nn

from nsp.graph.relations import Relation, Term, eye_factor, ones_factor
from nsp.graph.relations.boolean import same_entries

__all__ = [
    "eye", "window_factor", "adaptive_factor", "conv_padding", "channel_groups", "broadcast_term", "union_of_terms",
]


def eye(n: int) -> np.ndarray:
    """The ``n × n`` identity factor (shared and read-only, :func:`~nsp.graph.relations.eye_factor`)."""
    return eye_factor(n)


# Every convolution of a network builds its windows again on every graph; one shared,
# read-only array per geometry saves that (a third of a ResNet-18 convolution's rule).
@functools.lru_cache(maxsize=1024)
def window_factor(n_out: int, n_in: int, kernel: int, stride: int, pad: int, dil: int) -> np.ndarray:
    """Which input positions each output's sliding window covers (zero padding: taps outside are dropped).

    The array is shared between calls with the same arguments and read-only.
    """
    starts = np.arange(n_out) * stride - pad
    taps = starts[:, None] + np.arange(kernel)[None, :] * dil
    f = np.zeros((n_out, n_in), dtype=bool)
    rows = np.broadcast_to(np.arange(n_out)[:, None], taps.shape)
    ok = (taps >= 0) & (taps < n_in)
    f[rows[ok], taps[ok]] = True
    if n_out == n_in and same_entries(f, eye_factor(n_in)):
        # A 1×1 kernel at stride 1, or any kernel on a 1-wide map: the shared identity, which
        # composing knows by id (every pointwise convolution's spatial axes).
        return eye_factor(n_in)
    f.flags.writeable = False
    return f


def adaptive_factor(n_out: int, n_in: int) -> np.ndarray:
    """The input bin of each output of an adaptive pool, as torch computes it."""
    o = np.arange(n_out)
    start = (o * n_in) // n_out
    end = -((-(o + 1) * n_in) // n_out)
    i = np.arange(n_in)
    return (i[None, :] >= start[:, None]) & (i[None, :] < end[:, None])


def conv_padding(m: nn.Module) -> tuple[int, ...]:
    """A convolution's padding per spatial axis, with ``'valid'`` and ``'same'`` resolved."""
    k, d = m.kernel_size, m.dilation
    if m.padding == "valid":
        return (0,) * len(k)
    if m.padding == "same":
        return tuple(dd * (kk - 1) // 2 for kk, dd in zip(k, d))
    return tuple(m.padding)


@functools.lru_cache(maxsize=1024)
def channel_groups(c_out: int, c_in: int, groups: int) -> np.ndarray:
    """Which input channels each output channel of a grouped convolution reads.

    The array is shared between calls with the same arguments and read-only: a depthwise
    convolution's is the shared identity (:func:`eye`), known as such by identity.
    """
    if groups == 1:
        return ones_factor(c_out, c_in)
    if groups == c_out == c_in:
        return eye(c_out)
    f = (np.arange(c_out)[:, None] // (c_out // groups)) == (np.arange(c_in)[None, :] // (c_in // groups))
    f.flags.writeable = False
    return f


def broadcast_term(x_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Term:
    """Each output position reads the input position it broadcasts from (both without batch)."""
    padded = (1,) * (len(out_shape) - len(x_shape)) + tuple(x_shape)
    return Term(tuple(eye(n) if m == n else ones_factor(n, 1) for m, n in zip(padded, out_shape)) or (eye(1),))


def union_of_terms(parts: list[Term]) -> Relation:
    """The union of one or more terms between the same two index spaces."""
    rel = Relation.of(parts[0])
    for p in parts[1:]:
        rel = rel.union(Relation.of(p))
    return rel
