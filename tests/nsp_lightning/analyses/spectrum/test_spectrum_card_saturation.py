"""Acceptance (issue 21, #1): the spectrum cards stay readable while the network trains.

A short digits fit like the demo's (``examples/demo_digits.py``: Adam, batches of 16, four
probes from held-out digits, ``SpectrumCallback`` at its defaults). Every activations,
spectrum and difference card of the last record is read back from the TensorBoard event
file and decoded (`card_decoding`): at most 5 % of each card's values may be drawn in the
colour table's end colours, where a value at the end and one far beyond it look alike.
On the baseline-fixed ranges of before, conv2's activations card of the demo had 431 of
512 values there.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from card_decoding import decode, saturated
from digits_cnn import DigitsCNN, digits
from lightning_helpers import image_run
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from nsp.viz.text import GAP
from nsp_lightning import SpectrumCallback, read_records

CARD = re.compile(r"^[^/]+/(\d\d)_(.+)/(activations|spectrum|difference)/probe_(\d+)$")
KINDS = ("activations", "spectrum", "difference")
PROBES = 4
MAX_SATURATED = 0.05


class DigitsModule(pl.LightningModule):
    """`DigitsCNN`'s layers as the module's own top-level children, trained as the demo trains."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        for name, module in DigitsCNN().named_children():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return DigitsCNN.forward(self, x)  # type: ignore[arg-type]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=2e-3)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    x, y = digits()
    train = DataLoader(TensorDataset(x[:1500], y[:1500]), batch_size=16, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    callback = SpectrumCallback((x[1500: 1500 + PROBES], y[1500: 1500 + PROBES]))
    trainer = pl.Trainer(
        default_root_dir=tmp_path_factory.mktemp("digits"), max_epochs=3, accelerator="cpu", devices=1,
        logger=TensorBoardLogger(tmp_path_factory.mktemp("tb"), name="digits"), callbacks=[callback],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(DigitsModule(), train)
    return read_records(callback.dirpath), image_run(trainer.log_dir)


def last_cards(records, events) -> dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]]:
    """``(layer, kind, probe)`` -> (the last record's card, decoded from the event file, and its values)."""
    baseline, last = records[0], records[-1]
    names = list(last.layernames)
    cards = {}
    for tag in events.Tags()["images"]:
        match = CARD.match(tag)
        if not match:
            continue
        _, name, kind, p = match.groups()
        l, p = names.index(name), int(p)
        event = events.Images(tag)[-1]
        assert event.step == last.global_step, tag
        rows = last.activations if kind == "activations" else last.spectra
        values = np.asarray(rows[p][l], dtype=np.float64)
        if kind == "difference":
            values = values - baseline.spectra[p][l]
        card = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
        cards[name, kind, p] = (card, values)
    return cards


@pytest.mark.slow
def test_at_most_5_percent_of_each_cards_values_are_saturated_at_the_last_record(digits_run):
    records, events = digits_run
    cards = last_cards(records, events)
    report = []
    for (name, kind, p), (card, values) in sorted(cards.items()):
        if np.ptp(values) == 0:
            continue  # one value (the flatten layer's zero spectrum): hatched, and a note says so
        cmap, index = decode(card, values.shape)
        # The reading is the card's: every value's cell is a colour of the table, and larger
        # values never get lower colours.
        assert (index >= 0).all(), (name, kind, p)
        order = np.argsort(values.ravel(), kind="stable")
        assert (np.diff(index[order]) >= 0).all(), (name, kind, p)
        report.append((saturated(index, cmap) / values.size, f"{name} {kind} probe {p}: {saturated(index, cmap)}"
                                                             f" of {values.size} in the end colours of {cmap}"))
    worst = [line for share, line in report if share > MAX_SATURATED]
    assert not worst, "\n".join(worst)
    # Every layer and probe has its three cards at the last record.
    expected = {(name, kind, p) for name in records[-1].layernames for kind in KINDS for p in range(PROBES)}
    assert set(cards) == expected


@pytest.mark.slow
def test_every_card_is_on_one_background_with_nothing_left_of_its_lines(digits_run):
    records, events = digits_run
    backgrounds = set()
    for (name, kind, p), (card, _) in last_cards(records, events).items():
        # The margin around each card is all canvas: no mark of the title's first letter.
        margin = np.concatenate([card[:GAP].reshape(-1, 3), card[-GAP:].reshape(-1, 3),
                                 card[:, :GAP].reshape(-1, 3), card[:, -GAP:].reshape(-1, 3)])
        colours = {tuple(c) for c in np.unique(margin, axis=0).tolist()}
        assert len(colours) == 1, (name, kind, p, colours)
        backgrounds |= colours
    assert backgrounds == {(255, 255, 255)}
