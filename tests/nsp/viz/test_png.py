"""nsp.viz.png.encode_png: Pillow (an independent decoder) reads back exactly the pixels given."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from nsp.viz.png import PalettedImage, encode_png


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (3, 4, 1), (1, 9, 3), (17, 1, 3), (6, 5, 4), (40, 33, 3)])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_pillow_decodes_exactly_the_pixels(shape, level):
    image = np.random.default_rng(sum(shape) + level).integers(0, 256, shape, dtype=np.uint8)
    expected = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    assert np.array_equal(_decoded(encode_png(image, level)), expected)


def test_repeated_rows_and_wraparound_differences_survive():
    # Up-filter differences wrap modulo 256 (0 - 255 and 255 - 0): the decoder must undo them exactly.
    image = np.zeros((8, 6, 3), dtype=np.uint8)
    image[1::2] = 255
    image[4:] = np.repeat(np.arange(6, dtype=np.uint8)[None, :, None] * 51, 4, axis=0).repeat(3, axis=2)
    assert np.array_equal(_decoded(encode_png(image)), image)


def test_a_non_contiguous_view_is_encoded_as_its_values():
    base = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    view = base[::2, ::-3]
    assert np.array_equal(_decoded(encode_png(view)), view)


@pytest.mark.parametrize("bad, error, words", [
    (np.zeros((2, 2, 3), dtype=np.float32), TypeError, "uint8"),
    ([[0, 1]], TypeError, "uint8 numpy array"),
    (np.zeros((2, 2, 2), dtype=np.uint8), ValueError, "shape [2, 2, 2]"),
    (np.zeros((0, 2, 3), dtype=np.uint8), ValueError, "H, W >= 1"),
    (np.zeros(4, dtype=np.uint8), ValueError, "shape [4]"),
])
def test_bad_images_are_refused_by_name(bad, error, words):
    with pytest.raises(error, match="encode_png") as info:
        encode_png(bad)
    assert words in str(info.value)


def test_bad_level_is_refused():
    with pytest.raises(ValueError, match="level=10"):
        encode_png(np.zeros((1, 1, 3), dtype=np.uint8), 10)


@pytest.mark.parametrize("shape, colours", [((1, 1), 1), ((5, 7), 3), ((40, 33), 256), ((9, 1), 17)])
def test_a_paletted_image_decodes_to_its_rgb_pixels(shape, colours):
    rng = np.random.default_rng(colours)
    table = rng.integers(0, 256, (colours, 3), dtype=np.uint8)
    image = PalettedImage(rng.integers(0, colours, shape, dtype=np.uint8), table)
    data = encode_png(image)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == "P"
    # The RGB pixels, looked up by hand from the table: not by PalettedImage's own conversion.
    expected = np.array([[table[i] for i in row] for row in image.indices.tolist()], dtype=np.uint8)
    assert np.array_equal(np.asarray(decoded.convert("RGB")), expected)
    assert np.array_equal(np.asarray(image), expected) and image.shape == (*shape, 3)


@pytest.mark.parametrize("indices, colours, error, words", [
    (np.zeros((2, 2), dtype=np.int64), np.zeros((1, 3), dtype=np.uint8), TypeError, "indices"),
    (np.zeros((2, 2), dtype=np.uint8), np.zeros((1, 4), dtype=np.uint8), ValueError, "(K, 3)"),
    (np.zeros((2, 2), dtype=np.uint8), np.zeros((0, 3), dtype=np.uint8), ValueError, "1 <= K <= 256"),
    (np.full((2, 2), 3, dtype=np.uint8), np.zeros((3, 3), dtype=np.uint8), ValueError, "index 3 has no colour"),
])
def test_bad_paletted_images_are_refused_by_name(indices, colours, error, words):
    with pytest.raises(error, match="PalettedImage") as info:
        PalettedImage(indices, colours)
    assert words in str(info.value)
