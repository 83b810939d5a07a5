"""Steps longer than about 2 s say that they run, and when they are done (issue 21, #9)."""

import time

import pytest

from nsp_lightning.probe.progress import Progress


def test_a_quick_step_says_nothing_and_a_long_one_says_it_runs_then_how_long_it_took():
    lines: list[str] = []
    with Progress("quick", after=5.0, say=lines.append):
        pass
    assert lines == []
    with Progress("ProbeCallback: record 3 of 'spectrum'", after=0.05, every=0.1, say=lines.append):
        time.sleep(0.4)
    assert lines[0].startswith("ProbeCallback: record 3 of 'spectrum': running, ")
    assert 2 <= len(lines) - 1 <= 5 and all("running" in line for line in lines[:-1])
    assert lines[-1].startswith("ProbeCallback: record 3 of 'spectrum': done after 0.")


def test_a_long_step_that_fails_says_so():
    lines: list[str] = []
    with pytest.raises(RuntimeError), Progress("setup", after=0.01, say=lines.append):
        time.sleep(0.1)
        raise RuntimeError("boom")
    assert lines[-1].startswith("setup: failed (RuntimeError) after ")
