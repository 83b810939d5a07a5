"""The harness of the reliability attempts (issue 22): an attempt, its expected outcome, and
how an observed outcome is classified.

An attempt is one call through the public API with bad input, a fault or an unusual model.
It is either expected to be *handled* (it returns, and ``check`` says the result is right) or
*refused* (it raises one of ``errors`` with a message matching ``says``, which names the
argument, module or file at fault). What happened instead is classified as in the issue's
table: an unclear crash (another exception, or a message that does not say what is wrong),
a wrong result (bad input accepted, or a check that fails), a hang (no answer within
``TIMEOUT`` seconds), data loss or a security hole (for attempts of those kinds).
"""

from __future__ import annotations

import re
import signal
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

TIMEOUT = 120

#: A clear error says which public function, class or argument refused: nsp's messages start
#: with ``nsp.<function>:`` or ``<Class>(<argument>=...)``. A message from inside torch, numpy
#: or the OS ("Unable to allocate ...", "mat1 and mat2 shapes ...") names none of them.
NAMES_THE_API = re.compile(r"\bnsp\b|nsp[._]|\b[A-Z][A-Za-z]*(Analysis|Callback)\b")

HANDLED, CLEAR, UNCLEAR, WRONG, HANG, LOSS, HOLE = (
    "handled", "clear error", "unclear crash", "wrong result", "hang", "data loss", "security hole")
OUTCOMES = (HANDLED, CLEAR, UNCLEAR, WRONG, HANG, LOSS, HOLE)


@dataclass(frozen=True)
class Attempt:
    """One attempt: ``run()`` is the call. With ``check`` only, it must return a right result;
    with ``says`` only, it must be refused; with both, either is right."""

    tool: str
    what: str
    run: Callable[[], Any]
    check: Callable[[Any], bool] | None = None
    says: str | None = None
    errors: tuple[type[BaseException], ...] = (ValueError, TypeError, RuntimeError, NotImplementedError)
    #: What a failure of this attempt means: a wrong result, or data loss or a security hole.
    failure: str = WRONG
    marks: tuple = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.check is None and self.says is None:
            raise ValueError(f"attempt {self.what!r}: give check=, says= or both")


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def classify(attempt: Attempt) -> tuple[str, str]:
    """Run ``attempt``; return its outcome (one of :data:`OUTCOMES`) and what was seen."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT)
    try:
        result = attempt.run()
    except _Timeout:
        return HANG, f"no answer in {TIMEOUT} s"
    except Exception as err:  # noqa: BLE001 - every exception is an outcome to classify
        seen = f"{type(err).__name__}: {err}"
        clear = NAMES_THE_API.search(str(err)) and re.search(attempt.says or "$^", str(err))
        if attempt.says is not None and isinstance(err, attempt.errors) and clear:
            return CLEAR, seen
        return UNCLEAR, seen + "\n" + "".join(traceback.format_exception(err)[-3:])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if attempt.check is None:
        return attempt.failure, f"accepted, returned {type(result).__name__}"
    try:
        ok = attempt.check(result)
    except Exception as err:  # noqa: BLE001
        return attempt.failure, f"check raised {type(err).__name__}: {err}"
    return (HANDLED, "ok") if ok else (attempt.failure, f"check failed on {type(result).__name__}")
