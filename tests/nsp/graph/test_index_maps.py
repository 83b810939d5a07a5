"""Index maps (``IndexRule``) as product terms, against the map's own pairs.

The reference is the pattern the rule reads off the op run on the positions themselves
(``IndexRule.patterns``, a CSR matrix of "output o copies input src[o]"); the term is
built without it where the map is a run of whole slices along the first axis (ShuffleNet's
``chunk``), and by the general per-axis factorisation elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nsp.graph.rules.call import Call
from nsp.graph.rules.shapes import IndexRule

OPS = {
    "chunk": lambda x, a, b: x.chunk(a + 1, dim=1),
    "split_uneven": lambda x, a, b: x.split([a, x.shape[1] - a], dim=1),
    "narrow_channels": lambda x, a, b: x.narrow(1, a, b),
    "slice_channels": lambda x, a, b: x[:, a:],
    "narrow_rows": lambda x, a, b: x.narrow(2, min(a, x.shape[2] - 1), 1),
    "slice_two_axes": lambda x, a, b: x[:, a:, 1:],
    "strided_channels": lambda x, a, b: x[:, ::2],
}


def _calls(op, shape, a, b):
    x = torch.empty((1, *shape), device="meta")
    out = OPS[op](x, a, b)
    outs = out if isinstance(out, tuple) else (out,)
    fn = lambda t: OPS[op](t, a, b)  # noqa: E731
    return [Call(fn, (x,), {}, [x], o, "net", op, k, False, op) for k, o in enumerate(outs)]


@settings(max_examples=60, deadline=None)
@given(op=st.sampled_from(sorted(OPS)), c=st.integers(2, 9), h=st.integers(1, 4), w=st.integers(1, 3),
       a=st.integers(1, 8), b=st.integers(1, 8))
def test_index_terms_match_the_pairs_of_the_map(op, c, h, w, a, b):
    a, b = min(a, c - 1), min(b, c - min(a, c - 1))
    rule = IndexRule()
    for call in _calls(op, (c, h, w), a, b):
        (term,) = rule.relations(call)
        (reference,) = rule.patterns(call)
        assert (term.n_out, term.n_in) == reference.shape
        np.testing.assert_array_equal(term.dense(), reference.toarray())


@pytest.mark.parametrize("op, shape, factors", [
    # Runs of whole channel slices: one shifted identity on the channels, the identity elsewhere.
    ("chunk", (6, 4, 4), [(3, 6), (4, 4), (4, 4)]),
    ("narrow_channels", (6, 3, 1), [(2, 6), (3, 3)]),
    # Not runs: the general factorisation, one factor per moving axis.
    ("slice_two_axes", (6, 4, 4), [(5, 6), (3, 4), (4, 4)]),
])
def test_channel_slices_are_one_shifted_identity(op, shape, factors):
    (term,) = IndexRule().relations(_calls(op, shape, 1, 2)[0])
    assert [f.shape for f in term.factors] == factors
    assert all(np.array_equal(f, np.eye(*f.shape, dtype=bool)) for f in term.factors[1:] if f.shape[0] == f.shape[1])
