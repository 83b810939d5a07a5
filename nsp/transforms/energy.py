"""Spectral energy per layer: the sum of squared spectral coefficients of each layer.

The causal transform is not orthogonal (its inverse is the zeta matrix of the
reachability order), so this is not a Parseval quantity; it spans hundreds of decades,
hence the log10 form.

`change_since` measures how far a spectrum moved from a reference one (the baseline
before training), per layer, with measures that stay meaningful when coefficients span
hundreds of decades:

====================  ================================================================
``relative``          ``‖ŝ − ŝ₀‖₂ / ‖ŝ₀‖₂``: the movement of the layer's dominant
                      coefficients (the largest ones decide both norms). 0: unchanged;
                      1: as large as the baseline itself. Computed after scaling by the
                      largest magnitude, so it never overflows.
``log10_energy``      ``log10 Σŝ² − log10 Σŝ₀²``: decades gained (> 0) or lost by the
                      layer's energy. Insensitive to changes that keep the energy.
``decades``           the median over coefficients of ``|log10|ŝ(x)| − log10|ŝ₀(x)||``,
                      over coefficients nonzero in both: how many decades a typical
                      coefficient moved, every coefficient counting alike whatever its
                      magnitude (a coefficient of 1e-100 moving to 1e-99 counts 1).
``sign_flips``        the fraction of coefficients whose sign (−, 0, +) differs from
                      the baseline's. Signs of spectra alternate with depth, so a flip
                      is a structural change that magnitudes cannot show.
====================  ================================================================
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["CHANGE_MEASURES", "spectral_energy", "log10_energy", "energy_share", "change_since"]

CHANGE_MEASURES: tuple[str, ...] = ("relative", "log10_energy", "decades", "sign_flips")


def _layers(layers: Any) -> list[np.ndarray]:
    values = getattr(layers, "layeractivations", layers)
    if isinstance(values, (torch.Tensor, np.ndarray)) or not isinstance(values, Sequence):
        raise TypeError(
            "nsp.energy: expected `layers` to be an Activations or a sequence of per-layer arrays, "
            f"got {type(layers).__name__}"
        )
    return [np.asarray(v.detach().cpu().double() if isinstance(v, torch.Tensor) else v, dtype=np.float64) for v in values]


def spectral_energy(layers: Any) -> np.ndarray:
    """Σ ŝ² of every layer.

    Parameters
    ----------
    layers : Activations or sequence of array-like
        A spectrum (as returned by ``NNGraph.transform``) or its per-layer arrays.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(num_layers,)``. May be ``inf`` where ŝ² overflows float64.

    Examples
    --------
    >>> spectral_energy([np.array([3.0, 4.0]), np.zeros(2)])
    array([25.,  0.])
    """
    out = []
    for v in _layers(layers):
        # Scale by the largest magnitude first so squares of 1e200 do not overflow needlessly.
        peak = np.max(np.abs(v)) if v.size else 0.0
        if peak == 0 or not np.isfinite(peak):
            out.append(0.0 if peak == 0 else np.inf)
            continue
        with np.errstate(over="ignore"):  # the documented inf, not a warning
            out.append(float(np.sum((v / peak) ** 2)) * peak * peak)
    return np.asarray(out, dtype=np.float64)


def log10_energy(layers: Any) -> np.ndarray:
    """log10 of ``spectral_energy``, computed without overflow; ``-inf`` for a zero layer.

    Examples
    --------
    >>> log10_energy([np.array([1e200]), np.zeros(1)])
    array([400., -inf])
    """
    out = []
    for v in _layers(layers):
        peak = np.max(np.abs(v)) if v.size else 0.0
        if peak == 0:
            out.append(-np.inf)
        elif not np.isfinite(peak):
            out.append(np.inf)
        else:
            out.append(2 * np.log10(peak) + np.log10(np.sum((v / peak) ** 2)))
    return np.asarray(out, dtype=np.float64)


def energy_share(layers: Any) -> np.ndarray:
    """Each layer's share of the total spectral energy (sums to 1; zeros if all are 0).

    Examples
    --------
    >>> energy_share([np.array([1.0]), np.array([1.0, 1.0, 1.0])])
    array([0.25, 0.75])
    """
    logs = log10_energy(layers)
    if np.all(np.isneginf(logs)):
        return np.zeros_like(logs)
    weights = np.power(10.0, logs - np.max(logs))
    return weights / weights.sum()


def _relative(now: np.ndarray, base: np.ndarray) -> float:
    peak = max(float(np.max(np.abs(now), initial=0.0)), float(np.max(np.abs(base), initial=0.0)))
    if peak == 0:
        return 0.0
    if not np.isfinite(peak):
        return float("nan")
    # Both sides divided by one common factor, so that the difference cannot overflow; each norm
    # then scaled by its own largest entry, so that its squares cannot underflow either.
    top, bottom = _norm(now / peak - base / peak), _norm(base / peak)
    if bottom == 0:
        return float("inf")
    with np.errstate(over="ignore"):
        return float(np.float64(top) / np.float64(bottom))


def _norm(values: np.ndarray) -> float:
    largest = float(np.max(np.abs(values), initial=0.0))
    if largest == 0:
        return 0.0
    return float(np.linalg.norm((values / largest).ravel())) * largest


def _decades(now: np.ndarray, base: np.ndarray) -> float:
    both = (now != 0) & (base != 0) & np.isfinite(now) & np.isfinite(base)
    if not both.any():
        return 0.0 if np.array_equal(now, base) else float("nan")
    return float(np.median(np.abs(np.log10(np.abs(now[both])) - np.log10(np.abs(base[both])))))


def change_since(baseline: Any, layers: Any) -> dict[str, np.ndarray]:
    """How far a spectrum moved from a reference spectrum, per layer.

    Parameters
    ----------
    baseline, layers : Activations or sequence of array-like
        The reference spectrum (e.g. before training) and the current one, with the
        same layer shapes.

    Returns
    -------
    dict of str to numpy.ndarray
        One float64 array of shape ``(num_layers,)`` per measure of `CHANGE_MEASURES`
        (see the module docstring). For a layer whose baseline is exactly zero,
        ``relative`` is 0 if it stayed zero and ``inf`` otherwise; ``log10_energy`` is 0
        when both energies are zero; ``decades`` is 0 when no coefficient is nonzero
        in both and nothing changed, NaN when it changed.

    Raises
    ------
    ValueError
        If the two spectra differ in layer count or shapes.

    Examples
    --------
    >>> change = change_since([np.array([1e-100, -1.0])], [np.array([1e-99, 1.0])])
    >>> change["relative"], change["decades"], change["sign_flips"]
    (array([2.]), array([0.5]), array([0.5]))
    """
    base, now = _layers(baseline), _layers(layers)
    if len(base) != len(now) or any(a.shape != b.shape for a, b in zip(base, now)):
        raise ValueError(
            "nsp.energy.change_since: the spectra differ in layers: baseline "
            f"{[list(a.shape) for a in base]}, current {[list(b.shape) for b in now]}"
        )
    before, after = log10_energy(base), log10_energy(now)
    with np.errstate(invalid="ignore"):
        energy = np.where(np.isneginf(before) & np.isneginf(after), 0.0, after - before)
    return {
        "relative": np.array([_relative(b, a) for a, b in zip(base, now)], dtype=np.float64),
        "log10_energy": energy.astype(np.float64),
        "decades": np.array([_decades(b, a) for a, b in zip(base, now)], dtype=np.float64),
        "sign_flips": np.array(
            [float(np.mean(np.sign(a) != np.sign(b))) if a.size else 0.0 for a, b in zip(base, now)],
            dtype=np.float64,
        ),
    }
