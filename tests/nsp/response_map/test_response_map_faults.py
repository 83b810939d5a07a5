"""NeuralResponseMap with non-finite inputs, memory-hungry parameters and bad arguments (issue 22: 7, 11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nsp.common.memory as memory
from nsp.response_map import NeuralResponseMap, to_rgb, tsne_layout

pytest.importorskip("openTSNE")

pytestmark = pytest.mark.reliability


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 36, 5))


def _inputs(n: int = 40) -> torch.Tensor:
    return torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("rows", [[3], [0, 5, 7], list(range(40))])
def test_non_finite_inputs_are_refused_naming_them_not_dropping_neurons(rows):
    x = _inputs()
    x[rows, 0, 2, 2] = float("nan")
    shown = ", ".join(map(str, rows[:10]))
    with pytest.raises(ValueError, match=rf"train_map: `inputs` {shown}.* hold NaN or infinite values"):
        NeuralResponseMap(_net(), perplexity=5).train_map(x)


def test_a_layer_that_overflows_on_finite_inputs_is_named():
    class Overflow(nn.Module):
        def forward(self, x):
            return x * 1e39

    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), Overflow(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"layer\(s\) \['2'\] respond with NaN or infinite values"):
        NeuralResponseMap(net, perplexity=5).train_map(_inputs(), layers=["1", "2"])


def test_units_all_and_a_large_resolution_are_refused_with_an_estimate_before_allocating(monkeypatch):
    nrm = NeuralResponseMap(_net(), units="all", perplexity=5, resolution=64)
    monkeypatch.setattr(memory, "MEMORY_LIMIT", 1 << 20)
    # The default layers (the conv and ReLU outputs, 4 x 8 x 36 = 1,152, the flatten's 288):
    # 1,440 x 2,000 float64, four times, is 88 MiB.
    with pytest.raises(MemoryError, match=r"the responses of 1,440 neurons to 2,000 inputs needs about 88 MiB"
                                          r".*use units='channels'"):
        nrm.train_map(torch.rand(2000, 1, 6, 6))
    with pytest.raises(MemoryError, match=r"NeuralResponseMap: a 30000x30000 map needs about 26.8 GiB"):
        NeuralResponseMap(_net(), resolution=30000)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"seed": "0"}, r"expected `seed` to be an int, got '0'"),
    ({"resolution": 2.5}, r"expected `resolution` to be an int, got 2.5"),
    ({"perplexity": float("nan")}, r"expected `perplexity` > 0, got nan"),
])
def test_bad_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        NeuralResponseMap(_net(), **kwargs)


def test_the_drawing_and_layout_helpers_refuse_what_they_cannot_draw():
    with pytest.raises(ValueError, match=r"to_rgb: expected a real \(H, W\) grid, got float64 \[2, 2, 2\]"):
        to_rgb(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"tsne_layout: the points hold NaN"):
        tsne_layout(np.full((10, 3), np.nan))
