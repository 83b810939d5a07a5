"""Exact linear regions of a piecewise-linear network on a 2-D slice of its input space.

The slice is a :class:`Plane`: the plane through three inputs (a probe and two that span the
plane), or the input space of a network with 2-D input. Within a bounded box of the plane,
:func:`linear_regions` partitions it into the network's activation regions, layer by layer:

- the partition starts as the box; every region is a convex polygon;
- at each nonlinearity, every unit's pre-activation is affine on every current region (the
  earlier layers' pattern is fixed there), so its zero line cuts each region it crosses into
  two (a max-pool's argmax switches cut along ``a_i = max_j a_j``);
- the values of a layer at the partition's vertices come from the model's own modules, run
  on the batch of vertices (convolutions stay convolutions), once per nonlinearity; a
  vertex created on an edge gets the values of that layer by interpolation along the edge,
  which is exact because they are affine on the region.

Vertices are shared by the regions around them and held in flat arrays (coordinates,
and per nonlinearity one column of pre-activations per vertex); each split is vectorised
over all regions. Computation is in float64. A vertex whose pre-activation is within
``tol`` (relative to the unit's largest value on the slice) of zero is taken to lie on the
unit's line, so that nearly coincident lines do not leave slivers.

The mesh and its cuts are in :mod:`nsp.regions.mesh`, the network's replay in
:mod:`nsp.regions.replay`, the result in :mod:`nsp.regions.result`, the regioncam backend in
:mod:`nsp.regions.regioncam` and the pictures in :mod:`nsp.regions.plot`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import nsp.common.memory as memory
from nsp.common.modes import eval_mode
from nsp.common.progress import Progress
from nsp.regions.local_affine import Nonlinearity, NotPiecewiseLinearError
from nsp.regions.estimate import RegionEstimate, estimate_regions
from nsp.regions.mesh import CallValues, Columns, Mesh
from nsp.regions.plane import Plane, check_domain
from nsp.regions.regioncam import regioncam_regions
from nsp.regions.replay import calls_at, evaluate
from nsp.regions.result import Regions

__all__ = ["RegionBudgetError", "SPLIT_KINDS", "check_options", "float64_params", "linear_regions", "maxpool_windows"]


class RegionBudgetError(ValueError):
    """A partition refused because it would hold more than ``max_regions`` regions.

    Attributes
    ----------
    estimate : RegionEstimate or None
        The estimate that refused it (None when the partition itself passed the budget).
    """

    def __init__(self, message: str, estimate: RegionEstimate | None = None) -> None:
        super().__init__(message)
        self.estimate = estimate

SPLIT_KINDS = "ReLU, LeakyReLU, PReLU, ReLU6/Hardtanh/clamp and MaxPool2d (ceil_mode=False)"


def maxpool_windows(nl: Nonlinearity, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """``(windows, k)`` flat indices into ``(C, H, W)`` of each max-pool window (-1: padding), and
    the pool's output shape."""
    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    given = dict(zip(names, nl.args[1:]))
    given.update({k: v for k, v in nl.kwargs.items() if k in names})
    kernel = given["kernel_size"]
    stride = given.get("stride") or kernel
    if given.get("ceil_mode", False):
        raise NotImplementedError(f"nsp.linear_regions: '{nl.key}' is a max-pool with ceil_mode=True, which "
                                  f"linear_regions does not support. Supported: {SPLIT_KINDS}")
    c, h, w = shape
    idx = torch.arange(1, h * w + 1, dtype=torch.float64).reshape(1, 1, h, w)
    padding, dilation = given.get("padding", 0), given.get("dilation", 1)
    taps = F.unfold(idx, kernel, dilation=dilation, padding=padding, stride=stride)
    taps = taps[0].T.numpy().astype(np.int64) - 1  # (L, k)
    out_hw = F.max_pool2d(idx, kernel, stride, padding, dilation).shape[-2:]
    per_channel = np.where(taps[None] >= 0, taps[None] + (np.arange(c) * h * w)[:, None, None], -1)
    return per_channel.reshape(-1, taps.shape[1]), (c, *out_hw)


def _split_relu(mesh: Mesh, base: np.ndarray, thresholds: Sequence[float], tol: float,
                budget: tuple[int, str, str] | None = None) -> tuple[np.ndarray, CallValues]:
    """Cut at every unit's thresholds; returns each face's unit values at its centroid, ``(F, P)``,
    and the call's values (which give them at the vertices made by the cuts).

    ``base``: the call's input at the current vertices, ``(P, V0)``. ``budget``: ``(max_regions,
    call key, note)``: refuse as soon as the faces outnumber it (cuts only add faces in this call)."""
    lo, hi = base.min(axis=1), base.max(axis=1)
    scale = np.maximum(np.abs(lo), np.abs(hi))
    # A unit whose values at the call's first vertices do not straddle t is on one side everywhere.
    live = [np.flatnonzero((hi - t > tol * scale) & (lo - t < -tol * scale)) for t in thresholds]
    values = CallValues(mesh, base)
    for t, cutting in zip(thresholds, live):
        for u in cutting:
            mesh.split(values.column(mesh, u) - t, tol * scale[u])
            if budget is not None and mesh.n_faces > budget[0]:
                raise RegionBudgetError(
                    f"nsp.linear_regions: the partition holds {mesh.n_faces:,} regions while cutting at '{budget[1]}', "
                    f"more than max_regions={budget[0]:,}{budget[2]}; give a smaller `domain` or a larger `max_regions`")
    at = np.broadcast_to(base.mean(axis=1), (mesh.n_faces, len(base))).copy()
    units = np.unique(np.concatenate(live))
    if len(units):
        at[:, units] = values.at_faces(mesh, units)
    return at, values


def _dominated(base: np.ndarray, windows: np.ndarray, tol: float, block: int = 64) -> np.ndarray:
    """Windows with a tap at least as large as the others (within ``tol``) at every vertex: ``(W,)`` bool.

    Tap differences are affine on each face, so such a tap is the maximum on the whole face and
    the window's tournament would cut nothing (faces where taps tie, such as dead units, keep
    their argmax from the face's centroid); skipping it saves its splits (on the digits demo,
    most of a record's max-pool time)."""
    out = np.zeros(len(windows), dtype=bool)
    for start in range(0, len(windows), block):
        rows = windows[start: start + block]
        taps = np.where((rows >= 0)[..., None], base[np.maximum(rows, 0)], -np.inf)   # (w, k, V0)
        for k in range(rows.shape[1]):
            others = np.delete(taps, k, axis=1).max(axis=1)
            with np.errstate(invalid="ignore"):  # padding: -inf - -inf
                out[start: start + block] |= (rows[:, k] >= 0) & ((taps[:, k] - others).min(axis=1) >= -tol)
    return out


def _split_maxpool(mesh: Mesh, base: np.ndarray, windows: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut along the argmax switches of every window (a tournament of running maxima), then merge
    the pieces that share a start face and every window's argmax. Returns the argmax tap of every
    window per face ``(F, windows)`` and the merge's map to pre-merge faces."""
    lo, hi = base.min(axis=1), base.max(axis=1)
    scale = float(max(np.abs(lo).max(), np.abs(hi).max())) if base.size else 0.0
    # A window whose taps are constant and equal at every vertex (dead units) never switches.
    valid = windows >= 0
    taps_lo = np.where(valid, lo[np.maximum(windows, 0)], np.inf).min(axis=1)
    taps_hi = np.where(valid, hi[np.maximum(windows, 0)], -np.inf).max(axis=1)
    moving = taps_hi - taps_lo > tol * scale
    values = CallValues(mesh, base)
    for row in windows[moving & ~_dominated(base, windows, tol * scale)]:
        taps = row[row >= 0]
        # A copy: before the call's first cut, column() is a view of the call's values, which the
        # running maximum below must not overwrite.
        best = values.column(mesh, taps[0]).copy()
        for tap in taps[1:]:
            since = mesh.xy.n
            mesh.split(values.column(mesh, tap) - best, tol * scale)
            if mesh.xy.n > since:  # running maximum at the new vertices, from the taps seen so far
                seen = taps[: int(np.flatnonzero(taps == tap)[0])]
                best = np.concatenate([best, np.max([values.at_new(mesh, j, since) for j in seen], axis=0)])
            np.maximum(best, values.column(mesh, tap), out=best)
    # The argmax of every window per face, and a block of taps at the faces' centroids.
    memory.require(8 * mesh.n_faces * (len(windows) + 2 * 64 * windows.shape[1]),
                   f"nsp.linear_regions: the argmax of {len(windows):,} max-pool windows on {mesh.n_faces:,} faces",
                   "partition a smaller domain (the regions grow with it) or a smaller network")
    first_tap = windows[np.arange(len(windows)), valid.argmax(axis=1)]
    argmax = np.broadcast_to(first_tap, (mesh.n_faces, len(windows))).copy()
    which = np.flatnonzero(moving)
    for start in range(0, len(which), 64):
        rows = windows[which[start: start + 64]]
        at = values.at_faces(mesh, np.where(rows >= 0, rows, 0).reshape(-1)).reshape(-1, *rows.shape)  # (F, w, k)
        at = np.where(rows >= 0, at, -np.inf)
        # Taps tied on a whole face (dead ReLUs: all 0) are one piece: the first within rounding wins.
        near = at >= at.max(axis=2, keepdims=True) - tol * max(scale, 1e-300)
        argmax[:, which[start: start + 64]] = rows[np.arange(len(rows)), near.argmax(axis=2)]
    kept = mesh.merge(np.concatenate([mesh.parent[:, None], argmax[:, moving]], axis=1))
    return argmax[kept], kept



def check_options(model: nn.Module, margin: float, tol: float, batch_size: int, backend: str,
                  max_regions: int | None, where: str = "nsp.linear_regions") -> None:
    """Refuse bad options by name before any forward pass (``where`` names the function in messages)."""
    if max_regions is not None and (isinstance(max_regions, bool) or not isinstance(max_regions, int) or max_regions < 1):
        raise ValueError(f"{where}: expected `max_regions` to be an int >= 1 or None, but got {max_regions!r}")
    for argname, value in (("margin", margin), ("tol", tol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise ValueError(f"{where}: expected `{argname}` to be a finite number >= 0, but got {value!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{where}: expected `batch_size` to be an int >= 1, but got {batch_size!r}")
    if backend not in ("nsp", "regioncam"):
        raise ValueError(f"{where}: expected `backend` to be 'nsp' or 'regioncam', but got {backend!r}")
    meta = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.device.type == "meta"]
    if meta:
        raise ValueError(f"{where}: the model's {meta[0]!r} is on the meta device, which holds shapes but "
                         f"no values; load the weights first (e.g. model.to_empty(device='cpu') and a state dict)")


def float64_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """float64 CPU copies of the model's parameters and buffers, for :func:`torch.func.functional_call`
    (the user's model is left as it is)."""
    return {k: v.detach().to("cpu", torch.float64 if v.is_floating_point() else v.dtype)
            for k, v in {**dict(model.named_parameters()), **dict(model.named_buffers())}.items()}


def _check_input_space(model: nn.Module, params: dict, plane: Plane, batch_size: int) -> None:
    """Without a plane, the plane is the input space: refuse a model that does not take 2-D inputs."""
    try:
        evaluate(model, params, plane, np.zeros((1, 2)), 0, batch_size)
    except (RuntimeError, ValueError, IndexError) as err:
        if isinstance(err, NotPiecewiseLinearError):
            raise
        raise ValueError(
            "nsp.linear_regions: without `plane` or `points` the plane is the input space itself, so the model "
            f"must take inputs of shape (N, 2); {type(model).__name__} failed on them ({err}). For another input "
            "shape give points=(probe, a, b), three inputs of the model's shape, or a Plane in its input space"
        ) from err


def linear_regions(
    model: nn.Module,
    *,
    plane: Plane | None = None,
    points: Sequence[torch.Tensor] | None = None,
    domain: Sequence[float] | None = None,
    margin: float = 0.5,
    tol: float = 1e-9,
    batch_size: int = 8192,
    backend: str = "nsp",
    max_regions: int | None = None,
    estimate: bool = True,
) -> Regions:
    """Partition a bounded box of a plane exactly into the network's linear (activation) regions.

    Parameters
    ----------
    model : nn.Module
        A piecewise-linear network (see :func:`nsp.local_affine`), partitioned in eval mode
        (the mode of each submodule is restored after). Its regions are split at ReLU, LeakyReLU, PReLU, ReLU6/Hardtanh/clamp and MaxPool2d calls.
    plane : Plane, optional
        The slice. Default: the input space itself, for a network with 2-D input.
    points : sequence of three tensors, optional
        ``(probe, a, b)``: the plane through them (:meth:`Plane.through`), instead of ``plane``.
    domain : (u_min, u_max, v_min, v_max), optional
        The box in plane coordinates. Required without ``points``; with ``points`` the default
        is the three points' bounding box, widened by ``margin`` times its size on every side.
    margin : float
        See ``domain``.
    tol : float
        Vertices within ``tol`` (relative to the unit's largest value on the slice) of a unit's
        line count as on it.
    batch_size : int
        Vertices per forward pass.
    backend : {'nsp', 'regioncam'}
        ``'regioncam'`` partitions with the regioncam package (Rust, float32; ``pip install
        nsp-lightning[regions]``), for an ``nn.Sequential`` of Linear, ReLU and LeakyReLU layers;
        the result reads its faces and patterns out of regioncam on first use
        (:mod:`nsp.regions.regioncam`).
    max_regions : int, optional
        Refuse a partition of more regions: first by an estimate (:func:`nsp.regions.estimate_regions`,
        a grid scan that costs one batched forward pass), then, should the estimate fall short, as
        soon as the partition holds more. With it, the estimated memory is also checked against
        :mod:`nsp.common.memory`'s limit before anything is partitioned. Progress goes to the
        ``"nsp"`` logger (INFO) when a partition runs long.
    estimate : bool
        With ``max_regions``: run the estimate first (the default). ``False`` skips its grid scan
        (e.g. when the same box held far fewer regions a moment ago); the partition is then
        refused only as it grows: in a ReLU-like call as soon as it holds more than
        ``max_regions`` regions, after every other call, and before any forward pass or max-pool
        argmax that would need more memory than is available.

    Returns
    -------
    Regions

    Raises
    ------
    ValueError
        For a degenerate plane (collinear points), or an unbounded or empty domain.
    RegionBudgetError
        (a ValueError) With ``max_regions``, for a box estimated or found to hold more regions.
    MemoryError
        With ``max_regions``, when the estimated memory exceeds what is available, with the estimate.
    NotPiecewiseLinearError
        Naming the module that calls a non-piecewise-linear operation.
    NotImplementedError
        For a piecewise-linear operation whose regions are not split here (e.g. a max-pool with
        ``ceil_mode=True``), named.

    Examples
    --------
    >>> import torch, nsp.regions as R
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> regions = R.linear_regions(net, domain=(-1, 1, -1, 1))
    >>> round(float(regions.areas().sum()), 9)
    4.0
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"nsp.linear_regions: expected argument `model` to be an nn.Module, but got {type(model).__name__}")
    check_options(model, margin, tol, batch_size, backend, max_regions)
    if not isinstance(estimate, bool):
        raise ValueError(f"nsp.linear_regions: expected `estimate` to be True or False, but got {estimate!r}")
    # Regions of the network as deployed: dropout off, BatchNorm with its running statistics.
    with eval_mode(model):
        return _partition(model, plane, points, domain, margin, tol, batch_size, backend, max_regions, estimate)


def check_budget(model: nn.Module, plane: Plane, domain: tuple[float, float, float, float],
                 max_regions: int) -> RegionEstimate:
    """Estimate the partition of ``domain`` and refuse it, with the estimate, if it is over budget.

    Parameters
    ----------
    model : nn.Module
        In eval mode.
    plane : Plane
    domain : (u_min, u_max, v_min, v_max)
        Checked.
    max_regions : int
        The most regions allowed.

    Returns
    -------
    RegionEstimate

    Raises
    ------
    RegionBudgetError
        If the estimate exceeds ``max_regions``.
    MemoryError
        If the estimated memory exceeds what is available (:func:`nsp.common.memory.require`).
    """
    estimate = estimate_regions(model, plane, domain)
    box = ", ".join(f"{d:.4g}" for d in domain)
    if estimate.regions > max_regions:
        raise RegionBudgetError(
            f"nsp.linear_regions: the box ({box}) holds {estimate.describe()}, more than max_regions={max_regions:,} "
            f"(partition time and memory grow with the count); give a smaller `domain` or a larger `max_regions`",
            estimate)
    memory.require(estimate.nbytes, f"nsp.linear_regions: the box ({box}) with {estimate.describe()}",
                   "give a smaller `domain` (the regions grow with it) or raise the memory limit")
    return estimate


def _partition(model: nn.Module, plane: Plane | None, points: Sequence[torch.Tensor] | None,
               domain: Sequence[float] | None, margin: float, tol: float, batch_size: int, backend: str,
               max_regions: int | None, estimate: bool = True) -> Regions:
    if points is not None:
        if plane is not None:
            raise ValueError("nsp.linear_regions: give either `plane` or `points`, not both")
        if len(points) != 3:
            raise ValueError(f"nsp.linear_regions: expected three points (probe, a, b), but got {len(points)}")
        plane = Plane.through(*points)
        if domain is None:
            uv = plane.coordinates(torch.stack([torch.as_tensor(p, dtype=torch.float64) for p in points]))
            lo, hi = uv.min(axis=0), uv.max(axis=0)
            pad = margin * (hi - lo).max()
            domain = (lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad)
    if domain is None:
        raise ValueError("nsp.linear_regions: unbounded domain: give domain=(u_min, u_max, v_min, v_max)")
    domain = check_domain(domain)
    params = float64_params(model)
    if plane is None:
        plane = Plane(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
        _check_input_space(model, params, plane, batch_size)
    calls_expected: list[str] = []
    if max_regions is not None and estimate:
        calls_expected = list(check_budget(model, plane, domain, max_regions).calls)
    if backend == "regioncam":
        return regioncam_regions(model, params, plane, domain, batch_size)
    u0, u1, v0, v1 = domain
    mesh = Mesh(
        xy=Columns(np.array([[u0, u1, u1, u0], [v0, v0, v1, v1]], dtype=np.float64)),
        fv=np.arange(4, dtype=np.int64), fo=np.array([0, 4]), parent=np.zeros(1, dtype=np.int64),
    )

    # Every call, once, at the box's corners (the mesh's first vertices, whatever is cut later):
    # which calls there are, their sizes and which take the previous call's output as it is. A
    # pass per call to find that out cost about a fifth of a partition on the digits demo.
    plan = calls_at(model, params, plane, mesh.xy.values.T[:4])

    def forward(index: int, held: list[CallValues]) -> tuple[Nonlinearity | None, np.ndarray]:
        """The ``index``-th call and its input at every vertex, ``(*units, V)``; ``held``: the values of
        the previous call when it was a plain ReLU whose cuts are the mesh's latest (taken out of it,
        so that they are freed before a forward pass that does not need them)."""
        if index == len(plan):
            return None, np.zeros(0)  # past the last nonlinearity, the outputs are left for Regions.affine
        nl, chained, corners = plan[index]
        # The call's input at every vertex, float64, and the split's working copies of it.
        units = int(np.prod(corners.shape[1:]))
        memory.require(3 * 8 * units * mesh.xy.n,
                       f"nsp.linear_regions: {nl.key} with {units:,} units at {mesh.xy.n:,} vertices",
                       "partition a smaller domain (the regions grow with it) or a smaller network")
        relu = held.pop() if held else None
        if mesh.xy.n == len(corners):  # nothing cut yet: the vertices are the corners
            flat = np.ascontiguousarray(corners.reshape(len(corners), -1).T)
            return nl, flat.reshape(*corners.shape[1:], len(corners))
        if relu is not None and chained:
            # The call's input is the ReLU's output tensor (ReLU then max-pool, say): it is the ReLU of
            # that call's input, which is affine on the faces the ReLU's cuts started from, so the
            # vertices need no forward pass (on the digits demo, half the forward passes' time).
            full = relu.everywhere(mesh)
            return nl, np.maximum(full, 0.0, out=full).reshape(*corners.shape[1:], mesh.xy.n)
        del relu
        return evaluate(model, params, plane, mesh.xy.values.T, index, batch_size, unit_major=True)

    calls: list[str] = []
    stages: list[tuple[str, np.ndarray, np.ndarray]] = []  # (key, pattern per face, parent of each face)
    index = 0
    progress = Progress("linear regions", calls_expected)
    held: list[CallValues] = []
    while True:
        nl, values = forward(index, held)
        if nl is None:
            break
        calls.append(nl.key)
        mesh.start_call()
        unit_shape = values.shape[:-1]
        budget = None if max_regions is None else (max_regions, nl.key, " although estimated within it" * estimate)
        call = values.reshape(-1, values.shape[-1])  # (units, V0), a view
        name = nl.func.__name__.strip("_")
        if nl.kind == "relu":
            at, split_values = _split_relu(mesh, call, [0.0], tol, budget)
            if name == "relu":
                held.append(split_values)
            del call, values, split_values
            pattern = (at > 0).reshape(-1, *unit_shape)
        elif nl.kind == "clamp" and name != "abs":
            lo_hi = _clamp_knots_of(nl)
            at, _ = _split_relu(mesh, call, [t for t in lo_hi if t is not None], tol, budget)
            code = np.zeros(at.shape, dtype=np.int8)
            if lo_hi[0] is not None:
                code[at < lo_hi[0]] = -1
            if lo_hi[1] is not None:
                code[at > lo_hi[1]] = 1
            pattern = code.reshape(-1, *unit_shape)
        elif nl.kind == "maxpool" and name in ("max_pool2d", "max_pool2d_with_indices") and len(unit_shape) == 3:
            windows, out_shape = maxpool_windows(nl, unit_shape)
            argmax, _ = _split_maxpool(mesh, call, windows, tol)
            hw = unit_shape[1] * unit_shape[2]
            pattern = (argmax % hw).reshape(-1, *out_shape)  # torch's indices: within each channel's plane
            mesh.compact()
        else:
            raise NotImplementedError(f"nsp.linear_regions: '{nl.key}' ({nl.func.__name__}) is piecewise linear, but "
                                      f"linear_regions does not split regions at it. Supported: {SPLIT_KINDS}")
        stages.append((nl.key, pattern, mesh.parent.copy()))
        if max_regions is not None and mesh.n_faces > max_regions:
            raise RegionBudgetError(
                f"nsp.linear_regions: the partition holds {mesh.n_faces:,} regions after '{nl.key}' (call {index + 1}), "
                f"more than max_regions={max_regions:,}{budget[2]}; give a "
                f"smaller `domain` or a larger `max_regions`")
        if index < len(calls_expected):
            progress.done(index)
        index += 1
    # Each stage's pattern, carried to the final regions through the later stages' parents.
    patterns: dict[str, torch.Tensor] = {}
    ancestor = np.arange(mesh.n_faces)
    for key, pattern, parent in reversed(stages):
        patterns[key] = torch.from_numpy(np.ascontiguousarray(pattern[ancestor]))
        ancestor = parent[ancestor]
    regions = Regions(
        vertices=mesh.xy.values.T.copy(), face_vertices=mesh.fv, face_offsets=mesh.fo,
        patterns={k: patterns[k] for k in calls}, plane=plane, domain=domain, calls=calls,
        _network=(model, params, index, batch_size),
    )
    return regions


def _clamp_knots_of(nl: Nonlinearity) -> tuple[float | None, float | None]:
    lo, hi = nl.clamp_knots()
    return (None if lo is None else float(lo)), (None if hi is None else float(hi))
