"""nsp: neural-network signal processing.

Record the activation pattern of a probe input (:class:`Activations`), build the
neuron-level DAG (:class:`NNGraph`), and transform the pattern into its spectrum with
the exact causal (Möbius) Fourier transform or the graph-Laplacian one.
"""

from nsp import energy
from nsp.capture import Activations
from nsp.graph import NNGraph
from nsp.relations import StructureError
from nsp.structure import UnsupportedModuleError
from nsp.transforms.causal import CausalTransform

__all__ = [
    "Activations",
    "NNGraph",
    "CausalTransform",
    "StructureError",
    "UnsupportedModuleError",
    "energy",
]
__version__ = "0.1.0"
