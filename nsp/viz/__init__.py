"""Pictures: heatmaps, cards and charts of patterns and spectra, and the one colour table.

==========================  ================================================================
:mod:`nsp.viz.render`       the public drawing functions (``nsp.render``), gathered from:
:mod:`nsp.viz.heatmaps`     layers as grids of tiles, labelled patterns, side by side
:mod:`nsp.viz.cards`        one layer with title, colour bar, legend and notes
:mod:`nsp.viz.charts`       spectral energy charts (matplotlib figures) and their pixels
:mod:`nsp.viz.scales`       colour scales: linear and signed-log ranges
:mod:`nsp.viz.colors`       the one colour table: colormaps by name, lookup tables, palettes
:mod:`nsp.viz.text`         text drawn into RGB arrays (Pillow), stacking of labelled parts
:mod:`nsp.viz.values`       argument checks, arrays and tensors to float64
:mod:`nsp.viz.visualizer`   the seed's ``Visualizer``: PDF and PNG pages of heatmaps
==========================  ================================================================
"""
