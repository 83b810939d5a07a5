"""Safe record files, written atomically: arrays as ``.npz`` read without pickle, metadata as JSON.

Everything is written in safe formats only: arrays as ``.npz`` (read back with
``allow_pickle=False``) and metadata as JSON. Nothing a user's file contains is ever
unpickled.

Every file is written atomically: to a temporary file in the same directory, flushed to
disk (``fsync``), then moved over the target with ``os.replace``. Under its final name a
file is therefore always complete, even after a power loss (which may undo the last
rename, but never truncates a file). A write that dies in the middle leaves at most a
stray temporary file (``.*.tmp``) behind.

The record store (:mod:`nsp.io.storage`) keeps its records and manifests in these files;
its module also exports these functions (``nsp.storage.save_npz``, ...).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from nsp.common import memory

__all__ = ["save_npz", "load_npz", "save_json", "load_json"]

_META_KEY = "__meta__"


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
        If a key is empty, ``"__meta__"``, ``"."`` or ``".."``, or holds ``/``, ``\\`` or
        NUL, or an array has an object or string dtype.
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
        if not _valid_array_name(key) or key == _META_KEY:
            raise ValueError(
                f"nsp.storage.save_npz({path}): invalid array name {key!r} (a non-empty name without '/', '\\'"
                " or NUL, other than '.' and '..')"
            )
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


def _valid_array_name(key: Any) -> bool:
    """Whether ``key`` may name an array (the archive member ``<key>.npy``).

    No path separator or NUL, and not ``.`` or ``..``: a reader that extracts the archive
    never writes outside its directory.
    """
    return isinstance(key, str) and bool(key) and key not in (".", "..") and not any(c in key for c in "/\\\0")


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
            if not _valid_array_name(member.filename[:-4]):
                raise _BadFile(f"holds {member.filename!r}, whose name is a path (save_npz never writes one)")
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


def _to_json(obj: Any, path: Path) -> str:
    try:
        # Strict JSON, so that any JSON reader can open a manifest; non-finite numbers belong in arrays.
        return json.dumps(obj, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise TypeError(f"nsp.storage: metadata for {path} is not JSON-serialisable ({err})") from err
