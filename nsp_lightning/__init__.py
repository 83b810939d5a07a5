"""nsp_lightning: a PyTorch Lightning callback that records the spectra of activation patterns.

``Trainer(callbacks=[SpectrumCallback(probe)])`` logs heatmaps and per-layer spectral
energy to TensorBoard and writes records that :func:`read_records` reads back;
:func:`report` (or the ``nsp-report`` command) turns them into an HTML report.
"""

from nsp_lightning.analysis import AnalysisRecord, LogSink, ProbeAnalysis, ProbeContext, ProbeRecord, ReportContext
from nsp_lightning.callback import SpectrumCallback
from nsp_lightning.records import SpectrumRecord, read_header, read_records
from nsp_lightning.report import report

__all__ = [
    "AnalysisRecord",
    "LogSink",
    "ProbeAnalysis",
    "ProbeContext",
    "ProbeRecord",
    "ReportContext",
    "SpectrumCallback", "SpectrumRecord", "read_header", "read_records", "report"]
