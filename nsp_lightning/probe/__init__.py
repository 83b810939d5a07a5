"""The probe core: runs any :class:`ProbeAnalysis` during training; knows no particular one.

====================================  ======================================================
:mod:`nsp_lightning.probe.analysis`   the plug-in interface: ``ProbeAnalysis``,
                                      ``ProbeContext``, ``ReportContext``, the registry
                                      (no Lightning)
:mod:`nsp_lightning.probe.records`    ``AnalysisRecord``, ``ProbeRecord`` and their checks
:mod:`nsp_lightning.probe.sinks`      ``LogSink``: an analysis's pictures, one sink per logger
:mod:`nsp_lightning.probe.store`      the record store: writing and reading record series
:mod:`nsp_lightning.probe.callback`   ``ProbeCallback``, the Lightning callback (imports
                                      Lightning), and what it puts together:
:mod:`nsp_lightning.probe.schedule`   when to record
:mod:`nsp_lightning.probe.inputs`     the probe batch, on the model's device
:mod:`nsp_lightning.probe.isolation`  probing without disturbing training
:mod:`nsp_lightning.probe.series`     the record directories rank 0 writes
:mod:`nsp_lightning.probe.handoff`    the state a spawned rank 0 hands back
====================================  ======================================================
"""
