"""Reliability (issue 10, problem 7): crafted or corrupt object files are refused by name.

Part of the reliability suite (``pytest -m reliability``). Every array an object file
holds is checked before use, so nothing reaches numpy's or SciPy's compiled code with bad
indices, and a small file cannot make the reader allocate gigabytes.
"""

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nsp
import nsp.graph.permutations
from nsp.io.storage import load_npz

pytestmark = pytest.mark.reliability

_NET = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
_ACTS = nsp.Activations(_NET, torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(0)))


def _write(path, arrays, meta):
    """An npz the way save_npz writes one, with whatever contents a test wants."""
    np.savez(path, **arrays, __meta__=np.asarray(json.dumps(meta)))
    return path


def _saved(tmp_path, obj, name="obj.npz"):
    path = tmp_path / name
    nsp.OutputLoader.save(obj, path)
    return load_npz(path)


def _refused(path, match):
    with pytest.raises(ValueError, match=match) as info:
        nsp.OutputLoader.load(path)
    assert str(path) in str(info.value)


def test_out_of_range_csr_indices_are_refused_not_a_segfault(tmp_path):
    arrays, meta = _saved(tmp_path, nsp.NNGraph(_ACTS, INCL=False))
    arrays["b0.indices"] = arrays["b0.indices"] + 10**6
    path = _write(tmp_path / "bad.npz", arrays, meta)
    # In a subprocess: before the fix, the transform crashed the interpreter in SciPy's C code.
    code = (
        "import sys, torch, nsp\n"
        "from torch import nn\n"
        "try:\n"
        f"    g = nsp.OutputLoader.load({str(path)!r})\n"
        "except ValueError as err:\n"
        "    print('REFUSED', err); sys.exit(0)\n"
        "net = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))\n"
        "g.transform(nsp.Activations(net, torch.randn(1, 1, 3, 3)))\n"
        "print('ACCEPTED')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert "REFUSED" in run.stdout and "column indices outside [0, 9)" in run.stdout and str(path) in run.stdout


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda a, m: a.update({"b0.indptr": a["b0.indptr"][::-1].copy()}), r"row pointers are not 9 non-decreasing"),
        (lambda a, m: a.update({"b0.indptr": a["b0.indptr"][:-2]}), r"row pointers are not 9 non-decreasing"),
        (lambda a, m: a.update({"b0.indices": a["b0.indices"].astype(np.float64)}), r"'b0\.indices' of dtype float64"),
        (lambda a, m: a.update({"b0.indices": a["b0.indices"].reshape(1, -1)}), r"'b0\.indices' of shape"),
        (lambda a, m: a.pop("b1.indptr"), r"lacks the array 'b1\.indptr'"),
        (lambda a, m: m.update({"shapes": "x"}), r"'shapes' = 'x', expected a list"),
        (lambda a, m: m.update({"shapes": m["shapes"][:-1]}), r"5 layer names and 4 shapes"),
        (lambda a, m: m["shapes"].__setitem__(1, [2, -2, 2]), r"shapes\[1\] = -2"),
        (lambda a, m: m["layout"].__setitem__(0, [1, 1, [8, 9]]), r"layout\[0\]\[1\] \(parent layer\) = 1"),
        (lambda a, m: m["layout"].__setitem__(0, [1, 0, [9, 8]]), r"block b0 of shape \[9, 8\]"),
        (lambda a, m: m["layout"].append(m["layout"][0]), r"lists the block \(1, 0\) twice"),
        (lambda a, m: m.pop("layout"), r"'layout' = None"),
        (lambda a, m: m.update({"incl": "no"}), r"'incl' = 'no'"),
        (lambda a, m: m.update({"type": ["NNGraph"]}), r"has type \['NNGraph'\]"),
    ],
)
def test_corrupt_incl_false_graph_files_name_the_file_and_the_fault(tmp_path, corrupt, match):
    arrays, meta = _saved(tmp_path, nsp.NNGraph(_ACTS, INCL=False))
    corrupt(arrays, meta)
    _refused(_write(tmp_path / "bad.npz", arrays, meta), match)


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda a, m: a.update({"b0.t0.f0": np.full((2, 1), 7, np.int64)}), r"entries other than 0 and 1"),
        (lambda a, m: a.update({"b0.t0.f0": np.ones((3, 5), bool)}), r"term b0\.t0 relating .* but its layers have 8 and 9"),
        (lambda a, m: m["layout"][0].__setitem__(2, [1] * 40), r"1 to 16 factor counts"),
        (lambda a, m: m["layout"][0].__setitem__(2, ["x"]), r"b0\.t0 factor count = 'x'"),
        (lambda a, m: a.update({"extra": np.zeros(3)}), r"arrays that no block uses: \['extra'\]"),
        (lambda a, m: a.update({"b0.t0.order": np.array([5, 5])}), r"'b0\.t0\.order' = \[5, 5\], expected a permutation"),
    ],
)
def test_corrupt_incl_true_graph_files_name_the_file_and_the_fault(tmp_path, corrupt, match):
    arrays, meta = _saved(tmp_path, nsp.NNGraph(_ACTS))
    corrupt(arrays, meta)
    _refused(_write(tmp_path / "bad.npz", arrays, meta), match)


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda a, m: a.pop("layer2"), r"lacks the array 'layer2'"),
        (lambda a, m: a.update({"layer1": np.array(["a"])}), r"'layer1' of dtype <U1"),
        (lambda a, m: a.update({"layer1": np.zeros(2, np.uint32)}), r"'layer1' of dtype uint32, which torch does not read"),
        (lambda a, m: m.update({"layernames": [1, 2]}), r"'layernames' with a non-string entry"),
        (lambda a, m: m.update({"layerdescriptions": []}), r"5 layer names and 0 descriptions"),
    ],
)
def test_corrupt_activations_files_name_the_file_and_the_fault(tmp_path, corrupt, match):
    arrays, meta = _saved(tmp_path, _ACTS)
    corrupt(arrays, meta)
    _refused(_write(tmp_path / "bad.npz", arrays, meta), match)


def test_big_endian_activations_load(tmp_path):
    arrays, meta = _saved(tmp_path, _ACTS)
    arrays = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in arrays.items()}
    loaded = nsp.OutputLoader.load(_write(tmp_path / "be.npz", arrays, meta))
    assert all(torch.equal(a, b) for a, b in zip(loaded.layeractivations, _ACTS.layeractivations))


def test_deeply_nested_metadata_is_refused_by_name(tmp_path):
    path = tmp_path / "deep.npz"
    np.savez(path, __meta__=np.asarray("[" * 100_000 + "]" * 100_000))
    _refused(path, r"'__meta__' is not valid JSON \(RecursionError")
    np.savez(path, __meta__=np.asarray("{not json"))
    _refused(path, r"'__meta__' is not valid JSON")
    np.savez(path, __meta__=np.arange(3))
    _refused(path, r"'__meta__' entry of dtype int64, not a JSON string")


def _magic_header(shape, dtype="<f8"):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    return header.getvalue()


def test_a_small_file_cannot_decompress_to_gigabytes(tmp_path):
    path = tmp_path / "bomb.npz"
    size = 300 << 20
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__meta__.npy", _array_bytes(np.asarray(json.dumps({"kind": "nsp-object", "type": "Activations"}))))
        with archive.open("layer0.npy", "w", force_zip64=True) as handle:
            handle.write(_magic_header((size // 8,)))
            chunk = bytes(1 << 20)
            for _ in range(size >> 20):
                handle.write(chunk)
    assert path.stat().st_size < 2 << 20
    _refused(path, r"would decompress to 300 MiB, more than the 256 MiB accepted")


def test_an_array_header_larger_than_its_data_is_refused_before_allocating(tmp_path):
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("__meta__.npy", _array_bytes(np.asarray("{}")))
        archive.writestr("layer0.npy", _magic_header((10**12,)) + bytes(64))
    _refused(path, r"'layer0' whose header declares 8,000,000,000,000 bytes of data but which holds 64")


def _array_bytes(a):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, a, allow_pickle=False)
    return buffer.getvalue()


# -- fuzzing ---------------------------------------------------------------------------------
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
_ARRAY = st.one_of(
    st.builds(lambda n, v: np.full(n, v, dtype=np.int64), st.integers(0, 40), st.integers(-(2**33), 2**33)),
    st.builds(lambda n: np.arange(n, dtype=np.int32)[::-1].copy(), st.integers(0, 40)),
    st.builds(lambda n: np.ones((n, 2), dtype=bool), st.integers(0, 5)),
    st.builds(lambda x: np.array([x]), st.floats(allow_nan=True)),
    st.just(np.array(["text"])),
    st.just(np.zeros((0, 0), dtype=np.uint16)),
)


def _originals():
    import tempfile
    from pathlib import Path

    directory = Path(tempfile.mkdtemp())
    return [_saved(directory, obj, f"{i}.npz") for i, obj in enumerate([_ACTS, nsp.NNGraph(_ACTS), nsp.NNGraph(_ACTS, INCL=False)])]


_ORIGINALS = _originals()


def _mutate(data, arrays, meta):
    arrays = dict(arrays)
    meta = json.loads(json.dumps(meta))
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["array", "drop", "field", "nested"]))
        if action == "array" or (action == "drop" and arrays):
            key = data.draw(st.sampled_from(sorted(arrays) + ["new"]))
            if action == "drop" and key in arrays:
                del arrays[key]
            else:
                arrays[key] = data.draw(_ARRAY)
        elif action == "field":
            meta[data.draw(st.sampled_from(sorted(meta) + ["new"]))] = data.draw(_JSON)
        else:
            target = meta.get(data.draw(st.sampled_from(sorted(meta))))
            while isinstance(target, list) and target and isinstance(target[0], list) and data.draw(st.booleans()):
                target = target[data.draw(st.integers(0, len(target) - 1))]
            if isinstance(target, list) and target:
                target[data.draw(st.integers(0, len(target) - 1))] = data.draw(_JSON)
    return arrays, meta


def _load_and_use(path):
    """Load ``path``; use what loads as far as it goes. Only nsp's own, named errors may come out."""
    try:
        obj = nsp.OutputLoader.load(path)
    except ValueError as err:
        assert str(path) in str(err), err
        return
    if isinstance(obj, nsp.NNGraph):
        obj.number_of_edges()
        signal = np.ones(obj.structure.n)
        if obj.structure.n < 10_000:
            obj.get_transformer().forward(signal)
    else:
        obj.to_numpy()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_crafted_object_files_are_loaded_or_refused_by_name(tmp_path, data):
    arrays, meta = _mutate(data, *data.draw(st.sampled_from(_ORIGINALS)))
    _load_and_use(_write(tmp_path / "fuzz.npz", arrays, meta))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_corrupted_bytes_are_loaded_or_refused_by_name(tmp_path, data):
    original = tmp_path / "original.npz"
    _write(original, *data.draw(st.sampled_from(_ORIGINALS)))
    raw = bytearray(original.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path / "fuzz.npz"
    path.write_bytes(bytes(raw))
    _load_and_use(path)


class _ChannelsLast(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


def test_a_graph_with_a_relabelled_permutation_round_trips(tmp_path, monkeypatch):
    # A permutation of axes is one term with its in axes relabelled (Term.in_order);
    # the file keeps the order, so the loaded relations are the same matrices.
    monkeypatch.setattr(nsp.graph.permutations, "MERGED_PERMUTE_ENTRIES", 0)
    net = nn.Sequential(nn.Conv2d(2, 3, 1), _ChannelsLast(), nn.Linear(3, 2))
    graph = nsp.NNGraph(nsp.Activations(net, torch.randn(1, 2, 2, 3), layers="leaves"))
    assert any(t.in_order is not None for p in graph.structure.parents for r in p.values() for t in r.terms)
    nsp.OutputLoader.save(graph, tmp_path / "graph.npz")
    back = nsp.OutputLoader.load(tmp_path / "graph.npz")
    for layer, parents in enumerate(graph.structure.parents):
        assert parents.keys() == back.structure.parents[layer].keys()
        for k, rel in parents.items():
            np.testing.assert_array_equal(back.structure.parents[layer][k].dense(), rel.dense())
