"""Records on disk: a directory with a small JSON manifest and one ``.npz`` file per record.

Everything is written in safe formats only: arrays as ``.npz`` (read back with
``allow_pickle=False``) and metadata as JSON. Nothing a user's file contains is ever
unpickled.

Every file is written atomically: to a temporary file in the same directory, flushed to
disk (``fsync``), then moved over the target with ``os.replace``. Under its final name a
file is therefore always complete, even after a power loss (which may undo the last
rename, but never truncates a file). A run that dies in the middle of a write leaves at
most a stray temporary file (``.*.tmp``) behind, and every record the manifest lists
stays readable. A record file is always written before the manifest that lists it, so
the manifest never names a file that is not complete.

Layout of a record directory::

    manifest.json        {"format": "nsp-records", "version": 1, "header": {...},
                          "analysis": {...} (optional: what wrote the series),
                          "series": "<random id of the series>",
                          "records": [{"name": ..., "file": ..., <summary>}, ...],
                          "failed": [{"name": ..., "error": ...}, ...] (optional)}
    <name>.npz           the record's arrays, plus its metadata as JSON under "__meta__"
                         (with the series id under "__series__")

Every record file carries the id of the series it was written for, and
:meth:`RecordStore.read` refuses a file listed in a series that is not its own (a file
copied in from another run), so that no mixed series is ever read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from nsp.common import memory

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
_META_KEY = "__meta__"
# The key under which RecordStore.write keeps the series id in a record's metadata.
SERIES_KEY = "__series__"


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Any]:
    """Yield a binary file that replaces ``path`` only once it is completely on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file private (0o600); give it the permissions open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Write arrays and JSON metadata to one ``.npz`` file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; its directory is created if needed.
    arrays : mapping of str to numpy.ndarray
        Numeric or boolean arrays. Object arrays are refused: they would need pickle.
    meta : mapping
        JSON-serialisable metadata, stored as a JSON string under ``"__meta__"``.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        If a key is empty or ``"__meta__"``, or an array has an object or string dtype.
    TypeError
        If ``meta`` is not JSON-serialisable (non-finite floats included).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.npz"
    >>> _ = save_npz(p, {"x": np.arange(3)}, {"epoch": 1})
    >>> arrays, meta = load_npz(p)
    >>> arrays["x"].tolist(), meta
    ([0, 1, 2], {'epoch': 1})
    """
    path = Path(path)
    checked: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if not key or key == _META_KEY:
            raise ValueError(f"nsp.storage.save_npz({path}): invalid array name {key!r}")
        array = np.asarray(value)
        if array.dtype.kind not in "biufc":
            raise ValueError(
                f"nsp.storage.save_npz({path}): array {key!r} has dtype {array.dtype}; "
                "only numeric and boolean arrays are stored (no pickling)"
            )
        checked[key] = array
    checked[_META_KEY] = np.asarray(_to_json(meta, path))
    with _atomic(path) as handle:
        np.savez(handle, **checked)
    return path


def load_npz(path: str | os.PathLike, max_bytes: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_npz`, without unpickling anything.

    Every member's ``.npy`` header is checked before its data is read: numeric dtype,
    and a declared size that matches the member's size in the archive. The archive's
    total uncompressed size must be at most ``max_bytes``, so a small crafted file cannot
    make the reader allocate gigabytes.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.
    max_bytes : int, optional
        Largest total uncompressed size accepted. Default: the larger of 256 MiB and 16
        times the file's size (``save_npz`` does not compress), and never more than the
        memory available (:func:`nsp.memory.available_bytes`).

    Returns
    -------
    arrays : dict of str to numpy.ndarray
    meta : dict

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a readable ``.npz`` written by :func:`save_npz`; the message
        names the file and what is wrong.
    """
    path = Path(path)
    _check_regular_file(path, "nsp.storage.load_npz")
    try:
        _check_npz(path, max_bytes)
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise
    except _BadFile as err:
        raise ValueError(f"nsp.storage.load_npz: {path} is not a readable record file: it {err}") from None
    except Exception as err:
        raise ValueError(f"nsp.storage.load_npz: {path} is not a readable record file ({err})") from err
    if _META_KEY not in arrays:
        raise ValueError(f"nsp.storage.load_npz: {path} has no {_META_KEY!r} entry; it was not written by save_npz")
    meta = arrays.pop(_META_KEY)
    if meta.dtype.kind != "U" or meta.shape != ():
        raise ValueError(f"nsp.storage.load_npz: {path} has a {_META_KEY!r} entry of dtype {meta.dtype}, not a JSON string")
    return arrays, _parse_json(str(meta), f"nsp.storage.load_npz: {path}: {_META_KEY!r}")


def _check_regular_file(path: Path, who: str) -> None:
    """Refuse a path that is not a regular file (a FIFO would block the reader, a device never end)."""
    if path.exists() and not path.is_file():
        raise ValueError(f"{who}: {path} is not a regular file")


class _BadFile(Exception):
    """What is wrong with a file, for the caller to prefix with its name."""


def _check_npz(path: Path, max_bytes: int | None) -> None:
    """Check an npz archive's members from their headers, before any data is read."""
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        if max_bytes is None:
            max_bytes = max(256 << 20, 16 * path.stat().st_size)
            available = memory.available_bytes()
            if available is not None:
                max_bytes = min(max_bytes, available)
        total = sum(m.file_size for m in members)
        if total > max_bytes:
            raise _BadFile(
                f"would decompress to {memory.size(total)}, more than the {memory.size(max_bytes)} accepted "
                "(max_bytes); it is corrupt or crafted"
            )
        for member in members:
            if not member.filename.endswith(".npy"):
                raise _BadFile(f"holds {member.filename!r}, which is not a .npy array")
            with archive.open(member) as handle:
                version = np.lib.format.read_magic(handle)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = reader(handle, max_header_size=10_000)
                header = handle.tell() if handle.seekable() else None
            if dtype.hasobject or dtype.kind not in "biufcU" or dtype.fields is not None:
                raise _BadFile(f"has array {member.filename[:-4]!r} of dtype {dtype}; only numeric arrays are read")
            declared = math.prod(shape) * dtype.itemsize
            if header is not None and declared != member.file_size - header:
                raise _BadFile(
                    f"has array {member.filename[:-4]!r} whose header declares {declared:,} bytes of data "
                    f"but which holds {member.file_size - header:,}"
                )


def _parse_json(text: str, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as err:
        # RecursionError: a deeply nested document (e.g. 100,000 brackets).
        raise ValueError(f"{where} is not valid JSON ({type(err).__name__}: {str(err)[:200]})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where} holds a {type(obj).__name__}, expected a JSON object")
    return obj


def save_json(path: str | os.PathLike, obj: Mapping[str, Any]) -> Path:
    """Write a JSON object to ``path``, atomically.

    Raises
    ------
    TypeError
        If ``obj`` is not JSON-serialisable (non-finite floats included).
    """
    path = Path(path)
    text = _to_json(obj, path)
    with _atomic(path) as handle:
        handle.write(text.encode("utf-8"))
    return path


def load_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON object written by :func:`save_json`.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file does not hold a JSON object.
    """
    path = Path(path)
    _check_regular_file(path, "nsp.storage.load_json")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"nsp.storage.load_json: {path} is not UTF-8 text ({err})") from None
    return _parse_json(text, f"nsp.storage.load_json: {path}")


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _to_json(obj: Any, path: Path) -> str:
    try:
        # Strict JSON, so that any JSON reader can open a manifest; non-finite numbers belong in arrays.
        return json.dumps(obj, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise TypeError(f"nsp.storage: metadata for {path} is not JSON-serialisable ({err})") from err


class RecordStoreError(RuntimeError):
    """A record directory that this writer must not, or can no longer, write to."""


class RecordStore:
    """A directory of records: ``manifest.json`` plus one ``<name>.npz`` per record.

    One series per directory, one writer at a time: :meth:`start` and :meth:`attach` take
    an exclusive lock on ``<directory>/.lock`` (``fcntl.flock``; released when the store
    is closed or the process ends), and every :meth:`write` checks that it still holds
    the lock and that the manifest is still its series (a random ``"series"`` id), so a
    second writer fails loudly at start, and a writer whose lock or series was taken
    over fails at its next write instead of mixing records. :meth:`start` refuses a
    directory that already lists records: earlier records are never overwritten.

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
        self._lock: int | None = None
        self._series: str | None = None

    def __repr__(self) -> str:
        return f"RecordStore({str(self.directory)!r})"

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    @property
    def lock_path(self) -> Path:
        return self.directory / LOCK

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
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                holder = self.lock_path.read_text().strip() or "unknown"
            except OSError:
                holder = "unknown"
            raise RecordStoreError(
                f"nsp.storage: another process ({holder}) is writing records to {self.directory}; two runs "
                "must not share a record directory. Pass another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self._lock = fd
        # Only a writer holding the lock creates temporary files here, so these are strays.
        for stray in self.directory.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                stray.unlink()

    def close(self) -> None:
        """Release the lock (a store that only reads holds none)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _check_writer(self) -> None:
        """Fail loudly where the lock or the series was taken over since :meth:`start`."""
        if self._lock is None:
            raise RecordStoreError(f"nsp.storage: {self.directory}: call start() or attach() before writing records")
        try:
            same = os.stat(self.lock_path).st_ino == os.fstat(self._lock).st_ino
        except FileNotFoundError:
            same = False
        if not same:
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
