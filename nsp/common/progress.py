"""Progress messages for long computations, through the standard ``logging`` module.

The exact transform of ResNet-50 at 224×224 takes minutes; building the ancestor sets of
a large INCL=False graph, about as long. Both report which layer they have reached to the
``"nsp"`` logger at INFO level, at most once every few seconds and never for work that
ends sooner, so nothing is printed unless the application asks for it::

    import logging
    logging.basicConfig(level=logging.INFO)
"""

from __future__ import annotations

import logging
import time
from typing import Callable

__all__ = ["Progress"]

logger = logging.getLogger("nsp")

# Seconds between messages; the first comes after this long.
INTERVAL = 5.0


class Progress:
    """A throttled progress reporter for one computation over the layers of a graph.

    Parameters
    ----------
    what : str
        What is being computed, e.g. ``"exact transform"``.
    names : list of str
        The layer names, in order.
    note : callable, optional
        ``note(layer, seconds)`` gives text appended to each message (e.g. an estimate of
        what is left); called only when a message is logged.

    Examples
    --------
    >>> progress = Progress("exact transform", ["input", "fc"])
    >>> progress.done(1)   # logs only once INTERVAL seconds have passed
    """

    def __init__(self, what: str, names: list[str], note: Callable[[int, float], str] | None = None) -> None:
        self.what, self.names, self.note = what, names, note
        self.start = self.last = time.perf_counter()

    def done(self, layer: int) -> None:
        """Report that layer ``layer`` is finished, if the last message is old enough."""
        now = time.perf_counter()
        if now - self.last < INTERVAL:
            return
        self.last = now
        logger.info(
            "nsp: %s: layer %d of %d ('%s') done after %.0f s%s",
            self.what, layer + 1, len(self.names), self.names[layer], now - self.start,
            "" if self.note is None else "; " + self.note(layer, now - self.start),
        )
