"""Feature visualisation over training."""

from nsp_lightning.analyses.feature_vis.analysis import FeatureVisAnalysis, feature_grid

__all__ = ["FeatureVisAnalysis", "feature_grid"]
