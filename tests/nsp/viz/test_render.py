"""nsp.render: colours checked against matplotlib's own Normalize + Colormap, exact layouts,
the signed-log scale on known magnitudes, flags for non-finite, empty and constant layers,
and the energy plots."""

import math

import matplotlib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

from nsp.viz import cards, colors, render, text

VIRIDIS = matplotlib.colormaps["viridis"]
RDBU = matplotlib.colormaps["RdBu_r"]
WHITE, BLACK, MAGENTA = [255, 255, 255], [0, 0, 0], [255, 0, 255]


def mpl_colour(cmap, normalised):
    """The reference: matplotlib's own colour for a normalised value, as RGB bytes."""
    return [int(c) for c in cmap(float(normalised), bytes=True)[:3]]


def cell(image, y, x):
    return image[y, x].tolist()


# ------------------------------------------------------------------- colours of known values


def test_layerscale_colour_of_known_value_at_known_pixel():
    values = np.arange(18.0).reshape(2, 3, 3)  # two 3x3 channels side by side, range 0..17
    img = render.render_layer(values, upscale=2, separator=1)
    assert img.shape == (6, 13, 3) and img.dtype == np.uint8
    # Channel 1, row 2, column 0 holds 15; channel 1 starts at x = 3*2 + 1.
    expected = mpl_colour(VIRIDIS, Normalize(0, 17)(15.0))
    for y, x in [(4, 7), (4, 8), (5, 7), (5, 8)]:
        assert cell(img, y, x) == expected
    assert cell(img, 0, 0) == mpl_colour(VIRIDIS, 0.0)
    assert cell(img, 5, 12) == mpl_colour(VIRIDIS, 1.0)
    # The separator column between the channels is white for viridis.
    assert all(cell(img, y, 6) == WHITE for y in range(6))


def test_every_pixel_matches_matplotlib():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(3, 5, 7))
    img = render.render_layer(values, scale="layerscale", cmap="magma", separator=0)
    # With 3 tiles of 5x7 the grid has 2 columns: tiles 0,1 on top, tile 2 below left.
    expected = matplotlib.colormaps["magma"](Normalize(values.min(), values.max())(values), bytes=True)[..., :3]
    np.testing.assert_array_equal(img[:5, :7], expected[0])
    np.testing.assert_array_equal(img[:5, 7:14], expected[1])
    np.testing.assert_array_equal(img[5:10, :7], expected[2])


def test_layernorm_is_symmetric_and_centred_on_zero():
    values = np.array([[-1.0, 0.0, 4.0, 2.0]])
    img = render.render_layer(values, scale="layernorm", cmap="RdBu_r")
    seed = TwoSlopeNorm(vcenter=0.0, vmin=-4.0, vmax=4.0)  # the seed's 'layernorm'
    assert [cell(img, 0, x) for x in range(4)] == [mpl_colour(RDBU, seed(v)) for v in values[0]]
    assert cell(img, 0, 1) == mpl_colour(RDBU, 0.5)  # 0 sits at the centre
    assert cell(img, 0, 2) == mpl_colour(RDBU, 1.0)  # the largest |x| at the top
    # The extreme may be negative: [-3, 1] spans [-3, 3].
    img = render.render_layer(np.array([-3.0, 1.0]), scale="layernorm", cmap="RdBu_r")
    assert cell(img, 0, 0) == mpl_colour(RDBU, 0.0)
    assert cell(img, 0, 1) == mpl_colour(RDBU, Normalize(-3.0, 3.0)(1.0))


def test_global_scales_share_one_range():
    layers = [np.array([[0.0, 1.0], [0.5, 1.0]]), np.array([[0.0, 10.0], [-2.0, 5.0]])]
    img = render.render_pattern(layers, scale="globalscale", upscale=1, separator=0, labels=False)
    # Layers are stacked with 4-pixel gaps: layer 0 at rows 0-1, layer 1 at rows 6-7.
    norm = Normalize(-2.0, 10.0)
    assert cell(img, 0, 1) == mpl_colour(VIRIDIS, norm(1.0))
    assert cell(img, 7, 0) == mpl_colour(VIRIDIS, norm(-2.0))
    img = render.render_pattern(layers, scale="globalnorm", upscale=1, separator=0, labels=False)
    assert cell(img, 0, 1) == mpl_colour(VIRIDIS, Normalize(-10.0, 10.0)(1.0))
    img = render.render_pattern(layers, scale="layerscale", upscale=1, separator=0, labels=False)
    assert cell(img, 0, 1) == mpl_colour(VIRIDIS, 1.0)


def test_vrange_overrides_the_data_range_and_clips():
    img = render.render_layer(np.array([-5.0, 0.25, 5.0]), vrange=(0.0, 1.0))
    assert [cell(img, 0, x) for x in range(3)] == [mpl_colour(VIRIDIS, v) for v in (0.0, 0.25, 1.0)]


def test_colormap_objects_and_reversed_names():
    values = np.array([0.0, 0.3, 1.0])
    by_object = render.render_layer(values, cmap=matplotlib.colormaps["plasma"].reversed())
    by_name = render.render_layer(values, cmap="plasma_r")
    np.testing.assert_array_equal(by_object, by_name)
    assert cell(by_name, 0, 1) == mpl_colour(matplotlib.colormaps["plasma_r"], 0.3)


def test_tensors_and_dtypes_render_alike():
    values = np.random.default_rng(2).normal(size=(4, 3, 3)).astype(np.float32)
    expected = render.render_layer(values.astype(np.float64))
    np.testing.assert_array_equal(render.render_layer(values), expected)
    np.testing.assert_array_equal(render.render_layer(torch.from_numpy(values)), expected)
    np.testing.assert_array_equal(render.render_layer(torch.from_numpy(values).requires_grad_()), expected)


# ------------------------------------------------------------------------- signed-log scale


def test_signed_log10_known_magnitudes():
    np.testing.assert_array_equal(
        render.signed_log10([0.0, 9.0, -99.0, 999.0, -1e300], threshold=1.0), [0.0, 1.0, -2.0, 3.0, -300.0]
    )
    # Hundreds of decades, where |x|/t itself would overflow float64.
    assert render.signed_log10(1e54, threshold=1e-117) == pytest.approx(171.0, abs=1e-12)
    assert render.signed_log10(1e300, threshold=1e-300) == pytest.approx(600.0, abs=1e-12)
    assert render.signed_log10(0.5, threshold=2.0) == pytest.approx(math.log10(1.25), abs=1e-15)
    out = render.signed_log10([np.nan, np.inf, -np.inf, -0.0], threshold=1.0)
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == -np.inf and math.copysign(1, out[3]) == -1


@pytest.mark.parametrize("threshold", [0.0, -1.0, np.inf, np.nan, None])
def test_signed_log10_rejects_bad_thresholds(threshold):
    with pytest.raises(ValueError, match="threshold"):
        render.signed_log10([1.0], threshold=threshold)


def test_symlog_scale_maps_known_magnitudes():
    values = np.array([-1000.0, -10.0, 0.0, 10.0, 1000.0])
    img = render.render_layer(values, scale="layersymlog", threshold=1.0, cmap="RdBu_r")
    top = math.log10(1001.0)
    expected = [np.sign(v) * math.log10(1 + abs(v)) for v in values]
    assert [cell(img, 0, x) for x in range(5)] == [mpl_colour(RDBU, Normalize(-top, top)(f)) for f in expected]
    assert cell(img, 0, 2) == mpl_colour(RDBU, 0.5)


def test_symlog_default_threshold_is_the_smallest_nonzero_magnitude():
    values = np.array([1e-117, 0.0, -1e54, 1e54])
    img = render.render_layer(values, scale="layersymlog", cmap="RdBu_r")
    # t = 1e-117: 1e54 sits 171 decades out, 1e-117 at log10(2) from the centre.
    top = 171.0 + math.log10(1 + 1e-171)
    norm = Normalize(-top, top)
    assert cell(img, 0, 0) == mpl_colour(RDBU, norm(math.log10(2.0)))
    assert cell(img, 0, 1) == mpl_colour(RDBU, 0.5)
    assert cell(img, 0, 2) == mpl_colour(RDBU, 0.0) and cell(img, 0, 3) == mpl_colour(RDBU, 1.0)
    # Over six decades the smallest value is a visibly different colour from 0.
    img = render.render_layer(np.array([1e-3, 0.0, 1e3]), scale="layersymlog", cmap="RdBu_r")
    top = math.log10(1 + 1e6)
    assert cell(img, 0, 0) == mpl_colour(RDBU, Normalize(-top, top)(math.log10(2.0))) != cell(img, 0, 1)


def test_globalsymlog_uses_one_threshold_and_range():
    layers = [np.array([[1.0, 10.0]]), np.array([[1e6, -1e-2]])]
    img = render.render_pattern(layers, scale="globalsymlog", cmap="RdBu_r", upscale=1, separator=0, labels=False)
    top = math.log10(1 + 1e6 / 1e-2)  # t = 1e-2, the smallest |x| of the whole pattern
    f = lambda v: math.copysign(math.log10(1 + abs(v) / 1e-2), v)  # noqa: E731
    norm = Normalize(-top, top)
    # 1-D-looking 1x2 maps are strips, 8 pixels high: layer 0 at rows 0-7, layer 1 at rows 12-19.
    assert cell(img, 0, 1) == mpl_colour(RDBU, norm(f(10.0)))
    assert cell(img, 12, 1) == mpl_colour(RDBU, norm(f(-1e-2)))
    assert cell(img, 19, 0) == mpl_colour(RDBU, 1.0)


# --------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    "shape, upscale, separator, expected",
    [
        ((5,), 1, 1, (1, 5)),  # a strip
        ((5,), 3, 1, (3, 15)),
        ((), 2, 1, (2, 2)),  # a scalar
        ((3, 4), 2, 1, (6, 8)),  # one map
        ((5, 3, 4), 3, 2, (31, 26)),  # 2 columns x 3 rows of 9x12-pixel tiles
        ((64, 32, 32), 1, 1, (263, 263)),
        ((2, 3, 4, 5), 1, 1, (9, 17)),  # 6 tiles of 4x5 in 3 columns, 2 rows
        ((512, 1, 1), 1, 1, (45, 45)),
    ],
)
def test_layer_image_shapes(shape, upscale, separator, expected):
    img = render.render_layer(np.zeros(shape), upscale=upscale, separator=separator, scale="layernorm")
    assert img.shape == (*expected, 3) and img.dtype == np.uint8 and img.flags["C_CONTIGUOUS"]


def test_channels_are_laid_out_row_major():
    values = np.arange(5.0)[:, None, None] * np.ones((5, 2, 2))
    img = render.render_layer(values, cmap="gray", separator=1)
    lut = matplotlib.colormaps["gray"]
    # 3 columns: channels 0 1 2 on the first row, 3 4 on the second, then an unused cell.
    for channel, (y, x) in enumerate([(0, 0), (0, 3), (0, 6), (3, 0), (3, 3)]):
        assert cell(img, y, x) == mpl_colour(lut, Normalize(0, 4)(channel))
    background = cell(img, 2, 0)  # a separator row
    assert background not in [mpl_colour(lut, v) for v in np.linspace(0, 1, 256)]
    assert cell(img, 4, 7) == background  # the unused cell


def test_auto_upscale_makes_small_layers_legible():
    img = render.render_pattern([np.zeros((1, 4, 4)), np.arange(8.0)], labels=False, separator=1)
    # Both aim at 256 pixels wide, at most 32 pixels per value: the 4x4 map at 32, the 8-strip at 32.
    assert img.shape[:2] == (128 + 4 + 32, 256)


def test_auto_upscale_ignores_long_strips():
    img = render.render_pattern([np.zeros((1, 8, 8)), np.zeros(4096)], labels=False)
    # The 8x8 map aims at 256 pixels (32 per value), not at the 4096-pixel strip.
    assert img.shape[:2] == (256 + 4 + 8, 4096)


# -------------------------------------------------------------------------------- flags


def test_non_finite_values_are_hatched_and_do_not_set_the_range():
    values = np.array([[0.0, np.nan, 1.0], [np.inf, -np.inf, 0.5]])
    img = render.render_layer(values, upscale=8, separator=0)
    nan_tile = img[0:8, 8:16].reshape(-1, 3).tolist()
    assert {tuple(c) for c in nan_tile} == {tuple(BLACK), tuple(MAGENTA)}
    top, bottom = mpl_colour(VIRIDIS, 1.0), mpl_colour(VIRIDIS, 0.0)
    assert {tuple(c) for c in img[8:16, 0:8].reshape(-1, 3).tolist()} == {tuple(top), tuple(BLACK)}
    assert tuple(bottom) in {tuple(c) for c in img[8:16, 8:16].reshape(-1, 3).tolist()}
    # The finite values still span the colormap: range 0..1 over finite values only.
    assert cell(img, 0, 0) == bottom and cell(img, 0, 16) == top
    assert cell(img, 8, 16) == mpl_colour(VIRIDIS, 0.5)


def test_all_nan_layer_is_hatched():
    img = render.render_layer(np.full((2, 2), np.nan), upscale=4)
    assert {tuple(c) for c in img.reshape(-1, 3).tolist()} == {tuple(BLACK), tuple(MAGENTA)}


@pytest.mark.parametrize("shape", [(0,), (3, 0), (2, 0, 4)])
def test_empty_layers_render_a_cross_hatched_tile(shape):
    img = render.render_layer(np.zeros(shape), upscale=2)
    assert img.shape == (8, 8, 3)
    colours = {tuple(c) for c in img.reshape(-1, 3).tolist()}
    assert colours == {(160, 160, 160), tuple(WHITE)}


@pytest.mark.parametrize("values", [np.full((2, 3, 3), 0.25), np.array([7.0])])
def test_single_value_layers_are_hatched_over_the_centre_colour(values):
    img = render.render_layer(values, scale="layerscale", upscale=8)
    tile = img[:8, :8].reshape(-1, 3).tolist()
    # The centre of viridis is dark, so the stripes are white.
    assert {tuple(c) for c in tile} == {tuple(mpl_colour(VIRIDIS, 0.5)), tuple(WHITE)}
    # Under a centred scale a single nonzero value is not degenerate: it is the top colour.
    single = render.render_layer(np.array([7.0]), scale="layernorm", upscale=8)
    assert {tuple(c) for c in single.reshape(-1, 3).tolist()} == {tuple(mpl_colour(VIRIDIS, 1.0))}


def test_pattern_with_every_kind_of_trouble_renders():
    layers = [np.zeros((0,)), np.full((2, 2, 2), np.nan), np.array(3.0), np.full(4, 1.5), np.array([np.inf])]
    for scale in render.SCALES:
        img = render.render_pattern(layers, scale=scale)
        assert img.ndim == 3 and img.dtype == np.uint8
    img = render.render_side_by_side(layers, layers)
    assert img.dtype == np.uint8


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
    ),
    st.sampled_from(render.SCALES),
)
def test_any_values_render(values, scale):
    img = render.render_layer(values, scale=scale, upscale=2)
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


# ------------------------------------------------------------------------ whole patterns


class FakeActivations:
    def __init__(self, layers, names):
        self.layeractivations = [torch.as_tensor(v) for v in layers]
        self.layernames = names
        self.layerdescriptions = ["Input[1, 2, 2]"] + [torch.nn.ReLU() for _ in layers[1:]]


def test_render_pattern_accepts_activations_and_matches_render_layer():
    layers = [np.arange(4.0).reshape(1, 2, 2), np.linspace(-1, 1, 12).reshape(3, 2, 2)]
    acts = FakeActivations(layers, ["input", "relu"])
    img = render.render_pattern(acts, upscale=3, labels=False)
    first = render.render_layer(layers[0], upscale=3)
    second = render.render_layer(layers[1], upscale=3)
    np.testing.assert_array_equal(img[: first.shape[0], : first.shape[1]], first)
    y = first.shape[0] + 4
    np.testing.assert_array_equal(img[y: y + second.shape[0], : second.shape[1]], second)
    labelled = render.render_pattern(acts, upscale=3)
    assert labelled.shape[0] > img.shape[0]  # titles and colour bars above each layer


def test_render_side_by_side_places_activations_left_and_spectrum_right():
    acts = [np.array([[0.0, 1.0], [2.0, 3.0]])]
    spec = [np.array([[-1e40, 0.0], [1e-30, 1e40]])]
    img = render.render_side_by_side(acts, spec, ["conv"], upscale=1, separator=0, labels=False)
    assert img.shape == (2, 2 + 16 + 2, 3)
    assert cell(img, 0, 1) == mpl_colour(VIRIDIS, Normalize(0, 3)(1.0))
    assert cell(img, 0, 18) == mpl_colour(RDBU, 0.0) and cell(img, 0, 19) == mpl_colour(RDBU, 0.5)
    assert cell(img, 1, 19) == mpl_colour(RDBU, 1.0)


def test_side_by_side_separators_suit_each_colormap():
    two = np.stack([np.zeros((2, 2)), np.ones((2, 2))])  # two channels: a separator column at x=2
    img = render.render_side_by_side([two], [two], upscale=1, labels=False)
    assert cell(img, 0, 2) == WHITE  # viridis: white lines
    assert cell(img, 0, 5 + 16 + 2) == BLACK  # RdBu_r, light in the middle: black lines
    assert cell(img, 0, 5 + 8) == BLACK  # the canvas between the sides suits both maps


# ------------------------------------------------------------------------------- errors


def test_unknown_scale_names_the_argument_and_the_choices():
    with pytest.raises(ValueError, match=r"scale='linear'.*'layerscale'.*'globalsymlog'"):
        render.render_layer(np.zeros(3), scale="linear")
    with pytest.raises(ValueError, match="spectrum_scale='nope'"):
        render.render_side_by_side([np.zeros(2)], [np.zeros(2)], spectrum_scale="nope")


def test_unknown_cmap_names_the_argument_and_the_choices():
    with pytest.raises(ValueError, match=r"cmap='not-a-map'.*viridis"):
        render.render_layer(np.zeros(3), cmap="not-a-map")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"upscale": 0}, "upscale"),
        ({"upscale": 1.5}, "upscale"),
        ({"separator": -1}, "separator"),
        ({"vrange": (1.0, 0.0)}, "vrange"),
        ({"vrange": (0.0, np.inf)}, "vrange"),
        ({"vrange": 3.0}, "vrange"),
        ({"threshold": 0.0}, "threshold"),
    ],
)
def test_bad_options_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        render.render_layer(np.zeros(3), **kwargs)


def test_bad_values_are_rejected():
    with pytest.raises(TypeError, match="complex"):
        render.render_layer(np.zeros(3, dtype=complex))
    with pytest.raises(TypeError, match="values"):
        render.render_layer(["a", "b"])
    with pytest.raises(TypeError, match="layers"):
        render.render_pattern(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="2 names for 1 layers"):
        render.render_pattern([np.zeros(2)], ["a", "b"])
    with pytest.raises(ValueError, match=r"layer 0 \(a\) has shape"):
        render.render_side_by_side([np.zeros(2)], [np.zeros(3)], ["a"])


# -------------------------------------------------------------------------- energy plots


def _pyplot_figures():
    import matplotlib.pyplot as plt

    return plt.get_fignums()


def test_energy_bars():
    before = _pyplot_figures()
    fig, ax = render.energy_bars([2.0, -np.inf, 54.3, np.nan], ["input", "relu", "fc", "odd"])
    assert isinstance(fig, Figure) and _pyplot_figures() == before
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths == [2.0, 54.3]  # no bars for zero (-inf) or NaN energy
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["2.0", "energy 0", "54.3", "nan"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["input", "relu", "fc", "odd"]
    rgb = render.figure_to_rgb(fig)
    width, height = fig.get_size_inches() * fig.dpi
    assert rgb.shape == (round(height), round(width), 3) and rgb.dtype == np.uint8


def test_energy_over_epochs_lines_and_heatmap():
    e = np.array([[0.0, 10.0, -np.inf], [1.0, 12.0, 3.0]])
    fig, ax = render.energy_over_epochs(e, [0, 5], ["a", "b", "c"])
    assert len(ax.lines) == 3
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), [10.0, 12.0])
    assert np.isnan(ax.lines[2].get_ydata()[0])
    fig, ax = render.energy_over_epochs(e, [0, 5], ["a", "b", "c"], kind="heatmap")
    data = ax.images[0].get_array()
    np.testing.assert_array_equal(data.data[:2], e.T[:2])
    assert data.mask[2, 0] and not data.mask[2, 1]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "5"]
    assert render.figure_to_rgb(fig).shape[2] == 3


def test_energy_plots_draw_into_a_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    got_fig, got_ax = render.energy_bars([1.0], ["x"], ax=ax)
    assert got_fig is fig and got_ax is ax


def test_energy_plot_errors():
    with pytest.raises(ValueError, match="kind='bars'"):
        render.energy_over_epochs(np.zeros((1, 1)), [0], ["a"], kind="bars")
    with pytest.raises(ValueError, match="2 epochs for 1 rows"):
        render.energy_over_epochs(np.zeros((1, 1)), [0, 1], ["a"])
    with pytest.raises(ValueError, match="2-D"):
        render.energy_over_epochs(np.zeros(3), [0], ["a"])
    with pytest.raises(ValueError, match="1 names for 2 layers"):
        render.energy_bars([1.0, 2.0], ["a"])


def _says(image: np.ndarray, words: str, cmap: str = "RdBu_r") -> bool:
    """Whether ``words``, drawn as nsp.render draws them on that colormap's canvas, appear in ``image``."""
    line = text.text_line(words, colors.palette(cmap, cards.CARD_BACKGROUND), cards.CARD_FONT_PT)
    h, w = line.shape[:2]
    for y in range(image.shape[0] - h + 1):
        for x in range(image.shape[1] - w + 1):
            if np.array_equal(image[y : y + h, x : x + w], line):
                return True
    return False


def test_render_card_says_when_a_spectrum_is_exactly_zero():
    card = render.render_card(np.zeros((2, 2, 2)), title="04 flatten", scale="layersymlog", cmap="RdBu_r")
    assert _says(card, "note: all 8 finite values are exactly 0")
    assert not _says(card, "note: all 9 finite values are exactly 0")  # the search tells lines apart
    # A fixed range from another record does not hide it either.
    fixed = render.render_card(
        np.zeros(10), title="04 flatten", scale="layersymlog", cmap="RdBu_r", vrange=(-5.0, 5.0), threshold=1e-3
    )
    assert _says(fixed, "note: all 10 finite values are exactly 0")


def test_render_card_resolves_values_one_colour_step_cannot():
    # The digits network's output layer: ten coefficients near -7.1e4 that differ by ~1e-4 relative.
    values = -7.1e4 * (1 + 1e-4 * np.linspace(-1, 1, 10))
    plain = render.render_layer(values, scale="layersymlog", cmap="RdBu_r")
    assert len(np.unique(plain.reshape(-1, 3), axis=0)) == 1  # what the old heatmaps showed
    card = render.render_card(values, title="09 fc", scale="layersymlog", cmap="RdBu_r", min_width=320)
    # A row through the heatmap, inside its 1-pixel frame.
    heatmap_row = card[4 + text.line_metrics(cards.CARD_FONT_PT)[1] + 3 + 1 + 10]
    colours = {tuple(c) for c in heatmap_row[5:325]}
    assert len(colours) == 10  # every coefficient its own colour
    assert _says(card, "note: all values lie within -71000 ± 7.1, less than one colour step apart:")
    lut = matplotlib.colormaps["RdBu_r"](np.arange(256), bytes=True)[:, :3]
    index = [int(np.argmin(np.abs(lut.astype(int) - np.array(c)).sum(axis=1))) for c in heatmap_row[5:325:32]]
    # The values fall left to right: from the top of the colormap to its bottom.
    assert index == sorted(index, reverse=True) and index[0] > 225 and index[-1] < 30


def test_render_card_counts_values_beyond_a_fixed_range_and_is_readable_size():
    card = render.render_card(np.array([[0.0, 1.0], [2.0, 3.0]]), title="x", vrange=(0.0, 2.0))
    assert _says(card, "note: 1 of 4 values beyond the colour range (drawn in its end colours)", "viridis")
    assert card.shape[1] >= 320
