"""nsp: neural-network signal processing.

Record the activation pattern of a probe input (:class:`Activations`), build the
neuron-level DAG (:class:`NNGraph`), and transform the pattern into its spectrum with
the exact causal (Möbius) Fourier transform or the graph-Laplacian one. Heatmaps come
from :mod:`nsp.viz` and :class:`Visualizer` (loaded on first use: they need matplotlib).
:class:`NeuralResponseMap` lays neurons out by correlation (loaded on first use).

One folder per tool, in the order data flows through them:

=====================  =============================================================
:mod:`nsp.graph`       capture the probe's dataflow, op rules, relations, ``NNGraph``
:mod:`nsp.transforms`  exact causal (Möbius) and Laplacian transforms, energies
:mod:`nsp.viz`         colour scales, heatmaps, cards, charts, the seed's ``Visualizer``
:mod:`nsp.response_map`  neurons laid out by correlation
:mod:`nsp.attribution`   attribution methods (captum) and their pictures
:mod:`nsp.optvis`      feature visualisation by optimisation
:mod:`nsp.regions`     local affine maps and exact linear regions
:mod:`nsp.io`          record files and ``OutputLoader``
:mod:`nsp.common`      plumbing every tool shares: op tracer, layer names, memory, progress
=====================  =============================================================
"""

from typing import Any

from nsp import compat

# Earlier module paths and the seed's module names, answered by the module at its new path.
MOVED_MODULES = {
    "nsp.activations": "nsp.graph.capture",
    "nsp.capture": "nsp.graph.capture",
    "nsp.conditioning": "nsp.transforms.conditioning",
    "nsp.energy": "nsp.transforms.energy",
    "nsp.memory": "nsp.common.memory",
    "nsp.nngraph": "nsp.graph.nngraph",
    "nsp.optvis.render": "nsp.optvis.optimize",
    "nsp.optvis.transform": "nsp.optvis.augment",
    "nsp.outputLoader": "nsp.io.outputloader",
    "nsp.outputloader": "nsp.io.outputloader",
    "nsp.patterns": "nsp.graph.sparse_products",
    "nsp.progress": "nsp.common.progress",
    "nsp.relations": "nsp.graph.relations",
    "nsp.render": "nsp.viz.render",
    "nsp.rules": "nsp.graph.rules",
    "nsp.storage": "nsp.io.storage",
    "nsp.structure": "nsp.graph.structure",
    "nsp.transformer": "nsp.transforms.transformer",
    "nsp.visualizer": "nsp.viz.visualizer",
}
compat.install(MOVED_MODULES)

from nsp.graph.capture import Activations  # noqa: E402
from nsp.graph.nngraph import NNGraph  # noqa: E402
from nsp.graph.relations import StructureError  # noqa: E402
from nsp.graph.structure import UnsupportedModuleError, fingerprint  # noqa: E402
from nsp.io.outputloader import OutputLoader  # noqa: E402
from nsp.regions import Plane, Regions, linear_regions  # noqa: E402
from nsp.regions.local_affine import LocalAffine, NotPiecewiseLinearError, local_affine, same_region  # noqa: E402
from nsp.transforms import energy  # noqa: E402
from nsp.transforms.causal import CausalTransform  # noqa: E402
from nsp.transforms.conditioning import rounding_sensitivity  # noqa: E402
from nsp.transforms.laplacian import LaplacianTransform  # noqa: E402
from nsp.transforms.laplacian_bands import LaplacianBands, LaplacianOperator  # noqa: E402
from nsp.transforms.transformer import Transformer  # noqa: E402

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
        from nsp.viz.visualizer import Visualizer

        return Visualizer
    if name == "NeuralResponseMap":
        from nsp.response_map import NeuralResponseMap

        return NeuralResponseMap
    if name == "render":
        import importlib

        return importlib.import_module("nsp.viz.render")
    raise AttributeError(f"module 'nsp' has no attribute {name!r}")
