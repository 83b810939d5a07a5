"""0/1 relations between the index spaces of two layers, as unions of Kronecker products.

With INCL=True the dependence of a neuron on an earlier layer is a product set,
(channel set) × (row set) × (column set), for convolutions of any stride, padding,
dilation and groups, pooling, Linear, flatten and elementwise layers; a union of products
over product-shaped parent sets is again a product. A :class:`Term` stores such
a relation as small per-axis 0/1 factors whose Kronecker product is the full relation,
so composing relations layer by layer never forms the large matrix.

A term's factor ``i`` maps an *out* axis of size ``p_i`` to an *in* axis of size ``q_i``.
The out sizes are a mixed-radix (row-major) factorisation of the output's flat index,
and the in sizes one of the input's; sizes of 1 are allowed on either side. A
:class:`Relation` is a union of terms (a residual block gives main path ∪ skip path).

==================================  ==========================================================
:mod:`nsp.graph.relations.boolean`  0/1 factors: shared all-ones and identities, splits, boolean products
:mod:`nsp.graph.relations.term`     ``Term``: one Kronecker product, re-factorised and composed
:mod:`nsp.graph.relations.union`    ``Relation``: unions of terms, pruned and cut into disjoint pieces
:mod:`nsp.graph.relations.reorder`  terms with relabelled axes: permutations of axes, cut into plain terms
==================================  ==========================================================
"""

from nsp.graph.relations.boolean import distinct_rows, eye_factor, is_vector, ones_factor
from nsp.graph.relations.term import (
    MAX_FACTOR_ENTRIES, StructureError, Term, Unaligned, coarsening, ordered_term, pair_vectors, refinement,
)
from nsp.graph.relations.union import Relation

__all__ = [
    "StructureError", "Term", "Relation", "MAX_FACTOR_ENTRIES", "refinement", "coarsening", "ones_factor",
    "eye_factor", "distinct_rows", "is_vector", "pair_vectors", "Unaligned", "ordered_term",
]
