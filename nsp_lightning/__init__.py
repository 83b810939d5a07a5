"""nsp_lightning: watch probe analyses (spectra of activation patterns, and your own) during training.

``Trainer(callbacks=[SpectrumCallback(probe)])`` logs heatmaps and per-layer spectral
energy to TensorBoard and writes records that :func:`read_records` reads back;
:func:`report` (or the ``nsp-report`` command) turns them into an HTML report.
``ProbeCallback(probe, [SpectrumAnalysis(), MyAnalysis()])`` runs several analyses on one
schedule and one forward pass; an analysis is a :class:`ProbeAnalysis` subclass.

The callbacks import Lightning when first used; records and reports do not need it.

=============================  ==============================================================
:mod:`nsp_lightning.probe`     the probe core: the analysis API, ``ProbeCallback`` (schedule,
                               isolation, DDP, resume, logging) and the record store; it knows
                               no particular analysis
:mod:`nsp_lightning.analyses`  one package per analysis: compute, log, report
:mod:`nsp_lightning.report`    the offline HTML report, its sections and the ``nsp-report`` CLI
=============================  ==============================================================
"""

from typing import Any

from nsp import compat

# Earlier module paths, answered by the module at its new path.
MOVED_MODULES = {
    "nsp_lightning.analysis": "nsp_lightning.probe.analysis",
    "nsp_lightning.callback": "nsp_lightning.analyses.spectrum.callback",
    "nsp_lightning.cli": "nsp_lightning.report.cli",
    "nsp_lightning.probe_callback": "nsp_lightning.probe.callback",
    "nsp_lightning.sections": "nsp_lightning.report.sections",
}
compat.install(MOVED_MODULES)

from nsp_lightning.probe.analysis import (  # noqa: E402
    AnalysisRecord,
    LogSink,
    ProbeAnalysis,
    ProbeContext,
    ProbeRecord,
    ReportContext,
)
from nsp_lightning.analyses.spectrum.records import SpectrumRecord  # noqa: E402
from nsp_lightning.probe.store import read_header, read_records  # noqa: E402
from nsp_lightning.report.html import report  # noqa: E402

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

_LAZY = {"ProbeCallback": "nsp_lightning.probe.callback", "SpectrumCallback": "nsp_lightning.analyses.spectrum.callback"}


def __getattr__(name: str) -> Any:
    # The callbacks need Lightning; reading records and writing reports do not.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nsp_lightning' has no attribute {name!r}")
