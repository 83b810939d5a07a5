"""Rules of attention and sequence models: ``scaled_dot_product_attention``, ``nn.MultiheadAttention``,
torchvision's Swin window attention, recurrent layers and embeddings.

A query's output reads its own query and every key and value its mask allows; a
recurrent layer's output at step t reads every step up to t (both ways if bidirectional).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from nsp.graph.relations import Term, ones_factor
from nsp.graph.rules.call import Call
from nsp.graph.rules.factors import broadcast_term, eye, union_of_terms
from nsp.graph.rules.registry import Rule, StructuralRule, register_rule

__all__ = ["AttentionRule", "MultiheadAttentionRule", "RecurrentRule", "ShiftedWindowAttentionRule", "EmbeddingRule"]


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
            lead = broadcast_term(tuple(t.shape[1:-2]), batch).factors if batch else ()
            parts = []
            if t is q:
                parts.append(Term(tuple(lead) + (np.diag(scored.any(axis=1)), ones_factor(out[-1], q.shape[-1]))))
            if t is k:
                parts.append(Term(tuple(lead) + (scored, ones_factor(out[-1], k.shape[-1]))))
            if t is v:
                parts.append(Term(tuple(lead) + (allowed, eye(out[-1]))))
            rels.append(union_of_terms(parts))
        return rels

    def check(self, call, incl):
        if call.arg(4, "dropout_p", 0.0):
            raise call.unsupported("attention dropout is random; call network.eval() first")


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
            rels.append(union_of_terms(parts))
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


register_rule("scaled_dot_product_attention", AttentionRule())
register_rule(nn.MultiheadAttention, MultiheadAttentionRule())
register_rule([nn.LSTM, nn.GRU, nn.RNN], RecurrentRule())
register_rule(nn.Embedding, EmbeddingRule())
# By qualified name: nsp does not import torchvision.
register_rule(["torchvision.models.swin_transformer.ShiftedWindowAttention",
               "torchvision.models.swin_transformer.ShiftedWindowAttentionV2"], ShiftedWindowAttentionRule())
