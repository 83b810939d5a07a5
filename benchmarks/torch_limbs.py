"""The exact transform's limb kernels ported to torch int64 ops, for ``limb_backends.py``.

A straightforward, line-for-line port of :mod:`nsp.transforms.limbs` (``split_int64``,
``normalize``, ``fit``, ``from_limbs`` with its three rounding paths) and of the forward
transform's ``ProductKernel.accumulate`` (axis sums, prefix sums of layer totals, interval
sums by cumulative sums, dense factors by ``tensordot``), on torch tensors instead of numpy
arrays, so that issue 23's option (c), "move the limb arithmetic into torch int64 ops",
can be measured on the operands the real transform sees. Only what differs between the
libraries is changed: numpy's ``axis``/``keepdims`` become ``dim``/``keepdim``, its
unsigned views become signed comparisons, ``np.ldexp`` becomes a product by ``exp2``
(``torch.ldexp`` computes its power of two in float32), ``np.logical_or.accumulate`` a
cumulative sum. torch's shifts by 64 or more give 0 (or -1 right-shifting a negative
value), as numpy's do, which the rounding relies on.

This is a benchmark, not a backend: it reads the kernel's private plan attributes
(``_prefix``, ``_expiring``), and only the forward transform (``sign < 0``) is ported.
Results are checked bit for bit against the numpy kernels by ``limb_backends.py`` and by
``tests/test_limb_backends.py``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

_I64 = torch.int64


def split_int64(v: torch.Tensor, b: int, k: int) -> torch.Tensor:
    """:func:`nsp.transforms.limbs.split_int64` in torch."""
    out = torch.empty((k,) + tuple(v.shape), dtype=_I64)
    out[2:] = 0
    if k == 1:
        out[0] = v
        return out
    torch.bitwise_and(v, (1 << b) - 1, out=out[0])
    torch.bitwise_right_shift(v, b, out=out[1])
    return out


def normalize(x: torch.Tensor, b: int) -> None:
    """:func:`nsp.transforms.limbs.normalize` in torch (in place)."""
    mask = (1 << b) - 1
    for j in range(x.shape[0] - 1):
        carry = x[j] >> b
        x[j].bitwise_and_(mask)
        x[j + 1].add_(carry)


def _extremes(t: torch.Tensor) -> tuple[int, int]:
    """``(min, max)`` of ``t`` and 0 (numpy's ``initial=0``)."""
    if t.numel() == 0:
        return 0, 0
    lo, hi = torch.aminmax(t)
    return min(0, int(lo)), max(0, int(hi))


def fit(x: torch.Tensor, b: int) -> torch.Tensor:
    """:func:`nsp.transforms.limbs.fit` in torch."""
    bound = 1 << (b - 3)
    top = x[-1]
    lo, hi = _extremes(top)
    while lo < -bound or hi >= bound:
        x = torch.cat([x, (top >> b)[None]])
        x[-2].bitwise_and_((1 << b) - 1)
        top = x[-1]
        lo, hi = _extremes(top)
    while x.shape[0] > 1 and lo >= -1 and hi <= 0:
        merged = x[-2] + (top << b)
        m_lo, m_hi = _extremes(merged)
        if m_lo < -bound or m_hi >= bound:
            break
        x = x[:-1]
        x[-1] = merged
        top = x[-1]
        lo, hi = _extremes(top)
    return x


def _ldexp(t: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    # exp2 of an int64 exponent in float64 is an exact power of two for -1074 <= e <= 1023.
    return t * torch.exp2(e.to(torch.float64))


def from_limbs(x: torch.Tensor, b: int, emin: torch.Tensor, int64: bool = False) -> torch.Tensor:
    """:func:`nsp.transforms.limbs.from_limbs` in torch (a new ``(P, N)`` float64 tensor)."""
    k, shape = x.shape[0], tuple(x.shape[1:])
    if x.numel() == 0:
        return torch.zeros(shape, dtype=torch.float64)
    flat = x.reshape(k, -1)
    head = 1 << (62 - b)
    e_lo, e_hi = int(emin.min()), int(emin.max())
    if k <= 2:
        low = flat[0] if k == 1 else flat[0] + (flat[1] << b)
        if (k == 1 or int64 or bool((flat[1].abs() < head).all())) and -1000 < e_lo and e_hi < 900:
            return low.reshape(shape) * torch.exp2(emin.to(torch.float64))[:, None]
    if k >= 3 and -1000 < e_lo and e_hi + b * max(0, k - 4) < 900 \
            and -(1 << (61 - b)) <= int(flat[-1].min()) and int(flat[-1].max()) < 1 << (61 - b):
        return _round_two_doubles(x.reshape(k, emin.numel(), -1), b, emin).reshape(shape)
    if b * (k - 1) <= 100:
        return _round_shifted(x.reshape(k, emin.numel(), -1), b, emin).reshape(shape)
    scale = emin.repeat_interleave(flat.shape[1] // max(1, emin.numel()))
    low = flat[0] + (flat[1] << b)
    zero_above = ~flat[2:].any(dim=0)
    minus_one_above = (flat[2:-1] == (1 << b) - 1).all(dim=0) & (flat[-1] == -1)
    fits = (zero_above & (flat[1] < head)) | (minus_one_above & (flat[1] >= (1 << b) - head))
    if b < 32:
        low = torch.where(minus_one_above, low - (1 << (2 * b)), low)
    out = torch.empty(flat.shape[1], dtype=torch.float64)
    out[fits] = _ldexp(low[fits].to(torch.float64), scale[fits])
    rest = ~fits
    if bool(rest.any()):
        out[rest] = _round_window(flat[:, rest], b, scale[rest])
    return out.reshape(shape)


def _round_two_doubles(x: torch.Tensor, b: int, emin: torch.Tensor) -> torch.Tensor:
    """``limbs._round_two_doubles`` in torch."""
    k = x.shape[0]
    high = x[k - 1] << b
    high += x[k - 2]
    cut = 0 if k == 3 else max(1 if k > 4 else 0, 2 * b - 53)
    base = emin + b * max(0, k - 4)
    if k == 3:
        low = x[0]
    else:
        low = (x[k - 3] << (b - cut)) | (x[k - 4] >> cut)
        if cut:
            sticky = (x[k - 4] & ((1 << cut) - 1)) != 0
            for j in range(k - 4):
                sticky |= x[j] != 0
            low |= sticky
    floor = (1 << (cut + 54 - 2 * b)) + 1 if cut else 0
    magnitude = high.abs()
    magnitude -= floor
    # numpy compares the unsigned view: a negative difference is past the bound too.
    others = torch.nonzero(((magnitude < 0) | (magnitude >= (1 << 53) - floor)).reshape(-1)).reshape(-1)
    out = high * torch.exp2((base + b * 2 if k > 3 else emin + b).to(torch.float64))[:, None]
    rest = low.to(torch.float64)
    rest *= torch.exp2((base + cut).to(torch.float64))[:, None]
    out += rest
    if others.numel():
        columns = x.reshape(k, -1)[:, others]
        per_column = emin.repeat_interleave(x.shape[2])[others]
        rows, cols = others // x.shape[2], others % x.shape[2]
        out[rows, cols] = (
            _round_shifted(columns[:, :, None], b, per_column)[:, 0] if b * (k - 1) <= 100
            else _round_window(columns, b, per_column)
        )
    return out


def _round_shifted(x: torch.Tensor, b: int, emin: torch.Tensor) -> torch.Tensor:
    """``limbs._round_shifted`` in torch."""
    k = x.shape[0]
    estimate = x[k - 1].to(torch.float64)
    for j in range(k - 2, -1, -1):
        estimate *= float(1 << b)
        estimate += x[j]
    s = torch.frexp(estimate).exponent.to(_I64) - 60
    s.clamp_(min=0)
    w = torch.zeros(x.shape[1:], dtype=_I64)
    sticky = torch.zeros(x.shape[1:], dtype=_I64)
    for j in range(k):
        right = s - b * j
        left = (-right).clamp_(min=0)
        right.clamp_(min=0)
        w += (x[j] >> right) << left
        sticky |= x[j] & ((1 << right) - 1)
    w |= sticky != 0
    s += emin[:, None]
    return _ldexp(w.to(torch.float64), s)


def _round_window(x: torch.Tensor, b: int, scale: torch.Tensor) -> torch.Tensor:
    """``limbs._round_window`` in torch, on ``(k, M)`` limbs."""
    negative = x[-1] < 0
    if bool(negative.any()):
        x = torch.where(negative[None], -x, x)
        normalize(x, b)
    k, count = x.shape
    nonzero = x != 0
    top = torch.full((count,), -1, dtype=_I64)
    for j in range(k):
        top.masked_fill_(nonzero[j], j)
    window = math.ceil(62 / b) + 1
    column = torch.arange(count)
    linear = x.reshape(-1)

    def limb(offset: int) -> torch.Tensor:
        idx = top - offset
        return torch.where(idx >= 0, linear[idx.clamp(min=0) * count + column], 0)

    t = limb(0)
    b0 = ((t.to(torch.float64).view(_I64) >> 52) - 1022) * (t > 0)
    bits = b0.clone()
    sticky = torch.zeros(count, dtype=torch.bool)
    for i in range(1, window):
        g = limb(i)
        take = (63 - bits).clamp(0, b)
        t = (t << take) | (g >> (b - take))
        sticky |= (g & ((1 << (b - take)) - 1)) != 0
        bits += take
    if k > window:
        below = (nonzero.to(_I64).cumsum(dim=0) > 0).reshape(-1)
        idx = top - window
        sticky |= torch.where(idx >= 0, below[idx.clamp(min=0) * count + column], False)
    t |= sticky
    exponent = top * b + b0 - bits + scale
    out = _ldexp(t.to(torch.float64), exponent)
    out[top < 0] = 0.0
    return torch.where(negative, -out, out)


def add_limbs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`nsp.transforms.limbs.add_limbs` in torch."""
    if a.shape[0] < b.shape[0]:
        a, b = b, a
    out = a.clone()
    out[: b.shape[0]] += b
    return out


def _apply(x: torch.Tensor, ops: list[tuple[int, str, Any]]) -> torch.Tensor:
    """``product_kernel._apply`` in torch (``ops`` with torch index and factor tensors: :func:`plans`)."""
    for axis, kind, data in ops:
        ax = axis + 1
        if kind == "transpose":
            x = x.permute(data)
        elif kind == "intervals":
            lo, hi = data
            shape = list(x.shape)
            shape[ax] = 1
            cum = torch.cat([torch.zeros(shape, dtype=x.dtype), x.cumsum(dim=ax)], dim=ax)
            x = cum.index_select(ax, hi) - cum.index_select(ax, lo)
        else:
            x = torch.movedim(torch.tensordot(x, data, dims=([ax], [1])), -1, ax)
    return x


def plans(kernel: Any) -> tuple[list, list]:
    """The kernel's per-layer plans and masks with their index and factor arrays as torch
    tensors (converted once, like the plan itself)."""
    def ops(rest: list) -> list:
        return [(axis, kind, data if kind == "transpose" else
                 tuple(torch.from_numpy(d) for d in data) if kind == "intervals" else torch.from_numpy(data))
                for axis, kind, data in rest]

    layer_plans = [[(group, (i, o, (ones, ops(rest)), bits)) for group, (i, o, (ones, rest), bits) in plan]
                   for plan in kernel.plans]
    masked = [[(ks, runs, [(i, o, (ones, ops(rest)), bits) for i, o, (ones, rest), bits in terms])
               for ks, runs, terms in layer] for layer in kernel.masked]
    return layer_plans, masked


def _totals(kernel: Any, layer: int, runs: list[tuple[int, int]], xs: dict, memo: dict) -> torch.Tensor | None:
    """``ProductKernel._totals`` in torch."""
    if not kernel._prefix:
        return None
    prefix = memo.setdefault("prefix", [])
    while len(prefix) < layer:
        total = xs[len(prefix)].sum(dim=2)
        prefix.append(total if not prefix else add_limbs(prefix[-1], total))
    out = None
    for a, b in runs:
        part = prefix[b - 1] if a == 0 else add_limbs(prefix[b - 1], -prefix[a - 1])
        out = part if out is None else add_limbs(out, part)
    return out


def accumulate(kernel: Any, compiled: tuple[list, list], layer: int, xs: dict, acc: torch.Tensor, memo: dict) -> None:
    """``ProductKernel.accumulate(layer, xs, acc, -1, memo)`` in torch: subtract
    ``Σ_K A_{L,K} xs[K]`` from ``acc`` (the forward transform; ``compiled`` is :func:`plans`)."""
    p = acc.shape[1]
    layer_plans, masked = compiled
    totals = _totals(kernel, layer, kernel.full_runs[layer] if kernel.sources[layer] is None else [], xs, memo)
    bases: dict[tuple[int, ...], torch.Tensor] = {}

    def base(group: tuple[int, ...]) -> torch.Tensor:
        if group not in bases:
            bases[group] = functools.reduce(add_limbs, [xs[k] for k in group])
        return bases[group]

    broadcast: dict[tuple, torch.Tensor] = {}
    for (group, (in_dims, out_dims, (ones, rest), _)), (key, source, axes) in zip(
        layer_plans[layer], kernel.steps[layer]
    ):
        if key is None:
            y = base(group).reshape((-1,) + in_dims)
        else:
            y = memo.get(key)
            if y is None:
                if source is not None:
                    y = memo[source].sum(dim=axes, keepdim=True)
                else:
                    shape = tuple(d for d in kernel.shapes[group[0]] if d != 1) if len(key) == 2 else in_dims
                    y = functools.reduce(
                        add_limbs, [xs[k].reshape((-1,) + shape).sum(dim=axes, keepdim=True) for k in group]
                    )
                memo[key] = y
            y = y.reshape((-1,) + tuple(1 if a in ones else d for a, d in enumerate(in_dims, 1)))
        limbs = y.shape[0] // p
        y = _apply(y, rest)
        view = acc[:limbs].reshape((limbs * p,) + out_dims)
        if 2 * y.numel() <= view.numel():
            kept = [i for i, d in enumerate(out_dims) if d != 1]
            y = y.reshape((y.shape[0],) + tuple(y.shape[i + 1] for i in kept))
            out_dims = tuple(out_dims[i] for i in kept)
            group_key = (limbs, out_dims, tuple(y.shape))
            if group_key not in broadcast:
                broadcast[group_key] = -y
            else:
                broadcast[group_key] -= y
        else:
            view -= y
    for (limbs, out_dims, _), y in broadcast.items():
        view = acc[:limbs].reshape((limbs * p,) + out_dims)
        view += y
    for _, runs, terms in masked[layer]:
        total = _totals(kernel, layer, runs, xs, memo)
        limbs = total.shape[0]
        for in_dims, out_dims, (_, rest), _ in terms:
            y = _apply(total.reshape((-1,) + in_dims), rest)
            view = acc[:limbs].reshape((limbs * p,) + out_dims)
            view -= y
    if totals is not None:
        view = acc[: totals.shape[0]]
        view -= totals[:, :, None]
    for key in kernel._expiring[layer]:
        memo.pop(key, None)
