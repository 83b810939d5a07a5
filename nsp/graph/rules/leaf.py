"""Module rules that build their Jacobian pattern by pruning their structure (``INCL=False``).

A :class:`LeafRule` is a structural term, the evidence its Jacobian's zeros depend on (a
weight's zero mask, a window's argmax, a derivative's zeros) and a filter on the term's
pairs. :meth:`LeafRule.exact_term` keeps the term whole and lists only the rows the
evidence prunes, which :meth:`nsp.graph.sparse_products.RowClasses.after_pruned` composes.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from nsp.graph.relations import Term
from nsp.graph.rules.call import Call
from nsp.graph.rules.registry import Rule

__all__ = ["LeafRule", "along", "broadcast_keep", "output_positions"]

# Structural pairs generated at a time when a leaf's Jacobian pattern is built.
_EDGE_CHUNK = 1 << 22


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
        """Which of the term's pairs are Jacobian nonzeros (see :func:`broadcast_keep`)."""
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


def along(f: int, n: int, v: np.ndarray) -> np.ndarray:
    """``v`` shaped to broadcast along axis ``f`` of ``n`` (one axis per factor of a term)."""
    return v.reshape((1,) * f + (-1,) + (1,) * (n - f - 1))


def broadcast_keep(keep: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``keep`` broadcast over the Kronecker product of ``pairs``, flat in ``Term.edges`` order.

    ``pairs[f]`` are the (out, in) index pairs of the term's factor ``f`` (one axis each).
    Evidence is looked up per factor and broadcast, so no per-pair index array is unravelled.
    """
    return np.broadcast_to(keep, tuple(o.size for o, _ in pairs)).reshape(-1)


def output_positions(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """The output index of each factor's pairs, shaped to broadcast over the term (an index into the output)."""
    n = len(pairs)
    return tuple(along(f, n, o) for f, (o, _) in enumerate(pairs))
