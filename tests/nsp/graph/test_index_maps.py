"""Index maps (``IndexRule``) as product terms, against the map's own pairs.

The reference is the op run here on the positions themselves: output ``o`` holding ``y``
copies input ``y`` (every output of a ``chunk`` or ``split``, which the rule reads from one
shared run). The term is built without that pattern where the map is a run of whole
slices along the first axis (ShuffleNet's ``chunk``), and by the general per-axis
factorisation elsewhere.
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
    n = c * h * w
    positions = OPS[op](torch.arange(n, dtype=torch.float64).reshape(1, c, h, w), a, b)
    for call, out in zip(_calls(op, (c, h, w), a, b), positions if isinstance(positions, tuple) else (positions,)):
        (term,) = rule.relations(call)
        reference = np.zeros((out.numel(), n), dtype=bool)
        reference[np.arange(out.numel()), out.reshape(-1).numpy().astype(np.int64)] = True
        np.testing.assert_array_equal(term.dense(), reference)


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



def test_one_rule_reuses_a_run_only_for_the_same_call():
    # A chunk's outputs share one run of the op; the same function with other arguments,
    # or with another index tensor, on the same input must not read it.
    x = torch.empty(1, 6, 2, 2, device="meta")
    positions = torch.arange(24, dtype=torch.float64).reshape(1, 6, 2, 2)
    calls = [
        (torch.Tensor.chunk, (2,), {"dim": 1}, 0), (torch.Tensor.chunk, (2,), {"dim": 1}, 1),
        (torch.Tensor.chunk, (3,), {"dim": 1}, 1), (torch.Tensor.chunk, (3,), {"dim": 1}, 2),
        (torch.Tensor.chunk, (3,), {"dim": 2}, 1), (torch.Tensor.chunk, (2,), {"dim": 1}, 1),
        (torch.narrow, (1, 1, 3), {}, 0), (torch.narrow, (1, 2, 3), {}, 0),
        (torch.index_select, (1, torch.tensor([5, 0])), {}, 0), (torch.index_select, (1, torch.tensor([1, 2])), {}, 0),
    ]
    rule = IndexRule()
    for fn, args, kwargs, item in calls:
        outs = fn(x, *args, **kwargs)
        out = outs[item] if isinstance(outs, tuple) else outs
        (term,) = rule.relations(Call(fn, (x, *args), kwargs, [x], out, "net", "op", item, False, "op"))
        expected = fn(positions, *args, **kwargs)
        expected = (expected[item] if isinstance(expected, tuple) else expected).reshape(-1).numpy().astype(np.int64)
        reference = np.zeros((expected.size, 24), dtype=bool)
        reference[np.arange(expected.size), expected] = True
        np.testing.assert_array_equal(term.dense(), reference)
