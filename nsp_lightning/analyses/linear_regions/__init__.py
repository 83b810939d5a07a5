"""Linear regions over training."""

from nsp_lightning.analyses.linear_regions.analysis import LinearRegionsAnalysis

__all__ = ["LinearRegionsAnalysis"]
