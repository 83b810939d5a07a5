"""Replaying a network on points of a plane, up to one of its nonlinearity calls.

:func:`evaluate` runs a float64 copy of the model's parameters (through
:func:`torch.func.functional_call`, so the user's model is left as it is) on inputs of a
:class:`~nsp.regions.plane.Plane`, and stops at the ``index``-th piecewise-linear call that
:class:`~nsp.regions.local_affine.PiecewiseLinearGuard` sees: the partition reads that call's
input at its vertices, and :class:`~nsp.regions.result.Regions` the network's output.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from nsp.regions.local_affine import Nonlinearity, PiecewiseLinearGuard
from nsp.regions.plane import Plane

__all__ = ["calls_at", "evaluate"]


class _Stop(Exception):
    def __init__(self, nl: Nonlinearity):
        self.nl = nl


def _stopper(index: int, chained: list[bool] | None) -> Callable:
    count = [0]
    last: list[Any] = [None]

    def on_nonlinear(nl: Nonlinearity, run: Callable) -> Any:
        if count[0] == index:
            if chained is not None:
                x = nl.args[0] if nl.args else next(iter(nl.kwargs.values()))
                chained.append(last[0] is not None and x is last[0])
            raise _Stop(nl)
        count[0] += 1
        last[0] = run()
        return last[0]

    return on_nonlinear


def _forward_to(model: nn.Module, params: dict, x: torch.Tensor, index: int,
                chained: list[bool] | None = None) -> tuple[Nonlinearity | None, Any]:
    """Run the float64 model up to its ``index``-th nonlinearity call: ``(call, None)``, or ``(None, output)``."""
    guard = PiecewiseLinearGuard(model, on_nonlinear=_stopper(index, chained))
    try:
        with torch.no_grad(), guard:
            out = torch.func.functional_call(model, params, (guard.mark(x.clone()),))
    except _Stop as stop:
        return stop.nl, None
    return None, out


def evaluate(model: nn.Module, params: dict, plane: Plane | Callable[[np.ndarray], torch.Tensor], uv: np.ndarray, index: int,
             batch_size: int, unit_major: bool = False, chained: list[bool] | None = None,
             ) -> tuple[Nonlinearity | None, np.ndarray]:
    """The input of the ``index``-th nonlinearity call at plane points, or the output.

    Parameters
    ----------
    model : nn.Module
    params : dict of str to torch.Tensor
        The model's parameters and buffers, float64 on the CPU.
    plane : Plane or callable
        Maps coordinates to inputs (a :class:`~nsp.regions.line.Segment` maps ``(n,)`` parameters).
    uv : numpy.ndarray
        ``(n, 2)`` plane coordinates (``(n,)`` for a segment).
    index : int
        Which nonlinearity call, counting from 0.
    batch_size : int
        Points per forward pass.
    unit_major : bool
        Return ``(*units, n)`` instead of ``(n, *units)``, filled batch by batch, so that only
        one copy is ever held.
    chained : list of bool, optional
        If given, whether the call's input is the previous nonlinearity call's output tensor
        itself (no operation between them) is appended, once per batch.

    Returns
    -------
    (Nonlinearity or None, numpy.ndarray)
        The call and its input; ``None`` and the network's output when it makes at most
        ``index`` calls.
    """
    out_array, nl = None, None
    for start in range(0, len(uv), batch_size):
        nl, out = _forward_to(model, params, plane(uv[start: start + batch_size]), index, chained)
        if nl is not None:
            out = nl.args[0] if nl.args else next(iter(nl.kwargs.values()))
        elif not isinstance(out, torch.Tensor):
            raise TypeError(f"nsp.linear_regions: expected the model to return one tensor, but got {type(out).__name__}")
        chunk = out.detach().numpy()
        if out_array is None:
            shape = (int(np.prod(chunk.shape[1:])), len(uv)) if unit_major else (len(uv), *chunk.shape[1:])
            out_array = np.empty(shape, dtype=np.float64)
            unit_shape = chunk.shape[1:]
        if unit_major:
            out_array[:, start: start + len(chunk)] = chunk.reshape(len(chunk), -1).T
        else:
            out_array[start: start + len(chunk)] = chunk
    if unit_major:
        out_array = out_array.reshape(*unit_shape, len(uv))
    return nl, out_array



def calls_at(model: nn.Module, params: dict, plane: Plane, uv: np.ndarray) -> list[tuple[Nonlinearity, bool, np.ndarray]]:
    """Every nonlinearity call of one pass of the float64 model at a few plane points, in order.

    Parameters
    ----------
    model : nn.Module
    params : dict of str to torch.Tensor
        The model's parameters and buffers, float64 on the CPU.
    plane : Plane
    uv : numpy.ndarray
        ``(n, 2)`` plane coordinates, a few (one batch).

    Returns
    -------
    list of (Nonlinearity, bool, numpy.ndarray)
        Per call: the call, whether its input is the previous call's output tensor itself (no
        operation between them), and its input at the points, ``(n, *units)``.
    """
    found: list[tuple[Nonlinearity, bool, np.ndarray]] = []
    last: list[Any] = [None]

    def on_nonlinear(nl: Nonlinearity, run: Callable) -> Any:
        x = nl.args[0] if nl.args else next(iter(nl.kwargs.values()))
        found.append((nl, last[0] is not None and x is last[0], x.detach().numpy().copy()))
        last[0] = run()
        return last[0]

    guard = PiecewiseLinearGuard(model, on_nonlinear=on_nonlinear)
    with torch.no_grad(), guard:
        out = torch.func.functional_call(model, params, (guard.mark(plane(uv).clone()),))
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"nsp.linear_regions: expected the model to return one tensor, but got {type(out).__name__}")
    return found
