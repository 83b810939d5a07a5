"""The rule registry: what a rule is, and which rule each module type and function has.

A :class:`Rule` gives, for one recorded :class:`~nsp.graph.rules.call.Call`, its structural
relation, its Jacobian pattern and its fingerprint; :func:`register_rule` files it under a
module type or a function, and the interpreter (:mod:`nsp.graph.structure`) looks it up
with :func:`rule_for_module` and :func:`rule_for_function`.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import scipy.sparse as sp
from torch import nn

from nsp.graph.relations import Relation, Term
from nsp.graph.rules.call import Call
from nsp.graph.rules.jacobian import jacobian_patterns, relation_csr

__all__ = ["Rule", "StructuralRule", "register_rule", "rule_for_module", "rule_for_function", "supported"]


class Rule:
    """How one operation maps input positions to output positions (see the module docstring).

    Subclasses implement :meth:`relations`; :meth:`patterns` and :meth:`fingerprint`
    have exact defaults built on it.

    Attributes
    ----------
    aligned : bool
        True when every relation, for an input of the output's rank, has one factor per
        axis that maps input axis ``i`` to output axis ``i`` (elementwise functions,
        normalisation over an axis, ``F.linear``...). Such a rule applies to a tensor
        whose axes were permuted without undoing the permutation first.
    """

    aligned = False

    def relations(self, call: Call) -> list[Term | Relation | None]:
        """Per input, the structural relation (output positions × input positions), or None."""
        raise NotImplementedError

    def patterns(self, call: Call) -> list[sp.csr_matrix | None]:
        """Per input, the Jacobian's nonzero pattern at the recorded values (``call.values``)."""
        return jacobian_patterns(call, self.relations(call))

    def fingerprint(self, call: Call) -> np.ndarray | None:
        """What the Jacobian pattern depends on beyond the shapes (None: nothing)."""
        parts = [np.concatenate([p.indptr, p.indices]) for p in self.patterns(call) if p is not None]
        return np.concatenate(parts) if parts else None

    def check(self, call: Call, incl: bool) -> None:
        """Raise :class:`UnsupportedModuleError` where the call's mode makes the rule wrong."""


class StructuralRule(Rule):
    """A rule whose Jacobian pattern is its structure whatever the values (sums, copies, reshapes)."""

    def patterns(self, call: Call) -> list[sp.csr_matrix | None]:
        return [None if r is None else relation_csr(r) for r in self.relations(call)]

    def fingerprint(self, call: Call) -> np.ndarray | None:
        return None


# -- the registry ------------------------------------------------------------------------
_MODULE_RULES: dict[type, Rule] = {}
_FUNCTION_RULES: dict[str, Rule] = {}
# Rules for modules of other libraries, by qualified class name, so nsp needs not import them.
_NAMED_MODULE_RULES: dict[str, Rule] = {}


def register_rule(target: type[nn.Module] | str | Callable | Iterable, rule: Rule) -> None:
    """Register ``rule`` for a module type or a function.

    Parameters
    ----------
    target : type, str, callable or iterable of these
        A subclass of ``nn.Module`` (its instances, and those of its subclasses without a
        rule of their own, are then recorded whole), a function or tensor method, or its
        name (``'relu'`` covers ``torch.relu``, ``F.relu`` and ``Tensor.relu``). A dotted
        name is a module class of another library by its qualified name
        (``'torchvision.models.swin_transformer.ShiftedWindowAttention'``), so nsp needs not
        import that library.
    rule : Rule

    Raises
    ------
    TypeError
        If ``rule`` is not a :class:`Rule` or ``target`` is none of the above.

    Examples
    --------
    >>> class Double(Rule):
    ...     aligned = True
    ...     def relations(self, call):
    ...         return [Term.identity(call.in_shape())]
    >>> register_rule("my_double", Double())
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"nsp.rules.register_rule: expected a Rule, got {type(rule).__name__}")
    if isinstance(target, (list, tuple, set, frozenset)):
        for t in target:
            register_rule(t, rule)
    elif isinstance(target, type) and issubclass(target, nn.Module):
        _MODULE_RULES[target] = rule
    elif isinstance(target, str) and "." in target:
        _NAMED_MODULE_RULES[target] = rule
    elif isinstance(target, str):
        _FUNCTION_RULES[target] = rule
    elif callable(target) and hasattr(target, "__name__"):
        _FUNCTION_RULES[target.__name__] = rule
    else:
        raise TypeError(
            "nsp.rules.register_rule: `target` must be an nn.Module subclass, a function or its name, "
            f"got {target!r}"
        )


def rule_for_module(m: nn.Module) -> Rule | None:
    """The rule of ``m``'s most specific type that has one, or None."""
    for cls in type(m).__mro__:
        rule = _MODULE_RULES.get(cls) or _NAMED_MODULE_RULES.get(f"{cls.__module__}.{cls.__qualname__}")
        if rule is not None:
            # A subclass with its own forward (torchvision's LayerNorm2d) is another
            # operation: it is seen through, op by op, unless it has a rule of its own.
            return rule if type(m).forward is cls.forward else None
    return None


def rule_for_function(name: str) -> Rule | None:
    """The rule of the function or tensor method called ``name``, or None."""
    return _FUNCTION_RULES.get(name)


def supported() -> str:
    """A one-line list of what has a rule (for error messages)."""
    modules = sorted({t.__name__ for t in _MODULE_RULES} | {n.rsplit(".", 1)[-1] for n in _NAMED_MODULE_RULES})
    return f"modules {', '.join(modules)}; functions {', '.join(sorted(_FUNCTION_RULES))}"
