"""Reliability (issue 22, findings 1, 9 and 13): the record store follows no symbolic link, removes only its own
temporary files, refuses array names that are paths and files without the series id, and reads a manifest's
records in one pass.

Part of the reliability suite (``pytest -m reliability``).
"""

import numpy as np
import pytest

from nsp.io.storage import RecordStore, RecordStoreError, load_npz, save_npz

pytestmark = pytest.mark.reliability


@pytest.fixture
def outside(tmp_path):
    """A file outside the record directory that a planted link points at."""
    target = tmp_path / "bashrc"
    target.write_text("keep me\n")
    return target


def test_a_symbolic_link_at_the_lock_path_is_refused_naming_it_and_never_written_through(tmp_path, outside):
    directory = tmp_path / "records"
    directory.mkdir()
    (directory / ".lock").symlink_to(outside)
    with pytest.raises(RecordStoreError, match=r"records/\.lock \(the directory's lock file\) is a symbolic link"):
        RecordStore(directory).start({})
    assert outside.read_text() == "keep me\n"
    assert not (directory / "manifest.json").exists()


def test_a_symbolic_link_at_the_lock_holders_note_is_replaced_not_written_through(tmp_path, outside):
    directory = tmp_path / "records"
    directory.mkdir()
    (directory / ".lock.holder").symlink_to(outside)
    store = RecordStore(directory)
    store.start({})
    assert outside.read_text() == "keep me\n"  # before: truncated, and "pid N on HOST" written into it
    assert not (directory / ".lock.holder").is_symlink()
    store.write("r0", {"x": np.zeros(2)}, {})
    store.close()
    assert outside.read_text() == "keep me\n"


def test_links_at_the_manifest_and_record_paths_are_replaced_not_written_through(tmp_path, outside):
    directory = tmp_path / "records"
    store = RecordStore(directory)
    store.start({})
    (directory / "r0.npz").symlink_to(outside)
    store.write("r0", {"x": np.zeros(2)}, {})
    assert outside.read_text() == "keep me\n" and not (directory / "r0.npz").is_symlink()
    store.close()


def test_only_the_stores_own_temporary_files_are_removed(tmp_path):
    store = RecordStore(tmp_path)
    store.start({})
    mine = [".epoch-000001.npz.abc123.tmp", ".manifest.json.k2j4h5_x.tmp", "..lock.holder.q1w2e3r4.tmp"]
    users = [".notes.tmp", ".x.tmp", ".my.draft.tmp", ".manifest.json.tmp"]
    for name in mine + users:
        (tmp_path / name).write_text("x")
    store.close()
    store.attach()
    store.close()
    left = {p.name for p in tmp_path.iterdir()}
    assert left.isdisjoint(mine)
    assert set(users) <= left  # before: every ".*.tmp" was deleted


@pytest.mark.parametrize("name", ["../../x", "a/b", "/abs", "..", ".", "a\\b", "a\0b"])
def test_array_names_that_are_paths_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="invalid array name"):
        save_npz(tmp_path / "r.npz", {name: np.zeros(1)}, {})
    assert not (tmp_path / "r.npz").exists()


def test_a_record_symlinked_in_from_outside_is_refused_naming_it(tmp_path):
    store = RecordStore(tmp_path / "records")
    store.start({})
    store.write("r0", {"x": np.zeros(2)}, {})
    # A file written without a series id (by save_npz directly, or by another tool), linked in.
    foreign = tmp_path / "foreign.npz"
    save_npz(foreign, {"x": np.ones(2)}, {})
    store.write("r1", {"x": np.zeros(2)}, {})
    (store.directory / "r1.npz").unlink()
    (store.directory / "r1.npz").symlink_to(foreign)
    with pytest.raises(ValueError, match=r"records/r1\.npz is a symbolic link"):
        store.read("r1")
    store.close()


def test_a_record_file_without_the_series_id_is_refused(tmp_path):
    store = RecordStore(tmp_path)
    store.start({})
    store.write("r0", {"x": np.zeros(2)}, {})
    save_npz(tmp_path / "r0.npz", {"x": np.ones(2)}, {})  # before: read as part of the series
    with pytest.raises(ValueError, match=r"r0\.npz carries no series id"):
        store.read("r0")
    store.close()


def test_a_symlinked_manifest_is_refused(tmp_path):
    first = RecordStore(tmp_path / "first")
    first.start({"run": 1})
    first.close()
    (tmp_path / "second").mkdir()
    (tmp_path / "second" / "manifest.json").symlink_to(first.manifest_path)
    with pytest.raises(ValueError, match=r"second/manifest\.json is a symbolic link"):
        RecordStore(tmp_path / "second").names()


def test_reading_every_record_is_one_pass_over_the_manifest(tmp_path, monkeypatch):
    n = 20_000
    store = RecordStore(tmp_path)
    store.start({})
    store.close()
    manifest = store.manifest()

    class Counted(list):
        passes = 0

        def __iter__(self):
            Counted.passes += 1
            return super().__iter__()

    manifest["records"] = Counted({"name": f"r{i}", "file": f"r{i}.npz"} for i in range(n))
    results = list(store.read_all(manifest))
    assert len(results) == n and all(isinstance(r, ValueError) and "is missing" in str(r) for _, r in results)
    assert Counted.passes == 1


def test_a_crafted_record_whose_member_name_is_a_path_is_refused(tmp_path):
    path = tmp_path / "crafted.npz"
    np.savez(path, **{"../../x": np.zeros(1), "__meta__": np.asarray("{}")})
    with pytest.raises(ValueError, match=r"crafted\.npz is not a readable record file: it holds '\.\./\.\./x\.npy',"
                                         " whose name is a path"):
        load_npz(path)
