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
import errno
import json
import os
import re
import socket
import stat
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

import filelock
import numpy as np

try:
    import fcntl
except ImportError:  # Windows: filelock's LockFileEx
    fcntl = None  # type: ignore[assignment]

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
# writer it refuses. A file of its own: nothing is ever written into the lock file.
LOCK_HOLDER = ".lock.holder"
# How long a refused writer waits for the holder to note itself (it does so right after
# taking the lock, so only a writer refused in that instant waits).
_HOLDER_WAIT = 1.0
# The key under which RecordStore.write keeps the series id in a record's metadata.
SERIES_KEY = "__series__"
# The temporary files this store writes (nsp.io.files' atomic writes and the holder's note):
# ".<target>.<random>.tmp", where <target> is a file the store writes. Only these are removed
# as strays: a user's own ".*.tmp" file in a record directory is left alone.
_TEMPORARY = re.compile(r"^\.(manifest\.json|[A-Za-z0-9_-]+\.npz|\.lock\.holder)\.[a-z0-9_]+\.tmp$")
# Opening a file the store locks or reads its notes from: never through a symbolic link, never blocking on a FIFO.
_NO_FOLLOW = os.O_NOFOLLOW if hasattr(os, "O_NOFOLLOW") else 0
_OPEN_NOTE = os.O_RDONLY | _NO_FOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


class RecordStoreError(RuntimeError):
    """A record directory that this writer must not, or can no longer, write to."""


class RecordStore:
    """A directory of records: ``manifest.json`` plus one ``<name>.npz`` per record.

    One series per directory, one writer at a time: :meth:`start` and :meth:`attach` take
    an exclusive lock on ``<directory>/.lock`` (the operating system's lock, ``flock``, or
    ``LockFileEx`` through :class:`filelock.FileLock` where there is no ``fcntl``, which it
    releases when the store is closed or the process ends, so that the lock of a killed
    run never blocks the next one), and
    every :meth:`write` checks that it still holds the lock and that the manifest is still
    its series (a random ``"series"`` id), so a second writer fails loudly at start, naming
    the process that holds the lock (noted in ``<directory>/.lock.holder``), and a writer
    whose lock or series was taken over fails at its next write instead of mixing records.
    :meth:`start` refuses a directory that already lists records: earlier records are
    never overwritten.

    The store never follows a symbolic link at the path of a file it writes, locks or
    deletes (the lock file is opened with ``O_NOFOLLOW``; the manifest, the records and
    the holder's note are replaced, never written through), and :meth:`read` refuses a
    record file or manifest that is a symbolic link. Stray temporary files are removed
    only where the store names them so (``.<file>.<random>.tmp``).

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
        self._lock: _DirectoryLock | None = None
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
        where = f"nsp.storage: {self.manifest_path}"
        if self.manifest_path.is_symlink():
            raise ValueError(f"{where} is a symbolic link; a manifest is read only from its record directory")
        manifest = load_json(self.manifest_path)
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
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            # The same OSError subclass (a caller may handle a full or read-only disk), with what nsp was doing.
            raise type(err)(err.errno, f"nsp.storage: cannot create the record directory {self.directory}"
                                       f" ({err.strerror})") from None
        lock = _DirectoryLock(self.lock_path)
        if not lock.acquire():
            raise RecordStoreError(
                f"nsp.storage: another process ({self._lock_holder()}) is writing records to {self.directory}; two runs "
                "must not share a record directory. Pass another directory"
            )
        self._lock = lock
        self._locked_file = _file_id(self.lock_path)
        self._holder = f"pid {os.getpid()} on {socket.gethostname()}"
        with contextlib.suppress(OSError):
            _write_note(self.holder_path, self._holder)
        # Only a writer holding the lock creates temporary files here, so the store's own are strays.
        for stray in self.directory.glob(".*.tmp"):
            if _TEMPORARY.match(stray.name):
                with contextlib.suppress(OSError):
                    stray.unlink()  # unlink never follows a symbolic link: it removes the link

    def _lock_holder(self) -> str:
        """The holder of the lock as it noted itself, or ``"unknown"``."""
        deadline = time.monotonic() + _HOLDER_WAIT
        while True:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                holder = _read_note(self.holder_path).strip()
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
            if _read_note(self.holder_path) == self._holder:
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
        return self._read_entry(entry, manifest)

    def _read_entry(
        self, entry: Mapping[str, Any], manifest: Mapping[str, Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        path = self.directory / entry["file"]
        if path.is_symlink():
            raise ValueError(
                f"nsp.storage: {path} is a symbolic link; a record is read only from its own directory, never"
                " through a link to a file elsewhere"
            )
        try:
            arrays, meta = load_npz(path)
        except FileNotFoundError:
            raise ValueError(f"nsp.storage: {path} is missing, but {self.manifest_path} lists it") from None
        found, series = meta.pop(SERIES_KEY, None), manifest.get("series")
        # A manifest with a series id has had it stamped into every record written for it; a legacy
        # manifest (written before series ids) has none, and neither have its records.
        if series is not None and found != series:
            whose = ("carries no series id" if found is None
                     else f"belongs to another record series (series {_short(found)})")
            raise ValueError(
                f"nsp.storage: {path} {whose}, but the manifest's series is {series!r}; it was copied in from"
                " another run, and is not read as part of this one"
            )
        return arrays, meta

    def read_all(
        self, manifest: Mapping[str, Any] | None = None
    ) -> Iterator[tuple[dict[str, Any], tuple[dict[str, np.ndarray], dict[str, Any]] | ValueError]]:
        """Every record the manifest lists, in the order written, each read as :meth:`read` reads it.

        One pass over the manifest, so that reading ``n`` records takes time linear in ``n``.

        Yields
        ------
        entry : dict
            The record's manifest entry.
        result : tuple or ValueError
            Its ``(arrays, meta)``, or the ``ValueError`` that :meth:`read` would raise for
            it (a missing, unreadable or foreign file).
        """
        manifest = self.manifest() if manifest is None else manifest
        for entry in manifest["records"]:
            try:
                yield entry, self._read_entry(entry, manifest)
            except ValueError as err:
                yield entry, err

    def _save(self, manifest: Mapping[str, Any]) -> None:
        save_json(self.manifest_path, manifest)


def _file_id(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of ``path`` itself (a symbolic link is not followed), or None if it does not exist."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _symlink_error(path: Path, what: str) -> RecordStoreError:
    return RecordStoreError(
        f"nsp.storage: {path} ({what}) is a symbolic link; the record store never follows one, so that a shared"
        " directory cannot make a writer overwrite another file. Remove the link"
    )


class _DirectoryLock:
    """The exclusive lock of a record directory, on its lock file: ``flock``, or filelock where there is no fcntl.

    The lock file is opened without following a symbolic link and without truncating
    it: a link planted at its path is refused, never written through.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._fallback: filelock.BaseFileLock | None = None

    def acquire(self) -> bool:
        """Take the lock; False if another process holds it.

        Raises
        ------
        RecordStoreError
            If the lock file is a symbolic link or not a regular file.
        """
        if fcntl is None:
            # Windows has no O_NOFOLLOW; creating a symbolic link there takes a privilege.
            if self.path.is_symlink():
                raise _symlink_error(self.path, "the directory's lock file")
            lock = filelock.FileLock(self.path, timeout=0, thread_local=False)
            try:
                lock.acquire()
            except filelock.Timeout:
                return False
            self._fallback = lock
            return True
        flags = os.O_RDWR | os.O_CREAT | _NO_FOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.EMLINK) or self.path.is_symlink():
                raise _symlink_error(self.path, "the directory's lock file") from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RecordStoreError(f"nsp.storage: {self.path} (the directory's lock file) is not a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        """Release the lock (closing the file releases ``flock``); the lock file stays."""
        if self._fallback is not None:
            self._fallback.release()
            self._fallback = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_note(path: Path, text: str) -> None:
    """Write a small text file by replacing it: a link or hard link at ``path`` is replaced, never written through."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_note(path: Path, limit: int = 4096) -> str:
    """The start of a small text file, not through a symbolic link (OSError for one) and only a regular file."""
    fd = os.open(path, _OPEN_NOTE)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return handle.read(limit).decode("utf-8")
