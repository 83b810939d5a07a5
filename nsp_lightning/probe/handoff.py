"""The DDP hand-off: the state a rank 0 running in a child process leaves for the process that launched it.

Under DDP only global rank 0 probes and writes records. With ``ddp_spawn`` (or a fork)
rank 0 runs in a child process, on a copy of the callback, so that the callback the
user holds in the launching process would not know what was recorded. The child leaves
its state in a small JSON file (:meth:`Handoff.leave`, at teardown), which the launching
process takes when asked (:meth:`Handoff.take`). No Lightning.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from typing import Any, Mapping

from nsp.io.storage import save_json

__all__ = ["Handoff"]


class Handoff:
    """A hand-off file between the launching process and a child process running rank 0.

    Made in the launching process (with the callback); a spawned child unpickles a copy
    of it, a forked one inherits it, and both keep the launching process's id.

    Attributes
    ----------
    launcher_pid : int
        The id of the process that made it.
    path : str
        The hand-off file, unique to this object, in the temporary directory.
    """

    def __init__(self) -> None:
        self.launcher_pid = os.getpid()
        self.path = os.path.join(tempfile.gettempdir(), f"nsp-probe-{os.getpid()}-{uuid.uuid4().hex}.json")

    def in_launcher(self) -> bool:
        """Whether this is the launching process."""
        return os.getpid() == self.launcher_pid

    def leave(self, state: Mapping[str, Any]) -> None:
        """In a child process: write ``state`` (JSON) for the launching process; in the launcher, nothing.

        A state that cannot be written is dropped: the records on disk are complete
        either way, and the launching process then keeps what it knew.
        """
        if self.in_launcher():
            return
        with contextlib.suppress(OSError, TypeError):
            save_json(self.path, state)

    def take(self) -> dict[str, Any] | None:
        """In the launching process: the state a child left, removing its file; None if there is none."""
        if not self.in_launcher() or not os.path.exists(self.path):
            return None
        try:
            with open(self.path, encoding="utf-8") as handle:
                state = json.load(handle)
            os.unlink(self.path)
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None
