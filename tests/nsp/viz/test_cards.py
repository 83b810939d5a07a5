"""Cards' colour scales in whole decades, their colour bars and their canvas (issue 21, #1)."""

import math

import matplotlib
import numpy as np
import pytest
from card_decoding import decode, saturated

from nsp.viz import cards, colors, scales, text
from nsp.viz.render import render_card


def says(image: np.ndarray, words: str, cmap: str = "RdBu_r") -> bool:
    """Whether ``words``, drawn as a card draws them, appear in ``image``."""
    line = text.text_line(words, colors.palette(cmap, cards.CARD_BACKGROUND), cards.CARD_FONT_PT)
    h, w = line.shape[:2]
    for y in range(image.shape[0] - h + 1):
        row = image[y: y + h]
        for x in range(image.shape[1] - w + 1):
            if np.array_equal(row[:, x: x + w], line):
                return True
    return False


@pytest.mark.parametrize("seed", range(5))
def test_decade_range_is_the_powers_of_ten_around_the_magnitudes(seed):
    rng = np.random.default_rng(seed)
    magnitudes = 10.0 ** rng.uniform(-40, 40, size=50)
    headroom = float(rng.choice([0, 0.1, 2, 3]))
    d = scales.decade_range(float(magnitudes.max()), float(magnitudes.min()), headroom)
    # Reference by search: the least power of ten at or above the peak with its headroom,
    # the greatest at or below the smallest magnitude.
    assert d.top == next(k for k in range(-50, 50) if 10.0 ** k >= magnitudes.max() * 10.0 ** headroom)
    assert d.bottom == max(k for k in range(-50, 50) if 10.0 ** k <= magnitudes.min())
    assert d.threshold == 10.0 ** d.bottom and d.vrange == (-(10.0 ** d.top), 10.0 ** d.top)
    assert 10.0 ** d.bottom <= magnitudes.min() and magnitudes.max() * 10 ** headroom <= 10.0 ** d.top * (1 + 1e-12)


def test_decade_range_edges():
    assert scales.decade_range(1000.0, 1000.0) == scales.Decades(2, 3)  # at least one decade
    assert scales.decade_range(683.0, 186.0, headroom=2) == scales.Decades(2, 5)
    assert scales.decade_range(1e308, 1e-320) == scales.Decades(-307, 308)  # within float64's normal range
    assert scales.decade_range(5e-324, 5e-324).bottom < scales.decade_range(5e-324, 5e-324).top


@pytest.mark.parametrize("args, word", [
    ((0.0, 0.0), "peak"), ((math.nan, 1.0), "peak"), ((1.0, -1.0), "smallest"), ((1.0, 1.0, -1), "headroom"),
    ((True, 1.0), "peak"), ((1.0, 2.0), "smallest <= peak"), ((math.inf, 1.0), "peak"),
])
def test_decade_range_refuses_bad_arguments_by_name(args, word):
    with pytest.raises(ValueError, match=f"nsp.viz.scales.decade_range: expected {word}"):
        scales.decade_range(*args)


def test_a_card_on_decades_labels_its_colour_bar_in_powers_of_ten_and_the_sign_in_words():
    rng = np.random.default_rng(0)
    values = rng.choice([-1, 1], size=(4, 5, 5)) * 10.0 ** rng.uniform(2, 3, size=(4, 5, 5))
    d = scales.decade_range(float(np.abs(values).max()), float(np.abs(values).min()), 2)
    card = render_card(values, title="conv2", scale="layersymlog", cmap="RdBu_r", vrange=d.vrange,
                       threshold=d.threshold, legend=["red: positive, blue: negative, white: 0"])
    for label in ("−10⁵", "10⁵", "0", "red: positive, blue: negative, white: 0"):
        assert says(card, label), label
    # Labels come in pairs, so a symmetric scale reads symmetrically.
    for k in (3, 4):
        assert says(card, f"10{str(k).translate(str.maketrans('0123456789', '⁰¹²³⁴⁵⁶⁷⁸⁹'))}") == says(
            card, f"−10{str(k).translate(str.maketrans('0123456789', '⁰¹²³⁴⁵⁶⁷⁸⁹'))}")
    assert not says(card, "note: 1 of 100 values beyond the colour range (drawn in its end colours)")
    # Every value sits at its decade's colour, none at the table's ends.
    name, index = decode(card, values.shape)
    lut_size = matplotlib.colormaps[name].N
    expected = np.clip(((scales.signed_log10(values, d.threshold) / scales.signed_log10(d.vrange[1], d.threshold)
                        + 1) / 2 * lut_size).astype(int), 0, lut_size - 1)
    np.testing.assert_array_equal(index, expected.ravel())
    assert saturated(index, name) == 0


def test_a_card_spanning_hundreds_of_decades_thins_its_ticks_and_labels():
    rng = np.random.default_rng(1)
    values = rng.choice([-1, 1], size=300) * 10.0 ** rng.uniform(-150, 150, size=300)
    d = scales.decade_range(float(np.abs(values).max()), float(np.abs(values).min()))
    card = render_card(values, title="big", scale="layersymlog", cmap="RdBu_r", vrange=d.vrange, threshold=d.threshold)
    assert says(card, f"−10{str(d.top).translate(str.maketrans('0123456789', '⁰¹²³⁴⁵⁶⁷⁸⁹'))}")
    # The row of ticks just below the bar: a tick every few decades, about 4 pixels apart (the
    # ends' and 0's own ticks may fall next to a decade's).
    lut = matplotlib.colormaps["RdBu_r"](np.arange(256), bytes=True)[:, :3]
    bar_rows = [y for y in range(card.shape[0]) if (card[y, text.GAP] == lut[0]).all()]
    ticks = np.flatnonzero((card[bar_rows[-1] + 2] == 0).all(axis=1))
    assert 10 <= len(ticks) <= (ticks[-1] - ticks[0]) // 4 + 3 and np.median(np.diff(ticks)) >= 4


@pytest.mark.parametrize("cmap", ["RdBu_r", "viridis", "gray", "magma"])
def test_every_card_is_drawn_on_white_with_a_clean_margin(cmap):
    card = render_card(np.linspace(-1, 1, 32).reshape(2, 4, 4), title="Wide title starting at the edge", cmap=cmap)
    margin = np.concatenate([card[:, : text.GAP].reshape(-1, 3), card[: text.GAP].reshape(-1, 3)])
    assert (margin == 255).all()


def test_values_one_colour_step_apart_are_shown_off_the_end_colours():
    values = -7.1e4 * (1 + 1e-4 * np.linspace(-1, 1, 10))
    card = render_card(values, title="09 fc", scale="layersymlog", cmap="RdBu_r")
    name, index = decode(card, values.shape)
    assert len(set(index.tolist())) == 10 and saturated(index, name) == 0
    # The range is a round number a little beyond the outermost deviation (7.1): ±8.
    assert says(card, "−8") and says(card, "8")


def _layer(seed: int, shape=(16, 8, 8)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * 10.0 ** rng.integers(-4, 4, shape)


@pytest.mark.parametrize("cmap, kwargs", [
    ("RdBu_r", {"scale": "layersymlog", "vrange": (-1e3, 1e3), "threshold": 1e-3}),
    ("RdBu_r", {"scale": "layersymlog"}),
    ("viridis", {"scale": "layerscale"}),
])
def test_a_paletted_card_is_the_card_in_at_most_256_colours(cmap, kwargs):
    values = _layer(len(kwargs))
    values[0, 0, :3] = [np.nan, np.inf, 0.0]
    options = dict(title="04_conv2 · spectrum · probe 0", cmap=cmap, legend=["red: positive", "signed log10"], **kwargs)
    rgb = render_card(values, **options)
    card = cards.render_card_paletted(values, **options)
    pixels = np.asarray(card)
    assert card.indices.dtype == np.uint8 and card.colours.shape[0] <= 256 and pixels.shape == rgb.shape
    # Text in 16 levels of ink, the colormap's 256 colours in 232 steps: no pixel moves far.
    assert np.abs(pixels.astype(int) - rgb.astype(int)).max() <= 9
    # The heatmap reads back as the same colour steps, and a value drawn in an end colour is so in both.
    name, index = decode(rgb, values.shape)
    name_p, index_p = decode(pixels, values.shape)
    read = index >= 0  # not the NaN's hatch
    assert name_p == name and np.array_equal(index_p >= 0, read) and np.abs(index_p - index)[read].max() <= 2
    assert saturated(index_p, name) == saturated(index, name) > 0 or cmap == "viridis"
    assert np.array_equal((index_p == 0) | (index_p == 255), (index == 0) | (index == 255))


def test_a_colormap_of_few_colours_keeps_them_exactly():
    few = matplotlib.colors.ListedColormap(["#2040a0", "#f0f0f0", "#c03020"], name="three")
    values = _layer(3, (4, 5, 5))
    rgb = render_card(values, title="three colours", cmap=few)
    pixels = np.asarray(cards.render_card_paletted(values, title="three colours", cmap=few))
    different = np.any(pixels != rgb, axis=2)
    # Only antialiased text differs (a grey between ink and canvas, in both).
    assert different.any() and np.all(np.ptp(rgb[different], axis=1) == 0) and np.all(np.ptp(pixels[different], axis=1) == 0)


def test_a_paletted_card_encodes_in_at_most_60_percent_of_the_bytes():
    from nsp.viz.png import encode_png

    values = _layer(5)
    options = dict(title="02_relu1 · spectrum · probe 0", scale="layersymlog", cmap="RdBu_r",
                   legend=["red: positive, blue: negative, white: 0"])
    assert len(encode_png(cards.render_card_paletted(values, **options))) <= 0.6 * len(encode_png(render_card(values, **options)))
