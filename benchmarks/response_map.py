"""Response-map layouts at scale: nsp (openTSNE on Spearman unit vectors) against scikit-learn.

Every job runs in its own subprocess, one thread (``OMP_NUM_THREADS=1``, ``n_jobs=1``), so
its peak RSS and CPU time are its own. Jobs:

- ``nsp``: ``NeuralResponseMap.train_map`` end to end on a network whose hidden layer has
  N neurons (``Linear(64, N)`` then ``Tanh``), over P random inputs: forward passes,
  min-max scaling, Spearman unit vectors, openTSNE (approximate nearest neighbours, FFT
  gradients). Also times the network's forward pass over the inputs, and the first and a
  second map on the default 1000×1000 grid.
- ``sklearn``: scikit-learn's Barnes–Hut TSNE (perplexity 30, PCA start) on the same
  Spearman unit vectors, i.e. the same correlation distances.
- ``original``: what the original package does: ``scipy.stats.spearmanr`` (the N×N matrix),
  then scikit-learn's TSNE on ``1 − ρ`` as a precomputed metric.

The anchors run at ``--anchor-neurons`` (default 5,000), where they finish in minutes; nsp
runs there too, for ratios from the same run, and at ``--neurons`` (default 50,000).

    python benchmarks/response_map.py [--neurons 50000] [--inputs 512] [--anchor-neurons 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _activations(neurons: int, inputs: int):
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, neurons), nn.Tanh(), nn.Linear(neurons, 10))
    x = torch.randn(inputs, 64, generator=torch.Generator().manual_seed(1))
    return model, x


def _vectors(neurons: int, inputs: int):
    import torch

    from nsp.response_map import spearman_vectors

    model, x = _activations(neurons, inputs)
    with torch.no_grad():
        values = model[1](model[0](x)).double().numpy()
    return values, spearman_vectors(values)


def _rss_mib() -> float:
    """The process's resident memory now (Linux)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def job(kind: str, neurons: int, inputs: int) -> dict:
    import numpy as np

    result: dict = {"job": kind, "neurons": neurons, "inputs": inputs}
    rss_before = _rss_mib
    if kind == "nsp":
        import torch

        from nsp import NeuralResponseMap

        model, x = _activations(neurons, inputs)
        with torch.no_grad():
            start = time.perf_counter()
            model(x)
            result["forward_s"] = time.perf_counter() - start
        nrm = NeuralResponseMap(model, seed=0)
        result["rss_before_mib"] = rss_before()
        cpu, start = time.process_time(), time.perf_counter()
        layout = nrm.train_map(x, ["1"])
        result["cpu_s"], result["wall_s"] = time.process_time() - cpu, time.perf_counter() - start
        result["laid_out"] = len(layout)
        start = time.perf_counter()
        nrm.generate_map(x[:1], method="linear")
        result["first_map_s"] = time.perf_counter() - start
        start = time.perf_counter()
        nrm.generate_map(x[1:2], method="linear")
        result["next_map_s"] = time.perf_counter() - start
    else:
        from sklearn.manifold import TSNE

        values, vectors = _vectors(neurons, inputs)
        result["rss_before_mib"] = rss_before()
        cpu, start = time.process_time(), time.perf_counter()
        if kind == "sklearn":
            TSNE(perplexity=30, init="pca", random_state=0, n_jobs=1).fit_transform(vectors)
        else:
            from scipy.stats import spearmanr

            distance = 1 - spearmanr(values)[0]
            np.fill_diagonal(distance, 0)
            distance = np.maximum(distance, 0)
            TSNE(perplexity=30, metric="precomputed", init="random", random_state=0, n_jobs=1).fit_transform(distance)
        result["cpu_s"], result["wall_s"] = time.process_time() - cpu, time.perf_counter() - start
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run(kind: str, neurons: int, inputs: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, __file__, "--job", kind, "--neurons", str(neurons), "--inputs", str(inputs)],
        env=env, capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=50_000)
    parser.add_argument("--inputs", type=int, default=512)
    parser.add_argument("--anchor-neurons", type=int, default=5_000)
    parser.add_argument("--job", choices=["nsp", "sklearn", "original"])
    args = parser.parse_args()
    if args.job:
        print(json.dumps(job(args.job, args.neurons, args.inputs)))
        return

    import numpy
    import openTSNE
    import sklearn
    import torch

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"torch {torch.__version__}, numpy {numpy.__version__}, openTSNE {openTSNE.__version__}, "
          f"scikit-learn {sklearn.__version__}; one thread per job")
    rows = [run(kind, args.anchor_neurons, args.inputs) for kind in ("nsp", "sklearn", "original")]
    rows.append(run("nsp", args.neurons, args.inputs))
    for row in rows:
        print(json.dumps(row), flush=True)
    nsp_small = rows[0]
    print("\n| job | neurons × inputs | CPU s | wall s | RSS before MiB | peak RSS MiB | N×N float64 MiB | CPU vs nsp |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        n = row["neurons"]
        ratio = f"{row['cpu_s'] / nsp_small['cpu_s']:.2f}" if n == nsp_small["neurons"] else "–"
        print(f"| {row['job']} | {n:,} × {row['inputs']} | {row['cpu_s']:.1f} | {row['wall_s']:.1f} | "
              f"{row['rss_before_mib']:.0f} | {row['peak_rss_mib']:.0f} | {n * n * 8 / 2**20:,.0f} | {ratio} |")
    for row in (r for r in rows if r["job"] == "nsp"):
        print(f"\nnsp at {row['neurons']:,} neurons: forward pass {row['forward_s']:.3f} s "
              f"(layout / forward = {row['wall_s'] / row['forward_s']:.0f}), laid out {row['laid_out']:,}, "
              f"first 1000×1000 map {row['first_map_s']:.2f} s, next map {row['next_map_s']:.3f} s")


if __name__ == "__main__":
    main()
