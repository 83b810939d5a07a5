"""Operation rules: how each module or function maps input positions to output positions.

One :class:`Rule` per operation, kept in one registry (in the style of fvcore's op
handles). A rule gives, for one recorded call:

- its structural relation (``INCL=True``): per input, a :class:`~nsp.graph.relations.Term` (a
  Kronecker product of per-axis 0/1 factors) or a :class:`~nsp.graph.relations.Relation`
  between the output's and that input's positions (batch dimension excluded);
- its Jacobian pattern (``INCL=False``): per input, the nonzero pattern of the
  Jacobian at the values of the recorded pass, as a scipy CSR boolean matrix. By default
  it is measured with autograd inside the structural relation (:func:`jacobian_patterns`);
- its fingerprint contribution: what that pattern depends on (a weight's zero mask, the
  argmax of a pooling window), hashed by :func:`nsp.fingerprint`.

Modules with a rule are recorded whole (their internals are not looked at); other
modules are seen through, op by op. A user registers a rule for their own module or
function with :func:`register_rule` (see its example and README "Supported operations"),
removes one with :func:`unregister_rule`, and replaces rules within a block with
:func:`using`. As in ``torch.utils.flop_counter``, a rule is never replaced silently.

=======================================  ====================================================
:mod:`nsp.graph.rules.call`              ``Call`` (one recorded call) and ``UnsupportedModuleError``
:mod:`nsp.graph.rules.jacobian`          Jacobian patterns measured by autograd
:mod:`nsp.graph.rules.registry`          ``Rule``, ``StructuralRule``, the registry, ``using``
:mod:`nsp.graph.rules.factors`           per-axis factors shared by the families
:mod:`nsp.graph.rules.leaf`              ``LeafRule``: module rules that prune their structure
:mod:`nsp.graph.rules.elementwise`       activations, dropout, batch norm, broadcasting arithmetic
:mod:`nsp.graph.rules.linear`            linear layers, convolutions, ``matmul``, ``einsum``
:mod:`nsp.graph.rules.pooling`           pools and nearest upsampling
:mod:`nsp.graph.rules.shapes`            reshapes, indexing, concatenation, stacking
:mod:`nsp.graph.rules.reductions`        reductions, softmax, cumulative sums, normalisation
:mod:`nsp.graph.rules.attention`         attention, recurrent layers, embeddings
=======================================  ====================================================
"""

from nsp.graph.relations import Relation, StructureError, Term, eye_factor, ones_factor
from nsp.graph.rules.attention import (
    AttentionRule, EmbeddingRule, MultiheadAttentionRule, RecurrentRule, ShiftedWindowAttentionRule,
)
from nsp.graph.rules.call import Call, UnsupportedModuleError, unsupported
from nsp.graph.rules.elementwise import (
    ELEMENTWISE_MODULES, BatchNormRule, BinaryRule, DetachRule, ElementwiseFunctionRule, ElementwiseModuleRule,
    PassthroughRule,
)
from nsp.graph.rules.factors import (
    adaptive_factor, broadcast_term, channel_groups, conv_padding, eye, union_of_terms, window_factor,
)
from nsp.graph.rules.jacobian import diagonal_csr, elementwise_mask, jacobian_patterns, relation_csr, term_csr
from nsp.graph.rules.leaf import LeafRule, along, broadcast_keep, output_positions
from nsp.graph.rules.linear import MAX_DENSE_EINSUM, ConvRule, EinsumRule, LinearFunctionRule, LinearRule, MatmulRule
from nsp.graph.rules.pooling import AdaptivePoolRule, FunctionalPoolRule, PoolRule, UpsampleRule
from nsp.graph.rules.reductions import AxisRule, NormRule, ReductionRule
from nsp.graph.rules.registry import (
    RULES, Rule, StructuralRule, is_leaf_module, register_rule, rule_for_function, rule_for_module, supported,
    unregister_rule, using,
)
from nsp.graph.rules.shapes import ConcatRule, IndexRule, ReshapeRule, StackRule

__all__ = [
    "Call", "Rule", "StructuralRule", "UnsupportedModuleError", "RULES", "register_rule", "unregister_rule", "using",
    "rule_for_module", "rule_for_function", "is_leaf_module", "supported", "unsupported", "jacobian_patterns",
    "elementwise_mask", "term_csr", "relation_csr", "diagonal_csr", "Term", "Relation", "StructureError",
    "eye_factor", "ones_factor", "eye", "window_factor", "adaptive_factor", "conv_padding", "channel_groups",
    "broadcast_term", "union_of_terms", "LeafRule", "along", "broadcast_keep", "output_positions",
    "ELEMENTWISE_MODULES", "ElementwiseModuleRule", "PassthroughRule", "BatchNormRule", "ElementwiseFunctionRule",
    "DetachRule", "BinaryRule", "LinearRule", "ConvRule", "LinearFunctionRule", "MatmulRule", "EinsumRule",
    "MAX_DENSE_EINSUM", "PoolRule", "AdaptivePoolRule", "UpsampleRule", "FunctionalPoolRule", "ReshapeRule",
    "ConcatRule", "StackRule", "IndexRule", "ReductionRule", "AxisRule", "NormRule", "AttentionRule",
    "MultiheadAttentionRule", "RecurrentRule", "ShiftedWindowAttentionRule", "EmbeddingRule",
]
