"""The record store: what every probe analysis writes at each recorded epoch, and how it is read back.

Every analysis of a :class:`~nsp_lightning.ProbeCallback` has a record directory (by default
``<trainer.log_dir>/<name>``; ``<trainer.log_dir>/spectrum`` for spectra) that holds
``manifest.json`` and one ``epoch-NNNNNN.npz`` per record, in the format of
:mod:`nsp.io.storage`: safe (no pickle) and written atomically. All of them are written by
:func:`write_analysis_record` and read by :func:`read_records`, which returns each
analysis's own record objects (:meth:`~nsp_lightning.ProbeAnalysis.read_record`): a
:class:`~nsp_lightning.SpectrumRecord` for spectra, a :class:`~nsp_lightning.ProbeRecord`
by default. This module knows no particular analysis: the class that reads a directory
is the one its manifest names, found through the analysis registry
(:func:`~nsp_lightning.probe.analysis.analysis_class`).

A record file holds the analysis's arrays; its stored scalars as a float64 array
``__scalars__`` whose names are in the metadata under the same key; and the metadata
(JSON, under ``__meta__``) with ``epoch``, ``global_step`` and ``seconds``. The manifest
names the analysis (``"analysis": {"name": ..., "class": "module:qualname"}``); a manifest
that names none was written before analyses were plug-ins and holds spectra (their format:
:mod:`nsp_lightning.analyses.spectrum.records`).

Records read back with :func:`read_records`::

    from nsp_lightning import read_records
    for rec in read_records("lightning_logs/version_0/spectrum"):
        print(rec.epoch, rec.global_step, rec.log10_energy[0])
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from nsp.io.storage import RecordStore
from nsp_lightning.probe.analysis import (
    RESERVED_META,
    SCALARS_KEY,
    AnalysisRecord,
    ProbeAnalysis,
    analysis_class,
    check_name,
)

__all__ = [
    "record_name",
    "to_numpy",
    "write_analysis_record",
    "read_header",
    "read_records",
    "read_series",
    "read_series_records",
]

# What a manifest that names no analysis holds.
_LEGACY_NAME = "spectra"
# A record's array names (AnalysisRecord.arrays): letters, digits, ".", "_" and "-", not only dots.
_ARRAY_NAME = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]+$")


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as the numpy array a record keeps: detached, on the CPU, bfloat16 as float32 (exactly).

    Examples
    --------
    >>> to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype
    dtype('float32')
    """
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
        tensor = tensor.float()
    return tensor.numpy()


def record_name(epoch: int) -> str:
    """The name of the record of ``epoch`` (its file is ``<name>.npz``).

    Examples
    --------
    >>> record_name(12)
    'epoch-000012'
    """
    return f"epoch-{epoch:06d}"


def write_analysis_record(
    store: RecordStore,
    record: AnalysisRecord,
    *,
    epoch: int,
    global_step: int,
    seconds: float,
    store_scalars: bool = True,
    stage: str = "fit",
) -> Path:
    """Write one analysis record into ``store`` atomically, as ``epoch-NNNNNN.npz``, and list it.

    The one place where records reach the disk, for every analysis.

    Parameters
    ----------
    store : nsp.storage.RecordStore
        The analysis's record directory, started (:meth:`~nsp.io.storage.RecordStore.start`).
    record : AnalysisRecord
        What the analysis computed.
    epoch, global_step : int
        The record number and the Trainer's global step, added to the metadata and the
        manifest entry.
    seconds : float
        The time the record took, added to the metadata.
    store_scalars : bool, default True
        Keep ``record.scalars`` in the file (array ``__scalars__``).
    stage : str, default "fit"
        The Trainer's stage that took the record. Any other (``"validate"``, ``"test"``)
        is kept in the manifest entry as ``"stage"``; an entry without one is a fit's.

    Returns
    -------
    pathlib.Path
        The record file.

    Raises
    ------
    TypeError
        If ``record`` is not an :class:`AnalysisRecord` or holds values of the wrong type.
    ValueError
        If its metadata uses a key the core writes, or an array name is reserved or
        invalid (see :attr:`AnalysisRecord.arrays`).
    """
    if not isinstance(record, AnalysisRecord):
        raise TypeError(f"nsp_lightning.write_analysis_record: expected an AnalysisRecord, got {type(record).__name__}")
    for field in ("arrays", "scalars", "meta", "summary"):
        if not isinstance(getattr(record, field), Mapping):
            raise TypeError(f"nsp_lightning.write_analysis_record: AnalysisRecord.{field} is not a dict")
    invalid = [key for key in record.arrays if not (isinstance(key, str) and _ARRAY_NAME.match(key))]
    if invalid:
        raise ValueError(
            f"nsp_lightning.write_analysis_record: AnalysisRecord.arrays has the invalid names {invalid[:5]}; a name"
            " is letters, digits, '.', '_' and '-', not only dots (it names a member of the record file)"
        )
    reserved = [key for key in record.meta if key in RESERVED_META]
    reserved += [key for key in record.arrays if key == SCALARS_KEY]
    if reserved:
        raise ValueError(f"nsp_lightning.write_analysis_record: the record uses the reserved names {reserved}")
    arrays = {key: to_numpy(value) if isinstance(value, torch.Tensor) else value for key, value in record.arrays.items()}
    meta = {**record.meta, "epoch": int(epoch), "global_step": int(global_step), "seconds": float(seconds)}
    if store_scalars and record.scalars:
        meta[SCALARS_KEY] = list(record.scalars)
        arrays[SCALARS_KEY] = np.array([float(v) for v in record.scalars.values()], dtype=np.float64)
    summary = {**record.summary, "epoch": int(epoch), "global_step": int(global_step)}
    if stage != "fit":
        summary["stage"] = str(stage)
    return store.write(record_name(epoch), arrays, meta, summary=summary)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_core_meta(meta: Mapping[str, Any], path: Path, name: str) -> None:
    """The metadata every probe record has (written by :func:`write_analysis_record`), checked."""
    wrong = []
    if "epoch" in meta and not (_is_int(meta["epoch"]) and record_name(meta["epoch"]) == name):
        wrong.append(f"epoch {_short(meta['epoch'])} (the manifest lists it as {name!r})")
    if "global_step" in meta and not _is_int(meta["global_step"]):
        wrong.append(f"global_step {_short(meta['global_step'])}, expected an int >= 0")
    seconds = meta.get("seconds", 0.0)
    if not (isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
            and seconds >= 0):
        wrong.append(f"seconds {_short(seconds)}, expected a number >= 0")
    if wrong:
        raise ValueError(f"nsp_lightning.read_records: {path} has {'; '.join(wrong)}")


def _named(err: Exception, path: Path, what: str) -> ValueError:
    """``err`` as a ValueError whose message names ``path``."""
    text = str(err)
    if isinstance(err, ValueError) and str(path) in text:
        return err
    return ValueError(f"nsp_lightning.read_records: {path}: {what} failed ({type(err).__name__}: {text[:500]})")


def read_header(dirpath: str | os.PathLike) -> dict[str, Any]:
    """The run-level metadata of a record directory.

    Returns
    -------
    dict
        ``layernames``, ``shapes`` (per recorded layer, without the batch dimension),
        ``probes``, ``probe_shape``, ``transform``, ``INCL`` and ``model`` (class name).

    Raises
    ------
    FileNotFoundError
        If ``dirpath`` holds no manifest.
    """
    return RecordStore(dirpath).header


def read_series(dirpath: str | os.PathLike) -> tuple[str, type[ProbeAnalysis]]:
    """The name of the analysis that wrote a record directory, and the class that reads it.

    Returns
    -------
    name : str
        The analysis's name (``"spectra"`` for a directory written before analyses
        were plug-ins).
    cls : type
        Its :class:`~nsp_lightning.ProbeAnalysis` subclass, or ``ProbeAnalysis`` itself
        where that class is not available (see :func:`~nsp_lightning.probe.analysis.analysis_class`):
        its records then read as :class:`~nsp_lightning.ProbeRecord`.

    Raises
    ------
    FileNotFoundError
        If ``dirpath`` holds no manifest.
    ValueError
        If the manifest is not readable.
    """
    store = RecordStore(dirpath)
    info = store.analysis
    if info is None:
        return _LEGACY_NAME, analysis_class(None) or ProbeAnalysis
    valid = isinstance(info, dict) and isinstance(info.get("class", ""), str)
    try:
        check_name(info.get("name") if valid else None, "")
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(
            f"nsp_lightning.read_records: the manifest {store.manifest_path} has an invalid analysis entry {_short(info)}"
            " (an analysis's name is lowercase letters, digits, '_' and '-', starting with a letter)"
        )
    cls = analysis_class(info["class"]) if "class" in info else None
    return info["name"], cls or ProbeAnalysis


def read_records(dirpath: str | os.PathLike, *, skip_bad: bool = False) -> list[Any]:
    """Every record listed in a record directory's manifest, by increasing epoch.

    Each record is checked before it is returned: the core's metadata (``epoch`` matching
    the record's name, ``global_step``, ``seconds``), that its file was written for this
    directory's series, then the analysis's own checks (:meth:`~nsp_lightning.ProbeAnalysis.read_record`
    and, against the series' header, :meth:`~nsp_lightning.ProbeAnalysis.check_record`;
    spectra: the layers, their shapes, the number of probes, the dtypes).

    Parameters
    ----------
    dirpath : str or os.PathLike
        A record directory (``SpectrumCallback.dirpath``; ``ProbeCallback.record_dirs[name]``).
    skip_bad : bool, default False
        Leave out the records that fail these checks, with a warning each, rather than
        raise. A manifest or header that fails them still raises.

    Returns
    -------
    list
        What the analysis's :meth:`~nsp_lightning.ProbeAnalysis.read_record` makes of
        each record: :class:`~nsp_lightning.SpectrumRecord` for spectra, :class:`~nsp_lightning.ProbeRecord`
        by default.

    Raises
    ------
    FileNotFoundError
        If ``dirpath`` holds no manifest.
    ValueError
        If the manifest or its header is not readable or valid, or (unless ``skip_bad``)
        a record it lists is not; the message names the file and what is wrong.
    """
    records, problems = read_series_records(dirpath, skip_bad=skip_bad)[3:]
    for problem in problems:
        warnings.warn(f"{problem}; the record is left out", stacklevel=2)
    return records


def read_series_records(
    dirpath: str | os.PathLike, *, skip_bad: bool = False
) -> tuple[str, type[ProbeAnalysis], dict[str, Any], list[Any], list[str]]:
    """A record directory's series: its analysis, header and checked records (see :func:`read_records`).

    Returns
    -------
    name : str
        The analysis's name.
    cls : type
        The :class:`~nsp_lightning.ProbeAnalysis` subclass that reads the records.
    header : dict
        The series' header.
    records : list
        The records that passed the checks, by increasing epoch.
    problems : list of str
        With ``skip_bad``, one message per record left out, naming its file and what is
        wrong (empty otherwise: the first bad record raises).

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`read_records`.
    """
    store = RecordStore(dirpath)
    manifest = store.manifest()
    name, cls = read_series(dirpath)
    header = manifest["header"]
    try:
        cls.check_header(header, store.manifest_path)
    except Exception as err:
        raise _named(err, store.manifest_path, f"{cls.__qualname__}.check_header") from None
    records, problems = [], []
    for entry, result in store.read_all(manifest):
        path = store.directory / entry["file"]
        try:
            if isinstance(result, ValueError):
                raise result
            arrays, meta = result
            _check_core_meta(meta, path, entry["name"])
            try:
                record = cls.read_record(arrays, meta, path)
                cls.check_record(record, header, path)
            except Exception as err:
                raise _named(err, path, f"{cls.__qualname__}.read_record") from None
        except ValueError as err:
            if not skip_bad:
                raise
            problems.append(str(err))
            continue
        records.append(record)
    return name, cls, header, sorted(records, key=lambda r: r.epoch), problems
