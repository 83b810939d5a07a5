import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from nsp.io import storage
from nsp.io.storage import RecordStore, RecordStoreError, load_json, load_npz, save_json, save_npz


def test_npz_round_trip_keeps_values_dtypes_and_meta(tmp_path):
    arrays = {
        "f32": np.array([1.5, -2.25], dtype=np.float32),
        "f64": np.array([[1e-300, 1e300]]),
        "mask": np.array([True, False]),
        "i": np.arange(4, dtype=np.int64).reshape(2, 2),
    }
    meta = {"epoch": 3, "names": ["a", "b"], "nested": {"x": 0.5}}
    save_npz(tmp_path / "r.npz", arrays, meta)
    back, back_meta = load_npz(tmp_path / "r.npz")
    assert back_meta == meta
    assert set(back) == set(arrays)
    for key, value in arrays.items():
        assert back[key].dtype == value.dtype
        np.testing.assert_array_equal(back[key], value)


def test_npz_refuses_object_arrays_and_reserved_names(tmp_path):
    with pytest.raises(ValueError, match="'bad' has dtype object"):
        save_npz(tmp_path / "r.npz", {"bad": np.array([{"a": 1}], dtype=object)}, {})
    with pytest.raises(ValueError, match="invalid array name '__meta__'"):
        save_npz(tmp_path / "r.npz", {"__meta__": np.zeros(1)}, {})
    assert not (tmp_path / "r.npz").exists()


def test_metadata_must_be_strict_json(tmp_path):
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        save_npz(tmp_path / "r.npz", {}, {"x": float("inf")})
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        save_json(tmp_path / "m.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_load_npz_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object), __meta__=np.asarray("{}"))
    with pytest.raises(ValueError, match="not a readable record file"):
        load_npz(path)


def test_load_npz_rejects_foreign_and_truncated_files(tmp_path):
    np.savez(tmp_path / "plain.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="no '__meta__' entry"):
        load_npz(tmp_path / "plain.npz")
    save_npz(tmp_path / "r.npz", {"x": np.zeros(100)}, {})
    data = (tmp_path / "r.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.npz is not a readable record file"):
        load_npz(tmp_path / "cut.npz")
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz")


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "r.npz"
    save_npz(path, {"x": np.ones(3)}, {"v": 1})

    def explode(handle, **arrays):
        handle.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(storage.np, "savez", explode)
    with pytest.raises(OSError, match="disk full"):
        save_npz(path, {"x": np.zeros(3)}, {"v": 2})
    monkeypatch.undo()
    arrays, meta = load_npz(path)
    assert meta == {"v": 1}
    np.testing.assert_array_equal(arrays["x"], np.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.npz"]


def test_json_round_trip_and_errors(tmp_path):
    save_json(tmp_path / "m.json", {"b": [1, 2], "a": "x"})
    assert load_json(tmp_path / "m.json") == {"a": "x", "b": [1, 2]}
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError, match="holds a list"):
        load_json(tmp_path / "list.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        load_json(tmp_path / "bad.json")


def test_record_store_lists_records_in_order_and_replaces_by_name(tmp_path):
    store = RecordStore(tmp_path / "records")
    assert not store.exists()
    store.start({"layers": ["input", "fc"]})
    store.write("epoch-0", {"x": np.zeros(1)}, {"epoch": 0}, summary={"epoch": 0})
    store.write("epoch-1", {"x": np.ones(1)}, {"epoch": 1}, summary={"epoch": 1})
    store.write("epoch-0", {"x": np.full(1, 7.0)}, {"epoch": 0, "again": True}, summary={"epoch": 0})
    assert store.names() == ["epoch-1", "epoch-0"]
    assert store.header == {"layers": ["input", "fc"]}
    arrays, meta = store.read("epoch-0")
    assert meta == {"epoch": 0, "again": True}
    assert arrays["x"].tolist() == [7.0]
    manifest = json.loads((tmp_path / "records" / "manifest.json").read_text())
    assert manifest["format"] == "nsp-records" and manifest["version"] == 1
    assert manifest["records"][0] == {"epoch": 1, "name": "epoch-1", "file": "epoch-1.npz"}
    with pytest.raises(KeyError, match="lists no record 'epoch-9'"):
        store.read("epoch-9")


def test_record_store_start_never_overwrites_a_series(tmp_path):
    store = RecordStore(tmp_path)
    store.start({"run": 1})
    store.start({"run": 2})  # no records yet: nothing is lost
    store.write("a", {}, {})
    with pytest.raises(RecordStoreError, match=r"already holds a record series \(1 record\(s\)\)"):
        store.start({"run": 3})
    assert store.names() == ["a"] and store.header == {"run": 2}


def test_record_store_errors_name_the_problem(tmp_path):
    store = RecordStore(tmp_path)
    with pytest.raises(RecordStoreError, match=r"call start\(\) or attach\(\) before writing"):
        store.write("a", {}, {})
    store.start({})
    with pytest.raises(ValueError, match="invalid record name '../x'"):
        store.write("../x", {}, {})
    save_json(tmp_path / "manifest.json", {"format": "nsp-records", "version": 99, "header": {}, "records": []})
    with pytest.raises(ValueError, match="has version 99"):
        store.names()
    manifest = {"format": "nsp-records", "version": 1, "header": {}, "records": [{"name": "x", "file": "../x.npz"}]}
    save_json(tmp_path / "manifest.json", manifest)
    with pytest.raises(ValueError, match="invalid record entry"):
        store.names()
    save_json(tmp_path / "manifest.json", {"format": "other"})
    with pytest.raises(ValueError, match="is not an 'nsp-records' manifest"):
        store.names()


def test_interrupted_record_write_leaves_earlier_records_readable(tmp_path, monkeypatch):
    store = RecordStore(tmp_path)
    store.start({})
    store.write("r0", {"x": np.arange(3.0)}, {"i": 0})
    real_replace = os.replace
    calls = []

    def die_on_first_rename(src, dst):
        calls.append(dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(storage.os, "replace", die_on_first_rename)
    with pytest.raises(KeyboardInterrupt):
        store.write("r1", {"x": np.zeros(3)}, {"i": 1})
    monkeypatch.setattr(storage.os, "replace", real_replace)
    assert [os.path.basename(c) for c in calls] == ["r1.npz"]
    assert store.names() == ["r0"]
    assert store.read("r0")[0]["x"].tolist() == [0.0, 1.0, 2.0]
    assert not (tmp_path / "r1.npz").exists()


def test_record_file_without_manifest_entry_is_ignored(tmp_path, monkeypatch):
    # The record lands but the process dies before the manifest lists it.
    store = RecordStore(tmp_path)
    store.start({})
    store.write("r0", {}, {"i": 0})
    monkeypatch.setattr(RecordStore, "_save", lambda self, manifest: (_ for _ in ()).throw(SystemExit(1)))
    with pytest.raises(SystemExit):
        store.write("r1", {}, {"i": 1})
    monkeypatch.undo()
    assert (tmp_path / "r1.npz").exists()
    assert store.names() == ["r0"]
    store.write("r2", {}, {"i": 2})
    assert store.names() == ["r0", "r2"]


def test_files_get_the_permissions_of_a_plain_open(tmp_path):
    umask = os.umask(0o022)
    try:
        save_json(tmp_path / "m.json", {})
        save_npz(tmp_path / "r.npz", {}, {})
    finally:
        os.umask(umask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "r.npz").stat().st_mode & 0o777 == 0o644


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_nsp_and_nsp_lightning_import_and_lock_without_fcntl(tmp_path):
    # As on Windows, which has no fcntl: records are still written, under filelock's lock.
    code = (
        "import sys; sys.modules['fcntl'] = None\n"
        "import nsp, nsp_lightning\n"
        "from nsp.io.storage import RecordStore\n"
        "store = RecordStore(sys.argv[1]); store.start({}); store.write('r', {}, {}); store.close()\n"
        "print(RecordStore(sys.argv[1]).names())\n"
    )
    result = _python(code, str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "['r']"


def test_the_lock_of_a_killed_writer_does_not_block_the_next_one(tmp_path):
    code = (
        "import os, signal, sys\n"
        "from nsp.io.storage import RecordStore\n"
        "store = RecordStore(sys.argv[1]); store.start({}); store.write('r0', {}, {})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert _python(code, str(tmp_path)).returncode == -signal.SIGKILL
    store = RecordStore(tmp_path)
    store.attach()  # the kernel released the killed writer's lock
    store.write("r1", {}, {})
    assert store.names() == ["r0", "r1"]
    store.close()


def test_a_second_writer_is_refused_naming_the_process_that_holds_the_lock(tmp_path):
    first = RecordStore(tmp_path)
    first.start({})
    with pytest.raises(RecordStoreError, match=rf"another process \(pid {os.getpid()} on .*\) is writing records"):
        RecordStore(tmp_path).start({})
    first.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "manifest.json"]
    again = RecordStore(tmp_path)
    again.attach()
    again.close()
