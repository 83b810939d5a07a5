"""What a spectrum record captures (issue 23): with ``INCL=True`` and the graph built, the
layers' values only (``nsp.Activations(..., like=...)``), at about a forward pass's cost;
in full again when a layer module changes inside, so that the new graph can be built."""

from __future__ import annotations

import numpy as np
import torch
from lightning_helpers import TinyNet, fresh_spectra, probe
from torch import nn

import nsp
from nsp.graph import capture
from nsp_lightning.analyses import SpectrumAnalysis
from nsp_lightning.probe.analysis import ProbeContext


class _NoRecorder:
    def __init__(self, *args, **kwargs) -> None:
        raise AssertionError("the dataflow recorder ran")


def _record(analysis: SpectrumAnalysis, model: nn.Module, x: torch.Tensor, epoch: int) -> list[list[np.ndarray]]:
    record = analysis.compute(model, x, ProbeContext(model, x, epoch=epoch, global_step=epoch))
    layers = len(analysis.layernames)
    return [[record.arrays[f"spectrum.{l}"][p] for l in range(layers)] for p in range(x.shape[0])]


def test_records_after_the_first_skip_the_recorder_and_a_changed_module_rebuilds_the_graph(monkeypatch):
    torch.manual_seed(0)
    model, x = TinyNet().eval(), probe(2)
    analysis = SpectrumAnalysis()
    analysis.check(model, x)
    analysis.setup(model, x, ProbeContext(model, x, epoch=0, global_step=0))
    monkeypatch.setattr(capture, "Recorder", _NoRecorder)
    with torch.no_grad():
        model.fc.weight.mul_(2)  # training moved the weights: the same graph
    spectra = _record(analysis, model, x, 1)
    monkeypatch.undo()
    expected = fresh_spectra(model, x)
    assert all(np.array_equal(a, b) for p in range(2) for a, b in zip(spectra[p], expected[p]))

    # The same module, changed inside: a dilated 2x2 kernel keeps conv's output shape (4x4),
    # so the values-only capture succeeds, but the graph is another one.
    with torch.no_grad():
        model.conv.weight = nn.Parameter(torch.randn(2, 1, 2, 2))
    model.conv.kernel_size, model.conv.dilation = (2, 2), (2, 2)
    assert nsp.Activations(model, x[:1], like=nsp.Activations(model, x[:1])).shapes[1] == (2, 4, 4)
    builds = []
    real = nsp.NNGraph
    monkeypatch.setattr(nsp, "NNGraph", lambda *a, **k: (builds.append(1), real(*a, **k))[1])
    spectra = _record(analysis, model, x, 2)
    assert builds == [1]
    monkeypatch.undo()
    expected = fresh_spectra(model, x)
    assert all(np.array_equal(a, b) for p in range(2) for a, b in zip(spectra[p], expected[p]))
