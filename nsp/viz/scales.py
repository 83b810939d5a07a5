"""Colour scales: from values to a colour range, linear or signed-log.

``scale`` chooses the range of the colormap and whether values are log-compressed:

=================  ==========================================================
``'layerscale'``   linear; min to max of each layer
``'layernorm'``    linear; ``[-m, m]`` with ``m`` the largest ``|x|`` of each layer,
                   so 0 is the colormap's centre
``'globalscale'``  as ``'layerscale'``, with one range over the whole pattern
``'globalnorm'``   as ``'layernorm'``, with one ``m`` over the whole pattern
``'layersymlog'``  signed log (below); ``[-f(m), f(m)]`` per layer
``'globalsymlog'`` signed log with one threshold and one ``m`` over the pattern
=================  ==========================================================

The signed log is ``f(x) = sign(x) * log10(1 + |x| / t)`` (see `signed_log10`). It is
nearly linear for ``|x| << t`` and ``log10|x| - log10 t`` for ``|x| >> t``, so one
colour step stands for a fixed number of decades. Unless given, ``t`` is the smallest
nonzero ``|x|`` of the layer (or pattern): the colormap then spans exactly the decades
the data hold, and the smallest nonzero value sits ``log10 2`` from 0 on that axis
(with 256 colours, a colour apart from 0 while the layer spans at most about 38 decades).
Spectra span hundreds of decades, which no linear scale can show.

Only finite values set a range; `Stats` counts the others.

A range that must stay readable while values change (a network's layers while it
trains) is best given in whole decades: `decade_range` sets a symmetric signed-log
range ``±10**top`` with threshold ``10**bottom`` from a peak magnitude, with decades of
headroom above it, and its colour bar can be labelled ``-10^top ... 0 ... 10^top``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nsp.viz.values import as_float64

__all__ = [
    "SCALES",
    "check_scale",
    "check_threshold",
    "signed_log10",
    "signed_log10_array",
    "Stats",
    "layer_stats",
    "merge_stats",
    "Norm",
    "make_norm",
    "pattern_norms",
    "flag_text",
    "Decades",
    "decade_range",
]

SCALES: tuple[str, ...] = (
    "layerscale",
    "layernorm",
    "globalscale",
    "globalnorm",
    "layersymlog",
    "globalsymlog",
)

_LN10 = math.log(10.0)
# Whole decades whose powers of ten are normal float64 numbers.
_MIN_DECADE, _MAX_DECADE = -307, 308


def check_scale(scale: str, where: str, argname: str = "scale") -> str:
    """``scale`` if it is one of `SCALES`; else a ValueError naming ``where``, ``argname`` and the choices."""
    if scale not in SCALES:
        raise ValueError(f"{where}: unknown {argname}={scale!r}; expected one of {', '.join(map(repr, SCALES))}")
    return scale


def check_threshold(threshold: float | None, where: str) -> float | None:
    """A signed-log threshold as a float (or None); a ValueError unless finite and > 0."""
    is_number = isinstance(threshold, (int, float, np.integer, np.floating)) and not isinstance(threshold, bool)
    if threshold is not None and not (is_number and math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"{where}: expected threshold to be a finite number > 0 or None, got {threshold!r}")
    return None if threshold is None else float(threshold)


def signed_log10(values: Any, threshold: float) -> np.ndarray:
    """The signed-log transform ``sign(x) * log10(1 + |x| / threshold)``.

    Parameters
    ----------
    values : array-like or torch.Tensor
        Real values of any magnitude.
    threshold : float
        ``t > 0``. Values with ``|x| << t`` are compressed nearly linearly towards 0;
        above ``t`` one unit of the result is one decade.

    Returns
    -------
    numpy.ndarray
        float64, same shape; NaN stays NaN and ``+-inf`` stays ``+-inf``. Computed
        without forming ``|x| / t``, so it does not overflow where that ratio would.

    Raises
    ------
    ValueError
        If ``threshold`` is not a finite number > 0.

    Examples
    --------
    >>> signed_log10([0.0, 9.0, -99.0, 1e300], threshold=1.0)
    array([  0.,   1.,  -2., 300.])
    >>> float(signed_log10(1e54, threshold=1e-117)[()])
    171.0
    """
    where = "nsp.render.signed_log10"
    t = check_threshold(threshold, where)
    if t is None:
        raise ValueError(f"{where}: expected threshold to be a finite number > 0, got None")
    return signed_log10_array(as_float64(values, "values", where), t)


def signed_log10_array(x: np.ndarray, t: float) -> np.ndarray:
    """`signed_log10` of a float64 array with a checked threshold ``t``, without the checks."""
    # log10(1 + |x|/t) = log10(t + |x|) - log10(t): |x|/t, which can exceed float64, is never
    # formed. Near 0 this loses digits only relative to log10(t), below one colour step.
    with np.errstate(invalid="ignore"):
        y = np.asarray(np.abs(x))
        y += t
        np.log10(y, out=y)
        y -= math.log10(t)
        return np.copysign(y, x, out=y)


@dataclass(frozen=True)
class Stats:
    """Summary of one layer's (or a whole pattern's) values, over finite values only."""

    size: int
    vmin: float
    vmax: float
    tiny: float  # smallest nonzero |x|; NaN if there is none or it was not needed
    nan: int = 0
    posinf: int = 0
    neginf: int = 0

    @property
    def absmax(self) -> float:
        return max(-self.vmin, self.vmax)

    @property
    def has_finite(self) -> bool:
        return not math.isnan(self.vmin)

    @property
    def nonfinite(self) -> int:
        return self.nan + self.posinf + self.neginf


def layer_stats(v: np.ndarray, need_tiny: bool) -> Stats:
    """The `Stats` of a float64 array; the smallest nonzero ``|x|`` only if ``need_tiny``."""
    if v.size == 0:
        return Stats(0, math.nan, math.nan, math.nan)
    lo, hi = float(v.min()), float(v.max())
    counts = (0, 0, 0)
    finite = v
    if not (math.isfinite(lo) and math.isfinite(hi)):
        mask = np.isfinite(v)
        finite = v[mask]
        counts = (int(np.isnan(v).sum()), int(np.isposinf(v).sum()), int(np.isneginf(v).sum()))
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (math.nan, math.nan)
    tiny = math.nan
    if need_tiny and finite.size:
        a = np.abs(finite)
        tiny = float(np.min(a, where=a > 0, initial=np.inf))
        tiny = tiny if math.isfinite(tiny) else math.nan
    return Stats(v.size, lo, hi, tiny, *counts)


def merge_stats(stats: Sequence[Stats]) -> Stats:
    """The `Stats` of several layers taken together (for the ``global`` scales)."""
    finite = [s for s in stats if s.has_finite]
    tinies = [s.tiny for s in finite if not math.isnan(s.tiny)]
    return Stats(
        sum(s.size for s in stats),
        min((s.vmin for s in finite), default=math.nan),
        max((s.vmax for s in finite), default=math.nan),
        min(tinies, default=math.nan),
        sum(s.nan for s in stats),
        sum(s.posinf for s in stats),
        sum(s.neginf for s in stats),
    )


@dataclass(frozen=True)
class Norm:
    """A colour range ``[lo, hi]`` in display units (after the signed log, if any)."""

    lo: float
    hi: float
    threshold: float | None = None  # signed-log threshold; None for a linear scale

    @property
    def degenerate(self) -> bool:
        return not self.hi > self.lo

    def display(self, x: np.ndarray) -> np.ndarray:
        return x if self.threshold is None else signed_log10_array(x, self.threshold)

    def data_value(self, y: float) -> float:
        """The data value shown at display value ``y`` (the inverse of `display`)."""
        if self.threshold is None:
            return y
        if abs(y) < 15:
            return math.copysign(self.threshold * math.expm1(abs(y) * _LN10), y)
        # 10**|y| alone may overflow where threshold * 10**|y| does not; the -1 is below rounding.
        with np.errstate(over="ignore"):
            return math.copysign(float(np.power(10.0, abs(y) + math.log10(self.threshold))), y)


def make_norm(stats: Stats, scale: str, vrange: tuple[float, float] | None, threshold: float | None) -> Norm:
    """The colour range that ``scale`` gives values with these ``stats``.

    ``vrange`` (data units) replaces the range derived from ``stats``; ``threshold``
    replaces the signed-log threshold (by default the smallest nonzero ``|x|``, else 1).
    """
    t = None
    if scale.endswith("symlog"):
        t = threshold if threshold is not None else (stats.tiny if not math.isnan(stats.tiny) else 1.0)
    if vrange is not None:
        lo, hi = vrange
    elif not stats.has_finite:
        lo = hi = 0.0
    elif scale.endswith("scale"):
        lo, hi = stats.vmin, stats.vmax
    else:
        lo, hi = -stats.absmax, stats.absmax
    if t is not None:
        lo, hi = (float(signed_log10_array(np.float64(v), t)) for v in (lo, hi))
    return Norm(float(lo), float(hi), t)


def pattern_norms(stats: Sequence[Stats], scale: str, threshold: float | None) -> list[Norm]:
    """One `Norm` per layer: its own under a ``layer`` scale, one shared under a ``global`` scale."""
    if scale.startswith("global"):
        norm = make_norm(merge_stats(stats), scale, None, threshold)
        return [norm] * len(stats)
    return [make_norm(s, scale, None, threshold) for s in stats]


def flag_text(stats: Stats) -> str:
    """What a colour cannot say, counted: ``'2 NaN, 1 +inf'``; empty if nothing."""
    parts = [f"{count} {what}" for count, what in ((stats.nan, "NaN"), (stats.posinf, "+inf"), (stats.neginf, "-inf"))
             if count]
    return ", ".join(parts)


@dataclass(frozen=True)
class Decades:
    """A symmetric signed-log colour range in whole decades.

    The colours run from ``-10**top`` to ``10**top`` on the signed log with threshold
    ``10**bottom`` (see `signed_log10`): a colour step is a fixed fraction of a decade
    above the threshold, and magnitudes well below it fade to the colormap's centre.
    """

    bottom: int
    top: int

    @property
    def threshold(self) -> float:
        """The signed-log threshold ``10**bottom``."""
        return 10.0 ** self.bottom

    @property
    def vrange(self) -> tuple[float, float]:
        """``(-10**top, 10**top)``, in data units."""
        return (-(10.0 ** self.top), 10.0 ** self.top)


def decade_range(peak: float, smallest: float, headroom: float = 0.0) -> Decades:
    """Whole decades from ``smallest`` to ``peak`` with ``headroom`` decades above the peak.

    Parameters
    ----------
    peak : float
        The largest magnitude to show, ``> 0``.
    smallest : float
        The smallest magnitude to tell apart from 0 (``0 < smallest <= peak``): the
        threshold is the power of ten at or below it.
    headroom : float, default 0
        Decades kept free above ``peak``, ``>= 0``: the top is the power of ten at or above
        ``peak * 10**headroom``, so magnitudes may grow that much before they take the end
        colours.

    Returns
    -------
    Decades
        ``bottom < top``, both within float64's normal range (``-307 .. 308``).

    Raises
    ------
    ValueError
        If an argument is not a finite number in its range; the message names it.

    Examples
    --------
    >>> decade_range(683.0, 186.0, headroom=2)
    Decades(bottom=2, top=5)
    >>> decade_range(0.5, 0.5)
    Decades(bottom=-1, top=0)
    """
    where = "nsp.viz.scales.decade_range"
    for name, value, low in (("peak", peak, 0.0), ("smallest", smallest, 0.0), ("headroom", headroom, None)):
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and (value > low if low is not None else value >= 0)):
            expected = "a finite number > 0" if low is not None else "a finite number >= 0"
            raise ValueError(f"{where}: expected {name} to be {expected}, got {value!r}")
    if smallest > peak:
        raise ValueError(f"{where}: expected smallest <= peak, got smallest={smallest!r} > peak={peak!r}")
    top = min(_MAX_DECADE, max(_MIN_DECADE + 1, math.ceil(math.log10(peak) + headroom)))
    bottom = max(_MIN_DECADE, min(math.floor(math.log10(smallest)), top - 1))
    return Decades(bottom, top)
