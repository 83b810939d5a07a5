"""Jacobian patterns measured by autograd inside a structural relation (``INCL=False``).

A rule that knows only its structure gets its Jacobian pattern here: :func:`jacobian_patterns`
colours the output positions and runs one backward pass per colour, and
:func:`elementwise_mask` reads the nonzero derivative of an elementwise function. The
CSR helpers turn relations into the scipy matrices that ``INCL=False`` composes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from nsp.graph.relations import Relation, Term
from nsp.graph.rules.call import Call

__all__ = ["jacobian_patterns", "elementwise_mask", "term_csr", "relation_csr", "diagonal_csr"]

# Entries of the per-colour gradients kept at once when a pattern is measured by autograd.
_GRADIENT_ENTRIES = 1 << 24


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


def elementwise_mask(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> np.ndarray:
    """Nonzero diagonal of the Jacobian of an elementwise function at ``x``."""
    with torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        y = fn(leaf.clone())
        (grad,) = torch.autograd.grad(y.sum(), leaf, allow_unused=True)
    if grad is None:
        return np.zeros(x.numel(), dtype=bool)
    return (grad != 0).reshape(-1).cpu().numpy()
