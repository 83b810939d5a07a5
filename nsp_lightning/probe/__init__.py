"""The probe core: runs any :class:`ProbeAnalysis` during training; knows no particular one.

===================================  ========================================================
:mod:`nsp_lightning.probe.analysis`  the plug-in interface: ``ProbeAnalysis``,
                                     ``AnalysisRecord``, ``ProbeContext``, ``LogSink``
                                     (no Lightning)
:mod:`nsp_lightning.probe.callback`  ``ProbeCallback``: probe, schedule, isolation, DDP,
                                     resume, logging (imports Lightning)
:mod:`nsp_lightning.probe.store`     the record store: writing and reading record series
===================================  ========================================================
"""
