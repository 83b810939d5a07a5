"""
Graph-Laplacian band energies at scale
======================================

Per-band spectral energies ``E_b(s) = ||P_b s||^2`` of the graph-Laplacian transform
(:mod:`nsp.transforms.laplacian`), where ``P_b`` projects onto the eigenvectors of
``L = D - W`` whose eigenvalues lie in band ``b``, for graphs far too large for a dense
eigendecomposition. Two parts:

:class:`LaplacianOperator` (:mod:`nsp.transforms.laplacian_operator`)
    ``L`` of an ``NNGraph``'s undirected neuron graph as a
    :class:`scipy.sparse.linalg.LinearOperator`. With ``INCL=True`` it applies each
    layer relation (a union of Kronecker products of small per-axis 0/1 factors,
    :mod:`nsp.graph.relations`) and its transpose with per-axis sums and small matrix products,
    so neither an ``N x N`` matrix nor an edge list ever exists. With ``INCL=False`` the
    relations are sparse matrices already, and ``L`` is one.

:class:`LaplacianBands`
    The kernel polynomial method. The Chebyshev moments ``mu_k = s^T T_k(L~) s`` of the
    rescaled ``L~ = 2 L / lambda_bound - 1`` (spectrum in ``[-1, 1]``) give every band's
    energy at once: ``E_b ~= sum_k g_k c_bk mu_k``, with ``c_bk`` the Chebyshev
    coefficients of the band's indicator and ``g_k`` the Jackson damping factors. ``K``
    moments cost ``ceil(K / 2)`` products with ``L``.

Error behaviour
---------------
Jackson damping makes the approximated indicator ``h~_b`` the convolution of the exact
one with a positive kernel of unit mass (in ``theta = arccos(x)``), so ``0 <= h~_b <= 1``:
estimates are never negative, the bands' estimates sum to ``||s||^2`` when the edges span
``[0, lambda_bound]``, and an eigenvalue far from band ``b``'s edges is counted almost
exactly. The error is concentrated at the edges: an eigenvalue within about
``pi / K`` (in ``theta``) of an edge is split between the two neighbouring bands. So for
every signal

    ``|E~_b - E_b| <= tol * ||s||^2 + (energy of s at eigenvalues within gap of b's edges)``

where ``tol`` bounds ``|h~_b - h_b|`` at every point of ``[0, lambda_bound]`` at least
``gap`` from ``b``'s edges (taken at the gaps' ends and on a fine grid; see
:meth:`LaplacianBands.error_bound`; each edge may have its own gap, by default a quarter
of the narrower neighbouring band), and :meth:`LaplacianBands.order` picks the smallest
order meeting ``tol``. The misassigned fraction falls off as the inverse cube of
``K`` times the angular distance to the edge, so the order grows only like
``tol ** (-1/3)`` (measured: 2.0x per decade), but linearly in ``lambda_bound / gap``
for edges in the middle of the spectrum. Near ``lambda = 0`` the same ``gap`` spans a
far larger angle, so low-frequency bands are resolved at a much lower order.

The Laplacians of networks have large clusters of equal eigenvalues, many of them at
integers: 28 of the 74 eigenvalues of the seed README network equal 16, and 2,940 of the
9,118 of LeNet-5 (tests/support/zoo.py) equal 26. A band edge on such a cluster splits the
cluster's energy about evenly, where the dense transform puts it whole; put the edges
between clusters (at half-integers, for instance), away from the eigenvalues.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.fft
from scipy.sparse.linalg import LinearOperator

from nsp.transforms.laplacian import band_edges
from nsp.transforms.laplacian_operator import LaplacianOperator

__all__ = ["DEFAULT_TOL", "MAX_ORDER", "LaplacianBands", "LaplacianOperator"]

DEFAULT_TOL = 1e-3
"""Default bound on the misassigned fraction of ``||s||^2`` away from band edges."""

MAX_ORDER = 1 << 16
"""Highest Chebyshev order :meth:`LaplacianBands.order` chooses (``MAX_ORDER / 2`` products with ``L``)."""

# Grid points per Chebyshev order for the error bound: the approximated indicator
# ripples with period 2 pi / K in theta, so 8 K points sample each period 16 times and
# miss a ripple's peak by under 2%.
_GRID_PER_ORDER = 8
# Candidate orders grow by 2^(1/4) from here.
_MIN_ORDER = 8


# -- Chebyshev expansion of band indicators ------------------------------------------------
def _jackson(order: int) -> np.ndarray:
    """Jackson damping factors ``g_0..g_K``.

    A. Weisse et al., "The kernel polynomial method", Rev. Mod. Phys. 78, 275 (2006).
    """
    k = np.arange(order + 1)
    a = math.pi / (order + 1)
    return ((order + 1 - k) * np.cos(a * k) + np.sin(a * k) / math.tan(a)) / (order + 1)


def _band_coefficients(edges: np.ndarray, bound: float, order: int) -> np.ndarray:
    """Damped Chebyshev coefficients ``g_k c_bk`` of each band's indicator, shape (B, K + 1).

    Edges outside ``[0, bound]`` are clamped to it: every eigenvalue lies inside, so a
    band reaching past an end holds everything up to that end.
    """
    theta = np.arccos(np.clip(2.0 * edges / bound - 1.0, -1.0, 1.0))
    lo, hi = theta[:-1, None], theta[1:, None]
    k = np.arange(1, order + 1)
    c = np.empty((edges.size - 1, order + 1))
    c[:, 0] = (lo - hi)[:, 0] / math.pi
    c[:, 1:] = 2.0 * (np.sin(k * lo) - np.sin(k * hi)) / (k * math.pi)
    return c * _jackson(order)


def _error_bounds(edges: np.ndarray, bound: float, gaps: np.ndarray, order: int) -> np.ndarray:
    """``max |h~_b - h_b|`` over ``[0, bound]`` outside the gaps around band b's edges.

    Taken on a grid equally spaced in ``theta`` and at the gaps' ends, where the error,
    falling away from the edges, peaks.
    """
    m = scipy.fft.next_fast_len(_GRID_PER_ORDER * (order + 1))
    # DCT-III evaluates sum_k a_k cos(k theta_j) at theta_j = pi (j + 1/2) / m.
    grid = 0.5 * bound * (np.cos(math.pi * (np.arange(m) + 0.5) / m) + 1.0)
    ends = np.clip(np.concatenate([[0.0, bound], edges - gaps, edges + gaps]), 0.0, bound)
    ends_theta = np.arccos(np.clip(2.0 * ends / bound - 1.0, -1.0, 1.0))
    ends_cos = np.cos(np.arange(order + 1)[:, None] * ends_theta[None, :])
    lam = np.concatenate([grid, ends])
    coefficients = _band_coefficients(edges, bound, order)
    out = np.empty(edges.size - 1)
    for b, a in enumerate(coefficients):
        series = np.zeros(m)
        series[0] = a[0]
        series[1: order + 1] = a[1:] / 2.0
        approx = np.concatenate([scipy.fft.dct(series, type=3), a @ ends_cos])
        lo, hi = edges[b], edges[b + 1]
        exact = (lam >= lo) & ((lam < hi) | (hi >= bound))
        # The slack keeps the gaps' ends in despite rounding in edges +- gaps.
        far = (np.abs(lam - lo) >= gaps[b] * (1 - 1e-9)) | (lo <= 0.0)
        far &= (np.abs(lam - hi) >= gaps[b + 1] * (1 - 1e-9)) | (hi >= bound)
        out[b] = float(np.max(np.abs(approx - exact)[far], initial=0.0))
    return out


def _orders() -> np.ndarray:
    steps = math.ceil(4 * math.log2(MAX_ORDER / _MIN_ORDER))
    ladder = np.ceil(_MIN_ORDER * 2.0 ** (np.arange(steps + 1) / 4)).astype(np.int64)
    return np.unique(np.minimum(ladder, MAX_ORDER))


class LaplacianBands:
    """Energies of signals per band of graph-Laplacian eigenvalues, without eigenvectors.

    The kernel polynomial method with Jackson damping (see the module docstring for the
    method and its error). It needs only products with ``L`` and an upper bound on its
    spectrum, so its memory is a few signal-sized arrays and its time is
    ``ceil(K / 2)`` products with ``L`` for order ``K``.

    Parameters
    ----------
    laplacian : LaplacianOperator, or scipy.sparse.linalg.LinearOperator, shape (N, N)
        ``L``: symmetric positive semidefinite. A :class:`LaplacianOperator` brings its
        own spectrum bound.
    bound : float, optional
        An upper bound on the largest eigenvalue of `laplacian`; required unless it is a
        :class:`LaplacianOperator` (default: its ``spectrum_bound``). A value below the
        largest eigenvalue gives wrong energies.

    Attributes
    ----------
    operator : scipy.sparse.linalg.LinearOperator
    bound : float
    n : int
        Number of nodes N.

    Raises
    ------
    TypeError
        If `laplacian` is not a LinearOperator.
    ValueError
        If `laplacian` is not square or not float64-compatible, or `bound` is missing, not
        finite or not positive.

    See Also
    --------
    nsp.transforms.laplacian.LaplacianTransform : exact energies by dense decomposition.

    Examples
    --------
    The path 0 -> 1 -> 2 has Laplacian eigenvalues 0, 1 and 3; a constant signal lives at
    eigenvalue 0, and ``[1, 0, -1]`` at eigenvalue 1:

    >>> import scipy.sparse
    >>> from scipy.sparse.linalg import aslinearoperator
    >>> from nsp.transforms.laplacian import laplacian_matrix
    >>> a = scipy.sparse.csr_array(([1, 1], ([0, 1], [1, 2])), shape=(3, 3))
    >>> bands = LaplacianBands(aslinearoperator(laplacian_matrix(a)), bound=3.0)
    >>> e = bands.band_energies([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0]], [0.0, 0.5, 2.0, 3.0])
    >>> np.round(e, 3)
    array([[3., 0., 0.],
           [0., 2., 0.]])
    """

    def __init__(self, laplacian: LinearOperator, bound: float | None = None) -> None:
        if not isinstance(laplacian, LinearOperator):
            raise TypeError(
                "LaplacianBands: expected `laplacian` to be a scipy.sparse.linalg.LinearOperator "
                f"(e.g. LaplacianOperator(graph.structure) or aslinearoperator(matrix)), got {type(laplacian).__name__}"
            )
        if len(laplacian.shape) != 2 or laplacian.shape[0] != laplacian.shape[1] or laplacian.shape[0] == 0:
            raise ValueError(f"LaplacianBands: expected `laplacian` of shape (N, N) with N >= 1, got {laplacian.shape}")
        if not np.can_cast(laplacian.dtype, np.float64, casting="same_kind"):
            raise ValueError(f"LaplacianBands: expected a real `laplacian`, got dtype {laplacian.dtype}")
        if bound is None:
            if not isinstance(laplacian, LaplacianOperator):
                raise ValueError(
                    "LaplacianBands: `bound` (an upper bound on the largest eigenvalue) is required unless "
                    "`laplacian` is a LaplacianOperator"
                )
            bound = laplacian.spectrum_bound
        if isinstance(bound, bool) or not isinstance(bound, (int, float, np.integer, np.floating)) or not (
            math.isfinite(bound) and bound > 0
        ):
            raise ValueError(f"LaplacianBands: expected `bound` to be a finite number > 0, got {bound!r}")
        self.operator = laplacian
        self.bound = float(bound)
        self.n = int(laplacian.shape[0])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} on {self.n} nodes, eigenvalues <= {self.bound:g}>"

    # -- checks --------------------------------------------------------------------------
    def _signals(self, signal: Any, where: str) -> tuple[np.ndarray, bool]:
        array = np.asarray(signal, dtype=np.float64)
        if array.ndim not in (1, 2) or array.shape[-1] != self.n:
            raise ValueError(
                f"LaplacianBands.{where}: expected `signal` of shape ({self.n},) or (P, {self.n}), got {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"LaplacianBands.{where}: `signal` has non-finite values")
        return (array[None] if array.ndim == 1 else array), array.ndim == 1

    def _edges(self, edges: Any, where: str) -> np.ndarray:
        return band_edges(edges, f"LaplacianBands.{where}")

    def _gaps(self, gap: Any, edges: np.ndarray, where: str) -> np.ndarray:
        if gap is None:
            # A quarter of the narrower neighbouring band, within the spectrum's range.
            widths = np.diff(np.clip(edges, 0.0, self.bound))
            widths = np.where(widths > 0, widths, np.inf)
            nearest = np.minimum(np.append(widths, np.inf), np.insert(widths, 0, np.inf))
            return np.where(np.isfinite(nearest), nearest, self.bound) / 4
        try:
            g = np.broadcast_to(np.asarray(gap, dtype=np.float64), edges.shape)
        except (TypeError, ValueError):
            g = np.full(edges.shape, np.nan)
        if isinstance(gap, bool) or not np.all(np.isfinite(g)) or np.any(g <= 0):
            raise ValueError(
                f"LaplacianBands.{where}: expected `gap` to be a finite number > 0 or an array of {edges.size} of "
                f"them (one per edge), got {gap!r}"
            )
        return g

    @staticmethod
    def _order_arg(order: Any, where: str) -> int:
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
            raise ValueError(f"LaplacianBands.{where}: expected `order` to be an int >= 1, got {order!r}")
        return int(order)

    # -- public --------------------------------------------------------------------------
    def gaps(self, edges: Any, gap: Any = None) -> np.ndarray:
        """Half-widths of the intervals around the edges that the error guarantee leaves out.

        Parameters
        ----------
        edges : array_like, shape (B + 1,)
            Strictly increasing band edges, in eigenvalue units (see `band_energies`).
        gap : float or array_like of shape (B + 1,), optional
            Given gaps, checked and broadcast. Default: a quarter of the narrower of each
            edge's two bands (within ``[0, bound]``), so log-spaced edges get
            proportional gaps. Edges at or beyond the ends of ``[0, bound]`` need none,
            whatever their entry.

        Returns
        -------
        numpy.ndarray, shape (B + 1,)

        Raises
        ------
        ValueError
            If `edges` is invalid, or `gap` is not positive and finite.
        """
        e = self._edges(edges, "gaps")
        return np.array(self._gaps(gap, e, "gaps"))

    def error_bound(self, edges: Any, order: int, *, gap: Any = None) -> np.ndarray:
        """The guaranteed accuracy of each band at a given order.

        ``err[b]`` is the largest ``|h~_b(lambda) - h_b(lambda)|`` over ``lambda`` in
        ``[0, bound]`` outside the gaps around band ``b``'s edges, where ``h_b`` is the
        band's indicator and ``h~_b`` its damped Chebyshev approximation of `order`. Then,
        for every signal, ``|E~_b - E_b| <= err[b] * ||s||^2`` plus the energy of ``s`` at
        eigenvalues inside those gaps. The maximum is taken at the gaps' ends, where
        the error peaks, and on a grid of about ``8 (order + 1)`` points equally spaced
        in ``arccos``, 16 per period of the approximation's ripple.

        Parameters
        ----------
        edges : array_like, shape (B + 1,)
            Strictly increasing band edges, in eigenvalue units (see `band_energies`).
        order : int
            Chebyshev order K >= 1.
        gap : float or array_like of shape (B + 1,), optional
            Half-width (eigenvalue units) of the interval around each edge that is left
            out; see :meth:`gaps` for the default.

        Returns
        -------
        numpy.ndarray, shape (B,)
            In units of ``||s||^2``; between 0 and 1.

        Raises
        ------
        ValueError
            If `edges`, `order` or `gap` is invalid.
        """
        e = self._edges(edges, "error_bound")
        return _error_bounds(e, self.bound, self._gaps(gap, e, "error_bound"), self._order_arg(order, "error_bound"))

    def order(self, edges: Any, *, gap: Any = None, tol: float = DEFAULT_TOL) -> int:
        """The lowest order whose :meth:`error_bound` is at most `tol` in every band.

        Orders are tried on a ladder growing by ``2 ** (1/4)`` from 8: doubling until
        one meets `tol`, then bisecting (the bound falls with the order).

        Parameters
        ----------
        edges : array_like, shape (B + 1,)
            Band edges, as in `band_energies`.
        gap : float or array_like of shape (B + 1,), optional
            As in :meth:`error_bound`.
        tol : float, default DEFAULT_TOL (1e-3)
            Largest misassigned fraction of ``||s||^2`` outside the gaps, in (0, 1).

        Returns
        -------
        int

        Raises
        ------
        ValueError
            If an argument is invalid, or even :data:`MAX_ORDER` does not reach `tol`;
            the message gives the bound there and what to relax.
        """
        e = self._edges(edges, "order")
        g = self._gaps(gap, e, "order")
        if isinstance(tol, bool) or not isinstance(tol, (int, float, np.integer, np.floating)) or not 0 < tol < 1:
            raise ValueError(f"LaplacianBands.order: expected `tol` in (0, 1), got {tol!r}")
        ladder = _orders()

        def meets(i: int) -> bool:
            return float(_error_bounds(e, self.bound, g, int(ladder[i])).max()) <= tol

        lo, hi = -1, 0
        while not meets(hi):
            if hi == ladder.size - 1:
                top = float(_error_bounds(e, self.bound, g, MAX_ORDER).max())
                raise ValueError(
                    f"LaplacianBands.order: even order {MAX_ORDER} leaves an error of {top:.2g} * ||s||^2 > "
                    f"tol={tol:g} with gaps down to {g.min():g} on a spectrum up to {self.bound:g}; use larger "
                    "gaps (wider bands, edges away from the middle of the spectrum) or a larger `tol`"
                )
            lo, hi = hi, min(hi + 4, ladder.size - 1)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if meets(mid):
                hi = mid
            else:
                lo = mid
        return int(ladder[hi])

    def moments(self, signal: Any, order: int) -> np.ndarray:
        """Chebyshev moments ``mu_k = s^T T_k(L~) s`` for ``k = 0..order``.

        ``L~ = 2 L / bound - 1``. Uses ``T_2k = 2 T_k^2 - 1`` and
        ``T_2k+1 = 2 T_k+1 T_k - T_1``, so ``ceil(order / 2)`` products with ``L``
        (batched over signals) give all of them. ``mu_0 = ||s||^2``.

        Parameters
        ----------
        signal : array_like, shape (N,) or (P, N)
            One signal or a batch.
        order : int
            Highest moment K >= 1.

        Returns
        -------
        numpy.ndarray, shape (K + 1,) or (P, K + 1)

        Raises
        ------
        ValueError
            If `signal` has the wrong shape or non-finite values, or `order` is not an
            int >= 1.
        """
        batch, single = self._signals(signal, "moments")
        k_max = self._order_arg(order, "moments")
        scale = 2.0 / self.bound
        previous = np.ascontiguousarray(batch.T)
        current = scale * self.operator.matmat(previous) - previous
        mu = np.empty((k_max + 1, batch.shape[0]))
        mu[0] = np.einsum("ij,ij->j", previous, previous)
        mu[1] = np.einsum("ij,ij->j", current, previous)
        k = 1
        while 2 * k <= k_max:
            mu[2 * k] = 2.0 * np.einsum("ij,ij->j", current, current) - mu[0]
            if 2 * k + 1 <= k_max:
                following = 2.0 * (scale * self.operator.matmat(current) - current) - previous
                mu[2 * k + 1] = 2.0 * np.einsum("ij,ij->j", following, current) - mu[1]
                previous, current = current, following
            k += 1
        return mu[:, 0] if single else mu.T

    def energies_from_moments(self, moments: Any, edges: Any) -> np.ndarray:
        """Band energies from precomputed :meth:`moments` (any number of band choices, no products).

        Parameters
        ----------
        moments : array_like, shape (K + 1,) or (P, K + 1)
            From :meth:`moments`; the order is their count minus one.
        edges : array_like, shape (B + 1,)
            Band edges, as in `band_energies`.

        Returns
        -------
        numpy.ndarray, shape (B,) or (P, B)

        Raises
        ------
        ValueError
            If `moments` is not a finite 1-D or 2-D array of at least 2 moments, or
            `edges` is invalid.
        """
        mu = np.asarray(moments, dtype=np.float64)
        if mu.ndim not in (1, 2) or mu.shape[-1] < 2 or not np.all(np.isfinite(mu)):
            raise ValueError(
                "LaplacianBands.energies_from_moments: expected finite `moments` of shape (K + 1,) or (P, K + 1) "
                f"with K >= 1, got shape {mu.shape}"
            )
        e = self._edges(edges, "energies_from_moments")
        coefficients = _band_coefficients(e, self.bound, mu.shape[-1] - 1)
        # The damped indicators lie in [0, 1], so only rounding can make an energy negative.
        return np.maximum(mu @ coefficients.T, 0.0)

    def band_energies(
        self, signal: Any, edges: Any, *, gap: Any = None, tol: float = DEFAULT_TOL
    ) -> np.ndarray:
        """Energy of a signal per band of Laplacian eigenvalues, to a given accuracy.

        Band ``b`` holds the eigenvalues in ``[edges[b], edges[b + 1])``, as in
        :meth:`nsp.transforms.laplacian.LaplacianTransform.band_energies`; eigenvalues
        outside ``[edges[0], edges[-1]]`` are left out. The order comes from
        :meth:`order`, so

            ``|E~_b - E_b| <= tol * ||s||^2 + (energy at eigenvalues within gap of b's edges)``.

        Energy at an eigenvalue near an edge is shared between the two bands, so put the
        edges between eigenvalue clusters (see the module docstring).

        Parameters
        ----------
        signal : array_like, shape (N,) or (P, N)
            One signal or a batch.
        edges : array_like, shape (B + 1,)
            Strictly increasing, finite band edges (eigenvalue units), B >= 1. Edges at
            or below 0 and at or above ``bound`` mean "from the bottom" and "to the top"
            of the spectrum, with no error there.
        gap : float or array_like of shape (B + 1,), optional
            See :meth:`error_bound`. The order, and so the time, grows like
            ``bound / gap`` for edges mid-spectrum.
        tol : float, default DEFAULT_TOL (1e-3)
            See :meth:`order`.

        Returns
        -------
        numpy.ndarray, shape (B,) or (P, B)
            Non-negative. With edges spanning ``[0, bound]`` they sum to ``||s||^2`` up
            to rounding.

        Raises
        ------
        ValueError
            If `signal` has the wrong shape or non-finite values, `edges`, `gap` or `tol`
            is invalid, or `tol` cannot be reached (see :meth:`order`).
        """
        e = self._edges(edges, "band_energies")
        self._signals(signal, "band_energies")
        return self.energies_from_moments(self.moments(signal, self.order(e, gap=gap, tol=tol)), e)
