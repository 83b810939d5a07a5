"""Attribution over training."""

from nsp_lightning.analyses.attribution.analysis import AttributionAnalysis

__all__ = ["AttributionAnalysis"]
