"""The spectrum's change chart for TensorBoard, drawn with Pillow (issue 21, #7): matplotlib's scale, every layer's colour, its legend."""

from __future__ import annotations

import matplotlib
import matplotlib.scale
import numpy as np
from image_text import find

from nsp.viz.text import label_palette, text_line
from nsp_lightning.analyses.spectrum import chart
from nsp_lightning.analyses.spectrum.drawing import number_text

NAMES = ["input", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc"]


def history(epochs: int, layers: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for e in range(epochs):
        change = {m: np.zeros((2, layers)) for m in ("relative", "decades", "log10_energy", "sign_flips")}
        if e:
            change["relative"][:] = 10.0 ** rng.uniform(-2, 1, (2, layers))
            change["decades"][:] = rng.uniform(0, 1.5, (2, layers))
        out.append((e, change))
    return out


def test_the_relative_scale_is_matplotlibs_symlog():
    y = np.array([0.0, 1e-4, 1e-3, 2e-3, 0.1, 1.0, 37.0, -0.5])
    reference = matplotlib.scale.SymmetricalLogTransform(10, chart._LINTHRESH, 1.0).transform(y) / chart._LINTHRESH
    np.testing.assert_allclose(chart._symlog(y), reference, rtol=1e-12, atol=1e-12)


def test_every_layer_has_its_colour_and_a_legend_line_with_its_last_values():
    past = history(5, len(NAMES))
    image = chart.change_chart(past, NAMES, 1, list(range(len(NAMES))))
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    colours = matplotlib.colormaps["tab10"].colors
    for l, name in enumerate(NAMES):
        colour = np.array([round(255 * c) for c in colours[l]], dtype=np.uint8)
        # Its line and markers in both panels and its legend sample.
        assert np.count_nonzero(np.all(image == colour, axis=2)) > 100, name
    last = past[-1][1]
    line = f"{4:02d} {NAMES[4]}: {number_text(last['relative'][1, 4])} | {number_text(last['decades'][1, 4])}"
    assert find(image, text_line(line, label_palette(), chart._LABEL_PT)) is not None


def test_a_long_legend_widens_the_chart_and_non_finite_values_leave_gaps():
    past = history(3, 2)
    past[1][1]["decades"][0, 1] = np.nan
    short = chart.change_chart(past, ["a", "b"], 0, [0, 1])
    long = chart.change_chart(past, ["a", "a_rather_long_layer_name.with.parts"], 0, [0, 1])
    assert long.shape[1] > short.shape[1] and long.shape[0] == short.shape[0]
    only = chart.change_chart(history(1, 2), ["a", "b"], 0, [0, 1])  # the baseline alone: every value 0
    assert only.shape == short.shape
