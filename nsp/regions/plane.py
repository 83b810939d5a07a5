"""The 2-D slice of a network's input space that :func:`nsp.regions.linear_regions` partitions.

A :class:`Plane` maps plane coordinates ``(u, v)`` to inputs; :func:`check_domain` checks the
bounded box ``(u_min, u_max, v_min, v_max)`` of the plane that is partitioned.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["Plane", "check_domain"]


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



def check_domain(domain: Any) -> tuple[float, float, float, float]:
    """A box of the plane as four floats, checked.

    Parameters
    ----------
    domain : sequence of four numbers
        ``(u_min, u_max, v_min, v_max)``.

    Returns
    -------
    tuple of float
        ``(u_min, u_max, v_min, v_max)``.

    Raises
    ------
    ValueError
        If ``domain`` is not four numbers, or the box is unbounded or empty.

    Examples
    --------
    >>> check_domain([-1, 1, 0, 2])
    (-1.0, 1.0, 0.0, 2.0)
    """
    try:
        u0, u1, v0, v1 = (float(d) for d in domain)
    except (TypeError, ValueError):
        raise ValueError(f"nsp.linear_regions: expected domain=(u_min, u_max, v_min, v_max), but got {domain!r}") from None
    if not all(math.isfinite(d) for d in (u0, u1, v0, v1)):
        raise ValueError(f"nsp.linear_regions: unbounded domain {domain!r}: the partition needs a bounded box")
    if not (u0 < u1 and v0 < v1):
        raise ValueError(f"nsp.linear_regions: empty domain {domain!r}: need u_min < u_max and v_min < v_max")
    return u0, u1, v0, v1

