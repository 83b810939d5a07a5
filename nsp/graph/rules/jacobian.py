"""Jacobian patterns measured by autograd inside a structural relation (``INCL=False``).

A rule that knows only its structure gets its Jacobian pattern here: :func:`jacobian_patterns`
colours the output positions and runs one backward pass per colour, and
:func:`elementwise_mask` reads the nonzero derivative of an elementwise function. The
CSR helpers turn relations into the scipy matrices that ``INCL=False`` composes.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.autograd.forward_ad as fwAD
from torch.nn.attention import SDPBackend, sdpa_kernel

from nsp.graph.relations import Relation, Term
from nsp.graph.rules.call import Call

__all__ = [
    "jacobian_patterns", "jacobian_relations", "jacobian_reached_rows", "colour_count", "elementwise_mask", "term_csr",
    "relation_csr", "diagonal_csr",
]

# Entries of the per-colour gradients kept at once when a pattern is measured by autograd.
_GRADIENT_ENTRIES = 1 << 24
# Colours whose backward passes run as one batched autograd call.
_BATCHED_SEEDS = 1024
# Structural patterns of at most this many entries, and at least 1/_DENSE_SHARE full, are
# measured as dense boolean matrices (ViT's attention: 3,840² entries, all structural).
_DENSE_ENTRIES = 1 << 26
_DENSE_SHARE = 8


def term_csr(term: Term) -> sp.csr_matrix:
    """A term's pairs as a boolean CSR matrix (output positions × input positions)."""
    out_idx, in_idx = term.edges()
    return sp.csr_matrix((np.ones(out_idx.size, dtype=bool), (out_idx, in_idx)), shape=(term.n_out, term.n_in))


def relation_csr(rel: Term | Relation) -> sp.csr_matrix:
    """A term's or a relation's pairs as a boolean CSR matrix."""
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
    if q and f.all():
        # Every two rows share a column (attention, LayerNorm): one colour each.
        return np.arange(p, dtype=np.int64), max(1, p)
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
    return [term_csr(p) if isinstance(p, Term) else p for p in jacobian_relations(call, relations)]


def jacobian_relations(call: Call, relations: Sequence[Term | Relation | None]) -> list[Term | sp.csr_matrix | None]:
    """:func:`jacobian_patterns`, except that a relation that is one product (a :class:`Term`,
    or a union that one of its terms covers) comes back as that product where autograd finds
    every one of its pairs nonzero.

    The interpreter composes such a product from its distinct rows, never listing its
    pairs: ViT's attention and LayerNorm have 3,840² and 5 × 768² pairs, all nonzero.
    """
    out: list[Term | sp.csr_matrix | None] = []
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
            out.append(_measure(y, leaf, rel))
    return out


def jacobian_reached_rows(call: Call, relations: Sequence[Term | Relation | None],
                          sources: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """The output positions whose Jacobian row is nonzero at some input position in ``sources``.

    ``sources[i]`` marks positions of input ``i`` (None: none of them), typically a class
    of positions that reach the same set of an earlier layer: an output reaches that set
    exactly where its row is nonzero at one of them. In a transformer, once attention has
    mixed the tokens, every position is one class.

    A row is nonzero where one directional derivative, along a random direction over the
    marked positions, is nonzero; of the rows where it is zero, those the structure lets
    reach a marked position are measured one backward pass each. So a whole attention
    layer costs about two passes instead of one per output. Only structural pairs count,
    as in :func:`jacobian_patterns`. None where neither forward mode nor double backward
    can run the call.
    """
    generator = torch.Generator().manual_seed(0)
    n_out = math.prod(call.out_shape)
    with torch.enable_grad():
        primals = [x.detach().clone() for x in call.inputs]
        tangents = []
        for x, rel, marked in zip(primals, relations, sources):
            if rel is None or marked is None or not x.is_floating_point():
                tangents.append(torch.zeros_like(x) if x.is_floating_point() else None)
                continue
            direction = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.dtype)
            tangents.append(direction.to(x.device) * torch.as_tensor(marked, device=x.device).reshape(x.shape))
        tangent = _directional_derivative(call, primals, tangents)
        if tangent is None:
            return None
        possible = np.zeros(n_out, dtype=bool)
        for rel, marked in zip(relations, sources):
            if rel is not None and marked is not None:
                possible |= _rows_reaching(rel, marked)
        reached = (tangent != 0).reshape(-1).cpu().numpy() & possible
        # Only rows the structure lets reach a marked position, and the derivative missed, are measured.
        unsure = np.flatnonzero(possible & ~reached)
        if unsure.size == 0:
            return reached
        leaves = [x.requires_grad_(x.is_floating_point()) for x in primals]
        y = call.run(*[leaf.clone() if leaf.requires_grad else leaf for leaf in leaves])
        codes = np.full(n_out, -1, dtype=np.int64)
        codes[unsure] = np.arange(unsure.size)
        for leaf, rel, marked in zip(leaves, relations, sources):
            if rel is None or marked is None or not leaf.requires_grad or not y.requires_grad:
                continue
            step = max(1, _GRADIENT_ENTRIES // max(1, leaf.numel()))
            for start in range(0, unsure.size, step):
                stop = min(unsure.size, start + step)
                grads = _colour_gradients(y, leaf, codes, start, stop)
                reached[unsure[start:stop]] |= (grads & marked.reshape(1, -1)).any(axis=1)
    return reached


def colour_count(relations: Sequence[Term | Relation | None]) -> int:
    """The backward passes that :func:`jacobian_patterns` takes for these relations."""
    return sum(_row_colours(r)[1] for r in relations if r is not None)


def _rows_reaching(rel: Term | Relation, marked: np.ndarray) -> np.ndarray:
    """The output positions with a structural pair at a marked input position, factor by factor."""
    out = np.zeros(rel.n_out, dtype=bool)
    for t in _terms(rel):
        m = marked.reshape([f.shape[1] for f in t.factors]).astype(np.float32)
        for a, f in enumerate(t.factors):
            # Counts below 2^24 are exact in float32; only whether they are positive matters.
            m = (np.moveaxis(np.tensordot(f.astype(np.float32), m, axes=([1], [a])), 0, a) > 0).astype(np.float32)
        out |= m.reshape(-1) > 0
    return out


def _directional_derivative(call: Call, primals: list[torch.Tensor], tangents: list[torch.Tensor | None]
                            ) -> torch.Tensor | None:
    """The call's derivative ``J v`` along ``tangents``: forward mode, else by double
    backward as the gradient in ``u`` of ``<J^T u, v>`` (attention's fused kernel has no
    forward mode). None where neither runs."""
    try:
        # The math kernel of attention is made of ops that have forward mode; the fused ones have none.
        with sdpa_kernel([SDPBackend.MATH]), fwAD.dual_level():
            duals = [x if t is None else fwAD.make_dual(x, t) for x, t in zip(primals, tangents)]
            return fwAD.unpack_dual(call.run(*duals)).tangent
    except (RuntimeError, NotImplementedError):
        pass
    try:
        leaves = [x.detach().clone().requires_grad_(t is not None) for x, t in zip(primals, tangents)]
        y = call.run(*[leaf.clone() if leaf.requires_grad else leaf for leaf in leaves])
        if not y.requires_grad:
            return None
        u = torch.zeros_like(y, requires_grad=True)
        used = [(leaf, t) for leaf, t in zip(leaves, tangents) if t is not None]
        grads = torch.autograd.grad(y, [leaf for leaf, _ in used], u, create_graph=True, allow_unused=True)
        inner = sum((g * t).sum() for g, (_, t) in zip(grads, used) if g is not None)
        if not isinstance(inner, torch.Tensor) or not inner.requires_grad:
            return torch.zeros_like(y)
        (out,) = torch.autograd.grad(inner, u, allow_unused=True)
        return torch.zeros_like(y) if out is None else out
    except (RuntimeError, NotImplementedError):
        return None


def _measure(y: torch.Tensor, leaf: torch.Tensor, rel: Term | Relation) -> Term | sp.csr_matrix:
    """The Jacobian pattern of ``y`` in ``leaf`` inside ``rel`` (see :func:`jacobian_relations`)."""
    colours, count = _row_colours(rel)
    whole = _covering_term(rel)
    if _dense_enough(rel):
        grads = _colour_gradients(y, leaf, colours, 0, count)[colours]
        struct = np.zeros_like(grads)
        for t in _terms(rel):
            struct |= _dense_term(t)
        if whole is not None and not (struct & ~grads).any():
            return whole
        return _dense_csr(grads & struct)
    struct = relation_csr(rel)
    rows = np.repeat(np.arange(rel.n_out), np.diff(struct.indptr))
    cols = struct.indices.astype(np.int64)
    pair_colour = colours[rows]
    step = max(1, _GRADIENT_ENTRIES // max(1, rel.n_in))
    if step >= count:
        # Every colour's gradient fits at once: read the pairs straight from them.
        keep = _colour_gradients(y, leaf, colours, 0, count)[pair_colour, cols]
    else:
        keep = np.zeros(cols.size, dtype=bool)
        order = np.argsort(pair_colour, kind="stable")
        bounds = np.searchsorted(pair_colour[order], np.arange(count + 1))
        for start in range(0, count, step):
            stop = min(count, start + step)
            grads = _colour_gradients(y, leaf, colours, start, stop)
            sel = order[bounds[start]: bounds[stop]]
            keep[sel] = grads[pair_colour[sel] - start, cols[sel]]
    if whole is not None and keep.all():
        return whole
    kept_rows, kept_cols = rows[keep], cols[keep]
    return sp.csr_matrix((np.ones(kept_cols.size, dtype=bool), (kept_rows, kept_cols)), shape=(rel.n_out, rel.n_in))


def _covering_term(rel: Term | Relation) -> Term | None:
    """The term of ``rel`` that holds every pair of the others, factor by factor (None if none does)."""
    terms = _terms(rel)
    for t in terms:
        if all(len(u.factors) == len(t.factors) and all(
                f.shape == g.shape and not (f & ~g).any() for f, g in zip(u.factors, t.factors)) for u in terms):
            return t
    return None


def _dense_enough(rel: Term | Relation) -> bool:
    """Whether the pattern is best measured as a dense matrix: small, and dense enough that listing
    its structural pairs (two int64 each) would cost more than the matrix itself."""
    size = rel.n_out * rel.n_in
    return size <= _DENSE_ENTRIES and sum(t.nnz() for t in _terms(rel)) * _DENSE_SHARE >= size


def _dense_term(t: Term) -> np.ndarray:
    """A term as a dense boolean matrix (its size checked by :func:`_dense_enough`)."""
    out = np.ones((1, 1), dtype=bool)
    for f in t.factors:
        out = np.kron(out, f).astype(bool, copy=False)
    return out


def _dense_csr(mask: np.ndarray) -> sp.csr_matrix:
    """A dense boolean matrix as canonical CSR (rows from ``np.nonzero``, already in order)."""
    rows, cols = np.nonzero(mask)
    indptr = np.zeros(mask.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=mask.shape[0]), out=indptr[1:])
    return sp.csr_matrix((np.ones(cols.size, dtype=bool), cols, indptr), shape=mask.shape)


def _colour_gradients(y: torch.Tensor, leaf: torch.Tensor, colours: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Where the gradient of each colour ``start:stop`` (the sum of its outputs) is nonzero: (colours, inputs).

    The colours' backward passes run batched (``is_grads_batched``, a vmap over the seeds)
    in slices of at most ``_BATCHED_SEEDS``, one autograd call each instead of one per
    colour: a 768-wide attention layer has 3,840 colours. Where vmap cannot batch the
    backward of an operation, the colours run one at a time.
    """
    grads = np.empty((stop - start, leaf.numel()), dtype=bool)
    codes = torch.as_tensor(colours, device=y.device).reshape(y.shape)
    per_slice = max(1, min(_BATCHED_SEEDS, _GRADIENT_ENTRIES // max(1, y.numel() + leaf.numel())))
    for a in range(start, stop, per_slice):
        b = min(stop, a + per_slice)
        seeds = (codes.unsqueeze(0) == torch.arange(a, b, device=y.device).reshape((-1,) + (1,) * y.dim())).to(y.dtype)
        try:
            with warnings.catch_warnings():
                # A batching rule that falls back to a loop is still exact, only slower.
                warnings.simplefilter("ignore", UserWarning)
                (g,) = torch.autograd.grad(y, leaf, seeds, retain_graph=True, allow_unused=True, is_grads_batched=True)
        except RuntimeError:
            g = _looped_gradients(y, leaf, seeds)
        grads[a - start: b - start] = False if g is None else (g != 0).reshape(b - a, -1).cpu().numpy()
    return grads


def _looped_gradients(y: torch.Tensor, leaf: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor | None:
    """The gradients of ``seeds`` one backward pass each (where vmap cannot batch them)."""
    out = []
    for seed in seeds:
        (g,) = torch.autograd.grad(y, leaf, seed, retain_graph=True, allow_unused=True)
        out.append(torch.zeros_like(leaf) if g is None else g)
    return torch.stack(out)


def elementwise_mask(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> np.ndarray:
    """Nonzero diagonal of the Jacobian of an elementwise function at ``x``."""
    with torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        y = fn(leaf.clone())
        (grad,) = torch.autograd.grad(y.sum(), leaf, allow_unused=True)
    if grad is None:
        return np.zeros(x.numel(), dtype=bool)
    return (grad != 0).reshape(-1).cpu().numpy()
