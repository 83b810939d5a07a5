"""Neural response maps of the digits CNN while it learns (nsp_lightning.analyses.ResponseMapAnalysis).

Trains the CNN of ``examples/demo_digits.py`` on scikit-learn's bundled 8x8 digits (no
download) with a :class:`~nsp_lightning.ProbeCallback` running
:class:`~nsp_lightning.analyses.ResponseMapAnalysis`. At fit start, before any training
step, the neurons of ``relu1``, ``relu2`` (every element a neuron) and ``fc`` are laid out
once by how they co-vary over 512 training digits. After every epoch, four validation
digits (a 0, 1, 2 and 3) are drawn on that same layout, so the maps of different epochs
compare pixel for pixel: you see which groups of neurons each digit comes to drive.

Writes TensorBoard logs (maps as images, the layout in the embedding projector), the
records, the HTML report, and ``maps.png``: one row per digit, one column per record,
both named, with the colour bar.

    python examples/response_maps_digits.py [--epochs 8] [--root out/response_maps] [--refit]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_digits import digits_loaders, fit  # noqa: E402

from PIL import Image  # noqa: E402

from nsp.response_map import to_rgb  # noqa: E402
from nsp.viz.colors import WHITE, palette  # noqa: E402
from nsp.viz.text import colour_bar, label_palette, table_grid, titled, vstack  # noqa: E402
from nsp_lightning import ProbeCallback, read_records, report  # noqa: E402
from nsp_lightning.analyses import ResponseMapAnalysis  # noqa: E402

LAYERS = ["relu1", "relu2", "fc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    parser.add_argument("--root", default="out/response_maps", help="log directory (default out/response_maps)")
    parser.add_argument("--refit", action="store_true", help="refit the layout at every record, aligned to the last")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=PossibleUserWarning)  # few DataLoader workers: fine here

    train, val = digits_loaders()
    # 512 unshifted training digits fit the layout (the loader's first 1,437 images are unshifted).
    layout_inputs = train.dataset.tensors[0][:512]
    x_val, y_val = val.dataset.tensors
    probes = torch.cat([x_val[y_val == digit][:1] for digit in range(4)])
    labels = torch.arange(4)  # the probes are a 0, 1, 2 and 3: their images name their labels
    analysis = ResponseMapAnalysis(layout_inputs, LAYERS, units="all", refit=args.refit)
    callback = ProbeCallback((probes, labels), [analysis])

    start = time.perf_counter()
    trainer = fit(args.root, args.epochs, [callback])
    seconds = time.perf_counter() - start

    log_dir = Path(trainer.log_dir).resolve()
    records = read_records(log_dir / analysis.name)
    layers = records[0].meta["layers"]
    counts = np.bincount(records[0].arrays["neuron_layer"], minlength=len(layers))
    print(f"\nTrained {args.epochs} epochs in {seconds:.1f} s; {len(records)} response-map records.")
    print(f"Validation accuracy after the last epoch: {float(trainer.callback_metrics['val_acc']):.3f} (360 digits)")
    print("Neurons laid out: " + ", ".join(f"{n} {c}" for n, c in zip(layers, counts)))
    if args.refit:
        moved = ", ".join(f"{r.scalars['procrustes_disparity']:.4f}" for r in records[1:])
        print(f"Procrustes disparity of each refit to the layout before: {moved}")

    # One row per probe digit, one column per record, on one layout: a glance at training.
    cells = [[to_rgb(r.arrays["maps"][p]) for r in records] for p in range(len(probes))]
    table = table_grid(cells, [f"probe {p}: digit {p}" for p in range(len(probes))],
                       [f"epoch {r.epoch}" for r in records])
    bar = colour_bar(palette("viridis", WHITE), 0.0, 1.0, 320, label="each neuron scaled to its range")
    title = f"Neural response maps of {', '.join(layers)} ({int(counts.sum()):,} neurons) on one layout"
    Image.fromarray(vstack([titled(table, [title]), bar], label_palette())).save(log_dir / "maps.png")
    print(f"\nMaps of digits 0-3 (rows) at epochs {records[0].epoch}-{records[-1].epoch} (columns): {log_dir / 'maps.png'}")
    print(f"Records: {log_dir / analysis.name}  (read with nsp_lightning.read_records)")
    print(f"TensorBoard: tensorboard --logdir {log_dir} --samples_per_plugin images=100000  (Images, and Projector)")
    html = report(log_dir, log_dir / "report.html")
    print(f"Offline report: {html}")


if __name__ == "__main__":
    main()
