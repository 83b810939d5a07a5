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

:func:`plot_regions` draws the partition with matplotlib; :func:`regions_rgb` rasterises it
to an RGB array (for TensorBoard) without matplotlib.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nsp.regions.local_affine import Nonlinearity, PiecewiseLinearGuard

__all__ = ["Plane", "Regions", "linear_regions", "plot_regions", "regions_rgb", "pattern_colors"]

_SPLIT_KINDS = "ReLU, LeakyReLU, PReLU, ReLU6/Hardtanh/clamp and MaxPool2d (ceil_mode=False)"


class Plane:
    """An affine map from 2-D coordinates ``(u, v)`` to the network's input space.

    ``x(u, v) = origin + u * basis[0] + v * basis[1]``.

    Parameters
    ----------
    origin : torch.Tensor
        A point of the input space, ``(*in)``.
    basis : torch.Tensor
        Two directions, ``(2, *in)``.

    Raises
    ------
    ValueError
        If the directions are (nearly) parallel or not finite.
    """

    def __init__(self, origin: torch.Tensor, basis: torch.Tensor):
        origin = torch.as_tensor(origin, dtype=torch.float64)
        basis = torch.as_tensor(basis, dtype=torch.float64)
        if basis.shape != (2, *origin.shape):
            raise ValueError(f"nsp.Plane: expected basis of shape (2, *origin.shape) = {(2, *origin.shape)}, "
                             f"but got {tuple(basis.shape)}")
        if not (torch.isfinite(origin).all() and torch.isfinite(basis).all()):
            raise ValueError("nsp.Plane: origin and basis must be finite")
        b = basis.reshape(2, -1)
        n0, n1 = b[0].norm(), b[1].norm()
        if n0 == 0 or n1 == 0 or (b[0] @ b[1]).abs() >= (1 - 1e-12) * n0 * n1:
            raise ValueError("nsp.Plane: degenerate plane: the two directions are parallel (collinear points)")
        self.origin = origin
        self.basis = basis

    @classmethod
    def through(cls, probe: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> "Plane":
        """The plane through three inputs, with the probe at ``(0, 0)``, ``a`` on the positive
        ``u`` axis, and an orthonormal basis (so areas and distances are those of input space).

        Raises
        ------
        ValueError
            If the three inputs are collinear (no plane through them).
        """
        p, a, b = (torch.as_tensor(t, dtype=torch.float64) for t in (probe, a, b))
        if not (p.shape == a.shape == b.shape):
            raise ValueError(f"nsp.Plane.through: expected three inputs of one shape, but got "
                             f"{tuple(p.shape)}, {tuple(a.shape)}, {tuple(b.shape)}")
        e0 = (a - p).flatten()
        e1 = (b - p).flatten()
        n0 = e0.norm()
        if n0 == 0:
            raise ValueError("nsp.Plane.through: degenerate plane: the first two inputs coincide")
        e0 = e0 / n0
        e1 = e1 - (e1 @ e0) * e0
        # 1e-6: inputs given in float32 are collinear only to its rounding.
        if e1.norm() <= 1e-6 * max(float((b - p).norm()), float(n0)):
            raise ValueError("nsp.Plane.through: degenerate plane: the three inputs are collinear")
        e1 = e1 / e1.norm()
        return cls(p, torch.stack([e0, e1]).reshape(2, *p.shape))

    def coordinates(self, x: torch.Tensor) -> np.ndarray:
        """The ``(u, v)`` coordinates of the orthogonal projection of inputs ``(n, *in)`` on the plane
        (exact for points of the plane when the basis is orthonormal)."""
        b = self.basis.reshape(2, -1)
        d = torch.as_tensor(x, dtype=torch.float64).reshape(len(x), -1) - self.origin.reshape(1, -1)
        return torch.linalg.lstsq(b.T, d.T).solution.T.numpy()

    def __call__(self, uv: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Inputs ``(n, *in)`` at coordinates ``uv`` ``(n, 2)``."""
        uv = torch.as_tensor(np.asarray(uv), dtype=torch.float64)
        x = self.origin.reshape(1, -1) + uv @ self.basis.reshape(2, -1)
        return x.reshape(len(uv), *self.origin.shape)


# --------------------------------------------------------------------------- the partition
class _Columns:
    """Per-vertex values, one row per quantity, grown by doubling (no quadratic copies)."""

    def __init__(self, values: np.ndarray):
        self.data = np.ascontiguousarray(values)
        self.n = values.shape[1]

    def append(self, cols: np.ndarray) -> None:
        k = cols.shape[1]
        if self.n + k > self.data.shape[1]:
            grown = np.empty((self.data.shape[0], max(2 * self.data.shape[1], self.n + k)), dtype=self.data.dtype)
            grown[:, : self.n] = self.data[:, : self.n]
            self.data = grown
        self.data[:, self.n: self.n + k] = cols
        self.n += k

    @property
    def values(self) -> np.ndarray:
        return self.data[:, : self.n]


def _ragged_slots(starts: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For faces with the given slot ranges: slot index, index of the face, and next slot (cyclic)."""
    total = int(lens.sum())
    face = np.repeat(np.arange(len(lens)), lens)
    first = np.repeat(starts, lens)
    offset = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
    slot = first + offset
    nxt = np.where(offset == np.repeat(lens, lens) - 1, first, slot + 1)
    return slot, face, nxt


@dataclass
class _Mesh:
    """Convex polygons over shared vertices: ``fv[fo[i]:fo[i+1]]`` are face i's vertices in order.

    During one nonlinearity call, ``parent`` maps each face to the face it was cut from at the
    start of the call, and ``home`` gives, for each vertex made during the call, such a start face
    that contains it (its values there come from that face's affine map).
    """

    xy: _Columns                # (2, V) coordinates in the plane
    fv: np.ndarray              # (S,) vertex ids
    fo: np.ndarray              # (F+1,) offsets
    parent: np.ndarray          # (F,)
    home: _Columns = field(default_factory=lambda: _Columns(np.zeros((1, 0), dtype=np.int64)))

    @property
    def n_faces(self) -> int:
        return len(self.fo) - 1

    def start_call(self) -> None:
        self.parent = np.arange(self.n_faces)
        self.home = _Columns(np.zeros((1, 0), dtype=np.int64))

    def centroids(self) -> np.ndarray:
        """The mean of each face's vertices, ``(2, F)`` (inside the face: it is convex)."""
        return np.add.reduceat(self.xy.values[:, self.fv], self.fo[:-1], axis=1) / np.diff(self.fo)

    def split(self, s: np.ndarray, tol: float) -> None:
        """Cut every face on which the (affine) function with vertex values ``s`` changes sign."""
        sign = np.sign(s).astype(np.int8)
        sign[np.abs(s) <= tol] = 0
        slot_sign = sign[self.fv]
        starts = self.fo[:-1]
        cut = (np.maximum.reduceat(slot_sign, starts) > 0) & (np.minimum.reduceat(slot_sign, starts) < 0)
        if not cut.any():
            return
        lens_all = np.diff(self.fo)
        cut_faces = np.flatnonzero(cut)
        slot, face, nxt = _ragged_slots(starts[cut_faces], lens_all[cut_faces])
        a, b = self.fv[slot], self.fv[nxt]
        sa, sb = sign[a], sign[b]
        crossing = (sa.astype(np.int16) * sb) < 0
        # One new vertex per crossed edge, shared by the two faces on either side of it.
        lo, hi = np.minimum(a[crossing], b[crossing]), np.maximum(a[crossing], b[crossing])
        keys, first, inverse = np.unique(lo * (1 << 32) + hi, return_index=True, return_inverse=True)
        e0, e1 = keys >> 32, keys & ((1 << 32) - 1)
        t = s[e0] / (s[e0] - s[e1])
        n = self.xy.n
        xy = self.xy.values
        self.xy.append(xy[:, e0] + t * (xy[:, e1] - xy[:, e0]))
        self.home.append(self.parent[cut_faces[face[crossing][first]]][None])
        new_vertex = np.full(len(slot), -1, dtype=np.int64)
        new_vertex[crossing] = n + inverse.reshape(-1)
        # Walk each cut face once: the positive piece keeps s >= 0 vertices, the negative one
        # s <= 0, and both take the crossing points, in the face's cyclic order.
        items = np.stack([a, new_vertex], axis=1).reshape(-1)
        item_face = np.repeat(face, 2)
        pieces, counts = [], []
        for keep_vertex in (sa >= 0, sa <= 0):
            keep = np.stack([keep_vertex, crossing], axis=1).reshape(-1)
            pieces.append(items[keep])
            counts.append(np.bincount(item_face[keep], minlength=len(cut_faces)))
        keep_slots = np.repeat(~cut, lens_all)
        self.fv = np.concatenate([self.fv[keep_slots], *pieces])
        lens = np.concatenate([lens_all[~cut], *counts])
        self.fo = np.concatenate([[0], np.cumsum(lens)])
        self.parent = np.concatenate([self.parent[~cut], self.parent[cut_faces], self.parent[cut_faces]])

    def merge(self, key: np.ndarray) -> np.ndarray:
        """Merge faces with equal ``key`` rows (they tile one convex region) into one polygon each;
        returns, for each merged face, one of the faces it came from."""
        _, group = np.unique(key, axis=0, return_inverse=True)
        group = group.reshape(-1)
        n_groups = int(group.max()) + 1
        first = np.zeros(n_groups, dtype=np.int64)
        first[group[::-1]] = np.arange(len(group))[::-1]
        if n_groups == self.n_faces:
            return np.arange(self.n_faces)
        lens = np.diff(self.fo)
        slot, face, nxt = _ragged_slots(self.fo[:-1], lens)
        a, b = self.fv[slot], self.fv[nxt]
        g = group[face]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        # An edge inside a group appears twice (once per side); the boundary ones once.
        _, inv, cnt = np.unique(np.stack([g, lo, hi], axis=1), axis=0, return_inverse=True, return_counts=True)
        boundary = cnt[inv.reshape(-1)] == 1
        pairs = np.unique(np.stack([g[boundary], a[boundary]], axis=1), axis=0)
        gv, vv = pairs[:, 0], pairs[:, 1]
        xy = self.xy.values
        centre = np.stack([np.bincount(gv, weights=xy[k, vv], minlength=n_groups) for k in range(2)])
        centre /= np.bincount(gv, minlength=n_groups)
        angle = np.arctan2(xy[1, vv] - centre[1, gv], xy[0, vv] - centre[0, gv])
        order = np.lexsort((angle, gv))
        self.fv = vv[order]
        self.fo = np.concatenate([[0], np.cumsum(np.bincount(gv, minlength=n_groups))])
        self.parent = self.parent[first]
        return first

    def compact(self) -> None:
        """Drop vertices that no face uses (call between nonlinearities)."""
        used = np.zeros(self.xy.n, dtype=bool)
        used[self.fv] = True
        if used.all():
            return
        remap = np.cumsum(used) - 1
        self.fv = remap[self.fv]
        self.xy = _Columns(self.xy.values[:, used])


def _face_triangles(mesh: _Mesh) -> np.ndarray:
    """Three well-spread vertices of each face, ``(F, 3)``: its first vertex ``a``, the vertex ``b``
    farthest from ``a``, and the vertex farthest from the line ``ab`` (faces may have collinear
    vertices, so fixed positions could give a degenerate triangle)."""
    lens = np.diff(mesh.fo)
    face = np.repeat(np.arange(mesh.n_faces), lens)
    xy = mesh.xy.values[:, mesh.fv]
    a = mesh.fv[mesh.fo[:-1]]
    pa = mesh.xy.values[:, a][:, face]

    def farthest(score: np.ndarray) -> np.ndarray:
        best = np.maximum.reduceat(score, mesh.fo[:-1])
        hit = np.flatnonzero(score == best[face])
        first = np.full(mesh.n_faces, -1)
        first[face[hit[::-1]]] = hit[::-1]
        return mesh.fv[first]

    b = farthest(((xy - pa) ** 2).sum(axis=0))
    pb = mesh.xy.values[:, b][:, face]
    c = farthest(np.abs((pb[0] - pa[0]) * (xy[1] - pa[1]) - (pb[1] - pa[1]) * (xy[0] - pa[0])))
    return np.stack([a, b, c], axis=1)


class _CallValues:
    """A nonlinearity's input values (``P`` units) at the partition's vertices during its call.

    The forward pass gives them at the vertices present when the call starts, ``base``
    ``(P, V0)``. They are affine on each face of that partition, so at a vertex made later they
    are a fixed combination of their values at three vertices of its start face: the vertex
    keeps those three vertex ids and weights (its barycentric coordinates), and a unit's value
    is computed when needed, rather than interpolating all ``P`` units at every cut.
    """

    def __init__(self, mesh: _Mesh, base: np.ndarray):
        self.base = base
        self.v0 = base.shape[1]
        self.tri = _face_triangles(mesh)                                          # (F0, 3)
        xy = mesh.xy.values
        m = np.stack([xy[0][self.tri], xy[1][self.tri], np.ones(self.tri.shape)], axis=2)
        self.inv = np.linalg.inv(m)  # [u, v, 1] @ inv[f] = weights of f's three vertices at (u, v)
        self.src = _Columns(np.zeros((3, 0), dtype=np.int64))
        self.wts = _Columns(np.zeros((3, 0)))

    def _weights(self, faces: np.ndarray, xy: np.ndarray) -> np.ndarray:
        return np.einsum("vi,vij->vj", np.concatenate([xy.T, np.ones((xy.shape[1], 1))], axis=1), self.inv[faces])

    def _sync(self, mesh: _Mesh) -> None:
        done = self.v0 + self.src.n
        if mesh.xy.n > done:
            home = mesh.home.values[0][done - self.v0:]
            self.src.append(self.tri[home].T)
            self.wts.append(self._weights(home, mesh.xy.values[:, done:]).T)

    def _new(self, unit: int, start: int) -> np.ndarray:
        src, wts = self.src.values[:, start:], self.wts.values[:, start:]
        row = self.base[unit]
        return row[src[0]] * wts[0] + row[src[1]] * wts[1] + row[src[2]] * wts[2]

    def column(self, mesh: _Mesh, unit: int) -> np.ndarray:
        """Unit ``unit`` at every vertex, ``(V,)``."""
        if mesh.xy.n == self.v0:
            return self.base[unit]
        self._sync(mesh)
        return np.concatenate([self.base[unit], self._new(unit, 0)])

    def at_new(self, mesh: _Mesh, unit: int, since: int) -> np.ndarray:
        """Unit ``unit`` at the vertices made since vertex count ``since``."""
        self._sync(mesh)
        return self._new(unit, max(since, self.v0) - self.v0)

    def at_faces(self, mesh: _Mesh, units: np.ndarray, block: int = 32) -> np.ndarray:
        """The given units at each current face's centroid, ``(F, len(units))``."""
        src = self.tri[mesh.parent]                                              # (F, 3)
        w = self._weights(mesh.parent, mesh.centroids())                         # (F, 3)
        out = np.empty((mesh.n_faces, len(units)))
        for start in range(0, len(units), block):
            rows = self.base[units[start: start + block]]                       # (B, V0)
            out[:, start: start + block] = (rows[:, src] * w).sum(axis=2).T
        return out


# --------------------------------------------------------------------------- replaying the network
class _Stop(Exception):
    def __init__(self, nl: Nonlinearity):
        self.nl = nl


def _stopper(index: int) -> Callable:
    count = [0]

    def on_nonlinear(nl: Nonlinearity, run: Callable) -> Any:
        if count[0] == index:
            raise _Stop(nl)
        count[0] += 1
        return run()

    return on_nonlinear


def _forward_to(model: nn.Module, params: dict, x: torch.Tensor, index: int) -> tuple[Nonlinearity | None, Any]:
    """Run the float64 model up to its ``index``-th nonlinearity call: ``(call, None)``, or ``(None, output)``."""
    guard = PiecewiseLinearGuard(model, on_nonlinear=_stopper(index))
    try:
        with torch.no_grad(), guard:
            out = torch.func.functional_call(model, params, (guard.mark(x.clone()),))
    except _Stop as stop:
        return stop.nl, None
    return None, out


def _evaluate(model: nn.Module, params: dict, plane: "Plane", uv: np.ndarray, index: int,
              batch_size: int, unit_major: bool = False) -> tuple[Nonlinearity | None, np.ndarray]:
    """The input of the ``index``-th nonlinearity call at points ``uv`` (or the output, when the
    network has fewer calls), in batches: ``(n, *shape)``, or ``(units, n)`` if ``unit_major``
    (filled batch by batch, so that only one copy is ever held)."""
    out_array, nl = None, None
    for start in range(0, len(uv), batch_size):
        nl, out = _forward_to(model, params, plane(uv[start: start + batch_size]), index)
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


def _maxpool_windows(nl: Nonlinearity, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """``(windows, k)`` flat indices into ``(C, H, W)`` of each max-pool window (-1: padding), and
    the pool's output shape."""
    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    given = dict(zip(names, nl.args[1:]))
    given.update({k: v for k, v in nl.kwargs.items() if k in names})
    kernel = given["kernel_size"]
    stride = given.get("stride") or kernel
    if given.get("ceil_mode", False):
        raise NotImplementedError(f"nsp.linear_regions: '{nl.key}' is a max-pool with ceil_mode=True, which "
                                  f"linear_regions does not support. Supported: {_SPLIT_KINDS}")
    c, h, w = shape
    idx = torch.arange(1, h * w + 1, dtype=torch.float64).reshape(1, 1, h, w)
    padding, dilation = given.get("padding", 0), given.get("dilation", 1)
    taps = F.unfold(idx, kernel, dilation=dilation, padding=padding, stride=stride)
    taps = taps[0].T.numpy().astype(np.int64) - 1  # (L, k)
    out_hw = F.max_pool2d(idx, kernel, stride, padding, dilation).shape[-2:]
    per_channel = np.where(taps[None] >= 0, taps[None] + (np.arange(c) * h * w)[:, None, None], -1)
    return per_channel.reshape(-1, taps.shape[1]), (c, *out_hw)


def _split_relu(mesh: _Mesh, base: np.ndarray, thresholds: Sequence[float], tol: float) -> np.ndarray:
    """Cut at every unit's thresholds; returns each face's unit values at its centroid, ``(F, P)``.

    ``base``: the call's input at the current vertices, ``(P, V0)``."""
    scale = np.abs(base).max(axis=1)
    lo, hi = base.min(axis=1), base.max(axis=1)
    # A unit whose values at the call's first vertices do not straddle t is on one side everywhere.
    live = [np.flatnonzero((hi - t > tol * scale) & (lo - t < -tol * scale)) for t in thresholds]
    values = _CallValues(mesh, base)
    for t, cutting in zip(thresholds, live):
        for u in cutting:
            mesh.split(values.column(mesh, u) - t, tol * scale[u])
    at = np.broadcast_to(base.mean(axis=1), (mesh.n_faces, len(base))).copy()
    units = np.unique(np.concatenate(live))
    if len(units):
        at[:, units] = values.at_faces(mesh, units)
    return at


def _split_maxpool(mesh: _Mesh, base: np.ndarray, windows: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut along the argmax switches of every window (a tournament of running maxima), then merge
    the pieces that share a start face and every window's argmax. Returns the argmax tap of every
    window per face ``(F, windows)`` and the merge's map to pre-merge faces."""
    scale = float(np.abs(base).max()) if base.size else 0.0
    lo, hi = base.min(axis=1), base.max(axis=1)
    # A window whose taps are constant and equal at every vertex (dead units) never switches.
    valid = windows >= 0
    taps_lo = np.where(valid, lo[np.maximum(windows, 0)], np.inf).min(axis=1)
    taps_hi = np.where(valid, hi[np.maximum(windows, 0)], -np.inf).max(axis=1)
    moving = taps_hi - taps_lo > tol * scale
    values = _CallValues(mesh, base)
    for row in windows[moving]:
        taps = row[row >= 0]
        best = values.column(mesh, taps[0])
        for tap in taps[1:]:
            since = mesh.xy.n
            mesh.split(values.column(mesh, tap) - best, tol * scale)
            if mesh.xy.n > since:  # running maximum at the new vertices, from the taps seen so far
                seen = taps[: int(np.flatnonzero(taps == tap)[0])]
                best = np.concatenate([best, np.max([values.at_new(mesh, j, since) for j in seen], axis=0)])
            np.maximum(best, values.column(mesh, tap), out=best)
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


@dataclass
class Regions:
    """The linear (activation) regions of a network on a bounded box of a plane.

    Attributes
    ----------
    vertices : numpy.ndarray
        ``(V, 2)`` plane coordinates of the partition's vertices.
    face_vertices, face_offsets : numpy.ndarray
        Region ``i`` is the convex polygon ``vertices[face_vertices[face_offsets[i]:face_offsets[i+1]]]``,
        counter-clockwise.
    patterns : dict of str to torch.Tensor
        Each region's activation pattern, per nonlinearity call, ``(regions, *units)`` (as in
        :func:`nsp.local_affine.activation_patterns`).
    plane : Plane
    domain : tuple of float
        ``(u_min, u_max, v_min, v_max)``.
    calls : list of str
        The nonlinearity calls that split the plane, in order.

    The network's values, :attr:`vertex_outputs` and :attr:`affine`, are computed on first use
    (one forward pass over all vertices).
    """

    vertices: np.ndarray
    face_vertices: np.ndarray
    face_offsets: np.ndarray
    patterns: dict[str, torch.Tensor]
    plane: Plane
    domain: tuple[float, float, float, float]
    calls: list[str] = field(default_factory=list)
    _network: tuple[nn.Module, dict, int, int] | None = field(default=None, repr=False)
    _outputs: np.ndarray | None = field(default=None, repr=False)
    _affine: np.ndarray | None = field(default=None, repr=False)

    @property
    def vertex_outputs(self) -> np.ndarray:
        """``(V, *out)``, the network at each vertex."""
        if self._outputs is None:
            model, params, index, batch_size = self._network
            self._outputs = _evaluate(model, params, self.plane, self.vertices, index, batch_size)[1]
        return self._outputs

    @property
    def affine(self) -> np.ndarray:
        """``(regions, 3, *out)``: on region ``i`` the network is ``[u, v, 1] @ affine[i]``."""
        if self._affine is None:
            self._affine = _affine_maps(self)
        return self._affine

    def __len__(self) -> int:
        return len(self.face_offsets) - 1

    @property
    def count(self) -> int:
        """The number of regions."""
        return len(self)

    def polygon(self, i: int) -> np.ndarray:
        """Region ``i``'s vertices, ``(n, 2)``."""
        return self.vertices[self.face_vertices[self.face_offsets[i]: self.face_offsets[i + 1]]]

    def polygons(self) -> list[np.ndarray]:
        """Every region's vertices."""
        return [self.polygon(i) for i in range(len(self))]

    def _edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        slot, face, nxt = _ragged_slots(self.face_offsets[:-1], np.diff(self.face_offsets))
        return self.vertices[self.face_vertices[slot]], self.vertices[self.face_vertices[nxt]], face

    def areas(self) -> np.ndarray:
        """Each region's area (shoelace formula), ``(regions,)``."""
        p, q, face = self._edges()
        return 0.5 * np.bincount(face, weights=p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0], minlength=len(self))

    def interior_points(self) -> np.ndarray:
        """A point inside each region (the mean of its vertices), ``(regions, 2)``."""
        lens = np.diff(self.face_offsets)
        return np.add.reduceat(self.vertices[self.face_vertices], self.face_offsets[:-1], axis=0) / lens[:, None]

    def sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random interior points per region (convex combinations of its vertices): ``(points, region)``."""
        lens = np.diff(self.face_offsets)
        slot, face, _ = _ragged_slots(self.face_offsets[:-1], lens)
        pts, owner = [], []
        for _ in range(n):
            w = generator.exponential(size=len(slot))
            w /= np.bincount(face, weights=w)[face]
            pts.append(np.stack([np.bincount(face, weights=w * self.vertices[self.face_vertices[slot], k])
                                 for k in range(2)], axis=1))
            owner.append(np.arange(len(self)))
        return np.concatenate(pts), np.concatenate(owner)

    def locate(self, points: np.ndarray) -> np.ndarray:
        """The region containing each point (``-1`` outside the box), ``(n,)``; a point on a boundary
        gets one of the regions around it."""
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        p, q, face = self._edges()
        scale = max(self.domain[1] - self.domain[0], self.domain[3] - self.domain[2])
        out = np.full(len(points), -1, dtype=np.int64)
        for i, x in enumerate(points):
            cross = (q[:, 0] - p[:, 0]) * (x[1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (x[0] - p[:, 0])
            worst = np.full(len(self), np.inf)
            np.minimum.at(worst, face, cross)
            inside = np.flatnonzero(worst >= -1e-12 * scale * scale)
            if len(inside):
                out[i] = inside[np.argmax(worst[inside])]
        return out

    def _inner_edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p, q, face = self._edges()
        u0, u1, v0, v1 = self.domain
        eps = 1e-12 * max(u1 - u0, v1 - v0)
        on_side = np.zeros(len(p), dtype=bool)
        for k, bound in ((0, u0), (0, u1), (1, v0), (1, v1)):
            on_side |= (np.abs(p[:, k] - bound) <= eps) & (np.abs(q[:, k] - bound) <= eps)
        return p[~on_side], q[~on_side], face[~on_side]

    def distance_to_boundary(self, point: Sequence[float]) -> float:
        """Distance in the plane from ``point`` to the nearest boundary of its region (the box's
        sides are not region boundaries; ``inf`` for a region that fills the box)."""
        region = int(self.locate(np.asarray(point)[None])[0])
        if region < 0:
            raise ValueError(f"nsp.Regions.distance_to_boundary: the point {tuple(point)} lies outside the domain {self.domain}")
        p, q, face = self._inner_edges()
        mine = face == region
        d = _segment_distance(np.asarray(point, dtype=np.float64), p[mine], q[mine])
        return float(d.min()) if len(d) else math.inf

    def count_near(self, point: Sequence[float], radius: float) -> int:
        """The number of regions that meet the disc of ``radius`` around ``point``."""
        x = np.asarray(point, dtype=np.float64)
        p, q, face = self._edges()
        near = np.zeros(len(self), dtype=bool)
        near[face[_segment_distance(x, p, q) <= radius]] = True
        inside = self.locate(x[None])[0]
        if inside >= 0:
            near[inside] = True
        return int(near.sum())

    def density_near(self, point: Sequence[float], radius: float) -> float:
        """Regions per unit area near ``point``: :meth:`count_near` over the disc's area."""
        return self.count_near(point, radius) / (math.pi * radius**2)

    def colors(self, seed: int = 0) -> np.ndarray:
        """An RGB colour per region, a function of its activation pattern, ``(regions, 3)``."""
        return pattern_colors(self.patterns, seed)


def _segment_distance(x: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    d = q - p
    t = np.clip(((x - p) * d).sum(axis=1) / np.maximum((d * d).sum(axis=1), 1e-300), 0.0, 1.0)
    return np.linalg.norm(p + t[:, None] * d - x, axis=1)


def pattern_colors(patterns: dict[str, torch.Tensor], seed: int = 0) -> np.ndarray:
    """An RGB colour in [0, 1] per row of the activation patterns: equal patterns, equal colours."""
    import colorsys

    rows = [p.reshape(len(p), -1).to(torch.float64).numpy() for p in patterns.values()]
    if not rows:
        return np.full((0, 3), 0.7)
    flat = np.concatenate(rows, axis=1)
    rng = np.random.default_rng(seed)
    h = (flat @ rng.uniform(size=(flat.shape[1], 3))) % 1.0
    return np.array([colorsys.hsv_to_rgb(a, 0.35 + 0.4 * b, 0.7 + 0.3 * c) for a, b, c in h])


def _check_domain(domain: Any) -> tuple[float, float, float, float]:
    try:
        u0, u1, v0, v1 = (float(d) for d in domain)
    except (TypeError, ValueError):
        raise ValueError(f"nsp.linear_regions: expected domain=(u_min, u_max, v_min, v_max), but got {domain!r}") from None
    if not all(math.isfinite(d) for d in (u0, u1, v0, v1)):
        raise ValueError(f"nsp.linear_regions: unbounded domain {domain!r}: the partition needs a bounded box")
    if not (u0 < u1 and v0 < v1):
        raise ValueError(f"nsp.linear_regions: empty domain {domain!r}: need u_min < u_max and v_min < v_max")
    return u0, u1, v0, v1


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
) -> Regions:
    """Partition a bounded box of a plane exactly into the network's linear (activation) regions.

    Parameters
    ----------
    model : nn.Module
        A piecewise-linear network (see :func:`nsp.local_affine`), in eval mode. Its regions are
        split at ReLU, LeakyReLU, PReLU, ReLU6/Hardtanh/clamp and MaxPool2d calls.
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
        nsp-lightning[regions]``), for an ``nn.Sequential`` of Linear, ReLU and LeakyReLU layers.

    Returns
    -------
    Regions

    Raises
    ------
    ValueError
        For a degenerate plane (collinear points), or an unbounded or empty domain.
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
    >>> abs(regions.areas().sum() - 4.0) < 1e-9
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"nsp.linear_regions: expected argument `model` to be an nn.Module, but got {type(model).__name__}")
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
    domain = _check_domain(domain)
    # float64 copies on the CPU, through functional_call: the user's model is left as it is.
    params = {k: v.detach().to("cpu", torch.float64 if v.is_floating_point() else v.dtype)
              for k, v in {**dict(model.named_parameters()), **dict(model.named_buffers())}.items()}
    if plane is None:
        plane = Plane(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    if backend == "regioncam":
        return _regioncam_regions(model, params, plane, domain, batch_size)
    if backend != "nsp":
        raise ValueError(f"nsp.linear_regions: expected `backend` to be 'nsp' or 'regioncam', but got {backend!r}")
    u0, u1, v0, v1 = domain
    mesh = _Mesh(
        xy=_Columns(np.array([[u0, u1, u1, u0], [v0, v0, v1, v1]], dtype=np.float64)),
        fv=np.arange(4, dtype=np.int64), fo=np.array([0, 4]), parent=np.zeros(1, dtype=np.int64),
    )

    def forward(index: int) -> tuple[Nonlinearity | None, np.ndarray]:
        # A few vertices first: past the last nonlinearity, the outputs are left for Regions.affine.
        nl, _ = _evaluate(model, params, plane, mesh.xy.values.T[:4], index, batch_size)
        if nl is None:
            return None, np.zeros(0)
        return _evaluate(model, params, plane, mesh.xy.values.T, index, batch_size, unit_major=True)

    calls: list[str] = []
    stages: list[tuple[str, np.ndarray, np.ndarray]] = []  # (key, pattern per face, parent of each face)
    index = 0
    while True:
        nl, values = forward(index)
        if nl is None:
            break
        calls.append(nl.key)
        mesh.start_call()
        unit_shape = values.shape[:-1]
        call = values.reshape(-1, values.shape[-1])  # (units, V0), a view
        name = nl.func.__name__.strip("_")
        if nl.kind == "relu":
            at = _split_relu(mesh, call, [0.0], tol)
            del call, values
            pattern = (at > 0).reshape(-1, *unit_shape)
        elif nl.kind == "clamp" and name != "abs":
            lo_hi = _clamp_knots_of(nl)
            at = _split_relu(mesh, call, [t for t in lo_hi if t is not None], tol)
            code = np.zeros(at.shape, dtype=np.int8)
            if lo_hi[0] is not None:
                code[at < lo_hi[0]] = -1
            if lo_hi[1] is not None:
                code[at > lo_hi[1]] = 1
            pattern = code.reshape(-1, *unit_shape)
        elif nl.kind == "maxpool" and name in ("max_pool2d", "max_pool2d_with_indices") and len(unit_shape) == 3:
            windows, out_shape = _maxpool_windows(nl, unit_shape)
            argmax, _ = _split_maxpool(mesh, call, windows, tol)
            hw = unit_shape[1] * unit_shape[2]
            pattern = (argmax % hw).reshape(-1, *out_shape)  # torch's indices: within each channel's plane
            mesh.compact()
        else:
            raise NotImplementedError(f"nsp.linear_regions: '{nl.key}' ({nl.func.__name__}) is piecewise linear, but "
                                      f"linear_regions does not split regions at it. Supported: {_SPLIT_KINDS}")
        stages.append((nl.key, pattern, mesh.parent.copy()))
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


def _regioncam_regions(model: nn.Module, params: dict, plane: Plane, domain: tuple[float, float, float, float],
                       batch_size: int) -> Regions:
    """The partition computed by regioncam, as :class:`Regions` (its box [-1, 1]^2 mapped onto ``domain``)."""
    try:
        import regioncam
    except ImportError:
        raise ImportError("nsp.linear_regions(backend='regioncam') needs regioncam: pip install nsp-lightning[regions]") from None
    layers = list(model) if isinstance(model, nn.Sequential) else []
    bad = [f"'{i}' ({type(m).__name__})" for i, m in enumerate(layers) if not isinstance(m, (nn.Linear, nn.ReLU, nn.LeakyReLU))]
    if not layers or bad or not isinstance(layers[0], nn.Linear):
        raise NotImplementedError("nsp.linear_regions(backend='regioncam'): expected an nn.Sequential of Linear, ReLU and "
                                  f"LeakyReLU layers that starts with a Linear; got {bad or type(model).__name__}. "
                                  "Use backend='nsp'.")
    u0, u1, v0, v1 = domain
    half, centre = np.array([(u1 - u0) / 2, (v1 - v0) / 2]), np.array([(u0 + u1) / 2, (v0 + v1) / 2])
    basis = plane.basis.reshape(2, -1).numpy()
    origin = plane.origin.reshape(-1).numpy() + centre @ basis
    rc = regioncam.Regioncam(size=1.0)
    pre_layers, keys = [], []
    for i, m in enumerate(layers):
        if isinstance(m, nn.Linear):
            w = params[f"{i}.weight"].numpy().T
            b = params[f"{i}.bias"].numpy() if f"{i}.bias" in params else np.zeros(w.shape[1])
            if i == 0:
                w, b = (half[:, None] * basis) @ w, origin @ w + b
            rc.linear(w.astype(np.float32), b.astype(np.float32))
        else:
            pre_layers.append(rc.num_layers - 1)
            keys.append(f"{i}:{'relu' if isinstance(m, nn.ReLU) else 'leaky_relu'}")
            rc.relu() if isinstance(m, nn.ReLU) else rc.leaky_relu(m.negative_slope)
    box = np.asarray(rc.vertex_inputs, dtype=np.float64)
    faces = [np.asarray(f.vertex_ids, dtype=np.int64) for f in rc.faces]
    vertices = centre + box * half
    # Counter-clockwise polygons, as nsp's own partition gives them.
    faces = [f if _shoelace(vertices[f]) > 0 else f[::-1] for f in faces]
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in faces])])
    mean = np.stack([box[f].mean(axis=0) for f in faces])
    ones = np.concatenate([mean, np.ones((len(mean), 1))], axis=1)
    patterns = {key: torch.from_numpy(np.einsum("fi,fiu->fu", ones, np.asarray(rc.face_activations(layer))) > 0)
                for key, layer in zip(keys, pre_layers)}
    return Regions(vertices=vertices, face_vertices=np.concatenate(faces), face_offsets=offsets, patterns=patterns,
                   plane=plane, domain=domain, calls=keys, _network=(model, params, len(keys), batch_size))


def _shoelace(p: np.ndarray) -> float:
    q = np.roll(p, -1, axis=0)
    return 0.5 * float((p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]).sum())


def _clamp_knots_of(nl: Nonlinearity) -> tuple[float | None, float | None]:
    from nsp.regions.local_affine import _clamp_knots

    lo, hi = _clamp_knots(nl)
    return (None if lo is None else float(lo)), (None if hi is None else float(hi))


def _affine_maps(regions: Regions) -> np.ndarray:
    """Least-squares fit of ``[u, v, 1] @ A`` to the network's values at each region's vertices (exact:
    the network is affine on the region)."""
    out = regions.vertex_outputs.reshape(len(regions.vertex_outputs), -1)
    slot, face, _ = _ragged_slots(regions.face_offsets[:-1], np.diff(regions.face_offsets))
    vid = regions.face_vertices[slot]
    centre = regions.interior_points()
    d = regions.vertices[vid] - centre[face]
    rows = np.concatenate([d, np.ones((len(d), 1))], axis=1)  # centred, for conditioning
    n = len(regions)
    gram = np.zeros((n, 3, 3))
    np.add.at(gram, face, rows[:, :, None] * rows[:, None, :])
    rhs = np.zeros((n, 3, out.shape[1]))
    np.add.at(rhs, face, rows[:, :, None] * out[vid][:, None, :])
    a = np.linalg.solve(gram, rhs)  # maps (du, dv, 1) -> out
    # back to absolute coordinates: out = a0 (u - cu) + a1 (v - cv) + a2
    a[:, 2] -= centre[:, 0:1] * a[:, 0] + centre[:, 1:2] * a[:, 1]
    return a.reshape(n, 3, *regions.vertex_outputs.shape[1:])


# --------------------------------------------------------------------------- pictures
def plot_regions(regions: Regions, ax: Any = None, *, decision: Callable | None = None, edgecolor: str = "k",
                 linewidth: float = 0.3, seed: int = 0, probe: Sequence[float] | None = None) -> tuple[Any, Any]:
    """Draw the regions, coloured by activation pattern, with their boundaries.

    Parameters
    ----------
    regions : Regions
    ax : matplotlib Axes, optional
        Draw into it; otherwise a new figure is made (without pyplot).
    decision : callable, optional
        ``decision(outputs (n, *out)) -> (n,)`` values in [0, 1] (say, a class probability) shown as
        a grey-scale underlay through semi-transparent regions, with its 0.5 level (the decision
        boundary) in red.
    probe : (u, v), optional
        Mark this point.

    Returns
    -------
    (Figure, Axes)
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    colors = regions.colors(seed)
    alpha = 1.0
    if decision is not None:
        img = _decision_raster(regions, decision, 256)
        u0, u1, v0, v1 = regions.domain
        ax.imshow(img, extent=(u0, u1, v0, v1), origin="lower", cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.contour(img, levels=[0.5], extent=(u0, u1, v0, v1), origin="lower", colors="red", linewidths=1.5)
        alpha = 0.6
    ax.add_collection(PolyCollection(regions.polygons(), facecolors=colors, edgecolors=edgecolor,
                                     linewidths=linewidth, alpha=alpha))
    if probe is not None:
        ax.plot([probe[0]], [probe[1]], marker="*", color="red", markersize=10)
    u0, u1, v0, v1 = regions.domain
    ax.set_xlim(u0, u1)
    ax.set_ylim(v0, v1)
    ax.set_aspect("equal")
    ax.set_title(f"{len(regions)} linear regions")
    return fig, ax


def _pixel_regions(regions: Regions, size: int) -> np.ndarray:
    """``(size, size)`` index of the region under each pixel centre (row 0 at the top)."""
    u0, u1, v0, v1 = regions.domain
    us = u0 + (np.arange(size) + 0.5) * (u1 - u0) / size
    vs = v1 - (np.arange(size) + 0.5) * (v1 - v0) / size
    owner = np.full((size, size), -1, dtype=np.int64)
    lens = np.diff(regions.face_offsets)
    slot, face, nxt = _ragged_slots(regions.face_offsets[:-1], lens)
    p = regions.vertices[regions.face_vertices[slot]]
    q = regions.vertices[regions.face_vertices[nxt]]
    lo = np.full((len(regions), 2), np.inf)
    hi = np.full((len(regions), 2), -np.inf)
    np.minimum.at(lo, face, p)
    np.maximum.at(hi, face, p)
    # Candidate pixels: each region's bounding box; then the half-plane test of every edge.
    c0 = np.clip(np.ceil((lo[:, 0] - u0) * size / (u1 - u0) - 0.5), 0, size).astype(np.int64)
    c1 = np.clip(np.floor((hi[:, 0] - u0) * size / (u1 - u0) - 0.5), -1, size - 1).astype(np.int64)
    r0 = np.clip(np.ceil((v1 - hi[:, 1]) * size / (v1 - v0) - 0.5), 0, size).astype(np.int64)
    r1 = np.clip(np.floor((v1 - lo[:, 1]) * size / (v1 - v0) - 0.5), -1, size - 1).astype(np.int64)
    nc, nr = np.maximum(c1 - c0 + 1, 0), np.maximum(r1 - r0 + 1, 0)
    n_cand = nc * nr
    region = np.repeat(np.arange(len(regions)), n_cand)
    k = np.arange(n_cand.sum()) - np.repeat(np.cumsum(n_cand) - n_cand, n_cand)
    col = c0[region] + k % np.maximum(nc[region], 1)
    row = r0[region] + k // np.maximum(nc[region], 1)
    inside = np.ones(len(region), dtype=bool)
    for j in range(int(lens.max())):
        has = lens > j
        e = regions.face_offsets[:-1] + np.minimum(j, lens - 1)
        e_next = regions.face_offsets[:-1] + (np.minimum(j, lens - 1) + 1) % lens
        pa = regions.vertices[regions.face_vertices[e]][region]
        pb = regions.vertices[regions.face_vertices[e_next]][region]
        cross = (pb[:, 0] - pa[:, 0]) * (vs[row] - pa[:, 1]) - (pb[:, 1] - pa[:, 1]) * (us[col] - pa[:, 0])
        inside &= ~has[region] | (cross >= 0)
    owner[row[inside], col[inside]] = region[inside]
    del p, q
    return owner


def regions_rgb(regions: Regions, size: int = 256, *, boundaries: bool = True, seed: int = 0) -> np.ndarray:
    """The partition as an RGB image ``(size, size, 3)`` uint8 (``v`` upwards), without matplotlib:
    each pixel takes its region's pattern colour; pixels whose neighbour lies in another region are
    drawn dark when ``boundaries``."""
    owner = _pixel_regions(regions, size)
    colors = np.concatenate([regions.colors(seed), [[1.0, 1.0, 1.0]]])
    img = (colors[owner] * 255).astype(np.uint8)
    if boundaries:
        edge = np.zeros_like(owner, dtype=bool)
        edge[:, 1:] |= owner[:, 1:] != owner[:, :-1]
        edge[1:, :] |= owner[1:, :] != owner[:-1, :]
        img[edge] = (img[edge] * 0.3).astype(np.uint8)
    return img


def _decision_raster(regions: Regions, decision: Callable, size: int) -> np.ndarray:
    owner = _pixel_regions(regions, size)[::-1]  # origin="lower"
    u0, u1, v0, v1 = regions.domain
    us = u0 + (np.arange(size) + 0.5) * (u1 - u0) / size
    vs = v0 + (np.arange(size) + 0.5) * (v1 - v0) / size
    uu, vv = np.meshgrid(us, vs)
    a = regions.affine.reshape(len(regions), 3, -1)[np.maximum(owner, 0)]
    out = uu[..., None] * a[..., 0, :] + vv[..., None] * a[..., 1, :] + a[..., 2, :]
    vals = np.asarray(decision(out.reshape(size * size, *regions.vertex_outputs.shape[1:])), dtype=np.float64)
    return vals.reshape(size, size)
