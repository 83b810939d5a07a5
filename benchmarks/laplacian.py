"""Graph-Laplacian band energies: Chebyshev (kernel polynomial) method against dense eigh.

Run ``python benchmarks/laplacian.py``. It measures, in one process:

- the MNIST tutorial network (9,594 neurons, INCL=True): the dense eigendecomposition of
  ``LaplacianTransform`` (a few minutes) against ``LaplacianBands`` on a structured
  ``LaplacianOperator``, for several band layouts and tolerances: per-band energies,
  errors, and the documented guarantee
  ``|E~_b - E_b| <= tol ||s||^2 + (energy within the gaps around b's edges)``;
- LeNet-5 at 32x32 (16,026 neurons) and ResNet-18 at 32x32 (323,082 neurons), too large
  for the dense transform: time and memory of ``LaplacianBands`` alone.

Times are wall-clock, measured without tracing. ``peak MB`` is the peak of numpy/Python
allocations (tracemalloc) in a second, traced run of the same step; for the dense
eigendecomposition (one LAPACK call, which tracing does not slow) both come from one run,
and include LAPACK's workspace.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy
import torch

sys.path.insert(0, str(Path(__file__).parent))

import nsp  # noqa: E402
from networks import LeNet5, MnistTutorialNet, resnet18  # noqa: E402
from nsp.transforms.laplacian import LaplacianTransform, dense_eigh_bytes  # noqa: E402
from nsp.transforms.laplacian_bands import LaplacianBands, LaplacianOperator  # noqa: E402
from transform import _randomise_batchnorm  # noqa: E402


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _peak_mb(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(result, peak MB of numpy/Python allocations)``."""
    tracemalloc.start()
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, peak


def _product_ms(op: LaplacianOperator, s: np.ndarray, repeats: int) -> float:
    return _seconds(lambda: [op.matvec(s) for _ in range(repeats)]) / repeats * 1e3


def log_edges(bound: float) -> np.ndarray:
    """Band edges 0, 0.5, 1.5, 3.5, ..., 2^k - 0.5 < bound, bound: between integer clusters."""
    inner = 2.0 ** np.arange(int(np.log2(bound)) + 1) - 0.5
    return np.concatenate([[0.0], inner[inner < bound], [bound]])


def _pattern(net: torch.nn.Module, shape: tuple[int, ...]) -> tuple[nsp.Activations, nsp.NNGraph, np.ndarray]:
    torch.manual_seed(0)
    acts = nsp.Activations(net.eval(), torch.randn(shape))
    return acts, nsp.NNGraph(acts), acts.to_numpy()


def _kpm(
    bands: LaplacianBands, signal: np.ndarray, edges: np.ndarray, tol: float
) -> tuple[np.ndarray, int, float, float]:
    """Energies, order, seconds and peak MB of ``band_energies`` (order search included)."""
    seconds = _seconds(lambda: bands.band_energies(signal, edges, tol=tol))
    energies, peak = _peak_mb(lambda: bands.band_energies(signal, edges, tol=tol))
    return energies, bands.order(edges, tol=tol), seconds, peak


def _relative(error: float, exact: float) -> str:
    return f"{error / exact:.1e}" if exact > 0 else "-"


def mnist() -> None:
    torch.manual_seed(0)
    graph_acts, graph, s = _pattern(MnistTutorialNet(), (1, 1, 28, 28))
    total = float(s @ s)
    t_op = _seconds(lambda: LaplacianOperator(graph.structure))
    op, m_op = _peak_mb(lambda: LaplacianOperator(graph.structure))
    bands = LaplacianBands(op)
    print(f"\n## MNIST tutorial net, INCL=True: N = {op.shape[0]:,}, E = {graph.number_of_edges():,}")
    print(f"LaplacianOperator: built in {t_op * 1e3:.1f} ms (peak {m_op:.1f} MB); one product with L: "
          f"{_product_ms(op, s, 200):.2f} ms; spectrum bound (Merris) {op.spectrum_bound:.1f}")
    sparse_graph = nsp.NNGraph(graph_acts, INCL=False)
    t_sparse = _seconds(lambda: LaplacianOperator(sparse_graph.structure))
    sparse_op = LaplacianOperator(sparse_graph.structure)
    print(f"INCL=False (E = {sparse_graph.number_of_edges():,}): LaplacianOperator (sparse CSR) built in "
          f"{t_sparse * 1e3:.0f} ms; one product with L: {_product_ms(sparse_op, s, 200):.2f} ms")

    dense = LaplacianTransform(graph.adjacency())
    start = time.perf_counter()
    _, m_dense = _peak_mb(lambda: dense.eigenvalues)
    t_dense = time.perf_counter() - start
    lam = dense.eigenvalues
    estimate_mb = dense_eigh_bytes(op.shape[0]) / 2**20
    print(f"dense eigh: {t_dense:.1f} s, peak {m_dense:.0f} MB (estimate {estimate_mb:.0f} MB); "
          f"largest eigenvalue {lam[-1]:.2f} (bound / largest = {op.spectrum_bound / lam[-1]:.3f})")
    coefficients = dense.forward(s)

    layouts = [
        ("log2 edges at half-integers", log_edges(op.spectrum_bound)),
        ("16 equal bands over [0, bound]", np.linspace(0.0, op.spectrum_bound, 17)),
    ]
    for title, edges in layouts:
        exact = dense.band_energies(s, edges)
        gaps = bands.gaps(edges)
        clamped = (edges <= 0) | (edges >= bands.bound)
        near_edge = np.abs(lam[:, None] - edges[None, :]) < gaps[None, :]
        near_edge[:, clamped] = False
        for tol in (1e-2, 1e-3, 1e-6):
            estimate, order, seconds, peak = _kpm(bands, s, edges, tol)
            error = np.abs(estimate - exact)
            near = np.array([
                float(np.sum(coefficients[near_edge[:, b] | near_edge[:, b + 1]] ** 2)) for b in range(edges.size - 1)
            ])
            main = exact >= 0.01 * total
            holds = bool(np.all(error <= tol * total + near + 1e-12 * total))
            print(f"\n### {title}, tol = {tol:g}: order {order} ({(order + 1) // 2} products), {seconds:.2f} s, "
                  f"peak {peak:.1f} MB; dense eigh / this = {t_dense / seconds:.0f}x")
            print(f"max |error| / ||s||^2 = {error.max() / total:.2e}; max relative error of the bands holding >= 1% "
                  f"of ||s||^2 = {np.max(error[main] / exact[main]):.2e}; sum of estimates / ||s||^2 - 1 = "
                  f"{estimate.sum() / total - 1:.1e}; guarantee holds: {holds}")
            if tol == 1e-3:
                print("| band | exact E / ||s||^2 | estimate / ||s||^2 | |error| / ||s||^2 | relative error | "
                      "energy within gaps / ||s||^2 |")
                print("|---|---|---|---|---|---|")
                for b in range(edges.size - 1):
                    print(f"| [{edges[b]:.1f}, {edges[b + 1]:.1f}) | {exact[b] / total:.3e} | "
                          f"{estimate[b] / total:.3e} | {error[b] / total:.1e} | {_relative(error[b], exact[b])} | "
                          f"{near[b] / total:.1e} |")


def large(name: str, net: torch.nn.Module, shape: tuple[int, ...]) -> None:
    _, graph, s = _pattern(net, shape)
    t_op = _seconds(lambda: LaplacianOperator(graph.structure))
    op, m_op = _peak_mb(lambda: LaplacianOperator(graph.structure))
    bands = LaplacianBands(op)
    product = _product_ms(op, s, 20)
    n = op.shape[0]
    print(f"\n## {name}, INCL=True: N = {n:,} (dense eigh would need {dense_eigh_bytes(n) / 2**30:.1f} GiB)")
    print(f"LaplacianOperator: built in {t_op * 1e3:.1f} ms (peak {m_op:.1f} MB); one product with L: "
          f"{product:.2f} ms; spectrum bound (Merris) {op.spectrum_bound:.1f}, max degree {op.degrees.max():.0f}")
    edges = log_edges(op.spectrum_bound)
    for tol in (1e-2, 1e-3):
        estimate, order, seconds, peak = _kpm(bands, s, edges, tol)
        total = float(s @ s)
        print(f"log2 edges ({edges.size - 1} bands), tol = {tol:g}: order {order} ({(order + 1) // 2} products), "
              f"{seconds:.1f} s, peak {peak:.1f} MB; sum / ||s||^2 - 1 = {estimate.sum() / total - 1:.1e}")
        print("   energy share per band: " + " ".join(f"{e / total:.2e}" for e in estimate))


def main() -> None:
    print("command: python benchmarks/laplacian.py")
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"torch {torch.__version__}")
    mnist()
    torch.manual_seed(0)
    large("LeNet-5 32x32", LeNet5(), (1, 1, 32, 32))
    torch.manual_seed(0)
    large("ResNet-18 32x32", _randomise_batchnorm(resnet18()), (1, 3, 32, 32))


if __name__ == "__main__":
    main()
