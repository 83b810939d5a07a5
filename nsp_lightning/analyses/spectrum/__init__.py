"""Spectra of activation patterns over training: the analysis, and ``SpectrumCallback``.

============================================  ================================================
:mod:`~.spectrum.analysis`                    ``SpectrumAnalysis``: compute, log, check records
:mod:`~.spectrum.records`                     ``SpectrumRecord`` and the record format
:mod:`~.spectrum.report`                      its sections of ``nsp-report``
:mod:`~.spectrum.cards`                       the TensorBoard cards: activations, spectrum, difference
:mod:`~.spectrum.drawing`                     what the TensorBoard cards and the report share
:mod:`~.spectrum.callback`                    ``SpectrumCallback`` (imports Lightning)
============================================  ================================================

``SpectrumCallback`` (:mod:`nsp_lightning.analyses.spectrum.callback`) imports Lightning and
is loaded on first use, so that reports can read spectrum records without it.
"""

from nsp_lightning.analyses.spectrum.analysis import SpectrumAnalysis

__all__ = ["SpectrumAnalysis"]
