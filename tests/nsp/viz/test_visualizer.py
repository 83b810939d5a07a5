"""nsp.visualizer.Visualizer: the seed's PDF, per-layer PNGs, titles, colour bars, scales,
1-D/2-D/3-D layers, argument errors, and no figures left behind."""

import gc
import re

import matplotlib
import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

import nsp
import zoo
from nsp.viz import render, scales
from nsp.viz.visualizer import Visualizer, _page_upscale, _pages


class FakeActivations:
    """The duck type the Visualizer needs: names, descriptions, tensors without batch dim."""

    def __init__(self, layers, names=None, descriptions=None):
        self.layeractivations = [torch.as_tensor(np.asarray(v)) for v in layers]
        self.layernames = names or [f"l{i}" for i in range(len(layers))]
        self.layerdescriptions = descriptions or ["Input[1, 5]"] + [nn.Identity() for _ in layers[1:]]


SHAPES = FakeActivations(
    [np.linspace(-1, 2, 5), np.arange(12.0).reshape(3, 4), np.linspace(-3, 1, 18).reshape(2, 3, 3)],
    ["strip", "map", "grid"],
    ["Input[1, 5]", nn.Linear(5, 12), nn.Conv2d(1, 2, 2)],
)


def pdf_page_count(path):
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", path.read_bytes()))


def live_figures():
    gc.collect()
    return sum(type(o) is Figure for o in gc.get_objects())  # type(): isinstance trips lazy modules


def test_visualize_pattern_writes_one_pdf_page_per_layer(tmp_path):
    path = tmp_path / "sub" / "activations.pdf"
    assert Visualizer.visualize_pattern(SHAPES, str(path), scale="layernorm", cmap_style="RdBu_r") is None
    assert path.read_bytes().startswith(b"%PDF") and pdf_page_count(path) == 3


def test_seed_readme_usage(tmp_path):
    net, x, _ = zoo.load_npz_network("readme")
    activations = nsp.Activations(net, x)
    spectrum = nsp.NNGraph(activations).transform(activations)
    for pattern, name in ((activations, "activations.pdf"), (spectrum, "spectrum.pdf")):
        Visualizer.visualize_pattern(pattern, pdf_filepath=str(tmp_path / name), scale="layernorm",
                                     cmap_style="viridis")
        assert pdf_page_count(tmp_path / name) == 4


def test_no_figures_are_left_behind(tmp_path):
    import matplotlib.pyplot as plt

    Visualizer.visualize_pattern(SHAPES, tmp_path / "warm.pdf")
    before, pyplot_before = live_figures(), plt.get_fignums()
    for i in range(2):
        Visualizer.visualize_pattern(SHAPES, tmp_path / f"a{i}.pdf")
        Visualizer.visualize_pattern_png(SHAPES, tmp_path / f"png{i}")
    assert live_figures() == before and plt.get_fignums() == pyplot_before


def test_png_output_per_layer(tmp_path):
    files = Visualizer.visualize_pattern_png(SHAPES, tmp_path / "pngs", scale="globalscale")
    assert [f.name for f in files] == ["00_strip.png", "01_map.png", "02_grid.png"]
    for f in files:
        image = mpimg.imread(f)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_png_names_are_safe(tmp_path):
    acts = FakeActivations([np.zeros(2), np.zeros(2)], ["input", "../weird name/x"])
    files = Visualizer.visualize_pattern_png(acts, tmp_path)
    assert [f.name for f in files] == ["00_input.png", "01_weird_name_x.png"]
    assert all(f.parent == tmp_path for f in files)


@pytest.mark.parametrize("scale", render.SCALES)
def test_pages_show_the_renderer_image_with_title_and_colour_bar(scale):
    arrays = [np.asarray(v, dtype=np.float64) for v in SHAPES.layeractivations]
    stats = [scales.layer_stats(v, scale.endswith("symlog")) for v in arrays]
    norms = scales.pattern_norms(stats, scale, None)
    for (index, name, fig), v, norm in zip(_pages(SHAPES, scale, "viridis", "test"), arrays, norms):
        image_axes, bar_axes = fig.axes  # the image and its colour bar
        shown = image_axes.images[0].get_array()
        vrange = None if scale.startswith("layer") else (norm.data_value(norm.lo), norm.data_value(norm.hi))
        expected = render.render_layer(v, scale=scale, vrange=vrange, threshold=norm.threshold,
                                       upscale=_page_upscale(v))
        np.testing.assert_array_equal(shown[..., :3], expected)
        title = fig._suptitle.get_text()
        assert f"Layer {index}: {name}" in title and str(tuple(v.shape)) in title and scale in title
        assert ["Input[1, 5]", "Linear(in_features=5", "Conv2d(1, 2"][index] in title
        lo, hi = bar_axes.get_xlim()
        assert (lo, hi) == pytest.approx((norm.lo, norm.hi))


def test_global_scales_give_every_page_the_same_colour_bar():
    limits = [fig.axes[1].get_xlim() for _, _, fig in _pages(SHAPES, "globalnorm", "viridis", "test")]
    assert limits == [pytest.approx((-11.0, 11.0))] * 3
    limits = [fig.axes[1].get_xlim() for _, _, fig in _pages(SHAPES, "layerscale", "viridis", "test")]
    assert limits == [pytest.approx((-1.0, 2.0)), pytest.approx((0.0, 11.0)), pytest.approx((-3.0, 1.0))]


def test_symlog_colour_bar_is_labelled_in_data_units():
    acts = FakeActivations([np.array([1e-3, -1e40, 1e40])])
    (_, _, fig), = _pages(acts, "layersymlog", "RdBu_r", "test")
    bar = fig.axes[1]
    fig.canvas.draw()
    labels = [t.get_text() for t in bar.get_xticklabels()]
    assert "0" in labels and "1e+40" in labels and "-1e+40" in labels
    assert "t = 0.001" in bar.get_xlabel()


def test_troubled_layers_get_pages_that_say_what_happened(tmp_path):
    acts = FakeActivations([np.zeros(0), np.full((2, 2), 5.0), np.array([np.nan, 1.0, np.inf])])
    titles = [fig._suptitle.get_text() for _, _, fig in _pages(acts, "layerscale", "viridis", "test")]
    assert "empty layer" in titles[0]
    assert "every value 5 (hatched)" in titles[1]
    assert "1 NaN, 1 +inf (hatched)" in titles[2]
    Visualizer.visualize_pattern(acts, tmp_path / "trouble.pdf")
    assert pdf_page_count(tmp_path / "trouble.pdf") == 3


def test_unknown_scale_and_cmap_style_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"scale='standard'.*'layerscale', 'layernorm', 'globalscale'"):
        Visualizer.visualize_pattern(SHAPES, tmp_path / "x.pdf", scale="standard")
    with pytest.raises(ValueError, match=r"cmap_style='virdis'.*viridis"):
        Visualizer.visualize_pattern_png(SHAPES, tmp_path, cmap_style="virdis")
    assert not (tmp_path / "x.pdf").exists()


def test_non_activations_are_rejected(tmp_path):
    with pytest.raises(TypeError, match="nsp.Activations"):
        Visualizer.visualize_pattern([np.zeros(3)], tmp_path / "x.pdf")


def test_colormap_names_resolve_like_matplotlib():
    (_, _, fig), = _pages(FakeActivations([np.arange(3.0)]), "layerscale", "magma", "test")
    assert fig.axes[1]._colorbar.cmap.name == matplotlib.colormaps["magma"].name
