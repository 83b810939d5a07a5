"""Local affine maps and exact linear regions of piecewise-linear networks.

=================================  ==========================================================
:mod:`nsp.regions.local_affine`    the affine map a network computes around one input, and
                                   the activation pattern that names its region
:mod:`nsp.regions.partition`       exact linear regions on a plane, and their pictures
=================================  ==========================================================
"""

from nsp.regions.partition import Plane, Regions, linear_regions, pattern_colors, plot_regions, regions_rgb

__all__ = ["Plane", "Regions", "linear_regions", "pattern_colors", "plot_regions", "regions_rgb"]
