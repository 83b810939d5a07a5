"""Spectra of activation patterns over training: the analysis, and ``SpectrumCallback``.

``SpectrumCallback`` (:mod:`nsp_lightning.analyses.spectrum.callback`) imports Lightning and
is loaded on first use, so that reports can read spectrum records without it.
"""

from nsp_lightning.analyses.spectrum.analysis import SpectrumAnalysis

__all__ = ["SpectrumAnalysis"]
