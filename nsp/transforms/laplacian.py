"""
Graph-Laplacian Fourier transform
=================================

The Fourier basis of a graph signal in the graph-signal-processing sense: the eigenvectors
of the combinatorial Laplacian ``L = D - W`` of the undirected neuron graph, ordered by
ascending eigenvalue. The eigenvalue of an eigenvector is its frequency. The coefficients
of a signal ``s`` are ``U.T @ s``; ``U`` is orthogonal, so the inverse is ``U @ c`` and
the transform preserves energy (Parseval).

Eigenvectors of a repeated eigenvalue are not unique, so single coefficients inside an
eigenvalue cluster depend on the LAPACK build. Energies per cluster (and per band of
eigenvalues) do not; compare those.

The eigendecomposition is dense (``O(N^2)`` memory, ``O(N^3)`` time), which is fine up to
about ``1e4`` nodes. Larger graphs are refused with :class:`LaplacianSizeError` before
any work is done.

BLAS threads. LAPACK's eigensolver waits for its slowest thread at every step, so on a
busy machine more threads than idle cores make it many times slower (a 1,500-node
decomposition took 45 s with 2 OpenBLAS threads on a loaded 2-core machine and 5.7 s with
one). It therefore runs with `eigh_threads` threads: the cores not already busy by the
1-minute load average, at least one. The ``"nsp"`` logger reports the start (with an
estimate of the time, `eigh_seconds`) and the end at INFO level.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse
from threadpoolctl import threadpool_limits

from nsp.common import memory as nsp_memory
from nsp.transforms.base import GraphTransform

__all__ = [
    "DEFAULT_MAX_NODES",
    "LaplacianSizeError",
    "LaplacianTransform",
    "band_edges",
    "dense_eigh_bytes",
    "eigenvalue_clusters",
    "eigh_seconds",
    "eigh_threads",
    "laplacian_matrix",
]

DEFAULT_MAX_NODES = 12_000
"""Largest graph :class:`LaplacianTransform` decomposes unless told otherwise."""

_CLUSTER_RTOL = 1e-8
_CALIBRATION_N = 600
_logger = logging.getLogger("nsp")


def eigh_threads() -> int:
    """The BLAS threads a dense eigendecomposition gets: the idle cores, at least one.

    The cores this process may use less the 1-minute load average (rounded down), so an
    idle machine uses all of them and a busy one does not oversubscribe its cores.

    Examples
    --------
    >>> eigh_threads() >= 1
    True
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform: assume an idle machine
        load = 0.0
    return max(1, min(cores, cores - math.floor(load)))


def eigh_seconds(n: int, threads: int | None = None) -> float:
    """An estimate of the seconds a dense eigendecomposition of ``n`` nodes takes here, now.

    Times one decomposition of 600 nodes (about 0.1 s) with ``threads`` BLAS threads
    (default `eigh_threads`) and scales it by ``(n / 600) ** 3``. Rough, within a factor of
    about 2: larger matrices run closer to the machine's peak.

    Examples
    --------
    >>> eigh_seconds(10) < 1.0
    True
    """
    m = min(int(n), _CALIBRATION_N)
    if m < 2:
        return 0.0
    matrix = np.random.default_rng(0).standard_normal((m, m))
    matrix += matrix.T
    with threadpool_limits(threads or eigh_threads()):
        start = time.perf_counter()
        scipy.linalg.eigh(matrix, driver="evd", overwrite_a=True, check_finite=False)
        seconds = time.perf_counter() - start
    return seconds * (n / m) ** 3


class LaplacianSizeError(ValueError):
    """The graph is too large for a dense eigendecomposition.

    Raised by :class:`LaplacianTransform` before any computation starts. The message gives
    the number of nodes, the estimated memory and what to do instead.
    """


def dense_eigh_bytes(n: int) -> int:
    """Estimate the memory a dense float64 eigendecomposition of an ``n x n`` matrix needs.

    The divide-and-conquer driver holds the matrix, which it overwrites with the
    eigenvectors, and a workspace of about ``2 n^2`` floats: ``3 n^2 * 8`` bytes in all.

    Parameters
    ----------
    n : int
        Number of nodes.

    Returns
    -------
    int
        Bytes.

    Examples
    --------
    >>> dense_eigh_bytes(10_000) / 1e9
    2.4
    """
    return 3 * n * n * 8


def laplacian_matrix(
    adjacency: scipy.sparse.sparray | scipy.sparse.spmatrix | np.ndarray,
) -> scipy.sparse.csr_array:
    """Combinatorial Laplacian ``L = D - W`` of the undirected graph of a directed adjacency.

    ``W`` is the symmetrised 0/1 pattern of ``adjacency``: ``W[u, v] = 1`` when ``u -> v``
    or ``v -> u`` is an edge. Edge weights are ignored (every nonzero entry is an edge),
    and self-loops are dropped since they do not change ``L``.

    Parameters
    ----------
    adjacency : scipy.sparse array or matrix, or numpy.ndarray, shape (N, N)
        ``adjacency[u, v] != 0`` for a directed edge ``u -> v``.

    Returns
    -------
    scipy.sparse.csr_array, shape (N, N), float64
        Symmetric, with the degrees on the diagonal and ``-1`` per neighbour.

    Raises
    ------
    TypeError
        If `adjacency` is not a scipy.sparse array/matrix or a numpy array.
    ValueError
        If `adjacency` is not square, is empty, or has non-finite entries.

    Examples
    --------
    >>> import scipy.sparse
    >>> a = scipy.sparse.csr_array(([1, 1], ([0, 1], [1, 2])), shape=(3, 3))
    >>> laplacian_matrix(a).toarray()
    array([[ 1., -1.,  0.],
           [-1.,  2., -1.],
           [ 0., -1.,  1.]])
    """
    return _laplacian(_validate_adjacency(adjacency, "laplacian_matrix"))


def _laplacian(a: scipy.sparse.csr_array) -> scipy.sparse.csr_array:
    pattern = (a != 0).astype(np.float64)
    w = ((pattern + pattern.T) != 0).astype(np.float64)
    w.setdiag(0.0)
    w.eliminate_zeros()
    degrees = np.asarray(w.sum(axis=1)).ravel()
    laplacian = scipy.sparse.csr_array(scipy.sparse.diags_array(degrees) - w)
    laplacian.eliminate_zeros()
    return laplacian


def eigenvalue_clusters(eigenvalues: np.ndarray, tol: float | None = None) -> np.ndarray:
    """Group ascending eigenvalues that are equal within a tolerance.

    Consecutive eigenvalues closer than `tol` belong to the same cluster (single linkage),
    so a cluster's eigenspace, and the energy of a signal in it, does not depend on the
    choice of eigenvectors.

    Parameters
    ----------
    eigenvalues : numpy.ndarray, shape (N,)
        Eigenvalues in ascending order.
    tol : float, optional
        Largest gap inside a cluster. Default ``1e-8 * max(1, max|eigenvalues|)``, far
        above the rounding error of a dense symmetric eigensolver.

    Returns
    -------
    numpy.ndarray of int64, shape (K + 1,)
        Cluster boundaries: cluster ``k`` is ``eigenvalues[b[k]:b[k + 1]]``; ``b[0] = 0``
        and ``b[K] = N``.

    Raises
    ------
    ValueError
        If `eigenvalues` is not a non-empty, finite, ascending 1-D array, or `tol` is
        negative or not finite.

    Examples
    --------
    >>> eigenvalue_clusters(np.array([0.0, 1.0, 1.0 + 1e-12, 3.0]))
    array([0, 1, 3, 4])
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(
            f"eigenvalue_clusters: expected `eigenvalues` to be a non-empty 1-D array, got shape {lam.shape}"
        )
    if not np.all(np.isfinite(lam)):
        raise ValueError("eigenvalue_clusters: `eigenvalues` contains non-finite values")
    gaps = np.diff(lam)
    if np.any(gaps < 0):
        raise ValueError("eigenvalue_clusters: `eigenvalues` must be in ascending order")
    if tol is None:
        tol = _default_cluster_tol(lam)
    elif not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"eigenvalue_clusters: expected `tol` to be a finite number >= 0, got {tol!r}")
    starts = np.flatnonzero(gaps > tol) + 1
    return np.concatenate(([0], starts, [lam.size])).astype(np.int64)


class LaplacianTransform(GraphTransform):
    """Graph-Laplacian Fourier transform of signals on a graph's nodes.

    ``forward(s) = U.T @ s`` and ``inverse(c) = U @ c``, where the columns of ``U`` are
    the orthonormal eigenvectors of ``L = D - W`` (see :func:`laplacian_matrix`) in
    ascending-eigenvalue order. Both accept one signal, shape (N,), or a batch, shape
    (P, N), and return the same shape.

    The constructor only builds the sparse Laplacian. The dense eigendecomposition
    (``scipy.linalg.eigh``, divide-and-conquer driver, float64) runs once, on first use,
    and is cached.

    Parameters
    ----------
    adjacency : scipy.sparse array or matrix, or numpy.ndarray, shape (N, N)
        ``adjacency[u, v] != 0`` for a directed edge ``u -> v``. Edge direction and
        weights are ignored.
    max_nodes : int, default DEFAULT_MAX_NODES (12,000)
        Largest N to decompose. Raise it only on a machine with the memory for it.

    Raises
    ------
    TypeError
        If `adjacency` is not a scipy.sparse array/matrix or a numpy array.
    ValueError
        If `adjacency` is not square, is empty or has non-finite entries, or `max_nodes`
        is not a positive int.
    LaplacianSizeError
        If N exceeds `max_nodes`, or the estimated memory (:func:`dense_eigh_bytes`)
        exceeds the memory available (:func:`nsp.memory.available_bytes`). Nothing is computed.

    See Also
    --------
    nsp.transforms.causal : the causal (Möbius) transform, which scales to large networks.

    Examples
    --------
    The path 0 -> 1 -> 2 has Laplacian eigenvalues 0, 1 and 3. A constant signal lives
    entirely at frequency 0:

    >>> import scipy.sparse
    >>> a = scipy.sparse.csr_array(([1, 1], ([0, 1], [1, 2])), shape=(3, 3))
    >>> t = LaplacianTransform(a)
    >>> bool(np.allclose(t.eigenvalues, [0.0, 1.0, 3.0]))
    True
    >>> np.round(t.cluster_energies(np.ones(3)), 12)
    array([3., 0., 0.])
    >>> bool(np.allclose(t.inverse(t.forward([1.0, 2.0, 4.0])), [1.0, 2.0, 4.0]))
    True
    """

    def __init__(
        self,
        adjacency: scipy.sparse.sparray | scipy.sparse.spmatrix | np.ndarray,
        *,
        max_nodes: int = DEFAULT_MAX_NODES,
    ) -> None:
        if isinstance(max_nodes, bool) or not isinstance(max_nodes, (int, np.integer)) or max_nodes < 1:
            raise ValueError(f"LaplacianTransform: expected `max_nodes` to be an int >= 1, got {max_nodes!r}")
        self._laplacian = _laplacian(_validate_adjacency(adjacency, "LaplacianTransform"))
        self._n = self._laplacian.shape[0]
        _check_size(self._n, int(max_nodes))
        self._eigenvalues: np.ndarray | None = None
        self._eigenvectors: np.ndarray | None = None
        self._bounds: np.ndarray | None = None

    def __repr__(self) -> str:
        state = "decomposed" if self._eigenvectors is not None else "not yet decomposed"
        return f"<{self._n}x{self._n} {type(self).__name__}, {self.number_of_edges} undirected edges, {state}>"

    @property
    def n(self) -> int:
        """Number of nodes N."""
        return self._n

    @property
    def number_of_edges(self) -> int:
        """Number of undirected edges of the graph (without self-loops)."""
        return (self._laplacian.nnz - np.count_nonzero(self._laplacian.diagonal())) // 2

    @property
    def laplacian(self) -> scipy.sparse.csr_array:
        """The sparse Laplacian ``L = D - W``, shape (N, N), float64."""
        return self._laplacian

    @property
    def eigenvalues(self) -> np.ndarray:
        """Frequencies: the eigenvalues of ``L`` in ascending order, shape (N,), read-only.

        All are >= 0 up to rounding; 0 repeats once per connected component.
        """
        self._decompose()
        return self._eigenvalues

    @property
    def eigenvectors(self) -> np.ndarray:
        """``U``: orthonormal eigenvectors as columns, matching `eigenvalues`; shape (N, N), read-only."""
        self._decompose()
        return self._eigenvectors

    @property
    def cluster_bounds(self) -> np.ndarray:
        """Boundaries of the eigenvalue clusters, shape (K + 1,); see :func:`eigenvalue_clusters`."""
        if self._bounds is None:
            bounds = eigenvalue_clusters(self.eigenvalues)
            bounds.flags.writeable = False
            self._bounds = bounds
        return self._bounds

    @property
    def cluster_eigenvalues(self) -> np.ndarray:
        """Mean eigenvalue of each cluster, shape (K,)."""
        bounds = self.cluster_bounds
        return np.add.reduceat(self.eigenvalues, bounds[:-1]) / np.diff(bounds)

    def cluster_energies(self, signal: np.ndarray) -> np.ndarray:
        """Energy of a signal in each eigenvalue cluster.

        ``E[k] = sum of (U.T @ s)[i]**2 over the eigenvalues i of cluster k``, the squared
        norm of the projection of ``s`` onto the cluster's eigenspace; it does not depend
        on the choice of eigenvectors. The energies sum to ``||s||^2``.

        Parameters
        ----------
        signal : array_like, shape (N,) or (P, N)
            One signal or a batch.

        Returns
        -------
        numpy.ndarray, shape (K,) or (P, K)
            One energy per cluster (see `cluster_eigenvalues`).

        Raises
        ------
        ValueError
            If `signal` has the wrong shape or non-finite values.
        """
        batch, single = self._as_batch(signal, "signal")
        energies = np.add.reduceat(np.square(self._forward(batch)), self.cluster_bounds[:-1], axis=1)
        return energies[0] if single else energies

    def cumulative_energies(self, signal: np.ndarray) -> np.ndarray:
        """Energy of a signal at or below each cluster's frequency.

        ``C[k] = ||P_k s||^2`` for the projection ``P_k`` onto all eigenspaces of clusters
        ``0..k``: the cumulative spectral energy at the cluster boundaries, invariant to the
        choice of eigenvectors. ``C[K - 1] = ||s||^2``.

        Parameters
        ----------
        signal : array_like, shape (N,) or (P, N)
            One signal or a batch.

        Returns
        -------
        numpy.ndarray, shape (K,) or (P, K)
            Non-decreasing along the last axis.

        Raises
        ------
        ValueError
            If `signal` has the wrong shape or non-finite values.
        """
        return np.cumsum(self.cluster_energies(signal), axis=-1)

    def band_energies(self, signal: np.ndarray, edges: np.ndarray) -> np.ndarray:
        """Energy of a signal per band of frequencies.

        Band ``b`` holds the eigenvalues in ``[edges[b], edges[b + 1])``, the last band
        also its right edge, as in :func:`numpy.histogram`; eigenvalues outside
        ``[edges[0], edges[-1]]`` are left out. Whole clusters are binned by their mean
        eigenvalue, and a mean within the clustering tolerance of an edge (see
        :func:`eigenvalue_clusters`) counts as on that edge, so rounding cannot split an
        eigenspace or move it across an edge placed on its eigenvalue.

        Parameters
        ----------
        signal : array_like, shape (N,) or (P, N)
            One signal or a batch.
        edges : array_like, shape (B + 1,)
            Strictly increasing, finite band edges, B >= 1.

        Returns
        -------
        numpy.ndarray, shape (B,) or (P, B)

        Raises
        ------
        ValueError
            If `signal` has the wrong shape or non-finite values, or `edges` is not a
            strictly increasing finite 1-D array with at least 2 entries.

        Examples
        --------
        >>> import scipy.sparse
        >>> a = scipy.sparse.csr_array(([1, 1], ([0, 1], [1, 2])), shape=(3, 3))
        >>> t = LaplacianTransform(a)
        >>> np.round(t.band_energies([1.0, 1.0, 1.0], [0.0, 0.5, 4.0]), 12)
        array([3., 0.])
        """
        e = band_edges(edges, "LaplacianTransform.band_energies")
        energies = self.cluster_energies(signal)
        centres = self.cluster_eigenvalues
        # Snap a cluster onto an edge it equals up to rounding: its eigenvalue was meant.
        tol = _default_cluster_tol(self.eigenvalues)
        right = np.searchsorted(e, centres).clip(max=e.size - 1)
        for candidate in (e[right], e[(right - 1).clip(min=0)]):
            centres = np.where(np.abs(centres - candidate) <= tol, candidate, centres)
        band = np.searchsorted(e, centres, side="right") - 1
        band[centres == e[-1]] = e.size - 2
        inside = (band >= 0) & (band < e.size - 1)
        membership = np.zeros((centres.size, e.size - 1))
        membership[np.flatnonzero(inside), band[inside]] = 1.0
        return energies @ membership

    def _forward(self, S: np.ndarray) -> np.ndarray:
        # Rows are signals: (U.T @ S.T).T == S @ U.
        return S @ self.eigenvectors

    def _inverse(self, C: np.ndarray) -> np.ndarray:
        return C @ self.eigenvectors.T

    def _decompose(self) -> None:
        if self._eigenvectors is not None:
            return
        # evd (divide and conquer) keeps U orthogonal to ~1e-15; evr (the default) loses
        # about three digits there, which shows up directly as a Parseval error. L is
        # symmetric, so its transpose is the Fortran-ordered matrix LAPACK works on in
        # place: no extra N x N copy, and the peak is the 3 * N^2 floats of dense_eigh_bytes.
        threads = eigh_threads()
        start = time.perf_counter()
        _logger.info("nsp: Laplacian eigendecomposition of %d nodes on %d BLAS thread(s)", self._n, threads)
        with threadpool_limits(threads):
            eigenvalues, eigenvectors = scipy.linalg.eigh(
                self._laplacian.toarray().T, driver="evd", overwrite_a=True, check_finite=False
            )
        _logger.info("nsp: Laplacian eigendecomposition of %d nodes done in %.1f s", self._n, time.perf_counter() - start)
        eigenvalues.flags.writeable = False
        eigenvectors.flags.writeable = False
        self._eigenvalues, self._eigenvectors = eigenvalues, eigenvectors


def _default_cluster_tol(eigenvalues: np.ndarray) -> float:
    return _CLUSTER_RTOL * max(1.0, float(np.max(np.abs(eigenvalues))))


def _validate_adjacency(adjacency: object, where: str) -> scipy.sparse.csr_array:
    if not (scipy.sparse.issparse(adjacency) or isinstance(adjacency, np.ndarray)):
        raise TypeError(
            f"{where}: expected `adjacency` to be a scipy.sparse array/matrix or a numpy.ndarray, "
            f"got {type(adjacency).__name__}"
        )
    if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
        raise ValueError(f"{where}: expected `adjacency` to be a square (N, N) matrix, got shape {adjacency.shape}")
    if adjacency.shape[0] == 0:
        raise ValueError(f"{where}: `adjacency` is empty (a graph with 0 nodes)")
    dtype = adjacency.dtype
    if not (dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"{where}: expected `adjacency` to have a real or boolean dtype, got {dtype}")
    a = scipy.sparse.csr_array(adjacency)
    if not np.all(np.isfinite(a.data)):
        raise ValueError(f"{where}: `adjacency` contains non-finite entries")
    return a


def _available_memory_bytes() -> int | None:
    """What this process can still allocate (:func:`nsp.memory.available_bytes`), else the machine's memory."""
    available = nsp_memory.available_bytes()
    if available is not None:
        return available
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_size(n: int, max_nodes: int) -> None:
    need = dense_eigh_bytes(n)
    memory = _available_memory_bytes()
    too_many = n > max_nodes
    too_big = memory is not None and need > memory
    if not (too_many or too_big):
        return
    if too_many:
        reason = f"more than max_nodes={max_nodes:,}"
    else:
        reason = f"more than the {memory / 1e9:.3g} GB of memory available (MemAvailable, the cgroup limit, nsp.memory.MEMORY_LIMIT)"
    raise LaplacianSizeError(
        f"LaplacianTransform: the graph has N = {n:,} nodes; a dense eigendecomposition needs about "
        f"{need / 1e9:.3g} GB (3 * N^2 * 8 bytes) and O(N^3) time, {reason}. "
        "Use the causal transform (type='standard'), which scales to large networks; or shrink the "
        "network or the probe input; or, for a few extreme frequencies only, use "
        "scipy.sparse.linalg.eigsh(laplacian_matrix(adjacency), k=...)"
        + ("; or pass a larger max_nodes on a machine with enough memory." if too_many else ".")
    )


def band_edges(edges: Any, where: str) -> np.ndarray:
    """``edges`` as a float64 array of at least two finite, strictly increasing band edges.

    Raises
    ------
    ValueError
        Naming ``where`` and the argument, if ``edges`` is not such an array.
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2:
        raise ValueError(f"{where}: expected `edges` to be a 1-D array of at least 2 band edges, got shape {e.shape}")
    if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise ValueError(f"{where}: `edges` must be finite and strictly increasing, got {e}")
    return e
