"""Neural response maps: neurons laid out by how they co-vary, coloured by one input's response.

See :class:`NeuralResponseMap`.
"""

from nsp.response_map.core import NeuralResponseMap, spearman_vectors, to_rgb, tsne_layout

__all__ = ["NeuralResponseMap", "spearman_vectors", "to_rgb", "tsne_layout"]
