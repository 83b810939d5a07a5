"""The shared interface of graph Fourier transforms: an object you apply.

Like scipy's ``LinearOperator``, public methods check and reshape their arguments and
delegate to private batched kernels that subclasses implement.
"""

from __future__ import annotations

import abc

import numpy as np

__all__ = ["GraphTransform"]


class GraphTransform(abc.ABC):
    """A linear map between signals on the nodes of a graph and their spectra.

    Subclasses implement ``_forward`` and ``_inverse`` on a batch ``(P, N)`` of float64
    signals and set ``n``, the number of nodes.
    """

    n: int

    def forward(self, signal: np.ndarray) -> np.ndarray:
        """The spectrum of ``signal``.

        Parameters
        ----------
        signal : array-like
            Shape ``(N,)`` for one signal or ``(P, N)`` for a batch, node order as in
            ``NNGraph``.

        Returns
        -------
        numpy.ndarray
            float64, the same shape as ``signal``.

        Raises
        ------
        ValueError
            If the last dimension is not ``N`` or a value is not finite.
        """
        batch, single = self._as_batch(signal, "signal")
        out = self._forward(batch)
        return out[0] if single else out

    def inverse(self, spectrum: np.ndarray) -> np.ndarray:
        """The signal whose spectrum is ``spectrum`` (shapes as in ``forward``)."""
        batch, single = self._as_batch(spectrum, "spectrum")
        out = self._inverse(batch)
        return out[0] if single else out

    __call__ = forward

    def _as_batch(self, values: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
        array = np.asarray(values, dtype=np.float64)
        if array.ndim not in (1, 2) or array.shape[-1] != self.n:
            raise ValueError(
                f"{type(self).__name__}: expected `{name}` of shape ({self.n},) or (P, {self.n}), "
                f"got {array.shape}"
            )
        # A sum is finite where every value is (one pass, no temporary); values whose sum
        # overflows are looked at one by one.
        with np.errstate(over="ignore", invalid="ignore"):
            total = array.sum()
        if not np.isfinite(total) and not np.all(np.isfinite(array)):
            bad = np.flatnonzero(~np.isfinite(array.reshape(-1)))
            raise ValueError(
                f"{type(self).__name__}: `{name}` has {bad.size} non-finite values "
                f"(first at flat index {bad[0]}); the transform is undefined there"
            )
        return (array[None] if array.ndim == 1 else array), array.ndim == 1

    @abc.abstractmethod
    def _forward(self, signals: np.ndarray) -> np.ndarray:
        """Spectra of a ``(P, N)`` float64 batch."""

    @abc.abstractmethod
    def _inverse(self, spectra: np.ndarray) -> np.ndarray:
        """Signals of a ``(P, N)`` float64 batch of spectra."""

    def __repr__(self) -> str:
        return f"<{self.n}x{self.n} {type(self).__name__}>"
