"""How each module maps input positions to output positions, composed along the network.

For every top-level child this module derives the relation "output x depends on input
y", the child's input being the previous layer up to an elementwise map and a row-major
reshape:

- ``INCL=True`` gives the structural pattern as a product :class:`~nsp.graph.relations.Relation`
  (per-axis 0/1 factors), independent of weights and data;
- ``INCL=False`` gives the nonzero pattern of the child's Jacobian at the input it actually
  received, as a scipy CSR boolean matrix.

Each operation's relation comes from its rule (:mod:`nsp.rules`); the interpreter here
composes them along the dataflow recorded during the probe's forward pass
(:class:`nsp.graph.dataflow.Program`). An operation without a rule raises
:class:`UnsupportedModuleError` naming it and its module path, once the output is
found to depend on it; a wrong graph is never produced.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from nsp.common.progress import Progress
from nsp.common.tracer import map_leaves, tensors_in
from nsp.graph.dataflow import Op, Program, Ref
from nsp.graph.network_structure import NetworkStructure
from nsp.graph.permutations import PERMUTE_NAMES, axis_order, permute_rows, reorder_aligned
from nsp.graph.relations import Relation, StructureError, Term, eye_factor
from nsp.graph.sparse_products import RowClasses
from nsp.graph.rules import (
    ELEMENTWISE_MODULES, BatchNormRule, Call, ConcatRule, ElementwiseFunctionRule, ElementwiseModuleRule, LeafRule,
    ReshapeRule, Rule, UnsupportedModuleError, is_leaf_module, rule_for_function, rule_for_module, unsupported,
)

# Module rules whose INCL=True relation is the identity of the input's shape, whatever the
# module (exactly these classes: a subclass may have other terms or checks).
_COPY_RULES = (ElementwiseModuleRule, BatchNormRule)

# Tensor methods without arguments that return a copy of their tensor: ElementwiseFunctionRule's
# identity, under the same kept-aside permutation.
_COPY_METHODS = frozenset({"contiguous", "clone"})

# Classes of input rows are measured one directional derivative each where they number at
# most this share of the backward passes that measuring the whole pattern takes.
_CLASS_SHARE = 4

__all__ = [
    "UnsupportedModuleError", "NetworkStructure", "build_structure", "fingerprint", "is_leaf_module", "ELEMENTWISE_MODULES",
]


@dataclass
class _Pending:
    """An unsupported operation; an error only if the child's output depends on it."""

    error: UnsupportedModuleError


def _refs(op: Op) -> list[Ref]:
    """The recorded tensors an op reads, each once, in order of first appearance."""
    if not op.kwargs and type(op.args) is tuple and len(op.args) == 1 and type(op.args[0]) is Ref:
        # A module or layer reading one tensor (nearly every op): no tree to walk.
        return [op.args[0]]
    found: list[Ref] = []

    def keep(a: Any) -> None:
        if isinstance(a, Ref):
            found.append(a)

    map_leaves(keep, (op.args, op.kwargs))  # visits every leaf of the arguments, in order
    # One hash each: a DenseNet concatenation of n parts compared n²/2 pairs.
    return list(dict.fromkeys(found))


def _substitute(tree: Any, values: dict[Ref, Any]) -> Any:
    return map_leaves(lambda a: values[a] if isinstance(a, Ref) else a, tree)


@dataclass
class _Interpreter:
    """Composes the relations along a recorded program (see ``nsp.graph.dataflow.Program``).

    Every recorded value carries a map ``{layer: relation}``: how it depends on each
    layer that reaches it without passing through another layer. A ``'layer'`` op
    records its incoming map as that layer's parents and restarts the map.

    With ``INCL=True`` a permutation of axes (``permute``, ``transpose``) is kept aside
    rather than applied: the value's relations stay in its *logical* axis order, axis
    ``j`` of the tensor being logical axis ``perm[j]``. Rules that act axis by axis
    (``Rule.aligned``) apply in logical order, so ConvNeXt's and Swin's channels-last
    detours never reorder a relation; anything else first reorders the rows
    (:func:`~nsp.graph.permutations.permute_rows`).

    With ``digest`` set it only replays the program and feeds everything the INCL=False
    relations would depend on into the hash (see ``fingerprint``).
    """

    incl: bool
    digest: Any = None
    progress: Progress | None = None
    row_classes: dict[int, np.ndarray] = field(default_factory=dict)

    def identity(self, shape: tuple[int, ...]) -> Any:
        if self.incl:
            return Relation.identity(shape or (1,))
        return RowClasses.identity(math.prod(shape))

    def compose(self, outer: Any, deps: dict[int, Any]) -> dict[int, Any]:
        if self.incl:
            if isinstance(outer, Term) and all(f is eye_factor(f.shape[0]) for f in outer.factors):
                # Elementwise modules, BatchNorm, reshapes: the relations stay as they are.
                return dict(deps)
            outer = Relation.of(outer) if isinstance(outer, Term) else outer
            return {k: outer.compose(r) for k, r in deps.items()}
        if isinstance(outer, tuple):
            return {k: r.after_pruned(*outer) for k, r in deps.items()}
        if isinstance(outer, Term):
            return {k: r.after_term(outer) for k, r in deps.items()}
        return {k: r.after(outer) for k, r in deps.items()}

    def union(self, a: dict[int, Any], b: dict[int, Any]) -> dict[int, Any]:
        out = dict(a)
        for k, r in b.items():
            if k not in out:
                out[k] = r
            else:
                out[k] = out[k].union(r)
        return out

    def run(
        self, program: Program, name: str, owner: str, x: torch.Tensor | None, source: int,
        source_shape: tuple[int, ...] | None = None,
    ) -> tuple[dict[int, Any], dict[int, dict[int, Any]]]:
        """Interpret ``program`` whose input is layer ``source``.

        ``x`` is the program's actual input (batch of one); it is needed only for
        ``INCL=False``, where the program is replayed to get Jacobian nonzeros.
        ``source_shape`` is the layer's own shape, when the program's input is a reshape
        of it: the relations start as the identity over its axes (VGG's classifier reads
        its 512×7×7 features flattened, and one 25,088-wide identity factor costs 630 MB).

        Returns
        -------
        (dict, dict)
            The dependence map of the program's output, and the incoming map of every
            layer the program marks.
        """
        start = Ref(-1)
        self.shapes: dict[Ref, tuple[int, ...]] = {start: program.input_shape}
        self.perms: dict[Ref, tuple[int, ...] | None] = {start: None}
        self.stand_ins: dict[Ref, torch.Tensor] = {}
        self.cats: dict[tuple[int, tuple[Ref, ...]], Ref] = {}
        own = program.input_shape[1:]
        if source_shape is not None and math.prod(source_shape) == math.prod(own):
            own = source_shape
        maps: dict[Ref, Any] = {start: {} if self.digest is not None else {source: self.identity(own)}}
        values: dict[Ref, Any] = {start: x}
        layers: dict[int, dict[int, Any]] = {}
        for i, op in enumerate(program.ops):
            outs = [Ref(i, k) for k in range(max(1, len(op.shapes)))]
            for k, ref in enumerate(outs):
                self.shapes[ref] = op.shapes[k] if op.shapes else op.shape
                self.perms[ref] = None
            path = op.path or name
            refs = _refs(op)
            if op.kind == "refused":
                # Where the value went is unknown, so no later operation can be trusted.
                raise unsupported(path, _label(op), op.args[0])
            blocked = next((maps[r] for r in refs if isinstance(maps[r], _Pending)), None)
            if blocked is None:
                try:
                    results = self._op(op, i, path, refs, maps, values, layers)
                    for ref, result in zip(outs, results):
                        maps[ref] = result
                    continue
                except UnsupportedModuleError as err:
                    blocked = _Pending(err)
                except StructureError as err:
                    blocked = _Pending(unsupported(path, _label(op), str(err)))
            if op.kind == "layer":
                raise blocked.error
            for ref in outs:
                maps[ref] = blocked
        if program.output is None:
            raise unsupported(name, owner, "its output was not computed from its input by operations nsp can see")
        result = maps[program.output]
        if isinstance(result, _Pending):
            raise result.error
        return self._export(self._plain(program.output, result, name, owner)), layers

    def _export(self, deps: Any) -> Any:
        """A dependence map as the structure stores it (``INCL=False``: CSR matrices).

        Each matrix's row classes are kept in ``row_classes`` under its ``id``, for
        :attr:`NetworkStructure.row_classes`.
        """
        if self.incl or self.digest is not None or isinstance(deps, _Pending):
            return deps
        out = {k: r.to_csr() for k, r in deps.items()}
        for k, r in deps.items():
            self.row_classes[id(out[k])] = r.inverse
        return out

    def _plain(self, ref: Ref, deps: Any, path: str, what: str) -> Any:
        """The map of ``ref`` with its rows in the tensor's own order (permutation applied)."""
        perm = self.perms.get(ref)
        if not self.incl or perm is None or isinstance(deps, _Pending):
            return deps
        logical = tuple(self.shapes[ref][1:][perm.index(j)] for j in range(len(perm)))
        try:
            out = {k: Relation(tuple(p for t in r.terms for p in permute_rows(t, logical, perm)), r.n_out, r.n_in)
                   for k, r in deps.items()}
        except StructureError as err:
            raise unsupported(path, what, f"undoing a permutation of axes: {err}") from None
        self.perms[ref] = None
        return out

    def _op(self, op: Op, i: int, path: str, refs: list[Ref], maps: dict, values: dict, layers: dict) -> list[Any]:
        if op.kind == "layer":
            if not refs:
                raise unsupported(
                    path, op.owner, "its output was not computed from the recorded input by operations nsp can see "
                    "(e.g. a round trip through numpy, or a custom extension)"
                )
            src = refs[0]
            layers[op.target] = _reaching(self._export(self._plain(src, maps[src], path, op.owner)))
            values[Ref(i)] = values.get(src)
            if self.progress is not None:
                self.progress.done(op.target)
            return [{} if self.digest is not None else {op.target: self.identity(op.shape[1:])}]
        if op.kind == "module":
            rule = rule_for_module(op.target)
            label = type(op.target).__name__
            if not refs:
                raise unsupported(
                    path, label, "its input was not computed from the recorded input by operations nsp "
                    "can see (e.g. a round trip through numpy, or a custom extension)"
                )
        else:
            rule = rule_for_function(op.target)
            label = _label(op)
        n_out = max(1, len(op.shapes))
        if not self.incl:
            with torch.no_grad():
                args = _substitute(op.args, values)
                kwargs = _substitute(op.kwargs, values)
                out = op.target(*[a.clone() if isinstance(a, torch.Tensor) and op.kind == "module" else a for a in args],
                                **kwargs)
            flat = tensors_in(out)
            for k, t in enumerate(flat):
                values[Ref(i, k)] = t
        if op.name in PERMUTE_NAMES and self.incl and rule is not None and len(refs) == 1:
            return [self._permute(op, refs[0], Ref(i), path, label, maps)]
        if rule is None:
            raise unsupported(path, label, "no rule for this operation")
        if self.incl and isinstance(rule, ConcatRule):
            op = self._nested_cat(op, i, maps)
            refs = _refs(op)
        results: list[Any] = []
        for k in range(n_out):
            try:
                results.append(self._apply(rule, op, i, k, path, label, refs, maps, values))
            except UnsupportedModuleError as err:
                if n_out == 1:
                    raise
                results.append(_Pending(err))
        return results

    def _nested_cat(self, op: Op, i: int, maps: dict) -> Op:
        """``cat([a, ..., y, z])`` as ``cat([cat([a, ..., y]), z])``, the same map, where an
        earlier concatenation joined those leading parts along the same axis (INCL=True):
        a DenseNet block's n concatenations unioned O(n²) parts, in different factor forms.
        """
        key = _cat_key(op, len(self.shapes[Ref(i)]))
        if key is None:
            return op
        dim, parts = key
        self.cats.setdefault(key, Ref(i))
        for m in range(len(parts) - 1, 1, -1):
            earlier = self.cats.get((dim, parts[:m]))
            if earlier is not None and not isinstance(maps.get(earlier), _Pending):
                # Only where those parts reach a layer together: else nesting saves no union.
                reached = [k for p in set(parts[:m]) if not isinstance(maps[p], _Pending) for k in maps[p]]
                if len(set(reached)) < len(reached):
                    return replace(op, args=([earlier, *parts[m:]], dim), kwargs={})
                return op
        return op

    def _meta(self, ref: Ref) -> torch.Tensor:
        """The ``meta`` tensor that stands in for ``ref`` (``INCL=True``): one per value, made
        once, since a value is the output of one call and the input of the next ones."""
        stand_in = self.stand_ins.get(ref)
        if stand_in is None:
            stand_in = self.stand_ins[ref] = torch.empty(self.shapes[ref], device="meta")
        return stand_in

    def _permute(self, op: Op, src: Ref, dst: Ref, path: str, label: str, maps: dict) -> Any:
        """``permute``/``transpose``/``movedim``: only the recorded axis order changes (INCL=True)."""
        n = len(self.shapes[src]) - 1
        before = self.perms[src] or tuple(range(n))
        order = axis_order(op, n + 1)
        if order is None or order[0] != 0:
            raise unsupported(path, label, "it moves the batch dimension")
        self.perms[dst] = tuple(before[a - 1] for a in order[1:])
        if self.perms[dst] == tuple(range(n)):
            self.perms[dst] = None
        return maps[src]

    def _apply(self, rule: Rule, op: Op, i: int, item: int, path: str, label: str, refs: list[Ref],
               maps: dict, values: dict) -> Any:
        if op.kind == "module" and item > 0:
            raise unsupported(path, label, "only its first output has a rule")
        if self.incl and type(rule) in _COPY_RULES and len(op.args) == 1 and op.args[0] is refs[0] and not op.kwargs \
                and self.shapes[refs[0]] == self.shapes[Ref(i)]:
            # BatchNorm or an activation module: its identity term leaves the relations as
            # they are (what the general path below returns, without building or composing it).
            x, out = self._meta(refs[0]), self._meta(Ref(i))
            rule.check(Call(op.target, (x,), {}, [x], out, path, label, 0, False, label), True)
            self.perms[Ref(i)] = self.perms[refs[0]]
            return dict(maps[refs[0]])
        if self.incl and type(rule) is ElementwiseFunctionRule and op.name in _COPY_METHODS and len(op.args) == 1 \
                and op.args[0] is refs[0] and not op.kwargs and self.shapes[refs[0]] == self.shapes[Ref(i)]:
            # The same for a copy (a channel shuffle's contiguous), which the rule checks for nothing.
            self.perms[Ref(i)] = self.perms[refs[0]]
            return dict(maps[refs[0]])
        if self.incl and type(rule) is ReshapeRule and len(refs) == 1:
            # A view or reshape (ShuffleNet's channel shuffles: two each): ReshapeRule's identity
            # leaves the relations, in the tensor's own axis order, as they are, known without
            # building the call. One that moves the batch takes the rule's refusal.
            before, after = self.shapes[refs[0]], self.shapes[Ref(i, item)]
            if before[:1] == after[:1] and math.prod(before) == math.prod(after):
                maps[refs[0]] = self._plain(refs[0], maps[refs[0]], path, label)
                return dict(maps[refs[0]])
        shapes = [self.shapes[r] for r in refs]
        if self.incl:
            stand_in = {r: self._meta(r) for r in refs}
            output = self._meta(Ref(i, item))
        else:
            stand_in = {r: values[r] for r in refs}
            output = values[Ref(i, item)]
        args, kwargs = _substitute((op.args, op.kwargs), stand_in)
        call = Call(op.target, args, kwargs,
                    [stand_in[r] for r in refs], output, path, op.name if op.kind != "module" else label, item,
                    not self.incl, label)
        rule.check(call, self.incl)
        if self.digest is not None:
            evidence = rule.fingerprint(call)
            self.digest.update(label.encode())
            if evidence is not None:
                self.digest.update(str(evidence.shape).encode())
                self.digest.update(np.ascontiguousarray(evidence).tobytes())
            return {}
        perms = {self.perms[r] for r in refs}
        keep_perm = None
        if self.incl and perms != {None}:
            if rule.aligned and len(perms) == 1 and all(len(s) == len(self.shapes[Ref(i, item)]) for s in shapes):
                keep_perm = next(iter(perms))
            else:
                for r in refs:
                    maps[r] = self._plain(r, maps[r], path, label)
        if not self.incl and not isinstance(rule, LeafRule):
            whole = _reach_classes(rule, call, [maps[r] for r in refs])
            if whole is not None:
                return whole
        exact = None if self.incl or not isinstance(rule, LeafRule) else rule.exact_term(call)
        rels = rule.relations(call) if self.incl else [exact] if exact is not None else rule.measured(call)
        if len(rels) != len(refs):
            raise unsupported(path, label, f"its rule gave {len(rels)} relations for {len(refs)} inputs")
        out: dict[int, Any] = {}
        parts: dict[int, list[Relation]] = {}
        for r, rel in zip(refs, rels):
            if rel is None:
                continue
            if keep_perm is not None:
                rel = reorder_aligned(rel, keep_perm, path, label)
            if not self.incl:
                out = self.union(out, self.compose(rel, maps[r]))
                continue
            # All the inputs' relations to a layer are unioned at once (a concatenation's parts).
            for k, composed in self.compose(rel, maps[r]).items():
                parts.setdefault(k, []).append(composed)
        self.perms[Ref(i, item)] = keep_perm
        return out if not self.incl else {k: rs[0].union(*rs[1:]) if len(rs) > 1 else rs[0] for k, rs in parts.items()}


def _reach_classes(rule: Rule, call: Call, deps: list[dict[int, RowClasses]]) -> dict[int, RowClasses] | None:
    """``INCL=False`` for a rule measured by autograd, from the classes of its inputs' rows.

    Input positions of one class reach the same set of an earlier layer, so an output's
    set is the union of the classes its Jacobian row touches, and that is all there is to
    measure: one directional derivative per class (:meth:`Rule.reached_rows`), instead of
    one backward pass per colour of outputs. Once attention has mixed the tokens every
    row is one class, the whole layer. None where the classes are too many for this to
    pay, or where the rule measures its own patterns.
    """
    jobs = []
    for i, d in enumerate(deps):
        for k, r in d.items():
            used = np.unique(r.inverse)
            jobs += [(k, i, c) for c in used[np.diff(r.rows.indptr)[used] > 0]]
    if not jobs:
        return None
    passes = rule.autograd_passes(call)
    if passes is None or len(jobs) * _CLASS_SHARE > passes:
        return None
    out: dict[int, RowClasses] = {}
    for k in sorted({k for k, _, _ in jobs}):
        reached, rows = [], []
        for _, i, c in (job for job in jobs if job[0] == k):
            sources: list[np.ndarray | None] = [None] * len(deps)
            sources[i] = deps[i][k].inverse == c
            found = rule.reached_rows(call, sources)
            if found is None:
                return None
            reached.append(found)
            rows.append(deps[i][k].rows[int(c)])
        out[k] = RowClasses.over(sp.csr_matrix(np.stack(reached, axis=1)), sp.vstack(rows, format="csr"))
    return out


def _reaching(deps: dict[int, Any]) -> dict[int, Any]:
    """A layer's parents less those it keeps no node of (unless none would be left).

    ShuffleNet's shuffle sends ever fewer channels of an earlier unit on through the identity
    halves, until none reaches a later unit's branch; the map still names that unit's layer,
    with an empty relation: no edge, and no block in the dense reference.
    """
    if len(deps) < 2:
        return deps
    kept = {k: r for k, r in deps.items() if not _is_empty(r)}
    return kept if kept and len(kept) < len(deps) else deps


def _is_empty(rel: Any) -> bool:
    if isinstance(rel, Relation):
        return all(t.is_empty() for t in rel.terms)
    if isinstance(rel, Term):
        return rel.is_empty()
    return rel.count_nonzero() == 0


def _cat_key(op: Op, ndim: int) -> tuple[int, tuple[Ref, ...]] | None:
    """A concatenation's non-negative axis and parts, or None unless every part is a recorded tensor."""
    if set(op.kwargs) - {"tensors", "dim"}:
        return None
    parts = op.args[0] if op.args else op.kwargs.get("tensors")
    dim = op.args[1] if len(op.args) > 1 else op.kwargs.get("dim", 0)
    if not isinstance(parts, (list, tuple)) or not all(isinstance(p, Ref) for p in parts) or not isinstance(dim, int):
        return None
    return (dim + ndim if dim < 0 else dim), tuple(parts)


def _label(op: Op) -> str:
    return f"{op.name} in {op.owner}" if op.owner else op.name


# -- the whole network -------------------------------------------------------------------
def build_structure(activations: Any, incl: bool) -> NetworkStructure:
    """Derive the edges between consecutive layers of a recorded pattern.

    Parameters
    ----------
    activations : Activations
        A recorded pattern; its ``layerdescriptions[1:]`` are the child modules.
    incl : bool
        Structural (True) or data-dependent (False) edges, as in ``NNGraph``.

    Raises
    ------
    UnsupportedModuleError
        If a child (or a part of it) cannot be analysed; the message names its path.
    ValueError
        If the pattern was recorded without its dataflow (``Activations(..., like=...)``).
    """
    _require_dataflow(activations, "nsp.NNGraph")
    progress = Progress("INCL=True graph" if incl else "INCL=False graph", list(activations.layernames))
    interpreter = _Interpreter(incl, progress=progress)
    shapes = [tuple(a.shape) for a in activations.layeractivations]
    if activations._dataflow is not None:
        x = None if incl else _to_modules(activations.layerdescriptions[1:], activations.layeractivations[0].unsqueeze(0))
        _, layers = interpreter.run(activations._dataflow, "network", "network", x, 0)
        parents = [{}] + [layers[layer] for layer in range(1, len(shapes))]
        return NetworkStructure(list(activations.layernames), shapes, incl, parents, _classes(interpreter, parents))
    parents: list[dict[int, Any]] = [{}]
    for layer in range(1, len(shapes)):
        name = activations.layernames[layer]
        child = activations.layerdescriptions[layer]
        program = activations._programs[layer]
        prev_n = math.prod(shapes[layer - 1])
        if math.prod(program.input_shape[1:]) != prev_n:
            raise UnsupportedModuleError(
                f"nsp.NNGraph: child '{name}' ({type(child).__name__}) received {math.prod(program.input_shape[1:])} "
                f"values, but the previous layer '{activations.layernames[layer - 1]}' has {prev_n}; with top-level "
                "layers, each child's input must be an elementwise image of the previous child's output"
            )
        x = None if incl else _to_module(child, activations._layerinputs[layer].unsqueeze(0))
        parents.append(interpreter.run(program, name, type(child).__name__, x, layer - 1, shapes[layer - 1])[0])
        progress.done(layer)
    return NetworkStructure(list(activations.layernames), shapes, incl, parents, _classes(interpreter, parents))


def _require_dataflow(activations: Any, who: str) -> None:
    if not activations.has_dataflow:
        raise ValueError(
            f"{who}: this pattern was recorded without the dataflow between its layers (with `like=`, or read "
            "back from a file), so its graph cannot be built; record it with nsp.Activations(network, input)"
        )


def _classes(interpreter: _Interpreter, parents: list[dict[int, Any]]) -> list[dict[int, np.ndarray]] | None:
    """The row classes the interpreter kept for each exported relation (``INCL=False``)."""
    if interpreter.incl:
        return None
    return [{k: interpreter.row_classes[id(e)] for k, e in p.items() if id(e) in interpreter.row_classes} for p in parents]


def _to_modules(modules: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` on the device and in the floating dtype of the first parameter among ``modules``."""
    for m in modules:
        if next(m.parameters(), None) is not None:
            return _to_module(m, x)
    return x.clone()


def _to_module(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` on the device and in the floating dtype of ``m``'s parameters.

    A copy: the replay may write into it in place (``x.mul_(2)`` in a forward), and ``x``
    is the pattern's own value (a child's input shares the previous layer's).
    """
    p = next(m.parameters(), None)
    if p is None:
        return x.clone()
    # Token ids stay integers (an embedding reads them as indices).
    if not x.is_floating_point():
        return x.to(device=p.device, copy=True)
    return x.to(device=p.device, dtype=p.dtype, copy=True)


def fingerprint(activations: Any) -> str:
    """A digest of everything the ``INCL=False`` graph of a pattern depends on.

    It covers the layer names and shapes, the nonzero masks of the weights in use (read
    from the modules at call time, so pruning masks applied through
    ``torch.nn.utils.prune`` count), the argmax of every max-pool window and where each
    elementwise function has a nonzero derivative. Two patterns with the same
    fingerprint have the same ``INCL=False`` graph, so a graph and its transformer need
    rebuilding only when it changes. It costs one replay of the children, far less
    than building the graph.

    Parameters
    ----------
    activations : Activations
        A recorded pattern.

    Returns
    -------
    str
        32 hexadecimal digits.
    """
    _require_dataflow(activations, "nsp.fingerprint")
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr([(n, tuple(a.shape)) for n, a in zip(activations.layernames, activations.layeractivations)]).encode())
    interpreter = _Interpreter(incl=False, digest=digest)
    if activations._dataflow is not None:
        x = _to_modules(activations.layerdescriptions[1:], activations.layeractivations[0].unsqueeze(0))
        interpreter.run(activations._dataflow, "network", "network", x, 0)
        return digest.hexdigest()
    for layer in range(1, len(activations.layernames)):
        child = activations.layerdescriptions[layer]
        x = _to_module(child, activations._layerinputs[layer].unsqueeze(0))
        interpreter.run(activations._programs[layer], activations.layernames[layer], type(child).__name__, x, layer - 1)
    return digest.hexdigest()
