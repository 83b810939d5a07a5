"""The probe-analysis interface: context, sink, record read-back, registry and default report."""

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning_helpers import TinyNet, probe

import nsp
from nsp_lightning.probe.analysis import (
    AnalysisRecord,
    LogSink,
    ProbeAnalysis,
    ProbeContext,
    ProbeRecord,
    ReportContext,
    analysis_class,
    class_path,
    read_probe_record,
)
from nsp_lightning.report.sections import Chart, Facts, Section, Table


class Counting(ProbeAnalysis):
    name = "counting"

    def compute(self, model, probes, context):
        return AnalysisRecord(scalars={"n": float(len(context.activations()))})


def test_context_runs_one_forward_pass_per_choice_of_layers(monkeypatch):
    calls = []
    real = nsp.Activations.from_batch
    monkeypatch.setattr(nsp.Activations, "from_batch", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    model, x = TinyNet().eval(), probe(3)
    context = ProbeContext(model, x, epoch=2, global_step=7)
    first = context.activations()
    assert context.activations() is first and len(first) == 3 and len(calls) == 1
    layers = context.layers()
    assert list(layers) == ["input", "conv", "relu", "pool", "flatten", "fc"]
    assert layers["conv"].shape == (3, 2, 4, 4) and len(calls) == 1
    torch.testing.assert_close(layers["fc"], model(x))
    assert context.outputs() is context.outputs()
    context.activations("leaves")
    assert len(calls) == 2


def test_context_records_values_only_like_a_reference_and_in_full_when_asked():
    model, x = TinyNet().eval(), probe(2)
    reference = nsp.Activations(model, x[:1])
    context = ProbeContext(model, x, epoch=1, global_step=1)
    cheap = context.activations(like=reference)
    assert not cheap[0].has_dataflow and context.activations(like=reference) is cheap
    # A pattern without the dataflow does not serve a request for the full one; the full one serves both.
    full = context.activations()
    assert full[0].has_dataflow and context.activations(like=reference) is full
    assert all(torch.equal(a, b) for a, b in zip(cheap[1].layeractivations, full[1].layeractivations))


def test_enable_grad_allows_autograd_and_leaves_parameter_grads_alone():
    model = TinyNet().eval()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = [p.grad for p in model.parameters()]
    context = ProbeContext(model, probe(2), epoch=0, global_step=0)
    with torch.no_grad():
        with context.enable_grad():
            x = context.probes.clone().requires_grad_(True)
            model(x).sum().backward()
            assert x.grad is not None and x.grad.abs().sum() > 0
        assert not torch.is_grad_enabled()
    assert all(p.grad is g and torch.all(g == 7.0) for p, g in zip(model.parameters(), before))


def test_sink_prefixes_tags_and_drops_everything_when_disabled():
    sink = LogSink("mine", step=3, enabled=True)
    sink.image("a/b", np.zeros((2, 2, 3), dtype=np.uint8))
    sink.histogram("h", torch.tensor([1.0, np.inf, 2.0]))
    sink.text("t", "hello")
    assert [(kind, tag) for kind, tag, _, _ in sink.items] == [("image", "mine/a/b"), ("histogram", "mine/h"), ("text", "mine/t")]
    np.testing.assert_array_equal(sink.items[1][2], [1.0, 2.0])
    sink.embedding("layout", np.ones((4, 2)), metadata=["a", "b", "c", "d"])
    assert sink.items[3][:2] == ("embedding", "mine/layout") and sink.items[3][2].shape == (4, 2)
    with pytest.raises(ValueError, match=r"shape \(N, D\), got \[4\]"):
        sink.embedding("layout", np.ones(4))
    off = LogSink("mine", step=3, enabled=False)
    off.image("a", np.zeros((2, 2, 3), dtype=np.uint8))
    assert off.items == []
    with pytest.raises(ValueError, match="non-empty tag"):
        sink.text("", "x")


def test_read_probe_record_checks_the_core_metadata_and_scalars(tmp_path):
    meta = {"epoch": 3, "global_step": 30, "seconds": 0.5, "__scalars__": ["a", "b"], "mine": 1}
    record = read_probe_record({"x": np.ones(2), "__scalars__": np.array([1.0, -np.inf])}, meta, tmp_path)
    assert record == ProbeRecord(3, 30, 0.5, record.arrays, {"a": 1.0, "b": -np.inf}, {"mine": 1})
    assert list(record.arrays) == ["x"]
    with pytest.raises(ValueError, match=r"lacks \['seconds'\]; it is not a probe record"):
        read_probe_record({}, {"epoch": 0, "global_step": 0}, tmp_path)
    with pytest.raises(ValueError, match="do not match"):
        read_probe_record({"__scalars__": np.ones(3)}, meta, tmp_path)


def test_subclasses_register_by_import_path_and_names_are_checked():
    assert analysis_class(class_path(Counting)) is Counting
    assert analysis_class("some.module:Unknown") is None
    with pytest.raises(TypeError, match="name = 'Bad Name'"):
        type("Bad", (ProbeAnalysis,), {"name": "Bad Name", "compute": lambda self, m, p, c: AnalysisRecord()})
    with pytest.raises(TypeError, match="abstract"):
        ProbeAnalysis()


def test_default_report_charts_the_scalars_and_lists_the_arrays(tmp_path):
    records = [ProbeRecord(e, 10 * e, 0.1, {"x": np.zeros((2, 3))}, {"n": float(e), "m": -float(e)}, {}) for e in range(3)]
    steps = []
    context = ReportContext(Path(tmp_path), "counting", steps.append)
    section = Counting.report(records, {"layers": 6}, context)
    assert isinstance(section, Section) and section.id == "counting" and section.title == "counting"
    kinds = [type(b) for b in section.blocks]
    assert kinds == [Facts, Chart, Table]
    assert ("layers", "6") in section.blocks[0].items
    assert [c.text for c in section.blocks[2].rows[0]] == ["x", "2×3", "float64"]
    assert steps == ["section counting"]


@pytest.mark.slow
def test_records_and_reports_need_no_lightning(tmp_path):
    import subprocess
    import sys

    legacy = Path(__file__).parents[2] / "data" / "spectra-v0.1.0"
    code = (
        "import sys, nsp_lightning\n"
        "from nsp_lightning import read_records, report\n"
        "from nsp_lightning.analyses import SpectrumAnalysis\n"
        f"assert len(read_records({str(legacy)!r})) == 3\n"
        f"report({str(legacy)!r}, {str(tmp_path / 'r.html')!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "r.html").is_file()


@pytest.mark.slow
def test_the_nsp_report_command_imports_no_lightning(tmp_path):
    import subprocess
    import sys

    legacy = Path(__file__).parents[2] / "data" / "spectra-v0.1.0"
    # The installed console script's own entry point, with Lightning made unimportable: any
    # import of it on the way would fail the command.
    code = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "sys.modules['lightning'] = sys.modules['pytorch_lightning'] = None\n"
        "(script,) = [e for e in entry_points(group='console_scripts') if e.name == 'nsp-report']\n"
        "assert script.value == 'nsp_lightning.report.cli:main', script.value\n"
        f"status = script.load()([{str(legacy)!r}, '-o', {str(tmp_path / 'r.html')!r}, '-q'])\n"
        "print(status, sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')"
        " and sys.modules[m] is not None))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "0 []"
    assert (tmp_path / "r.html").is_file()
