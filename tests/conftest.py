"""Shared test setup.

The tests directory is not a package. Shared helpers (``reference``, ``zoo``,
``lightning_helpers``, ...) live in ``tests/support``, and a few test modules import helpers
from another test module by its bare name (``from test_report import SECTIONS``). pytest's
default import mode puts a test module's folder on ``sys.path`` only once it collects that
module, so ``tests/support`` and every test folder are put on ``sys.path`` here: a single
test file then imports what it needs wherever it sits. Test file names are unique across
the tree for the same reason.
"""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
FOLDERS = [TESTS / "support", *sorted({p.parent for p in TESTS.rglob("test_*.py")})]
for folder in reversed(FOLDERS):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
