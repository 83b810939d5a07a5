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
function with :func:`register_rule` (see its example and README "Supported operations").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from nsp.graph.relations import Relation, StructureError, Term, eye_factor, ones_factor

__all__ = [
    "Call", "Rule", "StructuralRule", "UnsupportedModuleError", "register_rule", "rule_for_module",
    "rule_for_function", "jacobian_patterns", "Term", "Relation", "ELEMENTWISE_MODULES",
]

ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.SiLU, nn.Mish,
    nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.Threshold,
    nn.LogSigmoid,
)

# Structural pairs generated at a time when a leaf's Jacobian pattern is built.
_EDGE_CHUNK = 1 << 22
# Entries of the per-colour gradients kept at once when a pattern is measured by autograd.
_GRADIENT_ENTRIES = 1 << 24


class UnsupportedModuleError(StructureError):
    """A module or operation whose input-to-output dependence nsp cannot derive."""


def supported() -> str:
    """A one-line list of what has a rule (for error messages)."""
    modules = sorted({t.__name__ for t in _MODULE_RULES} | {n.rsplit(".", 1)[-1] for n in _NAMED_MODULE_RULES})
    return f"modules {', '.join(modules)}; functions {', '.join(sorted(_FUNCTION_RULES))}"


def unsupported(path: str, what: str, why: str = "") -> UnsupportedModuleError:
    reason = f": {why}" if why else ""
    return UnsupportedModuleError(
        f"nsp.NNGraph: cannot analyse '{path}' ({what}){reason}. "
        "Register a rule with nsp.rules.register_rule, or see README 'Supported operations'."
    )


@dataclass
class Call:
    """One recorded call of a module or function, as a rule sees it.

    Attributes
    ----------
    target : nn.Module or callable
        The module (for a module rule) or the function or tensor method.
    args, kwargs
        The call's arguments. Tensors derived from the network's input are the values
        they had in the recorded pass (``INCL=False``), or tensors on the ``meta`` device
        with their shape (``INCL=True``); every other argument is as it was.
    inputs : list of torch.Tensor
        The tensors derived from the network's input, each once, in order of first
        appearance. A rule returns one relation per input, in this order.
    output : torch.Tensor
        The output this call is about (with several outputs: number ``item``), a value or
        a meta tensor as for the inputs. Shapes include the batch dimension of 1; relations
        leave it out.
    item : int
        Which of several tensor outputs (0 for the first or only one).
    path, name : str
        The module path and the operation's name (a function's ``__name__``, a module's class).
    label : str
        How messages name the call (``'mul in SqueezeExcitation'``).
    values : bool
        Whether ``args``/``inputs``/``output`` hold the recorded values (``INCL=False``).
    """

    target: Any
    args: tuple
    kwargs: dict
    inputs: list[torch.Tensor]
    output: torch.Tensor
    path: str
    name: str
    item: int = 0
    values: bool = False
    label: str = ""

    def unsupported(self, why: str = "") -> UnsupportedModuleError:
        return unsupported(self.path, self.label or self.name, why)

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """Argument ``index`` if given positionally, else keyword ``name``, else ``default``."""
        if len(self.args) > index:
            return self.args[index]
        return self.kwargs.get(name, default)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.output.shape[1:])

    def in_shape(self, j: int = 0) -> tuple[int, ...]:
        return tuple(self.inputs[j].shape[1:])

    def run(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The call again with ``inputs`` in place of the recorded inputs; output ``item``."""
        swap = {id(a): b for a, b in zip(self.inputs, inputs)}
        sub = lambda v: swap.get(id(v), v) if isinstance(v, torch.Tensor) else v  # noqa: E731
        from torch.utils._pytree import tree_flatten, tree_map

        out = self.target(*tree_map(sub, self.args), **tree_map(sub, self.kwargs))
        if isinstance(out, torch.Tensor):
            return out
        return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)][self.item]


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


def register_rule(target: type[nn.Module] | str | Callable | Iterable, rule: Rule) -> None:
    """Register ``rule`` for a module type or a function.

    Parameters
    ----------
    target : type, str, callable or iterable of these
        A subclass of ``nn.Module`` (its instances, and those of its subclasses without a
        rule of their own, are then recorded whole), a function or tensor method, or its
        name (``'relu'`` covers ``torch.relu``, ``F.relu`` and ``Tensor.relu``).
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
    elif isinstance(target, str):
        _FUNCTION_RULES[target] = rule
    elif callable(target) and hasattr(target, "__name__"):
        _FUNCTION_RULES[target.__name__] = rule
    else:
        raise TypeError(
            "nsp.rules.register_rule: `target` must be an nn.Module subclass, a function or its name, "
            f"got {target!r}"
        )


# Rules for modules of other libraries, by qualified class name, so nsp needs not import them.
_NAMED_MODULE_RULES: dict[str, Rule] = {}


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
    return _FUNCTION_RULES.get(name)


# -- helpers -----------------------------------------------------------------------------
def _tuple(value: Any, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def eye(n: int) -> np.ndarray:
    return eye_factor(n)


def term_csr(term: Term) -> sp.csr_matrix:
    out_idx, in_idx = term.edges()
    return sp.csr_matrix((np.ones(out_idx.size, dtype=bool), (out_idx, in_idx)), shape=(term.n_out, term.n_in))


def relation_csr(rel: Term | Relation) -> sp.csr_matrix:
    if isinstance(rel, Term):
        return term_csr(rel)
    out = sp.csr_matrix((rel.n_out, rel.n_in), dtype=bool)
    for t in rel.terms:
        out = out + term_csr(t)
    return out.astype(bool).tocsr()


def diagonal_csr(keep: np.ndarray) -> sp.csr_matrix:
    """The identity with only the rows where ``keep`` is true."""
    rows = np.flatnonzero(keep)
    n = keep.size
    return sp.csr_matrix((np.ones(rows.size, dtype=bool), (rows, rows)), shape=(n, n))


def _terms(rel: Term | Relation) -> tuple[Term, ...]:
    return (rel,) if isinstance(rel, Term) else rel.terms


def _factor_colours(f: np.ndarray) -> tuple[np.ndarray, int]:
    """Colour the rows of a 0/1 factor so that rows of one colour share no column."""
    p, q = f.shape
    if p == q and np.array_equal(f, np.eye(p, dtype=bool)):
        return np.zeros(p, np.int64), 1
    colours = np.zeros(p, np.int64)
    used: list[np.ndarray] = []
    for row in range(p):
        for c, cols in enumerate(used):
            if not (cols & f[row]).any():
                cols |= f[row]
                colours[row] = c
                break
        else:
            colours[row] = len(used)
            used.append(f[row].copy())
    return colours, max(1, len(used))


def _row_colours(rel: Term | Relation) -> tuple[np.ndarray, int]:
    """Colours of the output positions: two of one colour share no input position."""
    terms = _terms(rel)
    if len(terms) != 1:
        return np.arange(rel.n_out, dtype=np.int64), rel.n_out
    colours, count = np.zeros(1, np.int64), 1
    for f in terms[0].factors:
        c, k = _factor_colours(f)
        colours = (colours[:, None] * k + c[None, :]).reshape(-1)
        count *= k
    return colours, count


def jacobian_patterns(call: Call, relations: Sequence[Term | Relation | None]) -> list[sp.csr_matrix | None]:
    """The Jacobian's nonzero pattern, measured by autograd inside the structural relations.

    Output positions are coloured so that positions of one colour depend on disjoint
    input positions (per factor, then combined); one backward pass per colour then gives
    every structural entry of those rows exactly (Curtis, Powell and Reid's compression),
    and an entry is an edge where autograd's value is nonzero.

    Raises
    ------
    UnsupportedModuleError
        If the call cannot be differentiated by autograd.
    """
    out: list[sp.csr_matrix | None] = []
    with torch.enable_grad():
        leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in call.inputs]
        try:
            y = call.run(*[leaf.clone() if leaf.requires_grad else leaf for leaf in leaves])
        except RuntimeError as err:
            raise call.unsupported(f"autograd cannot replay it ({err})") from None
        for leaf, rel in zip(leaves, relations):
            if rel is not None and leaf.requires_grad and not y.requires_grad:
                # Otherwise the pattern would silently be empty: a wrong graph.
                raise call.unsupported("autograd cannot differentiate it: its output does not require grad "
                                       "(a .detach() or a non-differentiable operation inside it)")
            if rel is None or not leaf.requires_grad:
                out.append(None if rel is None else sp.csr_matrix((rel.n_out, rel.n_in), dtype=bool))
                continue
            colours, count = _row_colours(rel)
            struct = relation_csr(rel)
            rows = np.repeat(np.arange(rel.n_out), np.diff(struct.indptr))
            cols = struct.indices.astype(np.int64)
            keep = np.zeros(cols.size, dtype=bool)
            pair_colour = colours[rows]
            order = np.argsort(pair_colour, kind="stable")
            bounds = np.searchsorted(pair_colour[order], np.arange(count + 1))
            step = max(1, _GRADIENT_ENTRIES // max(1, rel.n_in))
            for start in range(0, count, step):
                stop = min(count, start + step)
                grads = np.empty((stop - start, rel.n_in), dtype=bool)
                for c in range(start, stop):
                    seed = torch.as_tensor(colours == c, dtype=y.dtype).reshape(y.shape)
                    (g,) = torch.autograd.grad(y, leaf, seed, retain_graph=True, allow_unused=True)
                    grads[c - start] = False if g is None else (g != 0).reshape(-1).cpu().numpy()
                sel = order[bounds[start]: bounds[stop]]
                keep[sel] = grads[pair_colour[sel] - start, cols[sel]]
            kept_rows, kept_cols = rows[keep], cols[keep]
            out.append(sp.csr_matrix(
                (np.ones(kept_cols.size, dtype=bool), (kept_rows, kept_cols)), shape=(rel.n_out, rel.n_in)
            ))
    return out


# -- per-axis factors ------------------------------------------------------------------
def window_factor(n_out: int, n_in: int, kernel: int, stride: int, pad: int, dil: int) -> np.ndarray:
    starts = np.arange(n_out) * stride - pad
    taps = starts[:, None] + np.arange(kernel)[None, :] * dil
    f = np.zeros((n_out, n_in), dtype=bool)
    rows = np.broadcast_to(np.arange(n_out)[:, None], taps.shape)
    ok = (taps >= 0) & (taps < n_in)
    f[rows[ok], taps[ok]] = True
    return f


def adaptive_factor(n_out: int, n_in: int) -> np.ndarray:
    o = np.arange(n_out)
    start = (o * n_in) // n_out
    end = -((-(o + 1) * n_in) // n_out)
    i = np.arange(n_in)
    return (i[None, :] >= start[:, None]) & (i[None, :] < end[:, None])


def conv_padding(m: nn.Module) -> tuple[int, ...]:
    k, d = m.kernel_size, m.dilation
    if m.padding == "valid":
        return (0,) * len(k)
    if m.padding == "same":
        return tuple(dd * (kk - 1) // 2 for kk, dd in zip(k, d))
    return tuple(m.padding)


def channel_groups(c_out: int, c_in: int, groups: int) -> np.ndarray:
    if groups == 1:
        return ones_factor(c_out, c_in)
    return (np.arange(c_out)[:, None] // (c_out // groups)) == (np.arange(c_in)[None, :] // (c_in // groups))


def elementwise_mask(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> np.ndarray:
    """Nonzero diagonal of the Jacobian of an elementwise function at ``x``."""
    with torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        y = fn(leaf.clone())
        (grad,) = torch.autograd.grad(y.sum(), leaf, allow_unused=True)
    if grad is None:
        return np.zeros(x.numel(), dtype=bool)
    return (grad != 0).reshape(-1).cpu().numpy()


# -- module rules: a structural term, evidence and a filter on the term's pairs ----------
class LeafRule(Rule):
    """A module rule from three parts: :meth:`term`, :meth:`evidence` and :meth:`kept`.

    The Jacobian pattern is the term's pairs that :meth:`kept` accepts given the
    evidence (a weight's zero mask, a derivative's zeros, a window's argmax); pairs
    are generated in slices of output rows, so temporaries stay small where the module
    has 1e8 structural edges.
    """

    aligned = False

    def term(self, m: nn.Module, call: Call, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Term:
        raise NotImplementedError

    def evidence(self, m: nn.Module, x: torch.Tensor) -> np.ndarray | None:
        """What the Jacobian's nonzeros depend on beyond the structure (None: nothing)."""
        return None

    def kept(self, m: nn.Module, evidence: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]],
             in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray:
        """Which of the term's pairs are Jacobian nonzeros (see :func:`_broadcast_keep`)."""
        raise NotImplementedError

    def relations(self, call: Call) -> list[Term]:
        return [self.term(call.target, call, call.in_shape(), call.out_shape)]

    def fingerprint(self, call: Call) -> np.ndarray | None:
        return self.evidence(call.target, call.inputs[0])

    def cut_rows(self, m: nn.Module, evidence: np.ndarray, term: Term) -> np.ndarray | None:
        """The rows of the term's first factor from which the evidence removes pairs (None: unknown)."""
        return None

    def exact_term(self, call: Call) -> tuple[Term, np.ndarray, sp.csr_matrix | None] | None:
        """The Jacobian pattern as the structural term with a few rows replaced.

        Returns ``(term, cut, pattern)``: ``cut`` are the rows of the term's first factor
        where the evidence removes pairs (a convolution's output channels with a zero
        weight), and ``pattern`` the Jacobian pattern of the flat output rows they cover,
        in order (None if ``cut`` is empty). None where the rule cannot tell the rows, and
        :meth:`patterns` lists every pair instead. ``INCL=False`` then composes the product
        as it is: a classifier's 10^8 pairs, 12 of them zero weights, are never listed.
        """
        m, x = call.target, call.inputs[0]
        term = self.term(m, call, call.in_shape(), call.out_shape)
        evidence = self.evidence(m, x)
        if evidence is None or (evidence.dtype == bool and bool(evidence.all())):
            return term, np.zeros(0, dtype=np.int64), None
        cut = self.cut_rows(m, evidence, term)
        if cut is None:
            return None
        return term, cut, self._pattern(m, term, evidence, cut, call.in_shape(), call.out_shape)

    def patterns(self, call: Call) -> list[sp.csr_matrix]:
        m, x = call.target, call.inputs[0]
        term = self.term(m, call, call.in_shape(), call.out_shape)
        evidence = self.evidence(m, x)
        return [self._pattern(m, term, evidence, np.arange(term.factors[0].shape[0]), call.in_shape(), call.out_shape)]

    def _pattern(self, m: nn.Module, term: Term, evidence: np.ndarray | None, first_rows: np.ndarray,
                 in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> sp.csr_matrix:
        """The Jacobian pattern of the flat output rows under ``first_rows`` of the term's first factor."""
        first, rest = term.factors[0], term.factors[1:]
        per_row = max(1, term.nnz() // max(1, first.shape[0]))
        step = max(1, _EDGE_CHUNK // per_row)
        stride = term.n_out // max(1, first.shape[0])
        indptr, indices = [np.zeros(1, dtype=np.int64)], []
        done = 0
        for a in range(0, first_rows.size, step):
            chosen = first_rows[a: a + step]
            sub = Term((first[chosen],) + rest)
            out_idx, in_idx = sub.edges()
            if evidence is not None:
                pairs = [np.nonzero(f) for f in sub.factors]
                pairs[0] = (chosen[pairs[0][0]], pairs[0][1])
                keep = self.kept(m, evidence, pairs, in_shape, out_shape)
                out_idx, in_idx = out_idx[keep], in_idx[keep]
            rows = chosen.size * stride
            # For each output the inputs come ascending, so a stable sort by output is CSR order.
            order = np.argsort(out_idx, kind="stable")
            indptr.append(np.cumsum(np.bincount(out_idx, minlength=rows)) + done)
            indices.append(in_idx[order])
            done += in_idx.size
        n_in = math.prod(in_shape)
        return sp.csr_matrix(
            (np.ones(done, dtype=bool), np.concatenate(indices), np.concatenate(indptr)),
            shape=(first_rows.size * stride, n_in),
        )


def _along(f: int, n: int, v: np.ndarray) -> np.ndarray:
    return v.reshape((1,) * f + (-1,) + (1,) * (n - f - 1))


def _broadcast_keep(keep: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``keep`` broadcast over the Kronecker product of ``pairs``, flat in ``Term.edges`` order.

    ``pairs[f]`` are the (out, in) index pairs of the term's factor ``f`` (one axis each).
    Evidence is looked up per factor and broadcast, so no per-pair index array is unravelled.
    """
    return np.broadcast_to(keep, tuple(o.size for o, _ in pairs)).reshape(-1)


def _outs(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    n = len(pairs)
    return tuple(_along(f, n, o) for f, (o, _) in enumerate(pairs))


class ElementwiseModuleRule(LeafRule):
    """Activation modules, identity in structure; the Jacobian keeps where the derivative is nonzero."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        if in_shape != out_shape:
            raise call.unsupported(f"input {in_shape} and output {out_shape} differ")
        return Term.identity(in_shape or (1,))

    def evidence(self, m, x):
        return elementwise_mask(m, x)

    def kept(self, m, evidence, pairs, in_shape, out_shape):
        return _broadcast_keep(evidence.reshape(out_shape or (1,))[_outs(pairs)], pairs)

    def check(self, call, incl):
        # In both modes: a random slope makes the recorded pattern itself random (INCL=True), and its
        # Jacobian that of another pass (INCL=False).
        if isinstance(call.target, nn.RReLU) and call.target.training:
            raise call.unsupported(
                "it is random in training mode, so the recorded pattern and its Jacobian are those of one random "
                "draw; call network.eval() first"
            )


class PassthroughRule(LeafRule):
    """Identity, Dropout (eval mode), Flatten and Unflatten: each output is one input."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        if not isinstance(m, (nn.Flatten, nn.Unflatten)) and in_shape != out_shape:
            raise call.unsupported(f"input {in_shape} and output {out_shape} differ")
        return Term.identity(in_shape or (1,))

    def check(self, call, incl):
        m = call.target
        if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout)) and (
            m.training and m.p > 0
        ):
            raise call.unsupported(
                "it is random in training mode, so the recorded pattern and its Jacobian are those of one random "
                "draw; call network.eval() first"
            )


class BatchNormRule(LeafRule):
    """BatchNorm in eval mode: per channel affine; a zero weight drops the channel."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        return Term.identity(in_shape or (1,))

    def evidence(self, m, x):
        return (m.weight.detach().cpu().numpy() != 0) if m.affine else None

    def kept(self, m, evidence, pairs, in_shape, out_shape):
        return _broadcast_keep(_along(0, len(pairs), evidence[pairs[0][0]]), pairs)

    def check(self, call, incl):
        m = call.target
        if m.training or m.running_mean is None:
            raise call.unsupported(
                "it normalises with batch statistics (training mode or no running stats), so its output depends on "
                "the whole batch; call network.eval() first"
            )


class LinearRule(LeafRule):
    """``nn.Linear`` on the last axis; a zero weight drops its edge."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        lead = in_shape[:-1]
        return Term(tuple(eye(d) for d in lead) + (ones_factor(out_shape[-1], in_shape[-1]),))

    def evidence(self, m, x):
        return m.weight.detach().cpu().numpy() != 0

    def kept(self, m, evidence, pairs, in_shape, out_shape):
        return _broadcast_keep(_along(len(pairs) - 1, len(pairs), evidence[pairs[-1]]), pairs)

    def cut_rows(self, m, evidence, term):
        # Without leading axes the first factor is the weight's rows.
        if len(term.factors) != 1:
            return None
        return np.flatnonzero(~evidence.all(axis=1))


class ConvRule(LeafRule):
    """Convolutions (any stride, padding, dilation, groups; zero padding); a zero weight drops its edges."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        if m.padding_mode != "zeros":
            raise call.unsupported(f"padding_mode='{m.padding_mode}' (only 'zeros')")
        pads = conv_padding(m)
        factors = [channel_groups(out_shape[0], in_shape[0], m.groups)]
        for n_o, n_i, k, s, p, d in zip(out_shape[1:], in_shape[1:], m.kernel_size, m.stride, pads, m.dilation):
            factors.append(window_factor(n_o, n_i, k, s, p, d))
        return Term(tuple(factors))

    def evidence(self, m, x):
        return m.weight.detach().cpu().numpy() != 0

    def kept(self, m, evidence, pairs, in_shape, out_shape):
        n = len(pairs)
        co, ci = pairs[0]
        pads = conv_padding(m)
        taps = tuple(
            _along(f, n, (i - o * s + p) // d)
            for f, ((o, i), s, p, d) in enumerate(zip(pairs[1:], m.stride, pads, m.dilation), start=1)
        )
        keep = evidence[(_along(0, n, co), _along(0, n, ci % (in_shape[0] // m.groups))) + taps]
        return _broadcast_keep(keep, pairs)

    def cut_rows(self, m, evidence, term):
        # The first factor is the output channels.
        return np.flatnonzero(~evidence.reshape(evidence.shape[0], -1).all(axis=1))


class PoolRule(LeafRule):
    """Max and average pools over windows; a max-pool's Jacobian keeps each window's argmax."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        nd = len(in_shape) - 1
        k = _tuple(m.kernel_size, nd)
        s = _tuple(m.stride if m.stride is not None else m.kernel_size, nd)
        p = _tuple(m.padding, nd)
        d = _tuple(getattr(m, "dilation", 1), nd)
        factors = [eye(in_shape[0])]
        for n_o, n_i, kk, ss, pp, dd in zip(out_shape[1:], in_shape[1:], k, s, p, d):
            factors.append(window_factor(n_o, n_i, kk, ss, pp, dd))
        return Term(tuple(factors))

    def evidence(self, m, x):
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
            fn = F.max_pool1d_with_indices if isinstance(m, nn.MaxPool1d) else F.max_pool2d_with_indices
            return fn(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)[1].reshape(-1).cpu().numpy()
        return None

    def kept(self, m, evidence, pairs, in_shape, out_shape):
        return _argmax_kept(evidence, pairs, in_shape, out_shape)


def _argmax_kept(evidence, pairs, in_shape, out_shape):
    # The input position each window picked, flat within its channel.
    n = len(pairs)
    flat = sum(_along(f, n, i * math.prod(in_shape[f + 1:])) for f, (_, i) in enumerate(pairs[1:], start=1))
    return _broadcast_keep(evidence.reshape(out_shape)[_outs(pairs)] == flat, pairs)


class AdaptivePoolRule(LeafRule):
    """Adaptive average and max pools; an adaptive max-pool's Jacobian keeps each window's argmax."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        factors = [eye(in_shape[0])]
        factors += [adaptive_factor(n_o, n_i) for n_o, n_i in zip(out_shape[1:], in_shape[1:])]
        return Term(tuple(factors))

    def evidence(self, m, x):
        if isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
            fn = F.adaptive_max_pool1d_with_indices if isinstance(m, nn.AdaptiveMaxPool1d) else F.adaptive_max_pool2d_with_indices
            return fn(x, m.output_size, True)[1].reshape(-1).cpu().numpy()
        return None

    def kept(self, m, evidence, pairs, in_shape, out_shape):
        return _argmax_kept(evidence, pairs, in_shape, out_shape)


class UpsampleRule(LeafRule):
    """``nn.Upsample`` in 'nearest' mode: each output copies one input."""

    aligned = True

    def term(self, m, call, in_shape, out_shape):
        if m.mode != "nearest":
            raise call.unsupported(f"mode='{m.mode}' (only 'nearest')")
        factors = [eye(in_shape[0])]
        scales = _tuple(m.scale_factor, len(in_shape) - 1) if m.scale_factor is not None else None
        for axis, (n_o, n_i) in enumerate(zip(out_shape[1:], in_shape[1:])):
            # torch's 'nearest' reads floor(o / scale), or floor(o * n_in / n_out) for a size.
            o = np.arange(n_o)
            source = np.floor(o / float(scales[axis])).astype(np.int64) if scales else (o * n_i) // n_o
            factors.append(np.minimum(source, n_i - 1)[:, None] == np.arange(n_i)[None, :])
        return Term(tuple(factors))


register_rule(list(ELEMENTWISE_MODULES), ElementwiseModuleRule())
register_rule([nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Flatten, nn.Unflatten],
              PassthroughRule())
register_rule([nn.BatchNorm1d, nn.BatchNorm2d], BatchNormRule())
register_rule(nn.Linear, LinearRule())
register_rule([nn.Conv1d, nn.Conv2d], ConvRule())
register_rule([nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d], PoolRule())
register_rule([nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d],
              AdaptivePoolRule())
register_rule(nn.Upsample, UpsampleRule())


# -- function rules ----------------------------------------------------------------------
class ElementwiseFunctionRule(Rule):
    """Elementwise functions and methods (``F.relu``, ``torch.sigmoid``, ``x.clone()``...)."""

    aligned = True

    def relations(self, call):
        (x,) = call.inputs
        if tuple(x.shape) != tuple(call.output.shape):
            raise call.unsupported(f"it is not elementwise here: input {tuple(x.shape)}, output {tuple(call.output.shape)}")
        return [Term.identity(call.in_shape() or (1,))]

    def check(self, call, incl):
        if len(call.inputs) != 1:
            raise call.unsupported("an operation on several tensors derived from the input")
        if call.name == "batch_norm" and call.arg(5, "training", False):
            raise call.unsupported("batch statistics in training mode mix the batch; call network.eval() first")
        if call.name in ("dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d"):
            training = call.kwargs.get("training", False) or any(a is True for a in call.args[2:])
            if training:
                raise call.unsupported("functional dropout in training mode; call network.eval() first")

    def patterns(self, call):
        (x,) = call.inputs
        try:
            return [diagonal_csr(elementwise_mask(lambda t: call.run(t), x))]
        except RuntimeError as err:
            raise call.unsupported(f"autograd cannot differentiate it here ({err})") from None

    def fingerprint(self, call):
        return self.patterns(call)[0].indices


class DetachRule(StructuralRule):
    """``x.detach()``: the same values, so the identity; autograd sees no derivative, but the
    data still depends on the input (INCL=False measures no Jacobian here)."""

    aligned = True

    def relations(self, call):
        return ElementwiseFunctionRule.relations(self, call)


class ReshapeRule(StructuralRule):
    """``view``, ``reshape``, ``flatten``, ``squeeze``...: row-major order is kept, so the relation is the identity."""

    def relations(self, call):
        (x,) = call.inputs
        if x.numel() != call.output.numel() or call.output.shape[:1] != x.shape[:1]:
            raise call.unsupported(f"reshaping {tuple(x.shape)} to {tuple(call.output.shape)} moves the batch dimension")
        # The input's own axes factorise the flat index of the output too: a flatten
        # before a classifier stays (512)(7)(7), not one 25,088² factor.
        return [Term.identity(call.in_shape() or (1,))]


def _parts_and_axis(call, what: str) -> tuple[Any, int]:
    """``torch.cat``/``torch.stack``'s tensors and their non-negative output axis, refusing the batch axis."""
    parts = call.arg(0, "tensors")
    dim = call.arg(1, "dim", 0)
    dim = dim + call.output.dim() if dim < 0 else dim
    if dim == 0:
        raise call.unsupported(f"{what} along the batch dimension")
    return parts, dim


class ConcatRule(StructuralRule):
    """``torch.cat`` along a non-batch axis: each part goes to its slice."""

    aligned = True

    def relations(self, call):
        parts, dim = _parts_and_axis(call, "concatenation")
        out_shape = call.out_shape
        placed: dict[int, list[Term]] = {}
        offset = 0
        for part in parts:
            width = part.shape[dim]
            if any(part is x for x in call.inputs):
                factors = [eye(d) for d in out_shape]
                factors[dim - 1] = np.eye(out_shape[dim - 1], width, -offset, dtype=bool)
                # A tensor concatenated more than once (cat([x, x])) goes to each of its slices.
                placed.setdefault(id(part), []).append(Term(tuple(factors)))
            offset += width
        return [_union(placed[id(x)]) for x in call.inputs]


class StackRule(StructuralRule):
    """``torch.stack`` along a non-batch axis: part ``j`` goes to index ``j`` of the new axis."""

    def relations(self, call):
        parts, dim = _parts_and_axis(call, "stacking")
        shape = call.out_shape
        placed: dict[int, list[Term]] = {}
        for j, part in enumerate(parts):
            if any(part is x for x in call.inputs):
                new = np.zeros((len(parts), 1), dtype=bool)
                new[j] = True
                factors = [eye(d) for d in shape[:dim - 1]] + [new] + [eye(d) for d in shape[dim:]]
                placed.setdefault(id(part), []).append(Term(tuple(factors)))
        return [_union(placed[id(x)]) for x in call.inputs]


_SUM_NAMES = {"add", "add_", "__add__", "__iadd__", "__radd__", "sub", "sub_", "__sub__", "__isub__", "__rsub__"}
_ELEMENTWISE_NAMES = {
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu", "celu_",
    "gelu", "silu", "mish", "softplus", "softsign", "hardtanh", "hardtanh_", "hardsigmoid", "hardswish",
    "logsigmoid", "tanhshrink", "softshrink", "hardshrink", "threshold", "threshold_", "sigmoid", "sigmoid_",
    "tanh", "tanh_", "exp", "exp_", "abs", "abs_", "neg", "neg_", "__neg__", "__pos__", "clamp", "clamp_",
    "clip", "clip_", "contiguous", "clone", "float", "double", "half", "bfloat16", "to", "dropout",
    "alpha_dropout",
}
register_rule(sorted(_ELEMENTWISE_NAMES), ElementwiseFunctionRule())
register_rule("detach", DetachRule())
register_rule(["view", "reshape", "flatten", "view_as", "reshape_as", "squeeze", "unsqueeze", "unflatten"],
              ReshapeRule())
register_rule(["cat", "concat", "concatenate"], ConcatRule())
register_rule(["stack"], StackRule())


# -- rules for the networks people train --------------------------------------------------
def _dims(call: Call, value: Any) -> list[int] | None:
    """Non-batch axes (numbered from 0 without the batch axis) named by ``dim``; None for all."""
    if value is None:
        return None
    ndim = call.inputs[0].dim()
    dims = [value] if isinstance(value, int) else list(value)
    dims = [d + ndim if d < 0 else d for d in dims]
    if 0 in dims:
        raise call.unsupported("it mixes the batch dimension")
    return [d - 1 for d in dims]


class ReductionRule(Rule):
    """``mean``/``sum``/``amax``/``max``... over axes: each output depends on its whole slice."""

    def __init__(self, structural: bool) -> None:
        self.structural = structural

    def relations(self, call):
        if isinstance(call.arg(1, "dim"), torch.Tensor) or len(call.inputs) > 1:
            return BinaryRule(linear=False).relations(call)
        dims = _dims(call, call.arg(1, "dim", call.kwargs.get("axis")))
        if dims is None:
            raise call.unsupported("a reduction over every axis mixes the batch dimension")
        shape = call.in_shape()
        return [Term(tuple(ones_factor(1, n) if a in dims else eye(n) for a, n in enumerate(shape)))]

    def patterns(self, call):
        return [relation_csr(self.relations(call)[0])] if self.structural else super().patterns(call)

    def fingerprint(self, call):
        return None if self.structural else super().fingerprint(call)


class AxisRule(Rule):
    """``softmax``/``log_softmax``/``cumsum``...: each output depends on its whole line along ``dim``."""

    aligned = True

    def __init__(self, causal: bool = False) -> None:
        self.causal = causal

    def relations(self, call):
        (x,) = call.inputs
        (dim,) = _dims(call, call.arg(1, "dim"))
        shape = call.in_shape()
        line = np.tril(np.ones((shape[dim],) * 2, dtype=bool)) if self.causal else ones_factor(shape[dim], shape[dim])
        return [Term(tuple(line if a == dim else eye(n) for a, n in enumerate(shape)))]


class NormRule(Rule):
    """Normalisation over groups of positions (LayerNorm, GroupNorm, InstanceNorm, functional forms)."""

    aligned = True

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def relations(self, call):
        shape = call.in_shape()
        m = call.target if isinstance(call.target, nn.Module) else None
        if self.kind == "instance" and ((m is not None and m.track_running_stats and not m.training)
                                        or (m is None and not call.arg(5, "use_input_stats", True))):
            return [Term.identity(shape)]  # running statistics: per position affine
        rel = self._groups(call, shape, m)
        if rel.nnz() == rel.n_out:
            # Groups of one position: x - mean(x) is identically 0, so the output is a constant.
            return [Term(tuple(np.zeros(f.shape, dtype=bool) for f in rel.factors))]
        return [rel]

    def _groups(self, call: Call, shape: tuple[int, ...], m: nn.Module | None) -> Term:
        """Which positions each output's statistics are taken over."""
        if self.kind == "layer":
            normalized = m.normalized_shape if m is not None else call.arg(1, "normalized_shape")
            k = len(normalized)
            return Term(tuple(eye(n) for n in shape[:-k]) + tuple(ones_factor(n, n) for n in shape[-k:]))
        if self.kind == "group":
            groups = m.num_groups if m is not None else call.arg(1, "num_groups")
            c = shape[0]
            block = (np.arange(c)[:, None] // (c // groups)) == (np.arange(c)[None, :] // (c // groups))
            return Term((block,) + tuple(ones_factor(n, n) for n in shape[1:]))
        return Term((eye(shape[0]),) + tuple(ones_factor(n, n) for n in shape[1:]))

    def check(self, call, incl):
        m = call.target
        if isinstance(m, nn.Module) and self.kind == "instance" and m.training and m.track_running_stats:
            raise call.unsupported("it updates running statistics in training mode; call network.eval() first")


class LinearFunctionRule(Rule):
    """``F.linear`` on the last axis, where the weight may itself come from the input."""

    aligned = True

    def relations(self, call):
        x, w = call.arg(0, "input"), call.arg(1, "weight")
        out = call.out_shape
        rels = []
        for t in call.inputs:
            if t is x:
                rels.append(Term(tuple(eye(n) for n in out[:-1]) + (ones_factor(out[-1], x.shape[-1]),)))
            else:
                raise call.unsupported("a weight or bias computed from the input")
        return rels


def _broadcast_term(x_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Term:
    """Each output position reads the input position it broadcasts from (both without batch)."""
    padded = (1,) * (len(out_shape) - len(x_shape)) + tuple(x_shape)
    return Term(tuple(eye(n) if m == n else ones_factor(n, 1) for m, n in zip(padded, out_shape)) or (eye(1),))


class BinaryRule(Rule):
    """``add``/``sub``/``mul``/``div``... with broadcasting: SE gates, gating, layer scale, residual sums."""

    aligned = True

    def __init__(self, linear: bool) -> None:
        self.linear = linear  # sums: the Jacobian entries are ±1, so the pattern is the structure

    def relations(self, call):
        out = call.out_shape
        rels = []
        for j in range(len(call.inputs)):
            shape = call.in_shape(j)
            if len(shape) > len(out):
                raise call.unsupported(f"input {shape} has more axes than the output {out}")
            rels.append(_broadcast_term(shape, out))
        return rels

    def patterns(self, call):
        if len(call.inputs) == 1 and call.in_shape() == call.out_shape:
            (x,) = call.inputs
            return [diagonal_csr(elementwise_mask(lambda t: call.run(t), x))]
        if self.linear:
            return [relation_csr(r) for r in self.relations(call)]
        return super().patterns(call)

    def fingerprint(self, call):
        if len(call.inputs) == 1 and call.in_shape() == call.out_shape:
            return self.patterns(call)[0].indices
        return None if self.linear else super().fingerprint(call)


class MatmulRule(Rule):
    """``matmul``/``@``/``bmm`` of tensors with at least two axes, batch axes broadcast."""

    aligned = True

    def relations(self, call):
        a, b = call.arg(0, "input"), call.arg(1, "other", call.kwargs.get("mat2"))
        if a.dim() < 2 or b.dim() < 2:
            raise call.unsupported("a matrix product with a vector")
        out = call.out_shape
        batch = out[:-2]
        rels = []
        for t in call.inputs:
            lead = _broadcast_term(tuple(t.shape[1:-2]), batch).factors if batch else ()
            if t is a:
                rels.append(Term(tuple(lead) + (eye(out[-2]), ones_factor(out[-1], a.shape[-1]))))
            else:
                rels.append(Term(tuple(lead) + (ones_factor(out[-2], b.shape[-2]), eye(out[-1]))))
        if len(call.inputs) == 1 and call.inputs[0] is a and b is a:
            raise call.unsupported("a product of a tensor with itself")
        return rels


class EinsumRule(Rule):
    """``torch.einsum``: an output position reads, in each operand, the positions that agree with
    it on the shared letters (every position along a summed letter). The batch letter must
    lead every operand derived from the input and the output."""

    def relations(self, call):
        equation = call.arg(0, "equation")
        operands = call.args[1:]
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = operands[0]
        equation = equation.replace(" ", "")
        if "..." in equation:
            raise call.unsupported("an ellipsis in the equation")
        lhs, _, out = equation.partition("->")
        letters = lhs.split(",")
        if not out:
            counts = {c: lhs.count(c) for c in lhs if c.isalpha()}
            out = "".join(sorted(c for c, n in counts.items() if n == 1))
        sizes = {c: n for spec, t in zip(letters, operands) if isinstance(t, torch.Tensor)
                 for c, n in zip(spec, t.shape)}
        rels = []
        for x in call.inputs:
            terms = [self._term(spec, out, sizes, call) for spec, t in zip(letters, operands) if t is x]
            rels.append(_union(terms))
        return rels

    @staticmethod
    def _term(spec: str, out: str, sizes: dict[str, int], call: Call) -> Term:
        if not spec or not out or spec[0] != out[0] or len(set(spec)) != len(spec):
            raise call.unsupported(f"operand '{spec}' of '{out}': the batch letter must lead both, and no "
                                   "letter may repeat within an operand (a diagonal)")
        spec, out = spec[1:], out[1:]
        shared = [c for c in out if c in spec]
        if shared != [c for c in spec if c in shared]:
            # The shared letters come in another order: one factor, if it is small.
            n_out, n_in = math.prod(sizes[c] for c in out), math.prod(sizes[c] for c in spec)
            if n_out * n_in > MAX_DENSE_EINSUM:
                raise call.unsupported(f"its letters '{spec}' -> '{out}' are reordered, and as one matrix the "
                                       f"relation needs {n_out * n_in:,} entries")
            o = np.indices(tuple(sizes[c] for c in out)).reshape(len(out), -1)
            i = np.indices(tuple(sizes[c] for c in spec)).reshape(len(spec), -1)
            f = np.ones((o.shape[1], i.shape[1]), dtype=bool)
            for c in shared:
                f &= o[out.index(c)][:, None] == i[spec.index(c)][None, :]
            return Term((f,))
        # Walk both sides: out-only letters are columns, summed letters rows, shared ones the identity.
        factors: list[np.ndarray] = []
        a = b = 0
        while a < len(out) or b < len(spec):
            if a < len(out) and out[a] not in spec:
                factors.append(ones_factor(sizes[out[a]], 1))
                a += 1
            elif b < len(spec) and spec[b] not in out:
                factors.append(ones_factor(1, sizes[spec[b]]))
                b += 1
            else:
                factors.append(eye(sizes[out[a]]))
                a += 1
                b += 1
        return Term(tuple(factors) or (eye(1),))


# Largest single factor an einsum with reordered letters is written as.
MAX_DENSE_EINSUM = 1 << 24


class AttentionRule(Rule):
    """``F.scaled_dot_product_attention``: each query's output reads its own query and every allowed key and value."""

    aligned = True

    def relations(self, call):
        q, k, v = call.arg(0, "query"), call.arg(1, "key"), call.arg(2, "value")
        mask = call.arg(3, "attn_mask")
        causal = call.arg(5, "is_causal", False)
        out = call.out_shape
        L, S = out[-2], k.shape[-2]
        allowed = _allowed(mask, causal, L, S, call)
        scored = _scored(allowed)
        batch = out[:-2]
        rels = []
        for t in call.inputs:
            lead = _broadcast_term(tuple(t.shape[1:-2]), batch).factors if batch else ()
            parts = []
            if t is q:
                parts.append(Term(tuple(lead) + (np.diag(scored.any(axis=1)), ones_factor(out[-1], q.shape[-1]))))
            if t is k:
                parts.append(Term(tuple(lead) + (scored, ones_factor(out[-1], k.shape[-1]))))
            if t is v:
                parts.append(Term(tuple(lead) + (allowed, eye(out[-1]))))
            rels.append(_union(parts))
        return rels

    def check(self, call, incl):
        if call.arg(4, "dropout_p", 0.0):
            raise call.unsupported("attention dropout is random; call network.eval() first")


def _union(parts: list[Term]) -> Relation:
    rel = Relation.of(parts[0])
    for p in parts[1:]:
        rel = rel.union(Relation.of(p))
    return rel


def _scored(allowed: np.ndarray) -> np.ndarray:
    """The keys whose scores matter: a query with one allowed key gives it weight 1 whatever
    the scores (the first query under a causal mask), so it reads neither its query nor that key."""
    return allowed & (allowed.sum(axis=1) > 1)[:, None]


def _allowed(mask: Any, causal: bool, L: int, S: int, call: Call) -> np.ndarray:
    """Which keys each query may read, from a boolean or additive mask or ``is_causal``."""
    allowed = np.tril(np.ones((L, S), dtype=bool)) if causal else ones_factor(L, S)
    if mask is None:
        return allowed
    if any(mask is t for t in call.inputs) or mask.device.type == "meta":
        raise call.unsupported("an attention mask computed from the input")
    m = mask.detach().cpu()
    m = m if m.dtype == torch.bool else torch.isfinite(m) | (m > 0)
    m = m.reshape(-1, L, S)
    if not bool((m == m[:1]).all()):
        raise call.unsupported("an attention mask that differs between heads or batch items")
    return allowed & m[0].numpy()


class MultiheadAttentionRule(Rule):
    """``nn.MultiheadAttention`` (``batch_first=True``): output at query l reads query l and every allowed key and value."""

    def relations(self, call):
        m = call.target
        q, k, v = call.arg(0, "query"), call.arg(1, "key"), call.arg(2, "value")
        mask = call.arg(5, "attn_mask")
        causal = call.arg(7, "is_causal", False)
        L, S, E = q.shape[1], k.shape[1], call.out_shape[-1]
        allowed = _allowed(mask, causal and mask is None, L, S, call)
        scored = _scored(allowed)
        rels = []
        for t in call.inputs:
            parts = []
            if t is q:
                parts.append(Term((np.diag(scored.any(axis=1)), ones_factor(E, q.shape[-1]))))
            if t is k:
                parts.append(Term((scored, ones_factor(E, t.shape[-1]))))
            if t is v:
                parts.append(Term((allowed, ones_factor(E, t.shape[-1]))))
            rels.append(_union(parts))
        return rels

    def check(self, call, incl):
        m = call.target
        if not m.batch_first:
            raise call.unsupported("batch_first=False: the sequence axis would be taken for the batch")
        if call.arg(3, "key_padding_mask") is not None:
            raise call.unsupported("key_padding_mask")
        if m.training and m.dropout:
            raise call.unsupported("attention dropout is random in training mode; call network.eval() first")
        if call.item > 0:
            raise call.unsupported("only its first output (the attention output) has a rule")


class RecurrentRule(Rule):
    """``nn.LSTM``/``nn.GRU``/``nn.RNN`` (``batch_first=True``): the output at step t reads every input up to t."""

    def relations(self, call):
        m = call.target
        (x,) = call.inputs[:1]
        if len(call.inputs) > 1:
            raise call.unsupported("an initial state computed from the input")
        T, D = x.shape[1], x.shape[2]
        steps = ones_factor(T, T) if m.bidirectional else np.tril(np.ones((T, T), dtype=bool))
        return [Term((steps, ones_factor(call.out_shape[-1], D)))]

    def check(self, call, incl):
        m = call.target
        if not m.batch_first:
            raise call.unsupported("batch_first=False: the time axis would be taken for the batch")
        if call.inputs[0].dim() != 3:
            raise call.unsupported("an unbatched or packed sequence")
        if m.training and m.dropout:
            raise call.unsupported("dropout between layers is random in training mode; call network.eval() first")


class ShiftedWindowAttentionRule(Rule):
    """torchvision's Swin attention (``ShiftedWindowAttention`` and its V2): each position reads
    every position of its window, all channels, after the input is padded to whole windows
    and rolled by the shift. The additive mask between the rolled regions (-100 before
    the softmax) weakens those pairs but leaves them in the structure; INCL=False measures
    what autograd gives them.
    """

    def relations(self, call):
        m = call.target
        (x,) = call.inputs
        if x.dim() != 4:
            raise call.unsupported(f"input of shape {tuple(x.shape)}, expected (1, H, W, C)")
        _, h, w, c = x.shape
        factors = []
        for n, size, shift in zip((h, w), m.window_size, m.shift_size):
            padded = n + (size - n % size) % size
            shift = 0 if size >= padded else shift
            window = ((np.arange(n) - shift) % padded) // size
            factors.append(window[:, None] == window[None, :])
        return [Term(tuple(factors) + (ones_factor(call.out_shape[-1], c),))]

    def check(self, call, incl):
        m = call.target
        if m.training and (m.attention_dropout or m.dropout):
            raise call.unsupported("dropout is random in training mode; call network.eval() first")


class EmbeddingRule(StructuralRule):
    """``nn.Embedding``: each output row reads its own index (an integer input: no derivative, so INCL=False is structural too)."""

    def relations(self, call):
        shape = call.in_shape()
        return [Term(tuple(eye(n) for n in shape) + (ones_factor(call.out_shape[-1], 1),))]


class IndexRule(StructuralRule):
    """Ops where each output copies at most one input: slicing, ``narrow``, ``select``, ``chunk``, ``split``,
    ``unbind``, ``roll``, ``pad``, ``flip``, ``expand``, ``repeat``, ``permute``...

    The op is run on the positions themselves (twice, with two offsets, so a padding
    value is never taken for a position); the resulting map is written as one factor
    per pair of matching axes, or refused where it is not such a product.
    """

    def _sources(self, call) -> tuple[np.ndarray, tuple[int, ...]]:
        if len(call.inputs) != 1:
            raise call.unsupported("an index computed from the input")
        (x,) = call.inputs
        n = x.numel()
        runs = []
        for offset in (1, n + 1):
            idx = torch.arange(offset, offset + n, dtype=torch.float64).reshape(x.shape)
            with torch.no_grad():
                runs.append(call.run(idx).reshape(-1).numpy())
        src = runs[0] - 1
        ok = (runs[1] - runs[0] == n) & (src >= 0) & (src < n) & (src == np.round(src))
        return np.where(ok, src, -1).astype(np.int64), tuple(x.shape[1:])

    def patterns(self, call):
        src, in_shape = self._sources(call)
        rows = np.flatnonzero(src >= 0)
        return [sp.csr_matrix((np.ones(rows.size, dtype=bool), (rows, src[rows])),
                              shape=(src.size, math.prod(in_shape)))]

    def relations(self, call):
        src, in_shape = self._sources(call)
        out_shape = call.out_shape
        return [_gather_term(src, in_shape, out_shape, call)]


def _gather_term(src: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...], call: Call) -> Term:
    """The Kronecker form of "output o copies input src[o]" (-1: nothing), axis by axis.

    Each input axis must follow at most one output axis, in the same order (slices,
    selections, rolls, pads, flips, broadcasts); otherwise (a transpose) the map is one
    factor, refused above 2^24 entries.
    """
    o_dims = [d for d in out_shape if d != 1] or [1]
    i_dims = [d for d in in_shape if d != 1] or [1]
    valid = (src >= 0).reshape(o_dims)
    if not valid.any():
        return Term((np.zeros((src.size, math.prod(in_shape)), dtype=bool),)) if src.size * math.prod(in_shape) <= 1 << 24 \
            else _dense_gather(src, in_shape, out_shape, call)
    coords = np.stack(np.unravel_index(np.where(src >= 0, src, 0), i_dims), axis=-1).reshape(tuple(o_dims) + (len(i_dims),))
    star = tuple(int(i) for i in np.argwhere(valid)[0])
    drivers: list[int | None] = []
    for k in range(len(i_dims)):
        moving = [a for a in range(len(o_dims)) if not _constant_along(coords[..., k], valid, a)]
        if len(moving) > 1:
            return _dense_gather(src, in_shape, out_shape, call)
        drivers.append(moving[0] if moving else None)
    driven = [d for d in drivers if d is not None]
    if driven != sorted(set(driven)):
        return _dense_gather(src, in_shape, out_shape, call)

    def line(a: int) -> tuple[np.ndarray, np.ndarray]:
        index = [slice(None) if b == a else star[b] for b in range(len(o_dims))]
        return valid[tuple(index)], coords[tuple(index)]

    factors: list[np.ndarray] = []
    a = 0

    def free_axes(until: int) -> None:
        nonlocal a
        while a < until:
            ok, _ = line(a)
            factors.append(ok[:, None].copy())
            a += 1

    for k, d in enumerate(drivers):
        if d is None:
            f = np.zeros((1, i_dims[k]), dtype=bool)
            f[0, coords[star + (k,)]] = True
            factors.append(f)
            continue
        free_axes(d)
        ok, c = line(d)
        f = np.zeros((o_dims[d], i_dims[k]), dtype=bool)
        f[np.flatnonzero(ok), c[ok, k]] = True
        factors.append(f)
        a = d + 1
    free_axes(len(o_dims))
    term = Term(tuple(factors))
    rows = np.flatnonzero(src >= 0)
    # Term.edges lists the pairs sorted by output, then input: equal to the map's pairs iff exact.
    out_idx, in_idx = term.edges()
    if not (np.array_equal(out_idx, rows) and np.array_equal(in_idx, src[rows])):
        return _dense_gather(src, in_shape, out_shape, call)
    return term


def _constant_along(c: np.ndarray, valid: np.ndarray, axis: int) -> bool:
    """Whether ``c`` is constant along ``axis`` over the valid positions."""
    if c.shape[axis] == 1:
        return True
    big = np.where(valid, c, np.iinfo(np.int64).min)
    small = np.where(valid, c, np.iinfo(np.int64).max)
    hi, lo = big.max(axis=axis), small.min(axis=axis)
    some = valid.any(axis=axis)
    return bool(((hi == lo) | ~some).all())


def _dense_gather(src: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...], call: Call) -> Term:
    n_out, n_in = src.size, math.prod(in_shape)
    if n_out * n_in > (1 << 24):
        raise call.unsupported(
            f"its index map is not a product of per-axis maps, and as one matrix it needs {n_out * n_in:,} entries"
        )
    f = np.zeros((n_out, n_in), dtype=bool)
    rows = np.flatnonzero(src >= 0)
    f[rows, src[rows]] = True
    return Term((f,))


class FunctionalPoolRule(Rule):
    """Functional pools (``F.max_pool2d``, ``F.avg_pool2d``, ``F.adaptive_avg_pool2d``...) by their module's rule."""

    def __init__(self, make: Callable[[Call], nn.Module]) -> None:
        self.make = make

    def _module_call(self, call: Call) -> tuple[Rule, Call]:
        from dataclasses import replace

        m = self.make(call)
        return rule_for_module(m), replace(call, target=m, args=(call.inputs[0],), kwargs={})

    def relations(self, call):
        rule, inner = self._module_call(call)
        return rule.relations(inner)

    def patterns(self, call):
        rule, inner = self._module_call(call)
        return rule.patterns(inner)

    def fingerprint(self, call):
        rule, inner = self._module_call(call)
        return rule.fingerprint(inner)


def _pool_module(kind: str, nd: int) -> Callable[[Call], nn.Module]:
    def make(call: Call) -> nn.Module:
        a = call.arg
        if kind == "max":
            cls = nn.MaxPool1d if nd == 1 else nn.MaxPool2d
            return cls(a(1, "kernel_size"), a(2, "stride"), a(3, "padding", 0), a(4, "dilation", 1),
                       ceil_mode=a(5, "ceil_mode", False))
        if kind == "avg":
            cls = nn.AvgPool1d if nd == 1 else nn.AvgPool2d
            return cls(a(1, "kernel_size"), a(2, "stride"), a(3, "padding", 0), a(4, "ceil_mode", False))
        if kind == "adaptive_avg":
            return (nn.AdaptiveAvgPool1d if nd == 1 else nn.AdaptiveAvgPool2d)(a(1, "output_size"))
        return (nn.AdaptiveMaxPool1d if nd == 1 else nn.AdaptiveMaxPool2d)(a(1, "output_size"))
    return make


register_rule(["mean", "sum", "nansum", "nanmean"], ReductionRule(structural=True))
register_rule(["amax", "amin", "max", "min", "logsumexp", "std", "var", "prod"], ReductionRule(structural=False))
register_rule(["maximum", "minimum"], BinaryRule(linear=False))
register_rule(["softmax", "log_softmax", "_softmax"], AxisRule())
register_rule(["cumsum"], AxisRule(causal=True))
register_rule(nn.LayerNorm, NormRule("layer"))
register_rule("layer_norm", NormRule("layer"))
register_rule(nn.GroupNorm, NormRule("group"))
register_rule("group_norm", NormRule("group"))
register_rule([nn.InstanceNorm1d, nn.InstanceNorm2d], NormRule("instance"))
register_rule("instance_norm", NormRule("instance"))
register_rule("linear", LinearFunctionRule())
register_rule(sorted(_SUM_NAMES), BinaryRule(linear=True))
register_rule(["mul", "mul_", "__mul__", "__imul__", "__rmul__", "div", "div_", "__truediv__", "__itruediv__",
               "__rtruediv__", "multiply", "divide", "true_divide"], BinaryRule(linear=False))
register_rule(["matmul", "__matmul__", "bmm"], MatmulRule())
register_rule("scaled_dot_product_attention", AttentionRule())
register_rule("einsum", EinsumRule())
register_rule(nn.MultiheadAttention, MultiheadAttentionRule())
register_rule([nn.LSTM, nn.GRU, nn.RNN], RecurrentRule())
register_rule(nn.Embedding, EmbeddingRule())
for _name in ("ShiftedWindowAttention", "ShiftedWindowAttentionV2"):
    _NAMED_MODULE_RULES[f"torchvision.models.swin_transformer.{_name}"] = ShiftedWindowAttentionRule()
register_rule(["__getitem__", "narrow", "select", "chunk", "split", "unbind", "tensor_split", "roll", "pad", "flip",
               "expand", "expand_as", "repeat", "permute", "transpose", "swapaxes", "swapdims", "movedim",
               "moveaxis", "index_select"], IndexRule())
for _nd in (1, 2):
    register_rule([f"max_pool{_nd}d", f"_max_pool{_nd}d"], FunctionalPoolRule(_pool_module("max", _nd)))
    register_rule(f"avg_pool{_nd}d", FunctionalPoolRule(_pool_module("avg", _nd)))
    register_rule(f"adaptive_avg_pool{_nd}d", FunctionalPoolRule(_pool_module("adaptive_avg", _nd)))
    register_rule([f"adaptive_max_pool{_nd}d", f"_adaptive_max_pool{_nd}d"],
                  FunctionalPoolRule(_pool_module("adaptive_max", _nd)))
register_rule(["pow", "sqrt", "rsqrt", "square", "log", "log1p", "reciprocal", "sin", "cos", "erf", "sign",
               "hardswish_", "silu_", "gelu_", "mish_", "batch_norm"], ElementwiseFunctionRule())
