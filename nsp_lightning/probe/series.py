"""The record series a :class:`~nsp_lightning.ProbeCallback` writes: one record directory per analysis.

Rank 0 alone writes. At fit start it starts each analysis's series in its directory (or,
on resume, continues the one there, if it was recorded with the same configuration),
holding the directory's writer lock (:class:`nsp.io.storage.RecordStore`) until
teardown; every record then goes through :func:`nsp_lightning.probe.store.write_analysis_record`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from lightning.pytorch.utilities.rank_zero import rank_zero_info

from nsp.io.storage import RecordStore, RecordStoreError
from nsp_lightning.probe import store as record_store
from nsp_lightning.probe.analysis import AnalysisRecord, ProbeAnalysis, class_path

__all__ = ["RecordSeries"]


class RecordSeries:
    """The record directories of one callback's analyses, one :class:`~nsp.io.storage.RecordStore` each.

    Parameters
    ----------
    directories : mapping of str to str
        Each analysis's record directory, by analysis name.
    who : str
        The callback, for the messages.
    stage : str, default "fit"
        The Trainer's stage that writes the records (``"fit"``, ``"validate"``, ``"test"``),
        kept in each evaluation record's manifest entry.

    Attributes
    ----------
    stores : dict of str to nsp.io.storage.RecordStore
        The stores, by analysis name.
    """

    def __init__(self, directories: Mapping[str, str], who: str, stage: str = "fit") -> None:
        self.stores = {name: RecordStore(directory) for name, directory in directories.items()}
        self.who = who
        self.stage = stage

    def recorded(self, epoch: int) -> list[str]:
        """The analyses whose directory lists record ``epoch`` already."""
        name = record_store.record_name(epoch)
        return [
            analysis for analysis, store in self.stores.items()
            if store.exists() and any(entry["name"] == name for entry in store.entries())
        ]

    def start(self, analysis: ProbeAnalysis, resuming: bool) -> bool:
        """Continue ``analysis``'s series (when ``resuming`` and one exists) or start one; True if started.

        A new series never overwrites or joins one: a directory that lists records is refused,
        unless every record in it was taken by ``trainer.validate()`` or ``trainer.test()``
        (a fit after an evaluation on the same Trainer): the fit continues that series.

        Raises
        ------
        ValueError
            If the series to continue was recorded with another configuration (header)
            or by another analysis.
        nsp.io.storage.RecordStoreError
            If another process writes to the directory, or a new series would replace
            one that holds records.
        """
        store = self.stores[analysis.name]
        header = analysis.header()
        info = {"name": analysis.name, "class": class_path(type(analysis))}
        try:
            if store.exists() and (resuming or _evaluation_only(store)):
                store.attach()
                found = store.analysis
                if store.header != header or (found is not None and found.get("name") != analysis.name):
                    store.close()
                    raise ValueError(
                        f"{self.who}: the records in {store.directory} were written with another configuration"
                        f" ({store.header}); this run has {header}. Pass another `dirpath`."
                    )
                rank_zero_info(f"{self.who}: continuing the record series in {store.directory}")
                return False
            store.start(header, analysis=info)
            return True
        except RecordStoreError as err:
            raise RecordStoreError(f"{self.who}: {err}") from None

    def write(self, analysis: ProbeAnalysis, record: AnalysisRecord, *, epoch: int, global_step: int,
              seconds: float) -> Path:
        """Write ``analysis``'s record of ``epoch`` into its directory (see :func:`~nsp_lightning.probe.store.write_analysis_record`)."""
        return record_store.write_analysis_record(
            self.stores[analysis.name],
            record,
            epoch=epoch,
            global_step=global_step,
            seconds=seconds,
            store_scalars=analysis.store_scalars,
            stage=self.stage,
        )

    def start_all(self, analyses: Sequence[ProbeAnalysis]) -> None:
        """Continue each analysis's series where its directory holds one, else start one (as evaluations do)."""
        for analysis in analyses:
            self.start(analysis, resuming=self.stores[analysis.name].exists())

    def note_failure(self, analysis: ProbeAnalysis, epoch: int, reason: str) -> str | None:
        """List record ``epoch`` of ``analysis`` as one that could not be taken, and why.

        Returns
        -------
        str or None
            None; or, where the disk refuses this note too (full, read-only, gone) or the
            manifest became unreadable, what went wrong: the record is then missing from
            the series.
        """
        store = self.stores[analysis.name]
        try:
            store.note_failure(record_store.record_name(epoch), reason)
        except (OSError, ValueError) as err:
            return (
                f"record {epoch} of {analysis.name!r} could not be listed as failed in {store.manifest_path} either"
                f" ({type(err).__name__}: {err}); it is missing from the series"
            )
        return None

    def close(self) -> None:
        """Release the directories' locks, so that a later fit may continue the series."""
        for store in self.stores.values():
            store.close()


def _evaluation_only(store: RecordStore) -> bool:
    """Whether ``store`` lists records and every one was taken by an evaluation (validate or test), none by a fit."""
    try:
        entries = store.entries()
    except ValueError:
        return False  # start() refuses an unreadable manifest, naming it
    return bool(entries) and all(entry.get("stage") in ("validate", "test") for entry in entries)
