"""Progress lines for the probe steps that take long: an analysis's setup (a t-SNE layout) or a record.

A step that ends within ``after`` seconds says nothing. One that takes longer says so from
a timer thread, as it runs, and again every ``every`` seconds, then how long it took: as
``rank_zero_info`` lines, which Lightning's progress bar prints above itself, so that the
bar is not broken and a frozen bar is explained.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Callable

__all__ = ["Progress"]


class Progress:
    """Say, while a step runs longer than ``after`` seconds, that it is running, then when it is done.

    Parameters
    ----------
    what : str
        The step, as the lines name it (``"ProbeCallback: 'response_map' setup"``).
    after : float, default 2.0
        Seconds after which the first line is printed.
    every : float, default 30.0
        Seconds between further lines.
    say : callable, optional
        Where the lines go; by default Lightning's ``rank_zero_info``.

    Examples
    --------
    >>> with Progress("ProbeCallback: 'spectrum' record 3"):
    ...     pass  # a step of under 2 s prints nothing
    """

    def __init__(
        self, what: str, after: float = 2.0, every: float = 30.0, say: Callable[[str], None] | None = None
    ) -> None:
        if say is None:
            from lightning.pytorch.utilities.rank_zero import rank_zero_info

            say = rank_zero_info
        self.what, self.after, self.every = what, after, every
        self._say: Callable[[str], None] = say
        self._done = threading.Event()
        self._spoke = False
        self._start = 0.0
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Progress":
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="nsp-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._done.set()
        assert self._thread is not None
        self._thread.join()
        if self._spoke:
            outcome = "done" if kind is None else f"failed ({kind.__name__})"
            self._say(f"{self.what}: {outcome} after {time.perf_counter() - self._start:.1f} s")

    def _run(self) -> None:
        wait = self.after
        while not self._done.wait(wait):
            self._spoke = True
            self._say(f"{self.what}: running, {time.perf_counter() - self._start:.0f} s so far")
            wait = self.every
