r"""Spectrum records: the record format of :class:`~nsp_lightning.analyses.spectrum.SpectrumAnalysis`.

Written through the probe core's record store (:mod:`nsp_lightning.probe.store`) and read
back with :func:`~nsp_lightning.read_records`, which returns :class:`SpectrumRecord`\ s::

    from nsp_lightning import read_records
    for rec in read_records("lightning_logs/version_0/spectrum"):
        print(rec.epoch, rec.global_step, rec.log10_energy[0])

Inside a record file, for recorded layer ``l`` (an index into ``layernames``) and ``P``
probes, each array holding every probe (one array per layer keeps the file small and
quick to write):

========================  =====================================================
``activations.{l}``       the layer's activations, shape ``(P, *layer_shape)``,
                          in the model's dtype
``spectrum.{l}``          the layer's spectra, float64, same shape
``energy``                Σ ŝ² per probe and layer, float64, shape ``(P, L)``
                          (``inf`` where it overflows float64)
``log10_energy``          log10 of it, computed without overflow; ``-inf`` for
                          an all-zero spectrum
``__meta__``              JSON: epoch, global_step, layernames, probes,
                          fingerprints, rebuilt, seconds
========================  =====================================================
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

import nsp.transforms.energy
from nsp.io.storage import RecordStore
from nsp_lightning.probe.analysis import AnalysisRecord
from nsp_lightning.probe.store import to_numpy, write_analysis_record

__all__ = ["SpectrumRecord", "make_record", "read_spectrum_record", "spectrum_analysis_record", "write_record"]


@dataclass(frozen=True)
class SpectrumRecord:
    """Activations and spectra of every probe at one point of training.

    Attributes
    ----------
    epoch : int
        Training epochs completed when the record was taken: 0 is the baseline before any
        training step, 1 the end of the first epoch (Lightning's ``current_epoch == 0``).
    global_step : int
        The Trainer's ``global_step`` at that time.
    layernames : tuple of str
        The recorded layers, in the model's execution order.
    activations : tuple of tuple of numpy.ndarray
        ``activations[p][l]``: probe ``p``, layer ``l``, without the batch dimension.
    spectra : tuple of tuple of numpy.ndarray
        ``spectra[p][l]``: float64, same shape as the activations.
    energy : numpy.ndarray
        Spectral energy Σ ŝ², float64, shape ``(P, L)``.
    log10_energy : numpy.ndarray
        ``log10(energy)`` computed without overflow, shape ``(P, L)``.
    fingerprints : tuple of str
        Per probe, the fingerprint of the graph the spectrum was computed on.
    rebuilt : bool
        Whether a graph was rebuilt for this record because its fingerprint changed
        (INCL=False only).
    seconds : float
        Wall time taken to probe, transform and log this record.
    """

    epoch: int
    global_step: int
    layernames: tuple[str, ...]
    activations: tuple[tuple[np.ndarray, ...], ...]
    spectra: tuple[tuple[np.ndarray, ...], ...]
    energy: np.ndarray
    log10_energy: np.ndarray
    fingerprints: tuple[str, ...]
    rebuilt: bool
    seconds: float

    @property
    def num_probes(self) -> int:
        return len(self.activations)


def make_record(
    epoch: int,
    global_step: int,
    activations: Sequence[Any],
    spectra: Sequence[Any],
    layers: Sequence[int],
    fingerprints: Sequence[str],
    rebuilt: bool,
    seconds: float,
) -> SpectrumRecord:
    """Turn nsp results for P probes into a :class:`SpectrumRecord`.

    Parameters
    ----------
    epoch, global_step : int
        As in :class:`SpectrumRecord`.
    activations, spectra : sequence of nsp.Activations
        One pattern and its spectrum (``NNGraph.transform``) per probe.
    layers : sequence of int
        Indices of the layers to keep, into ``activations[p].layernames``.
    fingerprints : sequence of str
        One graph fingerprint per probe.
    rebuilt : bool
        Whether a graph was rebuilt for this record.
    seconds : float
        Time the record took.

    Returns
    -------
    SpectrumRecord

    Raises
    ------
    ValueError
        If the numbers of patterns, spectra and fingerprints differ, or there are none.
    """
    if not activations or not len(activations) == len(spectra) == len(fingerprints):
        raise ValueError(
            "nsp_lightning.make_record: expected one spectrum and one fingerprint per activation pattern, got "
            f"{len(activations)} patterns, {len(spectra)} spectra, {len(fingerprints)} fingerprints"
        )
    acts = tuple(tuple(to_numpy(a.layeractivations[i]) for i in layers) for a in activations)
    specs = tuple(
        tuple(np.asarray(to_numpy(s.layeractivations[i]), dtype=np.float64) for i in layers) for s in spectra
    )
    return SpectrumRecord(
        epoch=int(epoch),
        global_step=int(global_step),
        layernames=tuple(activations[0].layernames[i] for i in layers),
        activations=acts,
        spectra=specs,
        energy=np.stack([nsp.transforms.energy.spectral_energy(list(s)) for s in specs]),
        log10_energy=np.stack([nsp.transforms.energy.log10_energy(list(s)) for s in specs]),
        fingerprints=tuple(fingerprints),
        rebuilt=bool(rebuilt),
        seconds=float(seconds),
    )


def write_record(store: RecordStore, record: SpectrumRecord) -> Path:
    """Write ``record`` into ``store`` atomically and list it in the manifest.

    A record of the same epoch is replaced.

    Returns
    -------
    pathlib.Path
        The record file.
    """
    return write_analysis_record(
        store,
        spectrum_analysis_record(record),
        epoch=record.epoch,
        global_step=record.global_step,
        seconds=record.seconds,
        store_scalars=False,
    )


def spectrum_analysis_record(record: SpectrumRecord) -> AnalysisRecord:
    """A :class:`SpectrumRecord` as the arrays, scalars and metadata its record file keeps."""
    arrays: dict[str, np.ndarray] = {"energy": record.energy, "log10_energy": record.log10_energy}
    for l in range(len(record.layernames)):
        arrays[f"activations.{l}"] = np.stack([probe[l] for probe in record.activations])
        arrays[f"spectrum.{l}"] = np.stack([probe[l] for probe in record.spectra])
    meta = {
        "layernames": list(record.layernames),
        "probes": record.num_probes,
        "fingerprints": list(record.fingerprints),
        "rebuilt": record.rebuilt,
    }
    scalars = {
        f"log10_energy/probe_{p}/{name}": float(record.log10_energy[p, l])
        for p in range(record.num_probes)
        for l, name in enumerate(record.layernames)
    }
    return AnalysisRecord(arrays=arrays, scalars=scalars, meta=meta, summary={"rebuilt": record.rebuilt})


def read_spectrum_record(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], where: str) -> SpectrumRecord:
    """A :class:`SpectrumRecord` from a record file's arrays and metadata (as :func:`nsp.io.storage.load_npz` reads them).

    Parameters
    ----------
    arrays : mapping of str to numpy.ndarray
        The record's arrays: ``activations.{l}`` and ``spectrum.{l}`` per layer (one row
        per probe), ``energy`` and ``log10_energy``.
    meta : mapping
        Its metadata: ``epoch``, ``global_step``, ``seconds``, ``layernames``, ``probes``,
        ``fingerprints`` and ``rebuilt``.
    where : str
        The record file, for the messages.

    Returns
    -------
    SpectrumRecord

    Raises
    ------
    ValueError
        If a field is missing or of the wrong type, or an array does not hold one row
        per probe; the message names ``where``.
    """
    try:
        probes, names, fingerprints = meta["probes"], meta["layernames"], meta["fingerprints"]
        rebuilt = meta["rebuilt"]
        if not isinstance(probes, int) or isinstance(probes, bool) or probes < 1:
            raise ValueError(f"probes {probes!r}, expected an int >= 1")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"layernames {_short(names)}, expected a non-empty list of strings")
        if not isinstance(fingerprints, list) or not all(isinstance(f, str) for f in fingerprints):
            raise ValueError(f"fingerprints {_short(fingerprints)}, expected a list of strings")
        if not isinstance(rebuilt, bool):
            raise ValueError(f"rebuilt {rebuilt!r}, expected true or false")
        stacked = {kind: [arrays[f"{kind}.{l}"] for l in range(len(names))] for kind in ("activations", "spectrum")}
        record = SpectrumRecord(
            epoch=meta["epoch"],
            global_step=meta["global_step"],
            layernames=tuple(names),
            activations=(),
            spectra=(),
            energy=arrays["energy"],
            log10_energy=arrays["log10_energy"],
            fingerprints=tuple(fingerprints),
            rebuilt=rebuilt,
            seconds=meta["seconds"],
        )
    except KeyError as err:
        raise ValueError(f"nsp_lightning.read_records: {where} lacks {err}; it is not a spectrum record") from err
    except ValueError as err:
        raise ValueError(f"nsp_lightning.read_records: {where} has {err}") from None
    short = [f"{kind}.{l}" for kind, rows in stacked.items() for l, a in enumerate(rows) if a.shape[:1] != (probes,)]
    if short:
        raise ValueError(f"nsp_lightning.read_records: in {where}, {short} do not hold one row per probe ({probes})")
    return replace(
        record,
        activations=tuple(tuple(a[p] for a in stacked["activations"]) for p in range(probes)),
        spectra=tuple(tuple(a[p] for a in stacked["spectrum"]) for p in range(probes)),
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


