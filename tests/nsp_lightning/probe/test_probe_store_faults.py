"""Reliability (issue 10, problems 6, 8, 9): no lost or mixed records, no raw tracebacks from files.

Part of the reliability suite (``pytest -m reliability``).
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from nsp.io.storage import RecordStore, RecordStoreError, load_npz, save_json
from nsp_lightning import SpectrumCallback, read_records


def fit(callbacks, **overrides):
    import lightning.pytorch as pl
    from lightning_helpers import TinyNet, loader, trainer_kwargs

    trainer = pl.Trainer(**trainer_kwargs(**overrides), callbacks=callbacks)
    trainer.fit(TinyNet(), loader())
    return trainer

pytestmark = pytest.mark.reliability

_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from nsp.io.storage import RecordStore, RecordStoreError
    directory, run, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    open(f"{go}.ready-{run}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
    store = RecordStore(directory)
    try:
        store.start({"run": run})
    except RecordStoreError as err:
        print("REFUSED", err)
        sys.exit(3)
    for epoch in range(6):
        store.write(f"epoch-{epoch:06d}", {"x": np.full(4, run * 100 + epoch, dtype=np.float64)}, {"epoch": epoch})
        time.sleep(0.02)
    print("DONE")
    """
)


# -- 6: two runs, one record directory ------------------------------------------------------
def test_two_processes_one_directory_one_fails_loudly_and_the_other_is_intact(tmp_path):
    go = tmp_path / "go"
    directory = tmp_path / "records"
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(directory), str(run), str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for run in (1, 2)
    ]
    # Both start writing at once, once both have imported (which takes seconds, unevenly).
    deadline = time.monotonic() + 240
    while not all((tmp_path / f"go.ready-{run}").exists() for run in (1, 2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.write_text("")
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 3], results  # before: both "succeeded", with records lost or mixed
    refused = next(out for code, out, _ in results if code == 3)
    assert "another process (pid" in refused and str(directory) in refused
    store = RecordStore(directory)
    run = store.header["run"]
    assert store.names() == [f"epoch-{e:06d}" for e in range(6)]
    for e in range(6):
        np.testing.assert_array_equal(store.read(f"epoch-{e:06d}")[0]["x"], np.full(4, run * 100 + e))


def test_a_second_series_never_overwrites_the_first(tmp_path):
    first = RecordStore(tmp_path)
    first.start({"run": 1})
    first.write("epoch-000000", {"x": np.zeros(2)}, {"epoch": 0})
    first.close()
    # Before: start() wrote an empty manifest, and run 2's epoch-000000.npz replaced run 1's.
    with pytest.raises(RecordStoreError, match=r"already holds a record series \(1 record\(s\)\).*another directory"):
        RecordStore(tmp_path).start({"run": 2})
    assert RecordStore(tmp_path).header == {"run": 1}


def test_a_writer_that_lost_its_lock_or_series_fails_loudly(tmp_path):
    first = RecordStore(tmp_path)
    first.start({"run": 1})
    first.write("epoch-000000", {}, {"epoch": 0})
    os.unlink(first.lock_path)
    second = RecordStore(tmp_path)
    second.acquire()  # a new lock file: the first writer's lock is gone
    with pytest.raises(RecordStoreError, match="lost the lock"):
        first.write("epoch-000001", {}, {"epoch": 1})
    second.close()
    third = RecordStore(tmp_path / "other")
    third.start({"run": 3})
    manifest = json.loads(third.manifest_path.read_text())
    manifest["series"] = "someone else"
    save_json(third.manifest_path, manifest)
    with pytest.raises(RecordStoreError, match="was replaced by another run's"):
        third.write("epoch-000000", {}, {"epoch": 0})
    assert RecordStore(tmp_path).names() == ["epoch-000000"]


def test_stray_temporary_files_of_killed_writes_are_removed_by_the_next_writer(tmp_path):
    store = RecordStore(tmp_path)
    store.start({})
    stray = tmp_path / ".epoch-000001.npz.abc123.tmp"
    stray.write_bytes(b"half a record")
    store.close()
    store.attach()
    assert not stray.exists()


def test_reusing_a_callback_for_a_second_fit_is_refused_not_overwriting(tmp_path):
    from lightning_helpers import probe

    callback = SpectrumCallback(probe(1), dirpath=tmp_path)
    fit([callback], max_epochs=1)
    before = (tmp_path / "epoch-000001.npz").read_bytes()
    with pytest.raises(RecordStoreError, match="already holds a record series"):
        fit([callback], max_epochs=1)
    assert (tmp_path / "epoch-000001.npz").read_bytes() == before
    assert [r.epoch for r in read_records(tmp_path)] == [0, 1]


_FIT = textwrap.dedent(
    """
    import os, sys, time, warnings
    sys.path.insert(0, {helpers!r})
    warnings.simplefilter("ignore")
    import lightning.pytorch as pl
    from lightning_helpers import TinyNet, loader, probe, trainer_kwargs
    from nsp_lightning import SpectrumCallback
    directory, go, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pl.seed_everything(seed, verbose=False)
    callback = SpectrumCallback(probe(2), dirpath=directory)
    trainer = pl.Trainer(**trainer_kwargs(max_epochs=4), callbacks=[callback])
    model = TinyNet()
    while not os.path.exists(go):
        time.sleep(0.001)
    trainer.fit(model, loader())
    print("DONE", callback.recorded_epochs)
    """
)


@pytest.mark.slow
def test_two_training_runs_into_one_record_directory(tmp_path):
    """Two SpectrumCallback runs started together on one dirpath: one fails at start, the other's series is whole."""
    from pathlib import Path

    helpers = str(Path(__file__).parents[2] / "support")
    go, directory = tmp_path / "go", tmp_path / "spectrum"
    procs = [
        subprocess.Popen([sys.executable, "-c", _FIT.format(helpers=helpers), str(directory), str(go), str(seed)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in (1, 2)
    ]
    go.write_text("")
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = [code for code, _, _ in results]
    assert sorted(codes) == [0, 1], results
    failed = results[codes.index(1)][2]
    # Refused at fit start: by the lock while the other runs, or by its finished series.
    assert "RecordStoreError" in failed and str(directory) in failed
    assert "another process" in failed or "already holds a record series" in failed
    records = read_records(directory)
    assert [r.epoch for r in records] == [0, 1, 2, 3, 4]
    # One series: every record file carries the manifest's series id (read_records checks it too).
    series = RecordStore(directory).manifest()["series"]
    for r in range(5):
        assert load_npz(directory / f"epoch-{r:06d}.npz")[1]["__series__"] == series
