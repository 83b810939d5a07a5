"""``Σ_{K<L} A_{L,K} X_K`` on int64 limbs, for ancestor relations that are products.

The ``INCL=True`` kernel of :class:`~nsp.transforms.causal.CausalTransform`: the relations are
unions of Kronecker products of small per-axis 0/1 factors (:mod:`nsp.graph.relations`),
applied with axis sums and prefix sums in about O(N·L) work, never forming an N×N matrix.
Every partial sum is a signed sum of limbs (:mod:`nsp.transforms.limbs`), so the limb width
:class:`ProductKernel` chooses keeps it exact in int64.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import numpy as np

from nsp.graph.relations import Relation, StructureError, Term, eye_factor, ones_factor
from nsp.graph.structure import NetworkStructure
from nsp.transforms.concatenations import MaskGroups, Parts, content_key, single_parents
from nsp.transforms.limbs import add_limbs
from nsp.transforms.product_ops import apply_ops, compile_term, summed_mask

__all__ = ["ProductKernel"]

_LOG2_E = 1.0 / math.log(2.0)


def _is_full(rel: Relation) -> bool:
    """Whether some term of ``rel`` is all ones (every node reaches every node of the other layer)."""
    return any(all(f is ones_factor(*f.shape) or f.all() for f in t.factors) for t in rel.terms)


def _is_identity(rel: Relation) -> bool:
    if len(rel.terms) != 1 or rel.n_out != rel.n_in or rel.terms[0].in_order is not None:
        return False
    return all(
        f is eye_factor(f.shape[0]) or (f.shape[0] == f.shape[1] == np.count_nonzero(f) and bool(f.diagonal().all()))
        for f in rel.terms[0].factors
    )


def _sum_limbs(parts: list[np.ndarray]) -> np.ndarray:
    """The sum of limb arrays whose limb counts (first axis) may differ: the first of them
    itself where there is one, else a new array (one pass per array, not add_limbs' two)."""
    if len(parts) == 1:
        return parts[0]
    parts = sorted(parts, key=len, reverse=True)
    first, second = parts[0], parts[1]
    if first.shape == second.shape:
        out = first + second
    else:
        out = first.copy()
        out[: second.shape[0]] += second
    for part in parts[2:]:
        out[: part.shape[0]] += part
    return out


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``[a, b)`` of consecutive integers in a sorted array."""
    if values.size == 0:
        return []
    # The ends read from a list: numpy's scalar indexing and concatenations were most of the cost.
    v = values.tolist()
    cut = (np.flatnonzero(np.diff(values) != 1) + 1).tolist()
    return [(v[a], v[b - 1] + 1) for a, b in zip([0, *cut], [*cut, len(v)])]


def _log2_add(a: float, b: float) -> float:
    """``log2(2**a + 2**b)``, numpy's ``logaddexp2`` for two Python floats (either may be -inf)."""
    if a < b:
        a, b = b, a
    if b == -math.inf:
        return a
    return a + math.log1p(2.0 ** (b - a)) * _LOG2_E


class ProductKernel:
    """``Σ_{K<L} A_{L,K} X_K`` for product-shaped ancestor relations.

    A deep network has about L²/2 pairs of layers, and composing, cutting and applying a
    relation per pair was most of the cost of a leaf-level transform (DenseNet-121:
    67,000 pairs). Five facts cut the pairs down:

    - *Full relations*: once every node of L lies above every node of K (receptive fields
      cover the map), ``A_{L,K} X_K`` is K's total, broadcast. Such K are found without
      composing (if every node of L has a parent in P, every K full below P is full
      below L), and their totals are read from prefix sums over the layer order, so a
      layer costs one subtraction per run of consecutive full layers.
    - *Copies*: a layer whose only parent P feeds it through the identity (BatchNorm,
      ReLU, dropout) has ``Σ_{K<L} A_{L,K} X_K = X_P + Σ_{K<P} A_{P,K} X_K``: P's own
      sum, kept from P's turn, plus P's spectrum. It needs no relations at all.
    - *Gathers*: the same holds node by node wherever every node of L has one parent node
      (the BatchNorm of a concatenation, a slice): each node reads its parent's sum.
    - *Masks*: a layer K full below one part of a concatenation is below every node of
      that part: a row mask of L times all of K. Such K are kept in groups sharing a mask,
      carried to the children one group at a time (a convolution after the concatenation
      usually makes them full), and summed as prefix-sum totals spread over the mask.
    - *Shared relations*: layers whose relation to L is the same object (the conv, norm
      and activation of one stage, seen through identities) are summed first and the
      relation applied once. Compositions and unions are memoised on their operands, so
      identities keep relations shared, and relations are interned by content, so equal
      relations of repeated units are one object.
    """

    def __init__(self, structure: NetworkStructure) -> None:
        n_layers = len(structure.sizes)
        self.sizes = structure.sizes
        self.shapes = structure.shapes
        self.copy_of: list[int | None] = [None] * n_layers
        # Layers whose every node has one parent node (a concatenation): per parent layer,
        # the nodes of L and their parents there (slices or index arrays).
        self.gathers: list[list[tuple[int, Any, Any]] | None] = [None] * n_layers
        self.plans: list[list[tuple[tuple[int, ...], Any]]] = [[]]
        self.full: list[np.ndarray] = [np.zeros(0, np.int64)]
        # ancestors[L][K]: the nodes of layer K below each node of layer L, for the K that
        # are not full below L (fulls[L]).
        ancestors: list[dict[int, Relation | Parts]] = [{}]
        fulls: list[frozenset[int]] = [frozenset()]
        # masks[L]: (an N_L × 1 relation M, layers ks): the nodes of M lie above every node
        # of each K in ks. A K full below L (fulls[L]) is in neither ancestors[L] nor
        # masks[L], and in at most one mask; A_{L,K} is the union of the other two.
        masks: list[list[tuple[Relation, frozenset[int]]]] = [[]]
        # Per layer, (ks, their runs, the compiled mask): masks[L] as the pass applies them.
        self.masked: list[list[tuple[np.ndarray, list[tuple[int, int]], list]]] = [[]]
        memo: dict[tuple, tuple] = {}

        def cached(op: str, a: Relation, b: Relation) -> Relation:
            # The operands are kept in the memo, so their ids stay theirs.
            key = (op, id(a), id(b))
            if key not in memo:
                if op == "compose":
                    # Through an identity the relation stays the same object, so it can be shared.
                    result = a if identity_of(b) else b if identity_of(a) else a.compose(b)
                else:
                    result = a.union(b)
                memo[key] = (a, b, intern(result))
            return memo[key][2]

        identities: dict[int, tuple[Relation, bool]] = {}
        # A relation shared by many pairs (a copy's, seen through identities) is checked
        # once: every layer asked it again of each relation it holds.
        fullness: dict[int, tuple[Relation, bool]] = {}

        def full_of(rel: Relation) -> bool:
            if id(rel) not in fullness:
                fullness[id(rel)] = (rel, _is_full(rel))
            return fullness[id(rel)][1]

        def identity_of(rel: Relation) -> bool:
            if id(rel) not in identities:
                identities[id(rel)] = (rel, _is_identity(rel))
            return identities[id(rel)][1]

        rows: dict[int, Relation] = {}

        def everything(k: int) -> Relation:
            """Layer K seen from a single node: the 1 × N_K full relation."""
            if k not in rows:
                rows[k] = intern(Relation.of(Term(tuple(ones_factor(1, d) for d in self.shapes[k] or (1,)))))
            return rows[k]

        # One object per content for every relation the plan holds (a single parent's relation,
        # each composition and union), so that the memo, keyed on ids, also serves equal
        # relations of other layers: a network's repeated units (ShuffleNet's), a gather's
        # child composing the parts of any of a block's concatenations. Ids, and contents.
        interned: dict[int, tuple[Relation, Relation]] = {}
        contents: dict[Any, Relation] = {}

        def intern(rel: Relation) -> Relation:
            if id(rel) not in interned:
                key = (rel.n_out, rel.n_in, tuple((t.in_order, *map(content_key, t.factors)) for t in rel.terms))
                interned[id(rel)] = (rel, contents.setdefault(key, rel))
            return interned[id(rel)][1]

        def union_all(rels: list[Relation]) -> Relation:
            # In part order: the unions of a concatenation's first parts are shared by the later ones.
            return functools.reduce(lambda a, b: cached("union", a, b), rels)

        def through(e: Relation, rel: Relation | Parts) -> Relation:
            """``e ∘ rel``, a gather's parts composed one by one."""
            if not isinstance(rel, Parts):
                return cached("compose", e, rel)
            firsts = [cached("compose", e, outer) for outer, _ in rel.parts]
            return union_all([f if inner is None else cached("compose", f, inner) for f, (_, inner) in zip(firsts, rel.parts)])

        def whole(rel: Relation | Parts) -> Relation:
            if not isinstance(rel, Parts):
                return rel
            return union_all([outer if inner is None else cached("compose", outer, inner) for outer, inner in rel.parts])

        # A layer full below a parent that gives only some nodes of L a parent there (a concatenation's part) is
        # below those nodes entirely: a row mask of L times all of K. Such layers are kept in groups sharing one
        # mask, carried from parent to child one group at a time, never one relation per layer (DenseNet: 10,000).
        grouping = MaskGroups(lambda a, b: cached("compose", a, b), lambda a, b: cached("union", a, b), full_of)
        compiled: dict[int, tuple[Relation, list]] = {}
        factor_ops: dict[int, tuple[np.ndarray, str | None, Any, float]] = {}

        def compile_once(rel: Relation) -> list:
            if id(rel) not in compiled:
                compiled[id(rel)] = (rel, [compile_term(term, factor_ops) for term in rel.disjoint()])
            return compiled[id(rel)][1]

        for layer in range(1, n_layers):
            self.masked.append([])
            parents = {p: Relation.of(e) if isinstance(e, Term) else e for p, e in sorted(structure.parents[layer].items())}
            if len(parents) == 1:
                # One object per content (a block's convolutions, layer after layer), so that the compositions through
                # it are memoised across the block.
                parents = {p: intern(e) for p, e in parents.items()}
            # A layer may also be below other nodes of L partly (ancestors[L][K]): the two
            # are kept apart, as a union, and joined only in a plan that sums over them.
            copy = len(parents) == 1 and identity_of(next(iter(parents.values())))
            gather = None if copy else single_parents(parents, next(iter(parents.values())).n_out)
            full, groups = grouping.groups(self.shapes[layer], parents, fulls, masks, copy, gather)
            own: dict[int, Relation | Parts] = {}
            for p, e in parents.items():
                identity = identity_of(e)
                if gather is not None:
                    # A gather keeps its relations as parts (see :class:`~nsp.transforms.concatenations.Parts`).
                    for k, rel in [(p, None)] + [(k, whole(r)) for k, r in ancestors[p].items() if k not in full]:
                        own[k] = Parts((own[k].parts if k in own else ()) + ((e, rel),))
                    continue
                reach = [(p, e)] + [
                    (k, rel if identity else through(e, rel)) for k, rel in ancestors[p].items() if k not in full
                ]
                for k, rel in reach:
                    own[k] = cached("union", whole(own[k]), whole(rel)) if k in own else rel
            for k in [k for k, rel in own.items() if k in full or not isinstance(rel, Parts) and full_of(rel)]:
                full.add(k)
                del own[k]
            masks.append([(m, ks - full) for m, ks in groups if ks - full])
            ancestors.append(own)
            fulls.append(frozenset(full))
            self.full.append(np.array(sorted(full), dtype=np.int64))
            if copy:
                self.copy_of[layer] = next(iter(parents))
                self.plans.append([])
                continue
            if gather is not None:
                self.gathers[layer] = gather
                self.plans.append([])
                continue
            summed = {k: whole(rel) for k, rel in own.items()}
            for m, ks in masks[layer]:
                # The plan sums each node once: a layer both under the mask and partly below
                # other nodes gets the union as one relation.
                for k in ks & own.keys():
                    summed[k] = cached("union", summed[k], cached("compose", m, everything(k)))
                ks_array = np.array(sorted(ks - own.keys()), dtype=np.int64)
                if ks_array.size:
                    self.masked[layer].append((ks_array, _runs(ks_array), compile_once(m)))
            shared: dict[int, tuple[Relation, list[int]]] = {}
            for k, rel in sorted(summed.items()):
                shared.setdefault(id(rel), (rel, []))[1].append(k)
            plan = []
            for rel, ks in shared.values():
                plan += [(tuple(ks), c) for c in compile_once(rel)]
            self.plans.append(plan)
        self.full_runs = [_runs(f) for f in self.full]
        # A copy is a gather from one parent, with every node in place.
        self.sources: list[list[tuple[int, Any, Any]] | None] = [
            [(q, slice(None), slice(None))] if q is not None else g for q, g in zip(self.copy_of, self.gathers)
        ]
        # Every partial sum of a layer is a signed sum of limbs below 2^b, at most one per
        # node of the network (its own, its ancestors', or a prefix of layer totals).
        self.limb_bits = min(32, 62 - math.ceil(math.log2(int(structure.n) + 1)))
        self._schedule(structure)
        if self.limb_bits < 8:
            raise StructureError(f"nsp: the network is too large for int64 limb arithmetic ({structure.n:,} nodes)")

    def _schedule(self, structure: NetworkStructure) -> None:
        """Plan which axis sums each term reads, and when each layer's limbs can go.

        A term that sums axes of a group of layers reads a sum kept in the pass's memo,
        computed at its first use from the group's limbs or, when an earlier sum covers a
        subset of its axes, from that sum. Sums are keyed by the summed axes of the
        layers' own shape, so terms whose relations cut the index space differently share
        them. A layer's limbs are then needed only until the last term that reads them
        directly, and a sum until its last use. Copies read their parent's limbs and sum;
        full relations read every layer's total once, at the next layer's turn.
        """
        n_layers = len(self.plans)
        self.steps: list[list[tuple[Any, Any, tuple[int, ...]]]] = []
        self.last_read = list(range(n_layers))
        self._prefix = any(f.size for f in self.full) or any(self.masked)
        if self._prefix:
            # Layer totals enter the prefix sums at the next layer's turn.
            self.last_read = [min(k + 1, n_layers - 1) for k in range(n_layers)]
        last_use: dict[Any, int] = {}
        made: dict[tuple[int, ...], list[Any]] = {}
        copied: dict[int, int] = {}
        # Per layer, once: every term of every later plan asked it of each layer in its group.
        naturals_of = [tuple(d for d in shape if d != 1) for shape in structure.shapes]
        # Within one plan the same shapes and sums recur (a network's repeated units).
        masks: dict[tuple, tuple[bool, ...] | None] = {}
        for layer, plan in enumerate(self.plans):
            for q, _, _ in self.sources[layer] or ():
                self.last_read[q] = max(self.last_read[q], layer)
                copied[q] = layer
            steps = []
            for group, (in_dims, _, (ones, _), _) in plan:
                naturals = {naturals_of[k] for k in group}
                natural = next(iter(naturals))
                mask = None
                if ones and len(naturals) == 1:
                    if (natural, in_dims, ones) not in masks:
                        masks[natural, in_dims, ones] = summed_mask(natural, in_dims, ones)
                    mask = masks[natural, in_dims, ones]
                if not ones or (mask is not None and not any(mask)):
                    key, source, axes = None, None, ()
                elif mask is None:
                    key, source, axes = (group, in_dims, ones), None, ones
                else:
                    key = (group, mask)
                    covering = [m for m in made.get(group, []) if len(m) == 2 and m[1] != mask
                                and all(a <= b for a, b in zip(m[1], mask))]
                    source = max(covering, key=lambda m: sum(m[1]), default=None)
                    done = source[1] if source is not None else (False,) * len(mask)
                    axes = tuple(i + 1 for i, (a, b) in enumerate(zip(done, mask)) if b and not a)
                if key is not None and key in last_use:
                    source = None
                elif source is not None:
                    last_use[source] = layer
                else:
                    for k in group:
                        self.last_read[k] = max(self.last_read[k], layer)
                if key is not None:
                    if key not in last_use:
                        made.setdefault(group, []).append(key)
                    last_use[key] = layer
                steps.append((key, source, axes))
            self.steps.append(steps)
        # A layer that a later layer copies keeps the sum below it until that layer's turn.
        self._keeps_below = set(copied)
        for q, layer in copied.items():
            last_use[("below", q)] = layer
        self._expiring: list[list[Any]] = [[] for _ in self.plans]
        for key, layer in last_use.items():
            self._expiring[layer].append(key)

    def growth_bits(self) -> np.ndarray:
        """Per layer, 1 + log2 of an upper bound on max G (see the module docstring).

        ``G(x) ≤ 1 + Σ_K |anc_K(x)| · max G_K``, and ``|anc_K(x)|`` is at most the size of
        layer K and at most the sum over the relation's disjoint terms of the product of
        each factor's largest row count. A copy or gather x of its one parent node y has
        ``G(x) = 1 + G(y)`` at most, bounded here by ``1 + 2 max G`` over the parent layers.
        Computed in log2, so no depth overflows it.
        """
        # Pair by pair in Python floats (a numpy call per pair was most of the cost), whole
        # layer sets (masks, fulls) in numpy: both lists are kept.
        out = [0.0] * len(self.sizes)
        out_array = np.zeros(len(self.sizes))
        log_array = np.log2(np.maximum(np.asarray(self.sizes, dtype=np.float64), 1.0))
        log_sizes = log_array.tolist()
        for layer, plan in enumerate(self.plans):
            if layer == 0:
                continue
            sources = self.sources[layer]
            if sources is not None:
                out[layer] = out_array[layer] = _log2_add(0.0, 1.0 + max(out[q] for q, _, _ in sources))
                continue
            rows: dict[tuple[int, ...], float] = {}
            for group, (_, _, _, row_bits) in plan:
                rows[group] = _log2_add(rows.get(group, -math.inf), float(row_bits))
            total = -math.inf
            for group, bits in rows.items():
                for k in group:
                    total = _log2_add(total, min(bits, log_sizes[k]) + out[k])
            for ks in [ks for ks, _, _ in self.masked[layer]] + [self.full[layer]]:
                if ks.size:
                    total = _log2_add(total, float(np.logaddexp2.reduce(log_array[ks] + out_array[ks])))
            out[layer] = out_array[layer] = _log2_add(0.0, total)
        return out_array + 1

    def parent_signals(self, layer: int, signals: list[np.ndarray]) -> np.ndarray | None:
        """The signals of the one parent node of each node of a copy or gather, else None.

        ``signals[K]`` is layer K's ``(P, N_K)`` block. With INCL=True a node whose only
        parent node is y has ``Σ_{ancestors} ŝ = s_y``, so its spectrum is ``s_x − s_y``.
        """
        sources = self.sources[layer]
        if sources is None:
            return None
        if len(sources) == 1 and sources[0][1] == slice(None):
            q, _, nodes = sources[0]
            return signals[q][:, nodes]
        out = np.empty((signals[layer].shape[0], int(self.sizes[layer])), dtype=signals[layer].dtype)
        for q, rows, nodes in sources:
            out[:, rows] = signals[q][:, nodes]
        return out

    def _totals(self, layer: int, runs: list[tuple[int, int]], xs: Mapping[int, np.ndarray], memo: dict) -> np.ndarray | None:
        """``Σ_{K in runs} (total of X_K)``, limbs ``(k, P)``, from prefix sums over layers."""
        if not self._prefix:
            return None
        prefix = memo.setdefault("prefix", [])
        while len(prefix) < layer:
            total = xs[len(prefix)].sum(axis=2)
            prefix.append(total if not prefix else add_limbs(prefix[-1], total))
        parts = []
        for a, b in runs:
            # Prefix sums never lose limbs along the layers: the later one has at least the earlier's.
            high, low = prefix[b - 1], prefix[a - 1] if a else None
            if low is None:
                parts.append(high)
            elif high.shape == low.shape:
                parts.append(high - low)
            else:
                part = high.copy()
                part[: low.shape[0]] -= low
                parts.append(part)
        return _sum_limbs(parts) if parts else None

    def accumulate(self, layer: int, xs: Mapping[int, np.ndarray], acc: np.ndarray, sign: int, memo: dict) -> None:
        """Add ``sign · Σ_K A_{L,K} xs[K]`` into ``acc``.

        ``xs[K]`` holds layer K's limbs ``(k_K, P, N_K)`` with ``k_K`` at most ``acc``'s.
        ``memo`` (one dict per pass over the layers) keeps axis sums of each earlier
        layer: every later layer that sums the same axes (a full convolution sums all
        channels) reuses them, and each is dropped after its last use.

        The forward transform (``sign < 0``) handles a copy or gather (``sources[layer]``)
        itself: its spectrum is its signal less its parents' (:meth:`parent_signals`), and
        nothing is added here.
        """
        p = acc.shape[1]
        keep = sign > 0 and layer in self._keeps_below
        out = np.zeros_like(acc) if keep else acc
        positive = sign > 0 or keep
        # A copy or gather reads what is below its parents instead.
        totals = self._totals(layer, self.full_runs[layer] if self.sources[layer] is None else [], xs, memo)
        # Each node's one parent node and what is below it: the parent's signal.
        for q, rows, nodes in (self.sources[layer] or ()) if sign > 0 else ():
            below = memo.get(("below", q))
            y = xs[q] if below is None else add_limbs(xs[q], below)
            view = out[: y.shape[0]]
            if positive:
                view[:, :, rows] += y[:, :, nodes]
            else:
                view[:, :, rows] -= y[:, :, nodes]
        bases: dict[tuple[int, ...], np.ndarray] = {}

        def base(group: tuple[int, ...]) -> np.ndarray:
            if group not in bases:
                bases[group] = _sum_limbs([xs[k] for k in group])
            return bases[group]

        # Terms that broadcast over the layer (sums over whole axes: deep layers read most
        # earlier layers this way) are summed among themselves first and added once.
        broadcast: dict[tuple, np.ndarray] = {}
        for (group, (in_dims, out_dims, (ones, rest), _)), (key, source, axes) in zip(
            self.plans[layer], self.steps[layer]
        ):
            if key is None:
                y = base(group).reshape((-1,) + in_dims)
            else:
                y = memo.get(key)
                if y is None:
                    if source is not None:
                        y = memo[source].sum(axis=axes, keepdims=True)
                    else:
                        # Each layer summed first, then the small sums added: no full-size copy of the group's limbs.
                        shape = tuple(d for d in self.shapes[group[0]] if d != 1) if len(key) == 2 else in_dims
                        y = _sum_limbs([xs[k].reshape((-1,) + shape).sum(axis=axes, keepdims=True) for k in group])
                    memo[key] = y
                y = y.reshape((-1,) + tuple(1 if a in ones else d for a, d in enumerate(in_dims, 1)))
            limbs = y.shape[0] // p
            y = apply_ops(y, rest)
            view = out[:limbs].reshape((limbs * p,) + out_dims)
            if 2 * y.size <= view.size:
                # Axes of size 1 dropped, so that terms whose relations cut the layer's index
                # space differently still sum among themselves.
                kept = [i for i, d in enumerate(out_dims) if d != 1]
                y = y.reshape((y.shape[0],) + tuple(y.shape[i + 1] for i in kept))
                out_dims = tuple(out_dims[i] for i in kept)
                group_key = (limbs, out_dims, y.shape)
                if group_key not in broadcast:
                    broadcast[group_key] = y.copy() if positive else -y
                elif positive:
                    broadcast[group_key] += y
                else:
                    broadcast[group_key] -= y
            elif positive:
                view += y
            else:
                view -= y
        for (limbs, out_dims, _), y in broadcast.items():
            view = out[:limbs].reshape((limbs * p,) + out_dims)
            view += y
        # Layers below every node of a mask: their totals, spread over the mask.
        for _, runs, terms in self.masked[layer]:
            total = self._totals(layer, runs, xs, memo)
            limbs = total.shape[0]
            for in_dims, out_dims, (_, rest), _ in terms:
                y = apply_ops(total.reshape((-1,) + in_dims), rest)
                view = out[:limbs].reshape((limbs * p,) + out_dims)
                if positive:
                    view += y
                else:
                    view -= y
        if totals is not None:
            view = out[: totals.shape[0]]
            if positive:
                view += totals[:, :, None]
            else:
                view -= totals[:, :, None]
        if keep:
            memo[("below", layer)] = out
            if sign > 0:
                acc += out
            else:
                acc -= out
        for key in self._expiring[layer]:
            memo.pop(key, None)
