"""Probe records: what an analysis returns at a record, and what a reader gets back by default.

:class:`AnalysisRecord` is what :meth:`~nsp_lightning.ProbeAnalysis.compute` returns and
:func:`~nsp_lightning.probe.store.write_analysis_record` writes; :class:`ProbeRecord` is
what :meth:`~nsp_lightning.ProbeAnalysis.read_record` returns by default
(:func:`read_probe_record`); :func:`check_arrays` checks a record's arrays before a report
indexes them. No Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["RESERVED_META", "SCALARS_KEY", "AnalysisRecord", "ProbeRecord", "check_arrays", "read_probe_record"]

# Keys of a record's metadata that the core writes; an analysis's meta may not use them.
RESERVED_META = ("epoch", "global_step", "seconds", "__scalars__")
# The array holding the scalars of a record (their names are in the metadata under the same key).
SCALARS_KEY = "__scalars__"


@dataclass
class AnalysisRecord:
    """What :meth:`~nsp_lightning.ProbeAnalysis.compute` returns for one record.

    Attributes
    ----------
    arrays : dict of str to numpy.ndarray
        What the record keeps: numeric or boolean arrays (no object or string dtypes),
        written to ``<record dir>/epoch-NNNNNN.npz``. Names are letters, digits, ``.``,
        ``_`` and ``-`` (not only dots), except ``__meta__`` and ``__scalars__``.
    scalars : dict of str to float
        Logged by the core to every logger as ``<tag_prefix>/<key>`` at the record's step,
        and kept in the record (unless the analysis sets ``store_scalars = False``).
        Non-finite values are allowed.
    meta : dict
        JSON-serialisable metadata of the record (strict JSON: no NaN or infinity), kept
        in the record file. ``epoch``, ``global_step`` and ``seconds`` are added by the core.
    summary : dict
        Small JSON fields copied into the record's manifest entry, so that a reader can
        select records without opening them.
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

@dataclass(frozen=True)
class ProbeRecord:
    """A record read back from disk (what :meth:`ProbeAnalysis.read_record` returns by default).

    Attributes
    ----------
    epoch : int
        Training epochs completed when the record was taken (0: the baseline).
    global_step : int
        The Trainer's ``global_step`` then.
    seconds : float
        Wall time the analysis took for this record (compute, log and write).
    arrays : dict of str to numpy.ndarray
        The record's arrays.
    scalars : dict of str to float
        Its scalars (empty if the analysis does not store them).
    meta : dict
        Its metadata, without ``epoch``, ``global_step`` and ``seconds``.
    """

    epoch: int
    global_step: int
    seconds: float
    arrays: dict[str, np.ndarray]
    scalars: dict[str, float]
    meta: dict[str, Any]

def read_probe_record(arrays: dict[str, np.ndarray], meta: dict[str, Any], path: Path) -> ProbeRecord:
    """A :class:`ProbeRecord` from a record file's contents (see :meth:`~nsp_lightning.ProbeAnalysis.read_record`)."""
    missing = [key for key in ("epoch", "global_step", "seconds") if key not in meta]
    if missing:
        raise ValueError(f"nsp_lightning.read_records: {path} lacks {missing}; it is not a probe record")
    arrays = dict(arrays)
    names = meta.get(SCALARS_KEY, [])
    values = arrays.pop(SCALARS_KEY, np.zeros(0))
    if (not isinstance(names, list) or not all(isinstance(n, str) for n in names)
            or values.dtype.kind not in "biuf" or values.shape != (len(names),)):
        raise ValueError(
            f"nsp_lightning.read_records: in {path}, the scalar names {names!r} do not match the"
            f" {SCALARS_KEY} array of shape {list(values.shape)}"
        )
    rest = {k: v for k, v in meta.items() if k not in RESERVED_META}
    return ProbeRecord(
        epoch=int(meta["epoch"]),
        global_step=int(meta["global_step"]),
        seconds=float(meta["seconds"]),
        arrays=arrays,
        scalars={str(k): float(v) for k, v in zip(names, values)},
        meta=rest,
    )

def check_arrays(
    arrays: Mapping[str, np.ndarray], path: Path, who: str, spec: Mapping[str, tuple[str, int | None]], rows: int | None = None
) -> int:
    """Check a record's arrays against ``spec`` before a report indexes them; raise ``ValueError`` naming ``path``.

    Parameters
    ----------
    arrays : mapping of str to numpy.ndarray
        The record's arrays.
    path : pathlib.Path
        The record file, for the message.
    who : str
        The analysis, for the message.
    spec : mapping of str to (str, int or None)
        For each array that must be there: the dtype kinds it may have (``numpy.dtype.kind``
        letters, e.g. ``"f"``, ``"iu"``) and its number of dimensions (None: any, at least 1).
    rows : int, optional
        The length of the first dimension every array of ``spec`` must have (default:
        that of the first one).

    Returns
    -------
    int
        The common first dimension (e.g. the number of probes).
    """
    for name, (kinds, ndim) in spec.items():
        if name not in arrays:
            raise ValueError(f"{who}: the record {path} lacks the array {name!r}")
        array = arrays[name]
        if array.dtype.kind not in kinds or array.ndim < 1 or (ndim is not None and array.ndim != ndim):
            dims = "at least 1" if ndim is None else str(ndim)
            raise ValueError(
                f"{who}: the record {path} has {name!r} of shape {list(array.shape)} ({array.dtype}); expected {dims}"
                f" dimension(s) of kind {kinds!r}"
            )
        if rows is None:
            rows = array.shape[0]
        elif array.shape[0] != rows:
            raise ValueError(f"{who}: the record {path} has {name!r} with {array.shape[0]} rows, expected {rows}")
    return 0 if rows is None else rows
