"""How fast nsp.render turns layers into RGB images, against matplotlib (target: at least
1,000 images per second of a 64×32×32 layer).

The matplotlib baseline is one ``Figure`` with one ``imshow`` of the same channel grid,
saved as PNG into memory, the cheapest figure route to an image. The seed's own
Visualizer drew one subplot per channel; one such page is timed once for context. Whole
patterns are a ResNet-18 (32×32 input) recorded with nsp: every layer with labels, and
activations beside their spectrum. Each row is the median of several timed repeats.

    python benchmarks/render.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent))

import networks  # noqa: E402

import nsp  # noqa: E402
from nsp.viz import render  # noqa: E402
from nsp.viz.visualizer import Visualizer  # noqa: E402


def seconds_per_call(fn: Callable[[], object], repeats: int, budget: float = 0.5) -> float:
    """Median over ``repeats`` of the mean time of a batch of calls lasting about ``budget`` s."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    number = max(1, int(budget / once))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def matplotlib_imshow_png(layer: np.ndarray) -> bytes:
    """The baseline: one figure, one imshow of the channel grid, savefig to PNG in memory."""
    channels, h, w = layer.shape
    cols = int(np.ceil(np.sqrt(channels)))
    grid = layer.reshape(-1, cols, h, w).transpose(0, 2, 1, 3).reshape(-1, cols * w)
    fig = Figure(figsize=(2.63, 2.63), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(grid, cmap="viridis", interpolation="nearest")
    ax.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def seed_style_page(layer: np.ndarray) -> bytes:
    """The seed Visualizer's way: one subplot per channel, 4 per row, one PNG page."""
    channels = layer.shape[0]
    fig = Figure()
    FigureCanvasAgg(fig)
    axes = fig.subplots(-(-channels // 4), 4, sharey=True)
    for ax, channel in zip(axes.ravel(), layer):
        ax.imshow(channel, cmap="viridis", vmin=layer.min(), vmax=layer.max())
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def resnet18_pattern() -> tuple[nsp.Activations, nsp.Activations]:
    torch.manual_seed(0)
    net = networks.resnet18().eval()
    x = torch.rand(1, 3, 32, 32)
    activations = nsp.Activations(net, x)
    return activations, nsp.NNGraph(activations).transform(activations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per row (default 5)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    layer = np.random.default_rng(0).normal(size=(64, 32, 32)).astype(np.float32)
    spectrum_like = layer.astype(np.float64) * 10.0 ** np.random.default_rng(1).uniform(-100, 50, size=layer.shape)
    baseline = seconds_per_call(lambda: matplotlib_imshow_png(layer), args.repeats)
    rows = [
        ("render_layer, layerscale, float32", lambda: render.render_layer(layer)),
        ("render_layer, layernorm, RdBu_r", lambda: render.render_layer(layer, scale="layernorm", cmap="RdBu_r")),
        ("render_layer, layersymlog, 150 decades", lambda: render.render_layer(spectrum_like, scale="layersymlog")),
        ("render_layer, upscale=2", lambda: render.render_layer(layer, upscale=2)),
        ("render_layer, torch.Tensor input", lambda: render.render_layer(torch.from_numpy(layer))),
    ]
    print(f"One 64x32x32 layer -> 263x263 RGB (upscale=2: 519x519); median of {args.repeats}")
    print(f"{'case':44s} {'ms/image':>9s} {'images/s':>9s} {'vs matplotlib':>14s}")
    print(f"{'matplotlib: Figure + imshow + savefig(png)':44s} {baseline * 1e3:9.3f} {1 / baseline:9.0f} {1.0:13.1f}x")
    for name, fn in rows:
        t = seconds_per_call(fn, args.repeats)
        print(f"{name:44s} {t * 1e3:9.3f} {1 / t:9.0f} {baseline / t:13.1f}x")
    start = time.perf_counter()
    seed_style_page(layer)
    seed = time.perf_counter() - start
    name = "seed Visualizer style: 64 subplots, once"
    print(f"{name:44s} {seed * 1e3:9.1f} {1 / seed:9.1f} {baseline / seed:13.2f}x")

    activations, spectrum = resnet18_pattern()
    print(f"\nResNet-18 at 32x32, {sum(a.numel() for a in activations.layeractivations):,} values in "
          f"{len(activations.layernames)} layers; median of {args.repeats}")
    pattern_rows = [
        ("render_pattern(activations)", lambda: render.render_pattern(activations)),
        ("render_pattern(spectrum, layersymlog)", lambda: render.render_pattern(spectrum, scale="layersymlog")),
        ("render_side_by_side(activations, spectrum)", lambda: render.render_side_by_side(activations, spectrum)),
    ]
    print(f"{'case':44s} {'ms/image':>9s} {'pixels':>14s}")
    for name, fn in pattern_rows:
        t = seconds_per_call(fn, args.repeats)
        image = fn()
        print(f"{name:44s} {t * 1e3:9.1f} {f'{image.shape[0]}x{image.shape[1]}':>14s}")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        Visualizer.visualize_pattern(spectrum, Path(folder) / "spectrum.pdf", scale="layersymlog")
        pdf = time.perf_counter() - start
    pages = f"{len(spectrum.layernames)} pages"
    print(f"{'Visualizer.visualize_pattern (PDF), once':44s} {pdf * 1e3:9.1f} {pages:>14s}")


if __name__ == "__main__":
    main()
