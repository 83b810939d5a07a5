"""From a model and a probe to the neuron DAG: the first stop of the data's path.

=================================  ===========================================================
:mod:`nsp.graph.capture`           ``Activations``: run the probe, record each layer and the
                                   dataflow between layers
:mod:`nsp.graph.dataflow`          the recorder of that dataflow (``Op``, ``Program``, ``Ref``)
:mod:`nsp.graph.rules`             one rule per op: its relation, Jacobian pattern, fingerprint
:mod:`nsp.graph.relations`         Kronecker-product relations between layers and their algebra
:mod:`nsp.graph.permutations`      axis permutations kept aside, and undone where an op needs them
:mod:`nsp.graph.sparse_products`   boolean sparse products of Jacobian patterns (INCL=False)
:mod:`nsp.graph.structure`         the interpreter: rules composed along the recorded dataflow
:mod:`nsp.graph.nngraph`           ``NNGraph``, the neuron DAG (a ``networkx.DiGraph``)
=================================  ===========================================================
"""

from nsp.graph.capture import Activations
from nsp.graph.nngraph import NNGraph
from nsp.graph.relations import StructureError
from nsp.graph.structure import UnsupportedModuleError, fingerprint

__all__ = ["Activations", "NNGraph", "StructureError", "UnsupportedModuleError", "fingerprint"]
