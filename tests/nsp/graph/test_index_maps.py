"""Index maps (``IndexRule``) as product terms, against the map's own pairs.

The reference is the op run here on the positions themselves: output ``o`` holding ``y``
copies input ``y`` (every output of a ``chunk`` or ``split``, which the rule reads from one
shared run). The term is built without that pattern where the map is a run of whole
slices along the first axis (ShuffleNet's ``chunk``), and by the general per-axis
factorisation elsewhere.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nsp.graph.rules.call import Call
from nsp.graph.rules.shapes import IndexRule, _slice_term

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


# torch's chunk, split and narrow, as recorded (a function or a tensor method), with their
# arguments positional or by keyword: the rule reads their slice from the arguments.
SLICES = {
    "chunk_method": lambda x, a, b, d: (torch.Tensor.chunk, (a,), {"dim": d}),
    "chunk_function": lambda x, a, b, d: (torch.chunk, (a, d), {}),
    "split_method": lambda x, a, b, d: (torch.Tensor.split, (a,), {"dim": d}),
    "split_function": lambda x, a, b, d: (torch.split, (a, d), {}),
    "split_sections": lambda x, a, b, d: (torch.Tensor.split, ([min(a, x.shape[d]), x.shape[d] - min(a, x.shape[d])],),
                                          {"dim": d}),
    "narrow": lambda x, a, b, d: (torch.narrow, (d, min(a, x.shape[d] - 1), max(0, min(b, x.shape[d] - a))), {}),
    "narrow_negative": lambda x, a, b, d: (torch.Tensor.narrow, (d, -min(a, x.shape[d]), min(a, x.shape[d])), {}),
}


@settings(max_examples=80, deadline=None)
@given(op=st.sampled_from(sorted(SLICES)), shape=st.lists(st.integers(1, 7), min_size=1, max_size=3),
       a=st.integers(1, 8), b=st.integers(0, 8), axis=st.integers(1, 3), negative=st.booleans())
def test_torch_slices_read_from_their_arguments_match_the_pairs_of_the_map(op, shape, a, b, axis, negative):
    x = torch.empty((1, *shape), device="meta")
    dim = min(axis, len(shape))
    fn, args, kwargs = SLICES[op](x, a, b, dim - x.dim() if negative else dim)
    outs = fn(x, *args, **kwargs)
    positions = fn(torch.arange(x.numel(), dtype=torch.float64).reshape(x.shape), *args, **kwargs)
    outs, positions = (outs, positions) if isinstance(outs, tuple) else ((outs,), (positions,))
    for k, (out, expected) in enumerate(zip(outs, positions)):
        call = Call(fn, (x, *args), kwargs, [x], out, "net", op, k, False, op)
        # The term is built from the arguments, without the runs on the positions.
        with mock.patch.object(IndexRule, "_sources", side_effect=AssertionError("ran the op")):
            (term,) = IndexRule().relations(call)
        reference = np.zeros((out.numel(), x.numel()), dtype=bool)
        reference[np.arange(out.numel()), expected.reshape(-1).numpy().astype(np.int64)] = True
        np.testing.assert_array_equal(term.dense(), reference)


def test_slices_of_other_functions_or_of_the_batch_take_the_general_path():
    # A function named like torch's but of another module is run on the positions, and so
    # is a chunk of the batch axis.
    x = torch.empty(1, 6, 2, device="meta")

    def chunk(t, n, dim):
        return tuple(reversed(torch.chunk(t, n, dim)))

    outs = chunk(x, 3, 1)
    (term,) = IndexRule().relations(Call(chunk, (x, 3, 1), {}, [x], outs[0], "net", "chunk", 0, False, "chunk"))
    assert term.dense().nonzero()[1].min() == 8  # the last pair of channels, as this chunk orders them
    assert _slice_term(Call(torch.Tensor.chunk, (x, 1), {"dim": 0}, [x], x, "net", "chunk", 0, False, "chunk")) is None
