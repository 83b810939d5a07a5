"""The rule registry: what a rule is, and which rule each module type and function has.

A :class:`Rule` gives, for one recorded :class:`~nsp.graph.rules.call.Call`, its structural
relation, its Jacobian pattern and its fingerprint; :func:`register_rule` files it under a
module class or a function (the op object, or its name), and the interpreter
(:mod:`nsp.graph.structure`) looks it up with :func:`rule_for_module` and
:func:`rule_for_function`. As in ``torch.utils.flop_counter``, registering refuses to
replace a rule unless told to; :func:`unregister_rule` removes one, and :func:`using`
replaces rules for the length of a ``with`` block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Mapping
from typing import Any, Callable, Iterable

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from nsp.common.registry import Registry
from nsp.graph.relations import Relation, Term
from nsp.graph.rules.call import Call
from nsp.graph.rules.jacobian import (
    colour_count, jacobian_patterns, jacobian_reached_rows, jacobian_relations, relation_csr,
)

__all__ = [
    "RULES", "Rule", "StructuralRule", "register_rule", "unregister_rule", "using", "rule_for_module",
    "rule_for_function", "is_leaf_module", "supported",
]


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

    def measured(self, call: Call) -> list[Term | sp.csr_matrix | None]:
        """Per input, :meth:`patterns`, or the structural product itself where the Jacobian is
        nonzero on all of it (``INCL=False`` then composes it without listing its pairs).

        A subclass that measures its own :meth:`patterns` keeps them.
        """
        if type(self).patterns is not Rule.patterns:
            return self.patterns(call)
        return jacobian_relations(call, self.relations(call))

    def reached_rows(self, call: Call, sources: list[np.ndarray | None]) -> np.ndarray | None:
        """Which output positions have a Jacobian nonzero at the input positions ``sources``
        (see :func:`~nsp.graph.rules.jacobian.jacobian_reached_rows`); None where the
        rule measures its own :meth:`patterns`, which are then composed in full."""
        if type(self).patterns is not Rule.patterns:
            return None
        return jacobian_reached_rows(call, self.relations(call), sources)

    def autograd_passes(self, call: Call) -> int | None:
        """The backward passes that measuring :meth:`patterns` takes; None where the rule measures its own."""
        if type(self).patterns is not Rule.patterns:
            return None
        return colour_count(self.relations(call))

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
def _key(target: Any, where: str) -> Hashable:
    """The registry key of a module class, a function or tensor method, or a name; ``where`` names the caller."""
    if isinstance(target, str) and target:
        return target
    if isinstance(target, type) and issubclass(target, nn.Module):
        return target
    if callable(target) and not isinstance(target, type) and hasattr(target, "__name__"):
        return target
    raise TypeError(f"{where}: `target` must be an nn.Module subclass, a function or its name, got {target!r}")


def _identity(key: Hashable) -> tuple[str, str]:
    """What a key names: a module class by its qualified name, a function by its ``__name__``."""
    if isinstance(key, type):
        return "module", f"{key.__module__}.{key.__qualname__}"
    if isinstance(key, str):
        return ("module", key) if "." in key else ("function", key)
    return "function", key.__name__


def _describe(key: Hashable) -> str:
    """A key as messages name it: ``'relu'``, ``torch.relu``, ``torch.Tensor.relu``, ``torch.nn.modules.conv.Conv2d``."""
    if isinstance(key, str):
        return repr(key)
    if isinstance(key, type):
        return f"{key.__module__}.{key.__qualname__}"
    owner = getattr(key, "__objclass__", None)
    if isinstance(owner, type):
        # A tensor method's owner is torch.Tensor's C base class.
        where = "torch.Tensor" if issubclass(torch.Tensor, owner) else owner.__qualname__
        return f"{where}.{key.__name__}"
    module = getattr(key, "__module__", None)
    return f"{module}.{key.__name__}" if module else key.__name__


def _check(key: Hashable, rule: Any, where: str) -> None:
    if not isinstance(rule, Rule):
        raise TypeError(f"{where}: expected a Rule, got {type(rule).__name__}")


#: Every rule, by module class, qualified class name, function or tensor method, or function name.
RULES: Registry[Rule] = Registry("nsp.rules", "rule", "using", _check, _identity, _describe)


def _keys(target: Any, where: str) -> list[Hashable]:
    if isinstance(target, (list, tuple, set, frozenset)):
        return [k for t in target for k in _keys(t, where)]
    return [_key(target, where)]


def register_rule(target: type[nn.Module] | str | Callable | Iterable, rule: Rule, *, override: bool = False) -> None:
    """Register ``rule`` for a module class or a function.

    Parameters
    ----------
    target : type, callable, str or iterable of these
        The op: a subclass of ``nn.Module`` (its instances, and those of its subclasses
        without a rule of their own, are then recorded whole), or a function or tensor
        method (``torch.special.erf``, ``F.relu``, ``torch.Tensor.relu``). A function's rule
        also serves the functions and methods of its name that have none of their own. A
        name stands for every function and method of that name (``'relu'`` covers
        ``torch.relu``, ``F.relu`` and ``Tensor.relu``), and a dotted name for a module class
        of another library by its qualified name
        (``'torchvision.models.swin_transformer.ShiftedWindowAttention'``), so nsp needs
        not import that library.
    rule : Rule
    override : bool, default False
        Replace an existing rule for ``target``. An op registered by object then has its
        own rule, and the other ops of its name keep theirs.

    Raises
    ------
    ValueError
        If ``target``, or a name or object for the same op, already has a rule and
        ``override`` is false (the message names both). Nothing is registered then.
    TypeError
        If ``rule`` is not a :class:`Rule` or ``target`` is none of the above.

    See Also
    --------
    unregister_rule, using

    Examples
    --------
    >>> class Double(Rule):
    ...     aligned = True
    ...     def relations(self, call):
    ...         return [Term.identity(call.in_shape())]
    >>> register_rule("my_double", Double())
    >>> register_rule("my_double", Double())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: nsp.rules.register_rule: 'my_double' already has a rule (Double); pass override=True ...
    >>> unregister_rule("my_double")
    """
    keys = _keys(target, "nsp.rules.register_rule")
    _check(target, rule, "nsp.rules.register_rule")
    if not override:
        # All or nothing: a list that clashes anywhere registers none of its ops.
        for key in keys:
            if RULES.same(key):
                RULES.register(key, rule)
    for key in keys:
        RULES.register(key, rule, override=True)


def unregister_rule(target: type[nn.Module] | str | Callable | Iterable) -> None:
    """Remove the rule registered for ``target`` (each of them, for an iterable).

    Raises
    ------
    KeyError
        If ``target`` has no rule of its own: none at all, or only through its name (the
        message names the key to unregister). Nothing is removed then.
    """
    keys = _keys(target, "nsp.rules.unregister_rule")
    for key in keys:
        if key not in RULES:
            RULES.unregister(key)
    for key in keys:
        RULES.unregister(key)


def using(overrides: Mapping[type[nn.Module] | str | Callable, Rule]) -> contextlib.AbstractContextManager[None]:
    """A block in which ``overrides`` (``{op: rule}``) replace or add rules.

    On leaving the block, also by an exception, the registry is exactly as it was before
    it, rules registered inside the block included.

    Examples
    --------
    >>> class Double(Rule):
    ...     aligned = True
    ...     def relations(self, call):
    ...         return [Term.identity(call.in_shape())]
    >>> with using({torch.special.erf: Double()}):
    ...     type(rule_for_function(torch.special.erf)).__name__
    'Double'
    >>> rule_for_function(torch.special.erf) is None
    True
    """
    if not isinstance(overrides, Mapping):
        raise TypeError(f"nsp.rules.using: expected a mapping of ops to rules, got {type(overrides).__name__}")
    return RULES.using({_key(op, "nsp.rules.using"): rule for op, rule in overrides.items()})


def rule_for_module(m: nn.Module) -> Rule | None:
    """The rule of ``m``'s most specific type that has one, or None."""
    for cls in type(m).__mro__:
        rule = RULES.get(cls) or RULES.get(f"{cls.__module__}.{cls.__qualname__}")
        if rule is not None:
            # A subclass with its own forward (torchvision's LayerNorm2d) is another
            # operation: it is seen through, op by op, unless it has a rule of its own.
            return rule if type(m).forward is cls.forward else None
    return None


def is_leaf_module(m: nn.Module) -> bool:
    """Whether ``m`` has a rule, so it is recorded whole rather than op by op."""
    return rule_for_module(m) is not None


def rule_for_function(op: str | Callable) -> Rule | None:
    """The rule of a function or tensor method, or of the functions called ``op``; None if it has none.

    A function's own rule comes first, then the rule of its name, then that of another
    function of its name registered by object (the first registered).
    """
    name = op if isinstance(op, str) else getattr(op, "__name__", None)
    if not isinstance(name, str) or "." in name:
        return None  # a dotted name is a module class
    rule = None
    if not isinstance(op, str):
        try:
            rule = RULES.get(op)
        except TypeError:  # an unhashable callable has no rule of its own
            pass
    if rule is None:
        rule = RULES.get(name)
    if rule is None:
        rule = next((RULES[k] for k in RULES.same(name)), None)
    return rule


def supported() -> str:
    """A one-line list of what has a rule (for error messages)."""
    modules = sorted({_identity(k)[1].rsplit(".", 1)[-1] for k in RULES if _identity(k)[0] == "module"})
    functions = sorted({_identity(k)[1] for k in RULES if _identity(k)[0] == "function"})
    return f"modules {', '.join(modules)}; functions {', '.join(functions)}"
