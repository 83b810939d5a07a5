"""Pictures: the only part of nsp that draws (matplotlib is imported here and nowhere else).

========================  ====================================================================
:mod:`nsp.viz.render`     colour scales, heatmaps, cards and charts as RGB arrays
:mod:`nsp.viz.visualizer`  the seed's ``Visualizer``: PDF and PNG pages of heatmaps
========================  ====================================================================
"""
