"""Overlay pictures: the colours say what the attribution says; PNG and PDF files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nsp.attribution.plot import attribution_maps, grid_figure, overlay_figure, overlay_rgb, save_figure

IMAGE = np.zeros((1, 4, 4))


def _attribution() -> np.ndarray:
    a = np.zeros((2, 4, 4))
    a[0, 0, 0], a[1, 0, 0] = 1.0, 1.0  # positive, summed over channels: +2
    a[0, 3, 3] = -1.0  # negative
    return a


def test_maps_per_mode():
    a = _attribution()
    (kind, signed), = attribution_maps(a, "signed")
    assert kind == "signed" and signed[0, 0] == 2 and signed[3, 3] == -1 and signed.sum() == 1
    (_, absolute), = attribution_maps(a, "absolute")
    assert absolute[0, 0] == 2 and absolute[3, 3] == 1
    (k1, pos), (k2, neg) = attribution_maps(a, "posneg")
    assert (k1, k2) == ("positive", "negative")
    assert pos[0, 0] == 2 and pos[3, 3] == 0 and neg[3, 3] == 1 and neg[0, 0] == 0
    (_, big), = attribution_maps(np.arange(4.0).reshape(1, 2, 2), "signed", (4, 4))
    assert big.shape == (4, 4) and big[3, 3] == 3 and big[0, 1] == 0


def test_signed_overlay_is_red_where_positive_blue_where_negative_and_the_image_where_zero():
    rgb = overlay_rgb(IMAGE, _attribution(), mode="signed", upscale=1, colourbar=False).astype(int)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.int64
    r, g, b = rgb[0, 0]
    assert r > g + 40 and r > b + 40
    r, g, b = rgb[3, 3]
    assert b > r + 40
    assert (rgb[1, 1] == rgb[1, 1, 0]).all()  # grey: no attribution there


def test_fixed_scale_keeps_colours_comparable():
    weak = overlay_rgb(IMAGE, _attribution() / 10, upscale=1, colourbar=False)
    strong = overlay_rgb(IMAGE, _attribution(), upscale=1, colourbar=False)
    assert np.array_equal(weak, strong)  # each scaled to its own maximum
    weak_fixed = overlay_rgb(IMAGE, _attribution() / 10, vmax=2.0, upscale=1, colourbar=False)
    strong_fixed = overlay_rgb(IMAGE, _attribution(), vmax=2.0, upscale=1, colourbar=False)
    assert np.array_equal(strong_fixed, strong)
    grey = strong[1, 1].astype(int)
    distance = lambda rgb: int(np.abs(rgb[0, 0].astype(int) - grey).sum())  # noqa: E731
    assert 0 < distance(weak_fixed) < distance(strong_fixed) / 2


def test_posneg_is_two_panels_with_colourbars_and_gradcam_maps_are_enlarged():
    rgb = overlay_rgb(torch.rand(3, 8, 8), torch.randn(3, 8, 8), mode="posneg", upscale=2)
    assert rgb.shape == (16, 2 * (16 + 3 + 10) + 8, 3)
    assert overlay_rgb(torch.rand(1, 8, 8), torch.rand(1, 1, 2, 2)[0], upscale=1, colourbar=False).shape == (8, 8, 3)
    with pytest.raises(ValueError, match=r"unknown mode='both'"):
        overlay_rgb(IMAGE, _attribution(), mode="both")
    with pytest.raises(ValueError, match=r"vmax to be a finite number > 0"):
        overlay_rgb(IMAGE, _attribution(), vmax=0)


@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_grid_of_methods_by_probes_saves_as_png_and_pdf(tmp_path, suffix):
    images = torch.rand(3, 1, 8, 8)
    attributions = {"saliency": torch.randn(3, 1, 8, 8), "gradcam": torch.rand(3, 1, 2, 2)}
    fig = grid_figure(images, attributions, mode="posneg", probe_names=["a", "b", "c"])
    assert len(fig.axes) == 3 * (1 + 4) + 3 * 4  # panels and their colourbars
    path = save_figure(fig, tmp_path / f"grid{suffix}")
    head = path.read_bytes()[:8]
    assert head.startswith(b"\x89PNG" if suffix == ".png" else b"%PDF")
    save_figure(overlay_figure(images[0], attributions["saliency"][0], vmax=1.0, title="saliency"),
                tmp_path / f"one{suffix}")
    with pytest.raises(ValueError, match=r"expected a .png or .pdf path"):
        save_figure(fig, tmp_path / "grid.jpg")


def test_overlay_card_shows_the_input_each_map_and_colour_bars_with_their_values():
    from image_text import find, has_text

    from nsp.attribution.plot import overlay_card

    rng = np.random.default_rng(3)
    image, a = rng.random((1, 8, 8)), rng.normal(size=(2, 8, 8))
    title = ["saliency · epoch 3 · step 120", "probe 1 · label 4 · predicted 4 (p 0.912)"]
    card = overlay_card(image, a, mode="posneg", title=title)
    # Large enough for TensorBoard's card: three pictures of 8 x 20 = 160 pixels.
    assert card.shape[1] >= 3 * 160 and card.dtype == np.uint8
    for line in title + ["input", "positive", "negative", "left: what raises the explained score; right: what lowers it"]:
        assert has_text(card, line), line
    # Each bar runs from 0 to its map's largest value (the channel sum, computed here).
    for top in (np.clip(a, 0, None).sum(0).max(), np.clip(-a, 0, None).sum(0).max()):
        assert has_text(card, f"{top:.3g}")
    # The input, grey stretched to [0, 1] and enlarged 20x, is drawn as is.
    grey = (image[0] - image.min()) / (image.max() - image.min())
    expected = np.repeat(np.rint(np.kron(grey, np.ones((20, 20))) * 255).astype(np.uint8)[..., None], 3, axis=2)
    assert find(card, expected) is not None
    signed = overlay_card(image, a, vmax=5.0)
    assert has_text(signed, "-5") and has_text(signed, "5") and has_text(signed, "signed")
    with pytest.raises(ValueError, match="overlay_card: expected side"):
        overlay_card(image, a, side=0)


def test_grid_figure_names_rows_columns_and_the_figure():
    a = torch.from_numpy(_attribution()[None])
    figure = grid_figure([IMAGE], {"saliency": a, "occlusion": a}, probe_names=["probe 0: label 3, predicted 3"],
                         title="after 4 epochs")
    axes = figure.axes
    assert figure.get_suptitle() == "after 4 epochs"
    assert axes[0].get_ylabel() == "probe 0: label 3, predicted 3"
    assert [ax.get_title() for ax in axes if ax.get_title()] == ["input", "saliency", "occlusion"]
