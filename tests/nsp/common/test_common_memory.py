"""``memory.keep_freed``: freed memory stays with the process instead of going back to the kernel."""

import platform
import subprocess
import sys

import pytest

# In a fresh interpreter (a test run's earlier allocations would already have raised glibc's
# threshold): the page faults of filling 8 MiB a second time, after it was freed.
FAULTS = """
import resource, sys
import numpy as np
from nsp.common import memory
if sys.argv[1] == "keep":
    memory.keep_freed(1 << 25)
np.ones(1 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones(1 << 20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the mmap threshold is glibc's")
def test_keep_freed_lets_a_second_allocation_reuse_the_first_ones_pages():
    # Without keep_freed the 8 MiB are mapped and faulted in afresh (fewer faults with huge pages).
    plain, keep = faults("plain"), faults("keep")
    if plain == 0:
        pytest.skip("this allocator reuses freed pages already")
    assert keep * 4 <= plain, (keep, plain)

