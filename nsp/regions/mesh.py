"""The partition's mesh: convex polygons over shared vertices, cut along affine functions' zeros.

:class:`Mesh` holds the regions as convex polygons whose vertices are shared and stored in flat
arrays; :meth:`Mesh.split` cuts, vectorised over all faces, every face on which an affine
function (given by its values at the vertices) changes sign, and :meth:`Mesh.merge` joins the
faces that tile one convex region. :class:`CallValues` gives a nonlinearity's input values at
vertices made during its call, from the values at the call's first vertices (they are affine
on each face of the partition the call started with).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CallValues", "Columns", "Mesh", "ragged_slots"]


class Columns:
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


def ragged_slots(starts: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For faces with the given slot ranges: slot index, index of the face, and next slot (cyclic)."""
    total = int(lens.sum())
    face = np.repeat(np.arange(len(lens)), lens)
    first = np.repeat(starts, lens)
    offset = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
    slot = first + offset
    nxt = np.where(offset == np.repeat(lens, lens) - 1, first, slot + 1)
    return slot, face, nxt


@dataclass
class Mesh:
    """Convex polygons over shared vertices: ``fv[fo[i]:fo[i+1]]`` are face i's vertices in order.

    During one nonlinearity call, ``parent`` maps each face to the face it was cut from at the
    start of the call, and ``home`` gives, for each vertex made during the call, such a start face
    that contains it (its values there come from that face's affine map).
    """

    xy: Columns                # (2, V) coordinates in the plane
    fv: np.ndarray              # (S,) vertex ids
    fo: np.ndarray              # (F+1,) offsets
    parent: np.ndarray          # (F,)
    home: Columns = field(default_factory=lambda: Columns(np.zeros((1, 0), dtype=np.int64)))

    @property
    def n_faces(self) -> int:
        return len(self.fo) - 1

    def start_call(self) -> None:
        self.parent = np.arange(self.n_faces)
        self.home = Columns(np.zeros((1, 0), dtype=np.int64))

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
        slot, face, nxt = ragged_slots(starts[cut_faces], lens_all[cut_faces])
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
        slot, face, nxt = ragged_slots(self.fo[:-1], lens)
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
        self.xy = Columns(self.xy.values[:, used])


def _face_triangles(mesh: Mesh) -> np.ndarray:
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


class CallValues:
    """A nonlinearity's input values (``P`` units) at the partition's vertices during its call.

    The forward pass gives them at the vertices present when the call starts, ``base``
    ``(P, V0)``. They are affine on each face of that partition, so at a vertex made later they
    are a fixed combination of their values at three vertices of its start face: the vertex
    keeps those three vertex ids and weights (its barycentric coordinates), and a unit's value
    is computed when needed, rather than interpolating all ``P`` units at every cut.
    """

    def __init__(self, mesh: Mesh, base: np.ndarray):
        self.base = base
        self.v0 = base.shape[1]
        self.tri = _face_triangles(mesh)                                          # (F0, 3)
        xy = mesh.xy.values
        m = np.stack([xy[0][self.tri], xy[1][self.tri], np.ones(self.tri.shape)], axis=2)
        self.inv = np.linalg.inv(m)  # [u, v, 1] @ inv[f] = weights of f's three vertices at (u, v)
        self.src = Columns(np.zeros((3, 0), dtype=np.int64))
        self.wts = Columns(np.zeros((3, 0)))

    def _weights(self, faces: np.ndarray, xy: np.ndarray) -> np.ndarray:
        return np.einsum("vi,vij->vj", np.concatenate([xy.T, np.ones((xy.shape[1], 1))], axis=1), self.inv[faces])

    def _sync(self, mesh: Mesh) -> None:
        done = self.v0 + self.src.n
        if mesh.xy.n > done:
            home = mesh.home.values[0][done - self.v0:]
            self.src.append(self.tri[home].T)
            self.wts.append(self._weights(home, mesh.xy.values[:, done:]).T)

    def _new(self, unit: int, start: int) -> np.ndarray:
        src, wts = self.src.values[:, start:], self.wts.values[:, start:]
        row = self.base[unit]
        return row[src[0]] * wts[0] + row[src[1]] * wts[1] + row[src[2]] * wts[2]

    def column(self, mesh: Mesh, unit: int) -> np.ndarray:
        """Unit ``unit`` at every vertex, ``(V,)``."""
        if mesh.xy.n == self.v0:
            return self.base[unit]
        self._sync(mesh)
        return np.concatenate([self.base[unit], self._new(unit, 0)])

    def everywhere(self, mesh: Mesh) -> np.ndarray:
        """Every unit at every vertex, ``(P, V)``."""
        self._sync(mesh)
        src, wts = self.src.values, self.wts.values
        new = self.base[:, src[0]] * wts[0]
        new += self.base[:, src[1]] * wts[1]
        new += self.base[:, src[2]] * wts[2]
        return np.concatenate([self.base, new], axis=1)

    def at_new(self, mesh: Mesh, unit: int, since: int) -> np.ndarray:
        """Unit ``unit`` at the vertices made since vertex count ``since``."""
        self._sync(mesh)
        return self._new(unit, max(since, self.v0) - self.v0)

    def at_faces(self, mesh: Mesh, units: np.ndarray, block: int = 32) -> np.ndarray:
        """The given units at each current face's centroid, ``(F, len(units))``."""
        src = self.tri[mesh.parent]                                              # (F, 3)
        w = self._weights(mesh.parent, mesh.centroids())                         # (F, 3)
        out = np.empty((mesh.n_faces, len(units)))
        for start in range(0, len(units), block):
            rows = self.base[units[start: start + block]]                       # (B, V0)
            out[:, start: start + block] = (rows[:, src] * w).sum(axis=2).T
        return out

