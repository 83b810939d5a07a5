"""Records on disk: a directory with a small JSON manifest and one ``.npz`` file per record.

Records and manifests are safe files written atomically (:mod:`nsp.io.files`: no pickle;
``fsync`` then ``os.replace``), so a run that dies in the middle of a write leaves at most
a stray temporary file (``.*.tmp``) behind, and every record the manifest lists stays
readable. A record file is always written before the manifest that lists it, so the
manifest never names a file that is not complete.

Layout of a record directory::

    manifest.json        {"format": "nsp-records", "version": 1, "header": {...},
                          "analysis": {...} (optional: what wrote the series),
                          "series": "<random id of the series>",
                          "records": [{"name": ..., "file": ..., <summary>}, ...],
                          "failed": [{"name": ..., "error": ...}, ...] (optional)}
    <name>.npz           the record's arrays, plus its metadata as JSON under "__meta__"
                         (with the series id under "__series__")
    .lock                the writer's lock (see :class:`RecordStore`)

Every record file carries the id of the series it was written for, and
:meth:`RecordStore.read` refuses a file listed in a series that is not its own (a file
copied in from another run), so that no mixed series is ever read.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

import filelock
import numpy as np

from nsp.io.files import load_json, load_npz, save_json, save_npz

__all__ = [
    "FORMAT",
    "VERSION",
    "MANIFEST",
    "SERIES_KEY",
    "RecordStore",
    "RecordStoreError",
    "save_npz",
    "load_npz",
    "save_json",
    "load_json",
]

FORMAT = "nsp-records"
VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
# Who holds a directory's lock ("pid N on host"), noted by the holder for the message of a
# writer it refuses. A file of its own: the lock file belongs to filelock.
LOCK_HOLDER = ".lock.holder"
# How long a refused writer waits for the holder to note itself (it does so right after
# taking the lock, so only a writer refused in that instant waits).
_HOLDER_WAIT = 1.0
# The key under which RecordStore.write keeps the series id in a record's metadata.
SERIES_KEY = "__series__"


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


class RecordStoreError(RuntimeError):
    """A record directory that this writer must not, or can no longer, write to."""


class RecordStore:
    """A directory of records: ``manifest.json`` plus one ``<name>.npz`` per record.

    One series per directory, one writer at a time: :meth:`start` and :meth:`attach` take
    an exclusive lock on ``<directory>/.lock`` (:class:`filelock.FileLock`: the operating
    system's lock, ``flock`` or ``LockFileEx``, which it releases when the store is closed
    or the process ends, so that the lock of a killed run never blocks the next one), and
    every :meth:`write` checks that it still holds the lock and that the manifest is still
    its series (a random ``"series"`` id), so a second writer fails loudly at start, naming
    the process that holds the lock (noted in ``<directory>/.lock.holder``), and a writer
    whose lock or series was taken over fails at its next write instead of mixing records.
    :meth:`start` refuses a directory that already lists records: earlier records are
    never overwritten.

    Parameters
    ----------
    directory : str or os.PathLike
        Where the records live. Created on the first write.

    Examples
    --------
    >>> import tempfile
    >>> store = RecordStore(tempfile.mkdtemp())
    >>> store.start({"layers": ["input"]})
    >>> _ = store.write("epoch-0000", {"x": np.zeros(2)}, {"epoch": 0})
    >>> store.names()
    ['epoch-0000']
    >>> store.read("epoch-0000")[1]
    {'epoch': 0}
    >>> store.close()
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._lock: filelock.BaseFileLock | None = None
        # The lock file this writer locked (device, inode), to notice it removed or replaced.
        self._locked_file: tuple[int, int] | None = None
        self._holder = ""
        self._series: str | None = None

    def __repr__(self) -> str:
        return f"RecordStore({str(self.directory)!r})"

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    @property
    def lock_path(self) -> Path:
        return self.directory / LOCK

    @property
    def holder_path(self) -> Path:
        return self.directory / LOCK_HOLDER

    def exists(self) -> bool:
        """Whether the directory holds a manifest."""
        return self.manifest_path.is_file()

    def manifest(self) -> dict[str, Any]:
        """The manifest, checked for format, version and structure.

        Raises
        ------
        FileNotFoundError
            If the directory holds no manifest.
        ValueError
            If the manifest is not a well-formed nsp record manifest of a supported
            version; the message names the file and what is wrong.
        """
        if not self.exists():
            raise FileNotFoundError(f"nsp.storage: no {MANIFEST} in {self.directory}; is this a record directory?")
        manifest = load_json(self.manifest_path)
        where = f"nsp.storage: {self.manifest_path}"
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{where} is not an {FORMAT!r} manifest")
        if manifest.get("version") != VERSION:
            raise ValueError(f"{where} has version {_short(manifest.get('version'))}; this nsp reads version {VERSION}")
        if not isinstance(manifest.get("header"), dict):
            raise ValueError(f"{where} has header {_short(manifest.get('header'))}, expected a JSON object")
        if not isinstance(manifest.get("records"), list):
            raise ValueError(f"{where} has records {_short(manifest.get('records'))}, expected a list")
        if "analysis" in manifest and not isinstance(manifest["analysis"], dict):
            raise ValueError(f"{where} has analysis {_short(manifest['analysis'])}, expected a JSON object")
        if "series" in manifest and not isinstance(manifest["series"], str):
            raise ValueError(f"{where} has series {_short(manifest['series'])}, expected a string")
        failed = manifest.get("failed", [])
        if not isinstance(failed, list) or not all(
            isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("error"), str) for f in failed
        ):
            raise ValueError(f"{where} has failed {_short(failed)}, expected a list of {{name, error}} objects")
        seen: set[str] = set()
        for entry in manifest["records"]:
            file = entry.get("file") if isinstance(entry, dict) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            if (not isinstance(file, str) or not isinstance(name, str) or Path(file).name != file
                    or file in ("", ".", "..") or file != f"{name}.npz"):
                raise ValueError(f"{where} has an invalid record entry {_short(entry)}")
            if name in seen:
                raise ValueError(f"{where} lists the record {name!r} twice")
            seen.add(name)
        return manifest

    @property
    def header(self) -> dict[str, Any]:
        """Run-level metadata given to :meth:`start`."""
        return self.manifest()["header"]

    def entries(self) -> list[dict[str, Any]]:
        """The manifest's entries, one per record, in the order written.

        Raises
        ------
        ValueError
            If the manifest is malformed (see :meth:`manifest`).
        """
        return self.manifest()["records"]

    def names(self) -> list[str]:
        """The names of the records, in the order written."""
        return [entry["name"] for entry in self.entries()]

    @property
    def analysis(self) -> dict[str, Any] | None:
        """What wrote the series, as given to :meth:`start` (None if it was not said)."""
        return self.manifest().get("analysis")

    def start(self, header: Mapping[str, Any], analysis: Mapping[str, Any] | None = None) -> None:
        """Begin a new series: take the directory's lock, write a manifest with ``header`` and no records.

        ``analysis`` (JSON, optional) says what writes the series; it is kept in the
        manifest under ``"analysis"``.

        Raises
        ------
        RecordStoreError
            If another process holds the directory's lock, or the directory already
            lists records (they are never overwritten: pass another directory).
        """
        self.acquire()
        if self.exists():
            try:
                count = len(self.entries())
            except ValueError:
                count = -1
            if count:
                self.close()
                held = f"{count} record(s)" if count > 0 else "an unreadable manifest"
                raise RecordStoreError(
                    f"nsp.storage: {self.directory} already holds a record series ({held}); a new series never "
                    "overwrites one. Write to another directory, or delete this one first"
                )
        self._series = uuid.uuid4().hex
        manifest = {"format": FORMAT, "version": VERSION, "header": dict(header), "records": [], "series": self._series}
        if analysis is not None:
            manifest["analysis"] = dict(analysis)
        self._save(manifest)

    def attach(self) -> None:
        """Continue the directory's series (on resume): take its lock and adopt its series id.

        Raises
        ------
        RecordStoreError
            If another process holds the lock.
        """
        self.acquire()
        self._series = self.manifest().get("series")

    def acquire(self) -> None:
        """Take the directory's exclusive writer lock, and remove temporary files of killed writes.

        Raises
        ------
        RecordStoreError
            If another process holds it.
        """
        if self._lock is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        # One lock per store, shared by its threads; timeout 0: a held lock is refused at once.
        lock = filelock.FileLock(self.lock_path, timeout=0, thread_local=False)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise RecordStoreError(
                f"nsp.storage: another process ({self._lock_holder()}) is writing records to {self.directory}; two runs "
                "must not share a record directory. Pass another directory"
            ) from None
        self._lock = lock
        self._locked_file = _file_id(self.lock_path)
        self._holder = f"pid {os.getpid()} on {socket.gethostname()}"
        with contextlib.suppress(OSError):
            self.holder_path.write_text(self._holder, encoding="utf-8")
        # Only a writer holding the lock creates temporary files here, so these are strays.
        for stray in self.directory.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                stray.unlink()

    def _lock_holder(self) -> str:
        """The holder of the lock as it noted itself, or ``"unknown"``."""
        deadline = time.monotonic() + _HOLDER_WAIT
        while True:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                holder = self.holder_path.read_text(encoding="utf-8").strip()
                if holder:
                    return holder
            if time.monotonic() >= deadline:
                return "unknown"
            time.sleep(0.01)

    def close(self) -> None:
        """Release the lock (a store that only reads holds none)."""
        if self._lock is None:
            return
        # The note is this writer's unless another took the directory over (see write).
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if self.holder_path.read_text(encoding="utf-8") == self._holder:
                self.holder_path.unlink()
        self._lock.release()
        self._lock = None
        self._locked_file = None

    def _check_writer(self) -> None:
        """Fail loudly where the lock or the series was taken over since :meth:`start`."""
        if self._lock is None:
            raise RecordStoreError(f"nsp.storage: {self.directory}: call start() or attach() before writing records")
        if _file_id(self.lock_path) != self._locked_file:
            raise RecordStoreError(
                f"nsp.storage: this run lost the lock of {self.directory} (its lock file was removed or replaced); "
                "it stops writing records rather than mix them with another run's"
            )
        found = self.manifest().get("series")
        if found != self._series:
            raise RecordStoreError(
                f"nsp.storage: the series in {self.directory} was replaced by another run's (series {found!r}, "
                f"this run's {self._series!r}); this run stops writing records rather than mix them"
            )

    def write(
        self,
        name: str,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any],
        summary: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write one record, then list it in the manifest (replacing a record of the same name).

        Parameters
        ----------
        name : str
            The record's name; the file is ``<name>.npz``. Letters, digits, ``-`` and ``_``.
        arrays, meta
            As for :func:`save_npz`.
        summary : mapping, optional
            JSON-serialisable fields copied into the manifest entry, so that a reader can
            select records without opening them.

        Returns
        -------
        pathlib.Path
            The record file.

        Raises
        ------
        ValueError
            If ``name`` has other characters.
        RecordStoreError
            If this store has not started or attached to the series, or lost its lock or
            its series to another run.
        """
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise ValueError(f"nsp.storage.RecordStore.write: invalid record name {name!r}")
        if SERIES_KEY in meta:
            raise ValueError(f"nsp.storage.RecordStore.write: the metadata key {SERIES_KEY!r} is reserved")
        self._check_writer()
        manifest = self.manifest()
        stamp = {SERIES_KEY: self._series} if self._series is not None else {}
        path = save_npz(self.directory / f"{name}.npz", arrays, {**meta, **stamp})
        records = [entry for entry in manifest["records"] if entry["name"] != name]
        records.append({**dict(summary or {}), "name": name, "file": path.name})
        updated = {**manifest, "records": records}
        if "failed" in manifest:
            updated["failed"] = [f for f in manifest["failed"] if f["name"] != name]
        self._save(updated)
        return path

    def note_failure(self, name: str, error: str) -> None:
        """List ``name`` in the manifest as a record that could not be taken, and why.

        Readers skip it (it has no file); :func:`nsp_lightning.report.report` shows it.

        Raises
        ------
        RecordStoreError
            As for :meth:`write`.
        """
        self._check_writer()
        manifest = self.manifest()
        failed = [f for f in manifest.get("failed", []) if f["name"] != name]
        failed.append({"name": str(name), "error": str(error)[:2000]})
        self._save({**manifest, "failed": failed})

    def failures(self) -> list[dict[str, str]]:
        """The records listed as failed (:meth:`note_failure`): ``{"name": ..., "error": ...}`` each."""
        return list(self.manifest().get("failed", []))

    def read(
        self, name: str, manifest: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Read a record listed in the manifest, checking that it belongs to this series.

        Parameters
        ----------
        name : str
            The record's name.
        manifest : mapping, optional
            The manifest (:meth:`manifest`), when the caller has read it already.

        Returns
        -------
        arrays : dict of str to numpy.ndarray
        meta : dict
            Its metadata, without the series id.

        Raises
        ------
        KeyError
            If the manifest lists no record called ``name``.
        ValueError
            If the file is missing or not readable (see :func:`load_npz`), or was written
            for another series (a file copied in from another run); the message names it.
        """
        manifest = self.manifest() if manifest is None else manifest
        for entry in manifest["records"]:
            if entry["name"] == name:
                break
        else:
            names = [e["name"] for e in manifest["records"]]
            raise KeyError(f"nsp.storage: {self.directory} lists no record {name!r}; it has {names}")
        path = self.directory / entry["file"]
        try:
            arrays, meta = load_npz(path)
        except FileNotFoundError:
            raise ValueError(f"nsp.storage: {path} is missing, but {self.manifest_path} lists it") from None
        found, series = meta.pop(SERIES_KEY, None), manifest.get("series")
        # Records written before series ids existed carry none, and neither does a legacy manifest.
        if found is not None and series is not None and found != series:
            raise ValueError(
                f"nsp.storage: {path} belongs to another record series (series {_short(found)}, the manifest's "
                f"{series!r}); it was copied in from another run, and is not read as part of this one"
            )
        return arrays, meta

    def _save(self, manifest: Mapping[str, Any]) -> None:
        save_json(self.manifest_path, manifest)


def _file_id(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of ``path``, or None if it does not exist."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino
