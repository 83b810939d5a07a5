"""The spectrum analysis's cards: activations, spectrum and the change since the baseline, per layer.

A card is one layer as an image that explains itself (:func:`nsp.render.render_card`). All
three kinds share one colour scale, signed log10 in whole decades on a diverging colormap
(red positive, blue negative, white 0), because what a researcher watches while a network
trains is values that grow or shrink by decades:

- ``activations`` and ``spectrum``: by default (``colour_scale="baseline"``) the decades are
  fixed per layer at the baseline record, from the largest magnitude over all probes, with
  `HEADROOM` decades above it, so that equal colours mean equal values at every record while
  the layer grows. Activations keep `ACTIVATION_DECADES` decades below that peak; spectra
  every decade down to their smallest nonzero coefficient, since they span hundreds. A
  record that outgrows the headroom is drawn on a range widened to its own peak, and the
  card says so (a range is never silently exceeded).
- ``difference``: ``ŝ − ŝ₀``, the spectrum now minus the baseline's, on its own range (the
  card's largest change, rounded up to a decade), down to the spectrum card's threshold.

No Lightning: the cards are `~nsp.viz.png.PalettedImage` s (``numpy.asarray`` gives their RGB
pixels), which the drawing helper encodes as palette PNGs: a third of an RGB PNG's bytes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

import nsp.viz.render
from nsp.viz.png import PalettedImage
from nsp.viz.scales import Decades, decade_range
from nsp_lightning.probe.sinks.drawer import drawable, drawable_value

__all__ = ["ACTIVATION_DECADES", "CARD_CMAP", "CARD_KINDS", "HEADROOM", "card_image", "difference_card",
           "fixed_decades"]

CARD_CMAP = "RdBu_r"
CARD_KINDS = ("activations", "spectrum", "difference")
# Decades above the baseline's peak: the digits demo's layers grow by up to 1.9 decades in 8 epochs.
HEADROOM = 2
# Decades below a layer's peak activation that keep a colour; smaller ones fade to white.
ACTIVATION_DECADES = 3
# Decades above a card's own peak, so that its largest values stay off the end colours.
_OWN_MARGIN = 0.1
_TINY = float(np.finfo(np.float64).tiny)
_SYMBOL = {"activations": "x", "spectrum": "ŝ", "difference": "ŝ − ŝ₀"}
_SIGN_WORDS = {
    "activations": "red: positive, blue: negative, white: 0",
    "spectrum": "red: positive, blue: negative, white: 0",
    "difference": "red: ŝ grew (ŝ − ŝ₀ > 0), blue: it fell, white: unchanged",
}


def _magnitudes(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The finite nonzero ``|x|`` of all ``arrays``, float64, flat."""
    flat = np.concatenate([np.abs(np.asarray(a, dtype=np.float64)).ravel() for a in arrays])
    return flat[np.isfinite(flat) & (flat > 0)]


def _decades(kind: str, magnitudes: np.ndarray, headroom: float) -> Decades | None:
    """The decades that show ``magnitudes`` (None if there are none) with ``headroom`` above their peak."""
    if not magnitudes.size:
        return None
    peak = float(magnitudes.max())
    smallest = peak * 10.0 ** -ACTIVATION_DECADES if kind == "activations" else float(magnitudes.min())
    # Subnormal magnitudes have no power of ten of their own: the scale stops at 1e-307.
    return decade_range(peak, max(smallest, min(peak, _TINY)), headroom)


def fixed_decades(activations: Sequence[Sequence[np.ndarray]], spectra: Sequence[Sequence[np.ndarray]]
                  ) -> dict[str, list[Decades | None]]:
    """Per kind (``activations``, ``spectrum``) and layer, the decades fixed at the baseline.

    Parameters
    ----------
    activations, spectra : sequence of sequence of numpy.ndarray
        The baseline record's arrays, ``[p][l]`` (probe, layer).

    Returns
    -------
    dict
        ``{"activations": [Decades or None per layer], "spectrum": [...]}``, over all probes,
        with `HEADROOM` decades above each layer's peak; None for a layer that is exactly
        zero (or not finite) at the baseline.
    """
    layers = len(activations[0]) if activations else 0
    return {
        kind: [_decades(kind, _magnitudes([probe[l] for probe in rows]), HEADROOM) for l in range(layers)]
        for kind, rows in (("activations", activations), ("spectrum", spectra))
    }


drawable_value(Decades)  # a card's colour range, sent to the drawing helper


@drawable
def difference_card(spectrum: np.ndarray, baseline: np.ndarray, title: str, *, baseline_epoch: int | None,
                    threshold_of: Decades | None) -> PalettedImage:
    """The card of ``spectrum − baseline`` (`card_image` of kind ``'difference'``), subtracted where it is drawn.

    Parameters
    ----------
    spectrum, baseline : numpy.ndarray
        One layer's spectrum now and at the baseline, of one shape.
    title, baseline_epoch, threshold_of
        As in `card_image`.

    Returns
    -------
    PalettedImage
        The card, of RGB shape ``(height, width, 3)``.
    """
    return card_image("difference", spectrum - baseline, title, baseline_epoch=baseline_epoch,
                      threshold_of=threshold_of)


def _decade_text(k: int) -> str:
    return "10" + str(k).translate(str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻"))


@drawable
def card_image(
    kind: str,
    values: np.ndarray,
    title: str,
    *,
    fixed: Decades | None = None,
    baseline_epoch: int | None = None,
    threshold_of: Decades | None = None,
) -> PalettedImage:
    """A card of one layer of one probe (`nsp.render.render_card_paletted`).

    Parameters
    ----------
    kind : str
        ``'activations'``, ``'spectrum'`` or ``'difference'`` (``values`` is then ``ŝ − ŝ₀``).
    values : numpy.ndarray
        The layer's values, without the batch dimension.
    title : str
        The card's first line.
    fixed : Decades, optional
        The layer's decades fixed at the baseline (`fixed_decades`); None draws the card on
        its own range (``colour_scale="image"``, a layer that was zero at the baseline, and
        every difference card).
    baseline_epoch : int, optional
        The baseline record's epoch, named on the card.
    threshold_of : Decades, optional
        For a difference card: the spectrum card's decades, whose threshold it shares.

    Returns
    -------
    PalettedImage
        The card, of RGB shape ``(height, width, 3)``.
    """
    magnitudes = _magnitudes([values])
    own = _decades(kind, magnitudes, _OWN_MARGIN)
    if kind == "difference" and own is not None and threshold_of is not None:
        own = decade_range(float(magnitudes.max()), min(float(magnitudes.max()), threshold_of.threshold), _OWN_MARGIN)
    since = f" (epoch {baseline_epoch})" if baseline_epoch is not None else ""
    legend = [_SIGN_WORDS[kind]]
    if kind == "difference":
        legend.insert(0, f"ŝ − ŝ₀: the spectrum now minus the spectrum at the baseline{since}")
    decades = own
    if fixed is not None:
        decades = fixed
        if own is not None and own.top > fixed.top:
            decades = Decades(fixed.bottom, own.top)
            scope = (f"colours widened to ±{_decade_text(own.top)}: values outgrew the range fixed at the"
                     f" baseline{since}, ±{_decade_text(fixed.top)}")
        else:
            scope = f"colours fixed per layer at the baseline{since}: its peak + {HEADROOM} decades"
    elif kind == "difference":
        scope = "colours: this card's own range, its largest change rounded up to a decade"
    else:
        scope = "colours: this card's own range, its peak rounded up to a decade"
    if decades is None:
        # Exactly zero (or without finite values): the card says so in a note.
        return nsp.render.render_card_paletted(values, title=title, scale="layersymlog", cmap=CARD_CMAP, legend=legend)
    legend.append(f"signed log10 scale; |{_SYMBOL[kind]}| below {_decade_text(decades.bottom)} fades to white")
    legend.append(scope)
    return nsp.render.render_card_paletted(
        values, title=title, scale="layersymlog", cmap=CARD_CMAP, vrange=decades.vrange,
        threshold=decades.threshold, legend=legend,
    )
