"""Exact linear pieces of a piecewise-linear network along a segment of its input space.

:func:`linear_pieces` is the 1-D counterpart of :func:`nsp.regions.linear_regions`: along the
segment ``x(t) = start + t (end - start)``, ``t`` in ``domain`` (default ``[0, 1]``), the
network is affine on each piece between consecutive breakpoints, the parameters ``t`` where some
unit changes piece (a ReLU's pre-activation changes sign, a clamp crosses a knot, a max-pool's
argmax switches). They are found layer by layer, as on a plane:

- the pieces start as the whole interval;
- at each nonlinearity, the model's own modules run (float64) on the current piece ends up to
  that call; every unit's input is affine on each piece, so a sign change between two ends is
  one exact root, found by interpolation; a max-pool window's argmax switches where two of its
  taps cross on the window's upper envelope.

:class:`Pieces` holds the breakpoints, each piece's activation pattern (as
:func:`nsp.local_affine.activation_patterns` names it) and the network's affine map along the
segment on each piece.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nsp.common.modes import eval_mode
from nsp.regions.local_affine import Nonlinearity, activation_patterns
from nsp.regions.partition import SPLIT_KINDS, check_options, float64_params, maxpool_windows
from nsp.regions.replay import evaluate

__all__ = ["Pieces", "Segment", "linear_pieces"]


class Segment:
    """The affine map ``t -> start + t (end - start)`` from a parameter to the network's input space.

    Parameters
    ----------
    start, end : torch.Tensor
        Two inputs of one shape ``(*in)`` (no batch dimension), not equal.

    Raises
    ------
    ValueError
        If the shapes differ, a value is not finite, or the two inputs are equal.
    """

    def __init__(self, start: torch.Tensor, end: torch.Tensor) -> None:
        start = torch.as_tensor(start, dtype=torch.float64).detach().cpu()
        end = torch.as_tensor(end, dtype=torch.float64).detach().cpu()
        if start.shape != end.shape:
            raise ValueError(f"nsp.linear_pieces: expected `start` and `end` of one shape, but got "
                             f"{tuple(start.shape)} and {tuple(end.shape)}")
        if not (torch.isfinite(start).all() and torch.isfinite(end).all()):
            raise ValueError("nsp.linear_pieces: `start` and `end` must be finite")
        if torch.equal(start, end):
            raise ValueError("nsp.linear_pieces: degenerate segment: `start` equals `end`")
        self.start = start
        self.direction = end - start

    @property
    def length(self) -> float:
        """``|end - start|``: the input-space length of a unit of ``t``."""
        return float(self.direction.norm())

    def __call__(self, t: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Inputs ``(n, *in)`` at parameters ``t`` ``(n,)``."""
        t = torch.as_tensor(np.asarray(t, dtype=np.float64)).reshape(-1, *([1] * self.start.dim()))
        return self.start[None] + t * self.direction[None]


@dataclass
class Pieces:
    """The linear pieces of a network along a segment.

    Attributes
    ----------
    t : numpy.ndarray
        ``(n + 1,)`` the pieces' ends, increasing: ``t[0]`` and ``t[-1]`` are the domain's ends,
        the others the breakpoints. Piece ``i`` is ``[t[i], t[i + 1]]``.
    patterns : dict of str to torch.Tensor
        Each piece's activation pattern per nonlinearity call, ``(n, *units)`` (as in
        :func:`nsp.local_affine.activation_patterns`).
    outputs : numpy.ndarray
        ``(n + 1, *out)``, the network at every ``t``.
    segment : Segment
    calls : list of str
        The nonlinearity calls, in order.
    """

    t: np.ndarray
    patterns: dict[str, torch.Tensor]
    outputs: np.ndarray
    segment: Segment
    calls: list[str]

    def __len__(self) -> int:
        return len(self.t) - 1

    @property
    def count(self) -> int:
        """The number of pieces."""
        return len(self)

    @property
    def breakpoints(self) -> np.ndarray:
        """``(n - 1,)`` the parameters inside the domain where the network changes piece."""
        return self.t[1:-1]

    @property
    def affine(self) -> np.ndarray:
        """``(n, 2, *out)``: on piece ``i`` the network is ``[t, 1] @ affine[i]``."""
        out = self.outputs.reshape(len(self.t), -1)
        slope = np.diff(out, axis=0) / np.diff(self.t)[:, None]
        offset = out[:-1] - self.t[:-1, None] * slope
        return np.stack([slope, offset], axis=1).reshape(len(self), 2, *self.outputs.shape[1:])

    def lengths(self) -> np.ndarray:
        """Each piece's length in input space, ``(n,)``."""
        return np.diff(self.t) * self.segment.length

    def locate(self, t: Sequence[float] | np.ndarray) -> np.ndarray:
        """The piece containing each parameter (``-1`` outside the domain), ``(m,)``; a breakpoint
        gets the piece that starts there."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        piece = np.searchsorted(self.t, t, side="right") - 1
        piece = np.where(t == self.t[-1], len(self) - 1, piece)
        return np.where((t < self.t[0]) | (t > self.t[-1]), -1, piece)


def _roots(t: np.ndarray, s: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Parameters where the rows of ``s`` (values at ``t``, affine between consecutive ``t``) change
    sign strictly; values within ``tol`` (per row) of zero count as zero."""
    sign = np.sign(s)
    sign[np.abs(s) <= tol[:, None]] = 0
    row, j = np.nonzero(sign[:, :-1] * sign[:, 1:] < 0)
    a, b = s[row, j], s[row, j + 1]
    return t[j] + (t[j + 1] - t[j]) * a / (a - b)


def _maxpool_roots(t: np.ndarray, call: np.ndarray, windows: np.ndarray, tol: float) -> np.ndarray:
    """Parameters where a max-pool window's argmax switches: two taps cross where they are the
    window's maximum. ``call``: ``(units, V)``; ``windows``: ``(W, k)`` unit indices, -1 padding."""
    valid = windows >= 0
    taps = np.where(valid[..., None], call[np.maximum(windows, 0)], 0.0)  # (W, k, V); padding never wins
    scale = np.abs(taps).max(axis=(1, 2))                                   # (W,)
    found = []
    k = windows.shape[1]
    for p in range(k):
        for q in range(p + 1, k):
            both = valid[:, p] & valid[:, q]
            d = np.where(both[:, None], taps[:, p] - taps[:, q], 0.0)
            sign = np.sign(d)
            sign[np.abs(d) <= tol * scale[:, None]] = 0
            w, j = np.nonzero(sign[:, :-1] * sign[:, 1:] < 0)
            lam = d[w, j] / (d[w, j] - d[w, j + 1])
            at = taps[w, :, j] + lam[:, None] * (taps[w, :, j + 1] - taps[w, :, j])  # every tap there
            top = np.where(valid[w], at, -np.inf).max(axis=1)
            on_top = at[np.arange(len(w)), p] >= top - tol * scale[w]
            found.append((t[j] + lam * (t[j + 1] - t[j]))[on_top])
    return np.concatenate(found) if found else np.zeros(0)


def _call_roots(nl: Nonlinearity, t: np.ndarray, values: np.ndarray, tol: float) -> np.ndarray:
    """The breakpoints one nonlinearity call adds, from its input ``values`` ``(*units, V)`` at ``t``."""
    call = values.reshape(-1, values.shape[-1])
    scale = tol * np.abs(call).max(axis=1)
    name = nl.func.__name__.strip("_")
    if nl.kind == "relu" or name == "abs":
        return _roots(t, call, scale)
    if nl.kind == "clamp":
        knots = [float(k) for k in nl.clamp_knots() if k is not None]
        return np.concatenate([np.zeros(0)] + [_roots(t, call - k, scale) for k in knots])
    if nl.kind == "maxpool" and name in ("max_pool2d", "max_pool2d_with_indices") and values.ndim == 4:
        windows, _ = maxpool_windows(nl, values.shape[:-1])
        return _maxpool_roots(t, call, windows, tol)
    raise NotImplementedError(f"nsp.linear_pieces: '{nl.key}' ({nl.func.__name__}) is piecewise linear, but "
                              f"linear_pieces does not split at it. Supported: {SPLIT_KINDS}")


def linear_pieces(
    model: nn.Module,
    start: torch.Tensor,
    end: torch.Tensor,
    *,
    domain: Sequence[float] = (0.0, 1.0),
    tol: float = 1e-9,
    batch_size: int = 8192,
) -> Pieces:
    """Cut the segment from ``start`` to ``end`` exactly into the network's linear pieces.

    The 1-D counterpart of :func:`nsp.regions.linear_regions`: along ``x(t) = start + t (end -
    start)`` the network is affine between consecutive breakpoints, the ``t`` where some unit
    changes piece.

    Parameters
    ----------
    model : nn.Module
        A piecewise-linear network (see :func:`nsp.local_affine`), run in eval mode (the mode of
        each submodule is restored after). Breakpoints come from ReLU, LeakyReLU, PReLU,
        ReLU6/Hardtanh/clamp, abs and MaxPool2d calls.
    start, end : torch.Tensor
        Two inputs of the model's input shape, without the batch dimension. For a point ``x``
        and a direction ``d``, give ``x`` and ``x + d`` (and ``domain=(-s, s)`` for both sides).
    domain : (t_min, t_max)
        The interval of ``t``; ``(0, 1)`` is the segment between the two inputs.
    tol : float
        A unit whose input at a piece end is within ``tol`` (relative to its largest value on
        the segment) of a knot counts as on it there.
    batch_size : int
        Points per forward pass.

    Returns
    -------
    Pieces
        ``pieces.breakpoints`` ``(n - 1,)``, ``pieces.patterns`` and ``pieces.affine``.

    Raises
    ------
    ValueError
        For inputs of different shapes, equal or not finite, or an empty or unbounded domain.
    NotPiecewiseLinearError
        Naming the module that calls a non-piecewise-linear operation.
    NotImplementedError
        For a piecewise-linear operation not split here (e.g. ``torch.maximum``), named.

    Examples
    --------
    >>> import torch, nsp.regions as R
    >>> net = torch.nn.Sequential(torch.nn.Linear(1, 2), torch.nn.ReLU())
    >>> with torch.no_grad():
    ...     net[0].weight[:] = torch.tensor([[1.0], [-1.0]]); net[0].bias[:] = torch.tensor([-0.5, 0.25])
    >>> pieces = R.linear_pieces(net, torch.tensor([0.0]), torch.tensor([1.0]))
    >>> pieces.breakpoints.tolist()
    [0.25, 0.5]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"nsp.linear_pieces: expected argument `model` to be an nn.Module, but got {type(model).__name__}")
    check_options(model, 0.0, tol, batch_size, "nsp", None, where="nsp.linear_pieces")
    try:
        t0, t1 = (float(d) for d in domain)
    except (TypeError, ValueError):
        raise ValueError(f"nsp.linear_pieces: expected domain=(t_min, t_max), but got {domain!r}") from None
    if not (math.isfinite(t0) and math.isfinite(t1) and t0 < t1):
        raise ValueError(f"nsp.linear_pieces: expected a bounded, non-empty domain=(t_min, t_max), but got {domain!r}")
    segment = Segment(start, end)
    params = float64_params(model)
    with eval_mode(model):
        t = np.array([t0, t1])
        calls: list[str] = []
        while True:
            try:
                nl, values = evaluate(model, params, segment, t, len(calls), batch_size, unit_major=True)
            except (RuntimeError, IndexError) as err:
                if calls:
                    raise
                raise ValueError(
                    f"nsp.linear_pieces: {type(model).__name__} failed on inputs of shape (N, "
                    f"{', '.join(map(str, segment.start.shape))}) ({err}); `start` and `end` are single inputs, "
                    "without the batch dimension") from err
            if nl is None:
                break
            calls.append(nl.key)
            roots = _call_roots(nl, t, values, tol)
            t = np.unique(np.concatenate([t, roots[(roots > t0) & (roots < t1)]]))
            # Roots of several units that coincide to rounding are one breakpoint.
            t = t[np.concatenate([[True], np.diff(t) > 1e-13 * (t1 - t0)])]
            t[-1] = t1
        outputs = np.moveaxis(values, -1, 0)
        middle = (t[:-1] + t[1:]) / 2
        patterns: dict[str, list[torch.Tensor]] = {}
        for i in range(0, len(middle), batch_size):
            for key, p in activation_patterns(model, segment(middle[i: i + batch_size]), params=params)[1].items():
                patterns.setdefault(key, []).append(p)
    return Pieces(t=t, patterns={k: torch.cat(v) for k, v in patterns.items()}, outputs=np.ascontiguousarray(outputs),
                  segment=segment, calls=calls)
