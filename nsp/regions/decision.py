"""The class decision boundary of a network on a plane, exactly, from its linear regions.

On each linear region the logits are affine (:attr:`Regions.affine`), so the set where class
``c`` has the largest logit is the region's polygon cut by the half-planes ``l_c >= l_d`` (``d
!= c``): a convex polygon. The decision boundary is the union of those cells' edges that lie on
a line ``l_c = l_d``, found by clipping each region's polygon. A region whose vertices all have
the same argmax lies inside one cell (cells are convex) and is skipped, so the cost grows with
the regions the boundary crosses. A network with one output is a sign classifier: class 1 where
the output is positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nsp.regions.result import Regions

__all__ = ["DecisionBoundary", "decision_boundary"]


@dataclass
class DecisionBoundary:
    """Segments of the plane where the predicted class changes.

    Attributes
    ----------
    start, end : numpy.ndarray
        ``(S, 2)`` the segments' ends, in plane coordinates.
    classes : numpy.ndarray
        ``(S, 2)`` the two classes each segment separates, smaller first.
    region : numpy.ndarray
        ``(S,)`` the linear region each segment lies in.
    """

    start: np.ndarray
    end: np.ndarray
    classes: np.ndarray
    region: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    def length(self) -> float:
        """The boundary's total length in the plane."""
        return float(np.linalg.norm(self.end - self.start, axis=1).sum())


def _clip(poly: np.ndarray, labels: np.ndarray, f: np.ndarray, line: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the part of a convex polygon where the affine ``f`` (its values at the vertices) is >= 0.

    ``labels[i]`` names edge ``i`` (from vertex ``i`` to ``i + 1``); edges made along ``f = 0`` get
    ``line``. Returns the clipped polygon and its edge labels."""
    out_v, out_e = [], []
    m = len(poly)
    for i in range(m):
        j = (i + 1) % m
        fi, fj = f[i], f[j]
        if fi >= 0:
            out_v.append(poly[i])
            if fj >= 0:
                out_e.append(labels[i])
            elif fi == 0:
                out_e.append(line)
            else:
                out_e.append(labels[i])
                out_v.append(poly[i] + (poly[j] - poly[i]) * fi / (fi - fj))
                out_e.append(line)
        elif fj > 0:
            out_v.append(poly[i] + (poly[j] - poly[i]) * fi / (fi - fj))
            out_e.append(labels[i])
    return np.array(out_v).reshape(-1, 2), np.array(out_e, dtype=np.int64)


def decision_boundary(regions: Regions, tol: float = 1e-9) -> DecisionBoundary:
    """The exact decision boundary (argmax of the logits) within the partition's box.

    Parameters
    ----------
    regions : Regions
        From :func:`nsp.regions.linear_regions` on a network whose output is ``(N, C)`` logits
        (or ``(N, 1)``: a sign classifier).
    tol : float
        Logit differences within ``tol`` (relative to the region's largest) count as ties.

    Returns
    -------
    DecisionBoundary

    Raises
    ------
    ValueError
        If the network's output is not one vector of logits per input.

    Examples
    --------
    >>> import torch, nsp.regions as R
    >>> net = torch.nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     net.weight[:] = torch.tensor([[1.0, 0.0], [0.0, 0.0]]); net.bias[:] = 0.0
    >>> boundary = R.decision_boundary(R.linear_regions(net, domain=(-1, 1, -1, 1)))
    >>> boundary.length(), boundary.classes.tolist()
    (2.0, [[0, 1]])
    """
    out_shape = regions.vertex_outputs.shape[1:]
    if len(out_shape) != 1:
        raise ValueError(f"nsp.decision_boundary: expected the network to output (N, classes) logits, but its "
                         f"output is (N, {', '.join(map(str, out_shape))})")
    a = regions.affine.reshape(len(regions), 3, -1)
    if a.shape[2] == 1:
        a = np.concatenate([np.zeros_like(a), a], axis=2)
    n_classes = a.shape[2]
    lens = np.diff(regions.face_offsets)
    owner = np.repeat(np.arange(len(regions)), lens)
    xy = regions.vertices[regions.face_vertices]
    logits = np.einsum("si,sic->sc", np.concatenate([xy, np.ones((len(xy), 1))], axis=1), a[owner])
    best = logits.argmax(axis=1)
    mixed = np.flatnonzero(np.maximum.reduceat(best, regions.face_offsets[:-1])
                           != np.minimum.reduceat(best, regions.face_offsets[:-1]))
    starts, ends, pairs, where = [], [], [], []
    for r in mixed:
        poly = regions.polygon(r)
        at = logits[regions.face_offsets[r]: regions.face_offsets[r + 1]]   # (m, C)
        eps = tol * max(np.abs(at).max(), 1e-300)
        for c in range(n_classes):
            others = [d for d in range(n_classes) if d != c]
            # Class c can win somewhere only if it beats every other class at some vertex.
            if any((at[:, c] - at[:, d]).max() <= eps for d in others):
                continue
            cell, labels = poly, np.full(len(poly), -1, dtype=np.int64)
            for d in others:
                h = np.concatenate([cell, np.ones((len(cell), 1))], axis=1) @ (a[r, :, c] - a[r, :, d])
                h[np.abs(h) <= eps] = 0.0
                cell, labels = _clip(cell, labels, h, d)
                if len(cell) < 3:
                    break
            if len(cell) < 3:
                continue
            # Each segment borders the cells of c and d: keep it once, from the smaller class.
            for i in np.flatnonzero(labels > c):
                p, q = cell[i], cell[(i + 1) % len(cell)]
                if np.abs(q - p).max() > 0:
                    starts.append(p)
                    ends.append(q)
                    pairs.append((c, int(labels[i])))
                    where.append(r)
    return DecisionBoundary(start=np.array(starts).reshape(-1, 2), end=np.array(ends).reshape(-1, 2),
                            classes=np.array(pairs, dtype=np.int64).reshape(-1, 2),
                            region=np.array(where, dtype=np.int64))
