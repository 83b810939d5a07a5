"""nsp.viz.text's labelled parts: colour bars whose numbers and colours are the ones given,
tiles and tables whose labels are where they name, all found by their exact pixels."""

import matplotlib
import numpy as np
import pytest
from image_text import find, has_text

from nsp.viz import colors, text

BWR = matplotlib.colormaps["bwr"]


def test_colour_bar_runs_the_colormap_from_lo_to_hi_and_writes_the_ends_and_zero():
    bar = text.colour_bar(colors.palette("bwr", colors.WHITE), -0.25, 0.5, 300, label="what the values are")
    assert bar.shape[1] == 300 and bar.dtype == np.uint8
    # Top row: the colormap's own colour of each pixel's value (matplotlib's bytes, 256 entries).
    expected = [BWR(int(round(k / 299 * 255)), bytes=True)[:3] for k in range(300)]
    assert bar[0].tolist() == [list(c) for c in expected]
    for line in ("-0.25", "0", "0.5", "what the values are"):
        assert has_text(bar, line), line
    # Ticks at the ends and at 0, a third of the way along; "0" written centred under its tick.
    height = text.line_metrics(text.LABEL_PT)[1]
    assert np.flatnonzero(bar[height, :, 0] < 128).tolist() == [0, 100, 299]
    zero = text.text_line("0", text.label_palette(), text.LABEL_PT)
    y, x = find(bar[:, 60:], zero)
    assert abs(60 + x + zero.shape[1] / 2 - 100) <= 1.5


def test_colour_bar_leaves_out_an_inner_number_that_would_touch_an_end():
    bar = text.colour_bar(colors.palette("viridis", colors.WHITE), 0.0, 1.0, 120, ticks=[0.05, 0.5])
    assert has_text(bar, "0") and has_text(bar, "1") and has_text(bar, "0.5")
    assert not has_text(bar, "0.05")


@pytest.mark.parametrize("lo, hi, width", [(1.0, 1.0, 100), (0.0, float("nan"), 100), (0.0, 1.0, 1)])
def test_colour_bar_refuses_an_empty_range_or_width(lo, hi, width):
    with pytest.raises(ValueError, match="colour_bar"):
        text.colour_bar(colors.palette("viridis"), lo, hi, width)


def test_tile_grid_puts_each_label_above_its_tile_in_rows():
    tiles = [np.full((40, 40, 3), 30 * k, dtype=np.uint8) for k in range(5)]
    grid = text.tile_grid(tiles, [[f"tile {k}"] for k in range(5)], columns=3)
    for k, tile in enumerate(tiles):
        ty, tx = find(grid, tile)
        ly, lx = find(grid, text.text_line(f"tile {k}", text.label_palette(), text.LABEL_PT))
        assert lx == tx and ly < ty  # the label starts at its tile's left edge, above it
        assert (ty > 60) == (k >= 3)  # the fourth tile starts the second row


def test_tile_grid_cuts_a_label_too_long_for_twice_the_tile():
    grid = text.tile_grid([np.zeros((20, 20, 3), np.uint8)], [["a label far too long for its tile"]], columns=1)
    assert grid.shape[1] <= 40 and not has_text(grid, "a label far too long for its tile")
    assert has_text(grid, text.fit_text("a label far too long for its tile", 40, text.LABEL_PT))


def test_table_grid_names_rows_at_the_left_and_columns_above():
    cells = [[np.full((30, 30, 3), 10 * (3 * r + c), np.uint8) for c in range(3)] for r in range(2)]
    table = text.table_grid(cells, ["row 0", "row 1"], ["col 0", "col 1", "col 2"])
    for r in range(2):
        ry, rx = find(table, text.text_line(f"row {r}", text.label_palette(), text.LABEL_PT))
        for c in range(3):
            cy, cx = find(table, cells[r][c])
            hy, hx = find(table, text.text_line(f"col {c}", text.label_palette(), text.LABEL_PT))
            assert hx == cx and hy < cy and rx < cx
            assert cy <= ry + 15 <= cy + 30  # the row's name is level with its cells
    with pytest.raises(ValueError, match="table_grid"):
        text.table_grid(cells, ["row 0"], ["col 0", "col 1", "col 2"])
