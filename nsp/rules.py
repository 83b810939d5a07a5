"""Operation rules: how each module or function maps input positions to output positions.

One :class:`Rule` per operation, kept in one registry (in the style of fvcore's op
handles). A rule gives, for one recorded call:

- its structural relation (``INCL=True``): per input, a :class:`~nsp.relations.Term` (a
  Kronecker product of per-axis 0/1 factors) or a :class:`~nsp.relations.Relation`
  between the output's and that input's positions (batch dimension excluded);
- its Jacobian pattern (``INCL=False``): per input, the nonzero pattern of the
  Jacobian at the values of the recorded pass, as a scipy CSR boolean matrix. By default
  it is measured with autograd inside the structural relation (:func:`jacobian_patterns`);
- its fingerprint contribution: what that pattern depends on (a weight's zero mask, the
  argmax of a pooling window), hashed by :func:`nsp.fingerprint`.

Modules with a rule are recorded whole (their internals are not looked at); other
modules are seen through, op by op. A user registers a rule for their own module or
function with :func:`register_rule` (see its example and README "Operation rules").
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

from nsp.relations import Relation, StructureError, Term, ones_factor

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
    modules = sorted({t.__name__ for t in _MODULE_RULES})
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


def rule_for_module(m: nn.Module) -> Rule | None:
    """The rule of ``m``'s most specific type that has one, or None."""
    for cls in type(m).__mro__:
        if cls in _MODULE_RULES:
            return _MODULE_RULES[cls]
    return None


def rule_for_function(name: str) -> Rule | None:
    return _FUNCTION_RULES.get(name)


# -- helpers -----------------------------------------------------------------------------
def _tuple(value: Any, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def eye(n: int) -> np.ndarray:
    return np.eye(n, dtype=bool)


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

    def patterns(self, call: Call) -> list[sp.csr_matrix]:
        m, x = call.target, call.inputs[0]
        in_shape, out_shape = call.in_shape(), call.out_shape
        term = self.term(m, call, in_shape, out_shape)
        evidence = self.evidence(m, x)
        first, rest = term.factors[0], term.factors[1:]
        per_row = max(1, term.nnz() // max(1, first.shape[0]))
        step = max(1, _EDGE_CHUNK // per_row)
        stride = term.n_out // max(1, first.shape[0])
        indptr, indices = [np.zeros(1, dtype=np.int64)], []
        done = 0
        for a in range(0, first.shape[0], step):
            sub = Term((first[a: a + step],) + rest)
            out_idx, in_idx = sub.edges()
            out_idx += a * stride
            if evidence is not None:
                pairs = [np.nonzero(f) for f in sub.factors]
                pairs[0] = (pairs[0][0] + a, pairs[0][1])
                keep = self.kept(m, evidence, pairs, in_shape, out_shape)
                out_idx, in_idx = out_idx[keep], in_idx[keep]
            rows = min(step, first.shape[0] - a) * stride
            # For each output the inputs come ascending, so a stable sort by output is CSR order.
            order = np.argsort(out_idx, kind="stable")
            indptr.append(np.cumsum(np.bincount(out_idx - a * stride, minlength=rows)) + done)
            indices.append(in_idx[order])
            done += in_idx.size
        n_out, n_in = math.prod(out_shape), math.prod(in_shape)
        return [sp.csr_matrix(
            (np.ones(done, dtype=bool), np.concatenate(indices), np.concatenate(indptr)), shape=(n_out, n_in)
        )]


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
        if not incl and isinstance(call.target, nn.RReLU) and call.target.training:
            raise call.unsupported(
                "it is random in training mode, so its Jacobian is not that of the recorded pass; call network.eval() first"
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
        if not incl and isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)) and m.training:
            raise call.unsupported(
                "it is random in training mode, so its Jacobian is not that of the recorded pass; call network.eval() first"
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
        return [Term.identity((math.prod(call.in_shape()),))]


class AddRule(Rule):
    """``add``/``sub``/``mul``/``div`` of tensors of one shape (residual sums, scaling by constants)."""

    aligned = True

    def relations(self, call):
        out = tuple(call.output.shape)
        for x in call.inputs:
            if tuple(x.shape) != out:
                raise call.unsupported(f"combining shapes {[tuple(t.shape) for t in call.inputs]} broadcasts")
        return [Term.identity(call.out_shape or (1,)) for _ in call.inputs]

    def check(self, call, incl):
        if len(call.inputs) > 1 and call.name not in _SUM_NAMES:
            raise call.unsupported("an operation on several tensors derived from the input")

    def patterns(self, call):
        if len(call.inputs) == 1:
            (x,) = call.inputs
            return [diagonal_csr(elementwise_mask(lambda t: call.run(t), x))]
        return [diagonal_csr(np.ones(call.output.numel(), dtype=bool)) for _ in call.inputs]

    def fingerprint(self, call):
        return self.patterns(call)[0].indices if len(call.inputs) == 1 else None


class ConcatRule(StructuralRule):
    """``torch.cat`` along a non-batch axis: each part goes to its slice."""

    aligned = True

    def relations(self, call):
        parts = call.arg(0, "tensors")
        dim = call.arg(1, "dim", 0)
        ndim = call.output.dim()
        dim = dim + ndim if dim < 0 else dim
        if dim == 0:
            raise call.unsupported("concatenation along the batch dimension")
        out_shape = call.out_shape
        placed: dict[int, Term] = {}
        offset = 0
        for part in parts:
            width = part.shape[dim]
            if any(part is x for x in call.inputs) and id(part) not in placed:
                factors = [eye(d) for d in out_shape]
                factors[dim - 1] = np.eye(out_shape[dim - 1], width, -offset, dtype=bool)
                placed[id(part)] = Term(tuple(factors))
            offset += width
        return [placed[id(x)] for x in call.inputs]


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
register_rule(sorted(_SUM_NAMES) + [
               "mul", "mul_", "__mul__", "__imul__", "__rmul__", "div", "div_", "__truediv__", "__itruediv__",
               "__rtruediv__"], AddRule())
register_rule(["cat", "concat", "concatenate"], ConcatRule())
