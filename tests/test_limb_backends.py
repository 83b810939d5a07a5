"""benchmarks/limb_backends.py (issue 23, option (c)): the torch int64 port of the limb
kernels agrees bit for bit with numpy, and the script keeps running."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nsp
from nsp.transforms import limbs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import limb_backends  # noqa: E402
import torch_limbs  # noqa: E402


def _limbs_of(values: list[int], b: int, k: int) -> np.ndarray:
    """Normalised limbs ``(k, 1, N)`` of Python integers: limbs below the top in [0, 2^b), the top signed."""
    mask = (1 << b) - 1
    rows = [[(v >> (b * j)) & mask for v in values] for j in range(k - 1)] + [[v >> (b * (k - 1)) for v in values]]
    return np.array(rows, dtype=np.int64)[:, None, :]


def _values(rng: np.random.Generator, b: int, k: int, count: int) -> list[int]:
    """Integers of every bit length that ``k`` fitted limbs hold, near-ties among them:
    a random top and a run of ones or zeros below the 53rd bit."""
    out = []
    for _ in range(count):
        bits = int(rng.integers(0, k * b - 3))
        v = int(rng.integers(0, 1 << min(bits, 62))) << max(0, bits - 62) if bits else 0
        if bits > 60 and rng.random() < 0.5:
            tail = bits - 54
            # Exactly half-way, or one unit of the lowest bit either side: only a sticky bit tells them apart.
            v = (v >> tail << tail) | ((1 << (tail - 1)) + int(rng.integers(-1, 2)))
        out.append(-v if rng.random() < 0.5 else v)
    return out


@pytest.mark.parametrize("b,k", [(32, 1), (32, 2), (32, 3), (32, 4), (20, 5), (32, 6), (20, 8), (12, 12)])
def test_from_limbs_in_torch_rounds_as_python_does(b, k):
    # Python's int -> float rounds to nearest, ties to even: the independent reference.
    rng = np.random.default_rng(b * 100 + k)
    values = _values(rng, b, k, 400) + [0, 1, -1, (1 << 53) + 1, -(1 << 60) - 1]
    emin = np.array([-30], dtype=np.int64)
    x = _limbs_of(values, b, k)
    want = np.array([math.ldexp(float(v), -30) for v in values])[None]
    got = torch_limbs.from_limbs(torch.from_numpy(x), b, torch.from_numpy(emin), int64=k <= 2).numpy()
    assert np.array_equal(got, want)
    assert np.array_equal(limbs.from_limbs(x, b, emin, int64=k <= 2), want)


def test_from_limbs_in_torch_takes_every_rounding_path(monkeypatch):
    # Each path of the port is reached by the values above; a port that skipped one would pass untested.
    seen = set()
    for name in ("_round_two_doubles", "_round_shifted", "_round_window"):
        original = getattr(torch_limbs, name)
        monkeypatch.setattr(torch_limbs, name, lambda *a, _n=name, _f=original: (seen.add(_n), _f(*a))[1])
    rng = np.random.default_rng(0)
    for b, k in [(32, 3), (32, 4), (32, 6)]:
        x = torch.from_numpy(_limbs_of(_values(rng, b, k, 400), b, k))
        torch_limbs.from_limbs(x, b, torch.tensor([0]))
    # Values past the two-doubles bounds of the top limb: the per-value cut, then the window.
    for b, k in [(32, 3), (20, 7)]:
        top = 1 << (61 - b)
        x = torch.from_numpy(_limbs_of([top << (b * (k - 1)), -(top << (b * (k - 1))) - 5], b, k))
        torch_limbs.from_limbs(x, b, torch.tensor([0]))
    assert seen == {"_round_two_doubles", "_round_shifted", "_round_window"}


def test_normalize_and_fit_in_torch_keep_the_value_and_match_numpy():
    rng = np.random.default_rng(1)
    b = 20
    for k in (1, 2, 3, 5):
        # Unnormalised limbs of either sign, up to 2^61: carries, limbs added and limbs dropped.
        x = rng.integers(-(1 << 61), 1 << 61, size=(k, 2, 7), dtype=np.int64) >> rng.integers(0, 62, size=(k, 2, 7))
        value = [sum(int(x[j, p, n]) << (b * j) for j in range(k)) for p in range(2) for n in range(7)]
        t = torch.from_numpy(x.copy())
        torch_limbs.normalize(t, b)
        limbs.normalize(x, b)
        assert np.array_equal(t.numpy(), x)
        fitted, want = torch_limbs.fit(t, b).numpy(), limbs.fit(x, b)
        assert np.array_equal(fitted, want)
        assert [sum(int(fitted[j, p, n]) << (b * j) for j in range(fitted.shape[0]))
                for p in range(2) for n in range(7)] == value
        assert int(np.abs(fitted[-1]).max()) <= 1 << (b - 3)


def _conv_net() -> torch.nn.Module:
    # Strided and dilated convolutions (interval and dense factors), BatchNorm and ReLU (copies),
    # a linear layer over everything (full relations, prefix sums of layer totals).
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
        torch.nn.Conv2d(3, 3, 3, stride=2, dilation=2), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(12, 4),
    ).eval()


def test_accumulate_in_torch_matches_the_transform_on_a_convolutional_net():
    net = _conv_net()
    acts = nsp.Activations(net, torch.randn(1, 2, 8, 8), layers="leaves")
    op = nsp.NNGraph(acts).get_transformer()
    calls = limb_backends.capture(op, acts.to_numpy())
    kinds = {kind for plan in op._kernel.plans for _, (_, _, (_, rest), _) in plan for _, kind, _ in rest}
    assert {"intervals", "dense"} <= kinds
    assert sum(c.kernel == "accumulate" for c in calls) >= 4
    # The replay checks every call of every backend against the transform's own result.
    best = limb_backends.replay(calls, [("numpy", 1), ("torch", 1)], 1, op._kernel)
    assert set(best) == {("numpy", 1), ("torch", 1)} and all(v.shape == (len(calls), 2) for v in best.values())


def test_replay_refuses_a_result_that_differs_in_one_bit():
    net = _conv_net()
    acts = nsp.Activations(net, torch.randn(1, 2, 8, 8), layers="leaves")
    op = nsp.NNGraph(acts).get_transformer()
    calls = limb_backends.capture(op, acts.to_numpy())
    call = next(c for c in calls if c.kernel == "accumulate")
    call.result.reshape(-1)[0] ^= 1
    with pytest.raises(SystemExit, match="accumulate"):
        limb_backends.replay(calls, [("numpy", 1), ("torch", 1)], 1, op._kernel)


def test_the_script_runs_on_an_mlp(capsys):
    limb_backends.main(["--models", "mlp", "--repeats", "1", "--threads", "1", "2", "--ops"])
    out = capsys.readouterr().out
    # 15 kernel calls: the layers on either side of a ReLU (converted on its own) round as one group.
    assert "| total | 15 |" in out and "bit-identical" in out
    assert "pipeline with the kernels in torch on 2 thread(s)" in out and "| cumulative sum |" in out
    assert int(out.split("torch operations other than views: ")[1].split(" ")[0]) > 16
