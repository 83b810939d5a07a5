"""The result of :func:`nsp.regions.linear_regions`: the regions of a box of a plane.

:class:`Regions` holds the convex polygons over shared vertices and each region's activation
pattern, and answers questions about them (areas, the region of a point, the distance to its
boundary, the density of regions near it). The network's values at the vertices and its
affine map on each region are computed on first use, by replaying the network
(:func:`nsp.regions.replay.evaluate`). :func:`pattern_colors` colours regions by pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nsp.regions.mesh import ragged_slots
from nsp.regions.plane import Plane
from nsp.regions.replay import evaluate

__all__ = ["Regions", "pattern_colors"]


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
            self._outputs = evaluate(model, params, self.plane, self.vertices, index, batch_size)[1]
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
        slot, face, nxt = ragged_slots(self.face_offsets[:-1], np.diff(self.face_offsets))
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
        slot, face, _ = ragged_slots(self.face_offsets[:-1], lens)
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

    def inner_edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every region's edges that are region boundaries (not the box's sides): ``(start, end, region)``,
        ``(E, 2)``, ``(E, 2)`` and ``(E,)``; an edge between two regions appears once for each."""
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
        p, q, face = self.inner_edges()
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



def _affine_maps(regions: Regions) -> np.ndarray:
    """Least-squares fit of ``[u, v, 1] @ A`` to the network's values at each region's vertices (exact:
    the network is affine on the region)."""
    out = regions.vertex_outputs.reshape(len(regions.vertex_outputs), -1)
    slot, face, _ = ragged_slots(regions.face_offsets[:-1], np.diff(regions.face_offsets))
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

