"""What a partition will cost, before it runs: :func:`estimate_regions`.

The exact partition of :func:`nsp.regions.linear_regions` can need minutes and gigabytes
when the box holds tens of thousands of regions, and nothing says so beforehand. A grid
scan is cheap (one batched forward pass): the activation patterns at the points of a
``2g × 2g`` grid over the box, and at every other point of it (a ``g × g`` grid).

- Distinct patterns on a grid are a lower bound on the number of regions (two points with
  different patterns lie in different regions).
- When the regions are larger than the grid's cells, the two grids see about as many; when
  they are smaller, the count still grows as the grid is refined. The estimate extrapolates
  one more refinement at the same rate: ``fine * fine / coarse``. It is a rough figure,
  meant to refuse a box that is far over a budget, not to replace the count. On the digits
  CNN of ``examples/demo_digits.py`` (exact counts 710, 2,289, 5,718 and 54,565) a 64×64 grid
  estimates 720, 2,084, 4,712 and 14,935, and the default 32×32 grid 588, 1,703, 2,906 and
  4,089: close while the grid's points outnumber the regions, an ever larger underestimate
  beyond. That still refuses such a box under a budget of a few thousand, and
  :func:`~nsp.regions.linear_regions` with ``max_regions`` also stops a partition that
  outgrows its budget.

The memory of the partition follows from the count: every nonlinearity call holds its
input at every vertex in float64 with two working copies (``3 × 8`` bytes per unit and
vertex), and a partition has about 1.2 vertices per region (up to 1.5 is assumed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nsp.regions.local_affine import activation_patterns
from nsp.regions.plane import Plane

__all__ = ["RegionEstimate", "estimate_regions", "pattern_keys"]

# Vertices per region assumed by the memory estimate (measured: 1.15-1.26 on the digits CNN).
_VERTICES_PER_REGION = 1.5


@dataclass(frozen=True)
class RegionEstimate:
    """The outcome of :func:`estimate_regions`.

    Attributes
    ----------
    regions : int
        The estimated number of regions in the box.
    seen : int
        Distinct activation patterns on the fine grid: a lower bound on the count.
    seen_coarse : int
        Distinct activation patterns on the coarse grid (every other point of the fine one).
    grid : int
        Points per side of the fine grid.
    nbytes : int
        The estimated peak memory of the partition, in bytes.
    calls : tuple of str
        The nonlinearity calls, in order (as :attr:`nsp.regions.Regions.calls`).
    """

    regions: int
    seen: int
    seen_coarse: int
    grid: int
    nbytes: int
    calls: tuple[str, ...]

    def describe(self) -> str:
        """The estimate and how it was made, for messages."""
        return (f"about {self.regions:,} regions (extrapolated from {self.seen:,} distinct activation patterns on a "
                f"{self.grid}×{self.grid} grid and {self.seen_coarse:,} on a {self.grid // 2}×{self.grid // 2} one)")


def pattern_keys(patterns: dict[str, torch.Tensor]) -> np.ndarray:
    """One value per input for its whole activation pattern, ``(n, 2)`` float64 rows.

    Each row is two random projections of the pattern (fixed seed): equal patterns give equal
    rows, and different patterns equal rows only by a coincidence of float64 rounding.

    Parameters
    ----------
    patterns : dict of str to torch.Tensor
        As returned by :func:`nsp.regions.local_affine.activation_patterns`.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)``; count distinct patterns with ``len(np.unique(keys, axis=0))``.
    """
    rng = np.random.default_rng(0)
    keys = torch.zeros(len(next(iter(patterns.values()), ())), 2, dtype=torch.float64)
    for p in patterns.values():
        flat = p.reshape(len(p), -1).to(torch.float64)
        keys += flat @ torch.from_numpy(rng.uniform(0.5, 1.5, size=(flat.shape[1], 2)))
    return keys.numpy()


def estimate_regions(model: nn.Module, plane: Plane, domain: tuple[float, float, float, float], *,
                     grid: int = 32, batch_size: int = 4096) -> RegionEstimate:
    """Estimate the number of linear regions of ``model`` in a box of a plane, and the partition's memory.

    Parameters
    ----------
    model : nn.Module
        A piecewise-linear network, in the mode it is to be partitioned in (eval).
    plane : Plane
        The slice.
    domain : (u_min, u_max, v_min, v_max)
        The box, checked (:func:`nsp.regions.plane.check_domain`).
    grid : int
        Points per side of the fine grid (even, >= 4); the scan runs ``grid**2`` inputs.
    batch_size : int
        Inputs per forward pass.

    Returns
    -------
    RegionEstimate

    Raises
    ------
    ValueError
        If ``grid`` is not an even int >= 4.
    NotPiecewiseLinearError
        Naming the module, for a network that is not piecewise linear.

    Examples
    --------
    >>> import torch, nsp.regions as R
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> est = R.estimate_regions(net, R.Plane(torch.zeros(2), torch.eye(2)), (-1, 1, -1, 1))
    >>> est.seen <= est.regions
    True
    """
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 4 or grid % 2:
        raise ValueError(f"nsp.estimate_regions: expected `grid` to be an even int >= 4, but got {grid!r}")
    u0, u1, v0, v1 = domain
    # Cell centres: points on the box's sides would sit on its edge, not inside a region.
    us = u0 + (np.arange(grid) + 0.5) * (u1 - u0) / grid
    vs = v0 + (np.arange(grid) + 0.5) * (v1 - v0) / grid
    uv = np.stack(np.meshgrid(us, vs, indexing="ij"), axis=-1).reshape(-1, 2)
    # In the model's own precision (float64 convolutions are several times slower on the CPU): a
    # point within rounding of a boundary may get a neighbour's pattern, which moves a count by little.
    param = next(model.parameters(), None)
    like = torch.zeros(0) if param is None else param.detach()
    keys, units, calls = [], {}, ()
    for start in range(0, len(uv), batch_size):
        x = plane(uv[start: start + batch_size]).to(like.device, like.dtype if like.is_floating_point() else None)
        _, patterns = activation_patterns(model, x)
        keys.append(pattern_keys(patterns))
        units = {k: int(np.prod(p.shape[1:])) for k, p in patterns.items()}
        calls = tuple(patterns)
    flat = np.concatenate(keys).reshape(grid, grid, 2)
    seen = len(np.unique(flat.reshape(-1, 2), axis=0))
    seen_coarse = len(np.unique(flat[::2, ::2].reshape(-1, 2), axis=0))
    regions = max(seen, int(np.ceil(seen * seen / max(seen_coarse, 1))))
    vertices = _VERTICES_PER_REGION * regions + 4
    # The largest call's float64 input at every vertex with two working copies; the patterns kept per region.
    nbytes = int(3 * 8 * max(units.values(), default=0) * vertices + 8 * sum(units.values()) * regions)
    return RegionEstimate(regions=regions, seen=seen, seen_coarse=seen_coarse, grid=grid, nbytes=nbytes, calls=calls)
