"""Heatmaps of activation patterns and spectra as RGB arrays, cards and energy charts.

This is the public module ``nsp.render``; it gathers the drawing functions of `nsp.viz`:

=====================  ================================================================
`render_layer`         one layer as a grid of tiles (`nsp.viz.heatmaps`)
`render_pattern`       every layer of a pattern, labelled, one below the other
`render_side_by_side`  activations and their spectrum, layer by layer
`render_card`          one layer with title, colour bar, legend and notes (`nsp.viz.cards`)
`render_card_paletted` the same card in at most 256 colours, to encode as a palette PNG
`energy_bars`          log10 spectral energy per layer (`nsp.viz.charts`)
`energy_over_epochs`   log10 spectral energy of every layer across epochs
`figure_to_rgb`        a matplotlib figure's pixels
`signed_log10`         the signed-log transform of the ``symlog`` scales (`nsp.viz.scales`)
`SCALES`               the names of the colour scales
=====================  ================================================================

A layer becomes an image in three vectorised steps: values are normalised by a colour
scale, the normalised values index a colormap's lookup table (`nsp.viz.colors`), and the
channels are laid out as a grid of tiles with thin separators. Nothing here creates a
matplotlib figure except the energy plots, which are real charts and return
``(Figure, Axes)``.

Colour scales
-------------
``scale`` chooses the range of the colormap and whether values are log-compressed:

=================  ==========================================================
``'layerscale'``   linear; min to max of each layer
``'layernorm'``    linear; ``[-m, m]`` with ``m`` the largest ``|x|`` of each layer,
                   so 0 is the colormap's centre
``'globalscale'``  as ``'layerscale'``, with one range over the whole pattern
``'globalnorm'``   as ``'layernorm'``, with one ``m`` over the whole pattern
``'layersymlog'``  signed log, ``sign(x) * log10(1 + |x| / t)``; ``[-f(m), f(m)]`` per layer
``'globalsymlog'`` signed log with one threshold and one ``m`` over the pattern
=================  ==========================================================

Unless given, ``t`` is the smallest nonzero ``|x|`` of the layer (or pattern), so the
colormap spans exactly the decades the data hold (`nsp.viz.scales` says more). Only
finite values set a range; values outside it take the colormap's end colours.

Flags and layout
----------------
NaN, infinities and single-valued layers are drawn as two-colour hatches, and an empty
layer as a small cross-hatched tile; a 3-D or higher layer ``(C, ..., H, W)`` is a grid
of ``H x W`` tiles in row-major order (`nsp.viz.heatmaps` says more).
"""

from __future__ import annotations

from nsp.viz.cards import render_card, render_card_paletted
from nsp.viz.charts import energy_bars, energy_over_epochs, figure_to_rgb
from nsp.viz.heatmaps import render_layer, render_pattern, render_side_by_side
from nsp.viz.scales import SCALES, signed_log10

__all__ = [
    "SCALES",
    "signed_log10",
    "render_layer",
    "render_pattern",
    "render_side_by_side",
    "render_card",
    "render_card_paletted",
    "energy_bars",
    "energy_over_epochs",
    "figure_to_rgb",
]
