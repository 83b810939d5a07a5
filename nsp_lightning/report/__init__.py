"""The offline report: records in, one self-contained HTML file out (no Lightning needed).

=====================================  ========================================================
:mod:`nsp_lightning.report.html`       :func:`report`: assembles every analysis's sections
:mod:`nsp_lightning.report.sections`   the blocks a report is made of (``Section``, ``Table``,
                                       ``Film``, ...)
:mod:`nsp_lightning.report.pdf`        the same sections as a PDF (``--pdf``)
``nsp_lightning/report/static``        the page's styles and script (package data)
:mod:`nsp_lightning.report.cli`        the ``nsp-report`` command
=====================================  ========================================================
"""

from nsp_lightning.report.html import report

__all__ = ["report"]
