"""The old module of the record store and of spectrum records, kept for code written against it.

Its names now live in two modules: the generic record store,
:mod:`nsp_lightning.probe.store`, and the spectrum's record format,
:mod:`nsp_lightning.analyses.spectrum.records`. New code imports them from there (or
:class:`~nsp_lightning.SpectrumRecord`, :func:`~nsp_lightning.read_records` and
:func:`~nsp_lightning.read_header` from :mod:`nsp_lightning`).
"""

from nsp_lightning.analyses.spectrum.records import (
    SpectrumRecord,
    make_record,
    read_spectrum_record,
    spectrum_analysis_record,
    write_record,
)
from nsp_lightning.probe.store import (
    read_header,
    read_records,
    read_series,
    read_series_records,
    record_name,
    write_analysis_record,
)

__all__ = [
    "SpectrumRecord",
    "make_record",
    "read_header",
    "read_records",
    "read_series",
    "read_series_records",
    "read_spectrum_record",
    "record_name",
    "spectrum_analysis_record",
    "write_analysis_record",
    "write_record",
]
