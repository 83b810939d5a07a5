"""Neural response maps: neurons laid out by how they co-vary, coloured by one input's response.

See :class:`NeuralResponseMap`. The steps, one module each:

==========================================  ====================================================
:mod:`nsp.response_map.responses`           the chosen layers' outputs as neurons; Spearman,
                                            Pearson or cosine unit vectors
:mod:`nsp.response_map.layout`              the t-SNE layout, circle projection, the map's grid
:mod:`nsp.response_map.drawing`             a map as RGB pixels, a labelled card with its
                                            layer regions, or a matplotlib figure
:mod:`nsp.response_map.neural_response_map` :class:`NeuralResponseMap`, the seed's class
==========================================  ====================================================
"""

from nsp.response_map.drawing import layer_regions, map_card, to_rgb
from nsp.response_map.layout import tsne_layout
from nsp.response_map.neural_response_map import NeuralResponseMap
from nsp.response_map.responses import metric_vectors, spearman_vectors

__all__ = [
    "NeuralResponseMap", "layer_regions", "map_card", "metric_vectors", "spearman_vectors", "to_rgb", "tsne_layout",
]
