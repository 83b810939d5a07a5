"""Where the neurons go: the t-SNE layout, its scaling and circle projection, and the map's grid.

Spearman unit vectors (:func:`~nsp.response_map.responses.spearman_vectors`) are laid out
by openTSNE under Euclidean distance (:func:`tsne_layout`); ‖u_i − u_j‖² = 2(1 − ρ_ij),
so this is the correlation layout without an N×N matrix. :class:`Grid` interpolates one
value per neuron over the layout as ``scipy.interpolate.griddata`` does.
"""

from __future__ import annotations

import logging
import numbers
from typing import Any

import numpy as np
from scipy.spatial import Delaunay, cKDTree

__all__ = ["Grid", "check_iterations", "circle_projection", "scale_layout", "tsne_embedding", "tsne_layout"]


def _require_opentsne() -> Any:
    try:
        import openTSNE
    except ImportError as err:
        raise ImportError(
            "nsp.NeuralResponseMap needs openTSNE for its layouts; install it with "
            "`pip install nsp-lightning[response-maps]`"
        ) from err
    return openTSNE


def check_iterations(iterations: Any, where: str, argname: str = "iterations") -> None:
    """Refuse ``iterations`` other than None or ``(early exaggeration >= 0, plain >= 1)`` ints, naming ``where``."""
    if iterations is None:
        return
    if not (isinstance(iterations, (tuple, list)) and len(iterations) == 2
            and all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in iterations)
            and iterations[0] >= 0 and iterations[1] >= 1):
        raise ValueError(f"{where}: expected `{argname}` to be None or two ints (early exaggeration >= 0, "
                         f"then plain >= 1), got {iterations!r}")


def tsne_layout(
    vectors: np.ndarray,
    *,
    perplexity: float = 30.0,
    seed: int = 0,
    n_jobs: int = 1,
    initialization: np.ndarray | None = None,
    n_iter: int | None = None,
) -> np.ndarray:
    """openTSNE layout of points under Euclidean distance (unscaled t-SNE coordinates).

    Parameters
    ----------
    vectors : numpy.ndarray
        ``(N, D)`` points, e.g. from :func:`spearman_vectors`.
    perplexity : float
        t-SNE perplexity; lowered to ``(N - 1) / 3`` for small ``N`` (openTSNE needs
        ``3 * perplexity`` neighbours).
    seed : int
        openTSNE's random state (nearest-neighbour index and optimisation).
    n_jobs : int
        Threads; with 1 (the default) a layout is bit-for-bit reproducible.
    initialization : numpy.ndarray, optional
        ``(N, 2)`` start, e.g. a previous layout (unscaled). With it, the optimisation has no
        early exaggeration and ``n_iter`` (default 250) iterations, so the layout stays
        aligned with the start; without it, openTSNE's defaults (PCA start, 250 exaggerated
        + 500 iterations).
    n_iter : int, optional
        Iterations after the early exaggeration.

    Returns
    -------
    numpy.ndarray
        ``(N, 2)`` float64.
    """
    return np.asarray(tsne_embedding(vectors, perplexity=perplexity, seed=seed, n_jobs=n_jobs,
                                     initialization=initialization, n_iter=n_iter), dtype=np.float64)


def tsne_embedding(
    vectors: np.ndarray,
    *,
    perplexity: float = 30.0,
    seed: int = 0,
    n_jobs: int = 1,
    initialization: np.ndarray | None = None,
    n_iter: int | None = None,
    exaggeration_iter: int | None = None,
) -> Any:
    """:func:`tsne_layout`'s openTSNE ``TSNEEmbedding`` itself, whose ``transform`` places new points.

    ``exaggeration_iter``: the early exaggeration's iterations of a fit without
    ``initialization`` (default openTSNE's 250).
    """
    openTSNE = _require_opentsne()
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] < 2 or vectors.dtype.kind not in "fiu":
        raise ValueError(f"nsp.response_map.tsne_layout: expected real points (N, D) with N >= 2, got "
                         f"{vectors.dtype} {list(vectors.shape)}")
    if not np.isfinite(vectors).all():
        raise ValueError("nsp.response_map.tsne_layout: the points hold NaN or infinite values")
    n = len(vectors)
    options: dict[str, Any] = dict(
        perplexity=min(float(perplexity), (n - 1) / 3),
        metric="euclidean",
        n_jobs=n_jobs,
        random_state=seed,
        verbose=False,
    )
    if initialization is not None:
        options.update(early_exaggeration_iter=0, n_iter=250 if n_iter is None else n_iter)
    else:
        if n_iter is not None:
            options.update(n_iter=n_iter)
        if exaggeration_iter is not None:
            options.update(early_exaggeration_iter=exaggeration_iter)
    log = logging.getLogger("openTSNE.tsne")
    level = log.level
    try:
        # A converged previous layout has a large spread on purpose (openTSNE warns about it).
        if initialization is not None:
            log.setLevel(logging.ERROR)
        return openTSNE.TSNE(**options).fit(np.ascontiguousarray(vectors), initialization=initialization)
    finally:
        log.setLevel(level)


def scale_layout(raw: np.ndarray) -> np.ndarray:
    """Each axis min-max scaled to [−1, 1] (the original's ``MinMaxScaler((-1, 1))``)."""
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return 2 * (raw - lo) / span - 1


def circle_projection(layout: np.ndarray, bins: int = 100) -> np.ndarray:
    """Map a layout onto a disc: each point divided by its angular sector's extent.

    A point at angle θ falls in sector ``round((θ + π) / 2π, 2)`` (the original's 101
    rounding bins for ``bins=100``); the sector's extent is ``‖(max |x|, max |y|)‖`` over
    its points. All extents are read from the layout before any point moves, so the
    result does not depend on the order of the points.

    Parameters
    ----------
    layout : numpy.ndarray
        ``(N, 2)``.
    bins : int
        Sectors per turn.

    Returns
    -------
    numpy.ndarray
        ``(N, 2)``, a new array.
    """
    layout = np.asarray(layout, dtype=np.float64)
    angle = np.arctan2(layout[:, 1], layout[:, 0])
    sector = np.rint((angle + np.pi) / (2 * np.pi) * bins).astype(np.int64)
    extent = np.zeros((bins + 1, 2))
    np.maximum.at(extent, sector, np.abs(layout))
    norm = np.linalg.norm(extent[sector], axis=1, keepdims=True)
    return layout / np.where(norm > 0, norm, 1.0)


class Grid:
    """A layout's square grid, with each grid point's triangle, weights and nearest neuron.

    Found once per layout (each part when a map first needs it): every map on the layout is
    then a gather and a weighted sum, equal to ``griddata(layout, values, grid, method)``.
    """

    def __init__(self, layout: np.ndarray, resolution: int) -> None:
        lo, hi = layout.min(axis=0), layout.max(axis=0)
        self.layout = layout
        self.extent = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
        x = np.linspace(lo[0], hi[0], resolution)
        y = np.linspace(hi[1], lo[1], resolution)  # row 0 is the top: no vertical flip
        gx, gy = np.meshgrid(x, y)
        self.points = np.column_stack([gx.ravel(), gy.ravel()])
        triangulation = Delaunay(layout)
        simplex = triangulation.find_simplex(self.points)
        self.inside = simplex >= 0
        self.simplex = simplex[self.inside]
        self.triangulation = triangulation
        self.shape = (resolution, resolution)
        self._weights: tuple[np.ndarray, np.ndarray] | None = None
        self._nearest: np.ndarray | None = None

    def _linear(self) -> tuple[np.ndarray, np.ndarray]:
        if self._weights is None:
            transform = self.triangulation.transform[self.simplex]
            d = self.points[self.inside] - transform[:, 2]
            b0 = transform[:, 0, 0] * d[:, 0] + transform[:, 0, 1] * d[:, 1]
            b1 = transform[:, 1, 0] * d[:, 0] + transform[:, 1, 1] * d[:, 1]
            self._weights = (self.triangulation.simplices[self.simplex], np.column_stack([b0, b1, 1 - b0 - b1]))
        return self._weights

    def map(self, values: np.ndarray, method: str) -> np.ndarray:
        out = np.full(self.shape[0] * self.shape[1], np.nan)
        if method == "linear":
            vertices, weights = self._linear()
            out[self.inside] = np.einsum("ij,ij->i", values[vertices], weights)
        else:
            if self._nearest is None:
                self._nearest = cKDTree(self.layout).query(self.points[self.inside])[1]
            out[self.inside] = values[self._nearest]
        return out.reshape(self.shape)
