"""How long ``nsp-report`` takes for a run of 100 recorded epochs (target: at most 30 s).

Trains the digits demo's CNN (``examples/demo_digits.py``) with ``SpectrumCallback`` for
100 short epochs (a few batches each, so that the weights and spectra do change), which
gives 101 records with the demo's 4 probes, then times :func:`nsp_lightning.report.report`
on them: the HTML report alone, and with the PDF.

    python benchmarks/report.py [--epochs 100] [--records DIR] [--repeats 2]

``--records DIR`` reuses (or, if DIR holds no records yet, fills) a record directory, so
that repeated timings skip the training.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import demo_digits  # noqa: E402
import lightning.pytorch as pl  # noqa: E402

from nsp.io.storage import RecordStore  # noqa: E402
from nsp_lightning import SpectrumCallback, read_records  # noqa: E402
from nsp_lightning.report.html import report  # noqa: E402


def record_run(dirpath: Path, epochs: int) -> float:
    """Train the demo CNN for ``epochs`` short epochs with the callback; return the seconds."""
    pl.seed_everything(0, verbose=False)
    train, val = demo_digits.digits_loaders()
    callback = SpectrumCallback(next(iter(val))[0][: demo_digits.PROBES], dirpath=dirpath)
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=4,
        limit_val_batches=0,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(demo_digits.DigitsCNN(), train)
    return time.perf_counter() - start


def timed(records: Path, out: Path, pdf: bool, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        report(records, out, pdf=pdf)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100, help="training epochs to record (default 100)")
    parser.add_argument("--records", type=Path, help="record directory to reuse or fill (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=2, help="timed reports of each kind, best counts (default 2)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        records = args.records or Path(tmp) / "spectrum"
        if not RecordStore(records).exists() or not RecordStore(records).names():
            seconds = record_run(records, args.epochs)
            print(f"recorded {args.epochs} epochs of the digits CNN in {seconds:.1f} s")
        count = len(read_records(records))
        out = Path(tmp) / "report.html"
        html = timed(records, out, pdf=False, repeats=args.repeats)
        size = out.stat().st_size
        both = timed(records, out, pdf=True, repeats=args.repeats)
        pdf_size = out.with_suffix(".pdf").stat().st_size
    print(f"report of {count} records ({demo_digits.PROBES} probes), best of {args.repeats}:")
    print(f"  HTML:       {html:6.2f} s  ({size / 1e6:.1f} MB)")
    print(f"  HTML + PDF: {both:6.2f} s  (PDF {pdf_size / 1e6:.1f} MB)")
    print(f"  target: at most 30 s -> {'met' if both <= 30 else 'MISSED'}")


if __name__ == "__main__":
    main()
