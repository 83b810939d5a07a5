"""Shared test setup.

The tests directory is not a package: it is put on ``sys.path`` here so that test modules
can ``from reference import ...`` and ``from zoo import ...``.
"""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
