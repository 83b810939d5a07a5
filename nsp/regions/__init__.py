"""Local affine maps and exact linear regions of piecewise-linear networks.

=================================  ==========================================================
:mod:`nsp.regions.local_affine`    the affine map a network computes around one input, and
                                   the activation pattern that names its region
:mod:`nsp.regions.plane`           the 2-D slice of input space, and its bounded box
:mod:`nsp.regions.partition`       exact linear regions on a plane (:func:`linear_regions`)
:mod:`nsp.regions.line`            exact linear pieces along a segment (:func:`linear_pieces`)
:mod:`nsp.regions.estimate`        the count and memory of a partition, estimated beforehand
:mod:`nsp.regions.mesh`            convex polygons over shared vertices, and their cuts
:mod:`nsp.regions.replay`          the network run on plane points up to a nonlinearity
:mod:`nsp.regions.result`          :class:`Regions`, the partition and what it answers
:mod:`nsp.regions.decision`        the class decision boundary on a plane, exactly
:mod:`nsp.regions.regioncam`       the regioncam backend
:mod:`nsp.regions.plot`            pictures of a partition
:mod:`nsp.regions.svg`             the picture as SVG, every region a vector path
=================================  ==========================================================
"""

from nsp.regions.decision import DecisionBoundary, decision_boundary
from nsp.regions.estimate import RegionEstimate, estimate_regions
from nsp.regions.line import Pieces, Segment, linear_pieces
from nsp.regions.partition import RegionBudgetError, linear_regions
from nsp.regions.plane import Plane
from nsp.regions.plot import plot_regions, regions_picture, regions_rgb
from nsp.regions.result import Regions, pattern_colors
from nsp.regions.svg import regions_svg

__all__ = ["DecisionBoundary", "Pieces", "Plane", "RegionBudgetError", "RegionEstimate", "Regions", "Segment",
           "decision_boundary", "estimate_regions", "linear_pieces", "linear_regions", "pattern_colors", "plot_regions",
           "regions_picture", "regions_rgb", "regions_svg"]
