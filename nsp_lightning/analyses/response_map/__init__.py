"""Neural response maps over training."""

from nsp_lightning.analyses.response_map.analysis import ResponseMapAnalysis

__all__ = ["ResponseMapAnalysis"]
