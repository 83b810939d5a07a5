"""nsp_lightning: watch probe analyses (spectra of activation patterns, and your own) during training.

``Trainer(callbacks=[SpectrumCallback(probe)])`` logs heatmaps and per-layer spectral
energy to TensorBoard and writes records that :func:`read_records` reads back;
:func:`report` (or the ``nsp-report`` command) turns them into an HTML report.
``ProbeCallback(probe, [SpectrumAnalysis(), MyAnalysis()])`` runs several analyses on one
schedule and one forward pass; an analysis is a :class:`ProbeAnalysis` subclass.

The callbacks import Lightning when first used; records and reports do not need it.
"""

from typing import Any

from nsp_lightning.analysis import AnalysisRecord, LogSink, ProbeAnalysis, ProbeContext, ProbeRecord, ReportContext
from nsp_lightning.records import SpectrumRecord, read_header, read_records
from nsp_lightning.report import report

__all__ = [
    "AnalysisRecord",
    "LogSink",
    "ProbeAnalysis",
    "ProbeCallback",
    "ProbeContext",
    "ProbeRecord",
    "ReportContext",
    "SpectrumCallback",
    "SpectrumRecord",
    "read_header",
    "read_records",
    "report",
]

_LAZY = {"ProbeCallback": "nsp_lightning.probe_callback", "SpectrumCallback": "nsp_lightning.callback"}


def __getattr__(name: str) -> Any:
    # The callbacks need Lightning; reading records and writing reports do not.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nsp_lightning' has no attribute {name!r}")
