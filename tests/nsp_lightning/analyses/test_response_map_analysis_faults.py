"""ResponseMapAnalysis refuses non-finite inputs and memory-hungry parameters when it is built (issue 22: 7, 11)."""

from __future__ import annotations

import time

import pytest
import torch
from lightning_helpers import TinyNet, probe

import nsp.common.memory as memory
from nsp_lightning.analyses.response_map.analysis import ResponseMapAnalysis

pytestmark = pytest.mark.reliability


def inputs(n: int = 48) -> torch.Tensor:
    return torch.randn(n, 1, 6, 6, generator=torch.Generator().manual_seed(7))


def test_non_finite_inputs_are_refused_by_index_when_built():
    x = inputs()
    x[[4, 9], 0, 1, 1] = float("nan")
    x[11, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"ResponseMapAnalysis: `inputs` 4, 9, 11 hold NaN or infinite values"):
        ResponseMapAnalysis(x)


def test_non_finite_probes_are_refused_by_index_at_check():
    x = probe(3)
    x[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"ResponseMapAnalysis: the probes 1 hold NaN or infinite values"):
        ResponseMapAnalysis(inputs()).check(TinyNet().eval(), x)


def test_a_large_resolution_is_refused_with_its_estimate_when_built(monkeypatch):
    monkeypatch.setattr(memory, "MEMORY_LIMIT", 1 << 30)
    start = time.perf_counter()
    with pytest.raises(MemoryError, match=r"ResponseMapAnalysis: a 30000x30000 map needs about 26.8 GiB.*smaller "
                                          r"`resolution`"):
        ResponseMapAnalysis(inputs(), resolution=30000)
    assert time.perf_counter() - start < 1.0


def test_the_maps_of_many_probes_are_refused_with_their_estimate_at_check(monkeypatch):
    monkeypatch.setattr(memory, "MEMORY_LIMIT", 1 << 30)
    analysis = ResponseMapAnalysis(inputs(), resolution=1024)
    # 300 maps of 1024 x 1024, float32: 1.2 GiB.
    with pytest.raises(MemoryError, match=r"the maps of 300 probes at 1024x1024 needs about 1.2 GiB.*fewer probes"):
        analysis.check(TinyNet().eval(), torch.randn(300, 1, 6, 6))


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"resolution": 2.5}, TypeError, r"expected `resolution` to be an int, got 2.5"),
    ({"refit_iter": True}, TypeError, r"expected `refit_iter` to be an int, got True"),
    ({"seed": "0"}, TypeError, r"expected `seed` to be an int, got '0'"),
    ({"perplexity": float("nan")}, ValueError, r"expected `perplexity` > 0, got nan"),
    ({"metric": "kendall"}, ValueError, r"expected `metric` to be one of .*, got 'kendall'"),
    ({"fit_iter": (100,)}, ValueError, r"expected `fit_iter` to be None or two ints .*, got \(100,\)"),
    ({"fit_iter": (100, 0)}, ValueError, r"expected `fit_iter` .*plain >= 1\), got \(100, 0\)"),
])
def test_bad_numbers_are_refused_by_name_when_built(kwargs, error, message):
    with pytest.raises(error, match=rf"ResponseMapAnalysis: {message}"):
        ResponseMapAnalysis(inputs(), **kwargs)

