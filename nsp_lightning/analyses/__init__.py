"""The probe analyses that ship with nsp_lightning, one module each.

=========================================  ==========================================
:class:`SpectrumAnalysis`                  exact spectra of activation patterns
                                           (``nsp_lightning.analyses.spectrum``)
:class:`AttributionAnalysis`               attributions, their overlays and sanity
                                           (``nsp_lightning.analyses.attribution.analysis``)
:class:`ResponseMapAnalysis`               neural response maps on one neuron layout
                                           (``nsp_lightning.analyses.response_map.analysis``)
:class:`LinearRegionsAnalysis`             exact linear regions on a plane per probe
                                           (``nsp_lightning.analyses.linear_regions.analysis``)
:class:`FeatureVisAnalysis`                channel and class visualisations per record
                                           (``nsp_lightning.analyses.feature_vis.analysis``)
=========================================  ==========================================

Run them with :class:`~nsp_lightning.ProbeCallback`; write your own by subclassing
:class:`~nsp_lightning.ProbeAnalysis`.
"""

from nsp_lightning.analyses.attribution.analysis import AttributionAnalysis
from nsp_lightning.analyses.feature_vis.analysis import FeatureVisAnalysis
from nsp_lightning.analyses.linear_regions.analysis import LinearRegionsAnalysis
from nsp_lightning.analyses.response_map.analysis import ResponseMapAnalysis
from nsp_lightning.analyses.spectrum.analysis import SpectrumAnalysis

__all__ = ["AttributionAnalysis", "FeatureVisAnalysis", "LinearRegionsAnalysis", "ResponseMapAnalysis", "SpectrumAnalysis"]
