"""How much memory a computation may still allocate, and refusing one that would not fit.

Large exact transforms allocate gigabytes. Failing halfway, inside numpy, with "Unable to
allocate 200 MiB" loses the minutes already spent and says nothing about the whole; so the
transforms estimate what they need first and refuse with the estimate (:func:`require`).

The memory available is the smallest of the kernel's ``MemAvailable`` (``/proc/meminfo``),
what the process's cgroup (v2 ``memory.max``, or v1 ``memory.limit_in_bytes``) still
allows (a container's limit, not the host's memory, is what kills a process), and what its
address-space limit (``RLIMIT_AS``, as ``ulimit -v`` sets) leaves above its virtual size.
The cgroup's figures are re-read at most once a second: their dozen file reads cost as much
as the arithmetic of a small transform run at every training record.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

__all__ = ["MEMORY_LIMIT", "available_bytes", "keep_freed", "require"]

#: A cap, in bytes, on what one computation may allocate, below the memory available;
#: ``None``: the memory available is the only limit.
MEMORY_LIMIT: int | None = None

_CGROUP = Path("/sys/fs/cgroup")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_dirs() -> list[Path]:
    """The memory cgroup directories of this process, innermost first, where readable."""
    dirs = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            dirs.append(_CGROUP / path.lstrip("/"))
        elif "memory" in controllers.split(","):
            dirs.append(_CGROUP / "memory" / path.lstrip("/"))
    # Inside a container the process's own cgroup is usually mounted as the root.
    return dirs + [_CGROUP, _CGROUP / "memory"]


def _cgroup_room() -> int | None:
    """What the tightest cgroup limit still allows (limit minus usage, reclaimable cache counted free)."""
    best = None
    for d in _cgroup_dirs():
        for limit_name, usage_name in (("memory.max", "memory.current"), ("memory.limit_in_bytes", "memory.usage_in_bytes")):
            limit, usage = _read_int(d / limit_name), _read_int(d / usage_name)
            # v1 spells "no limit" as a huge number, v2 as "max" (read as None).
            if limit is None or usage is None or limit >= 1 << 60:
                continue
            room = max(0, limit - usage + _inactive_file(d))
            best = room if best is None else min(best, room)
    return best


# The cgroup's figures take a dozen small file reads (0.1 ms, more on a busy machine), which
# a transform run at every record paid each time: they are re-read at most this often.
_CGROUP_REREAD_SECONDS = 1.0
_cgroup_read: list = [-math.inf, None]


def _recent_cgroup_room() -> int | None:
    """:func:`_cgroup_room`, as read at most ``_CGROUP_REREAD_SECONDS`` ago."""
    now = time.monotonic()
    if now - _cgroup_read[0] >= _CGROUP_REREAD_SECONDS:
        _cgroup_read[:] = [now, _cgroup_room()]
    return _cgroup_read[1]


def _inactive_file(d: Path) -> int:
    try:
        for line in (d / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("inactive_file", "total_inactive_file") and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _address_space_room() -> int | None:
    """What ``RLIMIT_AS`` leaves above the process's virtual size (``VmSize``); None without a limit."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmSize:"):
                    return max(0, soft - int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_bytes() -> int | None:
    """The memory this process can still allocate, in bytes; ``None`` where it cannot be read.

    Returns
    -------
    int or None
        The smallest of ``MemAvailable``, the cgroup's remaining room, the room under
        ``RLIMIT_AS`` and :data:`MEMORY_LIMIT`.
    """
    known = [v for v in (_mem_available(), _recent_cgroup_room(), _address_space_room(), MEMORY_LIMIT) if v is not None]
    return min(known) if known else None


def size(nbytes: float) -> str:
    """``nbytes`` in GiB or MiB, for messages."""
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def require(need: int, what: str, advice: str) -> None:
    """Refuse, before allocating, a computation that needs more memory than is available.

    Parameters
    ----------
    need : int
        The estimated peak, in bytes.
    what : str
        What needs it, for the message (e.g. "the exact transform of this 79,000,000-node graph").
    advice : str
        What to do instead.

    Raises
    ------
    MemoryError
        If ``need`` exceeds :func:`available_bytes`; the message gives both figures.
    """
    available = available_bytes()
    if available is not None and need > available:
        raise MemoryError(
            f"nsp: {what} needs about {size(need)}, but only {size(available)} of memory is available "
            f"(MemAvailable, the cgroup limit, RLIMIT_AS and nsp.memory.MEMORY_LIMIT); {advice}"
        )


# glibc's largest dynamic mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX), less
# room for the block's header and page rounding: a block of exactly 32 MiB is past it.
_MMAP_THRESHOLD_MAX = (32 << 20) - (1 << 16)


def keep_freed(nbytes: int) -> None:
    """Let the C allocator keep about ``nbytes`` of freed memory for reuse, where it can.

    glibc's malloc serves large blocks from fresh ``mmap`` s and returns the top of its
    heap to the kernel once more than twice its *mmap threshold* is free; the threshold
    starts at 128 KiB and rises to the size of any larger block freed, up to 32 MiB
    (``mallopt(3)``). A computation that allocates and frees a few MiB of arrays on
    every call (an exact transform at each training record) then gets its memory back
    from the kernel each time, one zeroed page at a time: on ResNet-18 at 32×32, 1,300
    page faults, a third of the transform's time. Allocating and freeing one block of
    ``nbytes`` (just under 32 MiB at most) raises the threshold as a computation that freed such a
    block itself would; the process may then hold up to twice that in freed memory.
    Elsewhere (another allocator, or a threshold set with ``mallopt``) this only costs
    the allocation.

    Parameters
    ----------
    nbytes : int
        About the peak that one call of the computation allocates.
    """
    block = np.empty(min(max(int(nbytes), 0), _MMAP_THRESHOLD_MAX), dtype=np.uint8)
    del block
