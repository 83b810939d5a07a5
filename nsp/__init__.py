"""nsp: neural-network signal processing.

Record the activation pattern of a probe input (:class:`Activations`), build the
neuron-level DAG (:class:`NNGraph`), and transform the pattern into its spectrum with
the exact causal (Möbius) Fourier transform or the graph-Laplacian one. Heatmaps come
from :mod:`nsp.render` and :class:`Visualizer` (loaded on first use: they need matplotlib).
:class:`NeuralResponseMap` lays neurons out by correlation (loaded on first use).
"""

from typing import Any

from nsp import energy
from nsp.capture import Activations
from nsp.conditioning import rounding_sensitivity
from nsp.graph import NNGraph
from nsp.local_affine import LocalAffine, NotPiecewiseLinearError, local_affine, same_region
from nsp.outputloader import OutputLoader
from nsp.regions import Plane, Regions, linear_regions
from nsp.relations import StructureError
from nsp.structure import UnsupportedModuleError, fingerprint
from nsp.transformer import Transformer
from nsp.transforms.causal import CausalTransform
from nsp.transforms.laplacian import LaplacianTransform
from nsp.transforms.laplacian_bands import LaplacianBands, LaplacianOperator

__all__ = [
    "Activations",
    "NNGraph",
    "Transformer",
    "Visualizer",
    "OutputLoader",
    "CausalTransform",
    "LaplacianTransform",
    "LaplacianBands",
    "LaplacianOperator",
    "NeuralResponseMap",
    "StructureError",
    "UnsupportedModuleError",
    "energy",
    "fingerprint",
    "local_affine",
    "LocalAffine",
    "NotPiecewiseLinearError",
    "same_region",
    "linear_regions",
    "Plane",
    "Regions",
    "render",
    "rounding_sensitivity",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # matplotlib is imported only by the rendering modules, and only when they are used.
    if name == "Visualizer":
        from nsp.visualizer import Visualizer

        return Visualizer
    if name == "NeuralResponseMap":
        from nsp.response_map import NeuralResponseMap

        return NeuralResponseMap
    if name == "render":
        import importlib

        return importlib.import_module("nsp.render")
    raise AttributeError(f"module 'nsp' has no attribute {name!r}")
