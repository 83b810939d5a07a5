"""PNG encoding of RGB and RGBA arrays, fast and off the GIL.

Pillow encodes a PNG with adaptive filtering (every filter tried on every row) and
TensorBoard's ``add_image`` first converts each image to float32 and back; for the cards a
probe callback logs at every record (about 100 images of 0.2 megapixels) that was most of
a record's cost. `encode_png` filters every row with PNG's *Up* filter (the row minus the
row above: the rows of an enlarged heatmap repeat, so they become zeros) in numpy, and
deflates with zlib at a low level; both release the GIL on large arrays, so that a writer
thread encoding images leaves the training thread free. The pixels are exactly those given
(PNG is lossless); the files are a little larger than Pillow's at level 6.

A `PalettedImage` (a picture of at most 256 colours as one byte a pixel and its colour
table, as :func:`nsp.render.render_card_paletted` draws the cards) is encoded as a palette
PNG: a third of an RGB image's bytes to filter and deflate, and about a third the file.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Any

import numpy as np

__all__ = ["PNG_LEVEL", "PalettedImage", "encode_png"]

# zlib's level: 1 is several times faster than Pillow's default 6, for files about 15 % larger.
PNG_LEVEL = 1
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE = {1: 0, 3: 2, 4: 6}  # grey, RGB, RGBA
_NONE, _UP = 0, 2  # PNG's row filters
_PALETTE = 3  # PNG's colour type of an image of palette indices


@dataclasses.dataclass(frozen=True)
class PalettedImage:
    """An RGB picture of at most 256 colours: each pixel's index into a table of colours.

    ``numpy.asarray`` gives its RGB pixels, so it stands wherever an RGB image does.

    Parameters
    ----------
    indices : numpy.ndarray
        ``uint8``, shape ``(H, W)``, each below ``len(colours)``.
    colours : numpy.ndarray
        ``uint8``, shape ``(K, 3)`` with ``1 <= K <= 256``: the RGB colour of each index.

    Raises
    ------
    TypeError, ValueError
        If either is not of these types and shapes, or an index has no colour.
    """

    indices: np.ndarray
    colours: np.ndarray

    def __post_init__(self) -> None:
        where = "nsp.viz.png.PalettedImage"
        for name, value, ndim in (("indices", self.indices, 2), ("colours", self.colours, 2)):
            if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != ndim:
                raise TypeError(f"{where}: expected {name} a 2-D uint8 numpy array, got"
                                f" {getattr(value, 'dtype', type(value).__name__)} {list(np.shape(value))}")
        if not 1 <= self.colours.shape[0] <= 256 or self.colours.shape[1] != 3:
            raise ValueError(f"{where}: expected colours of shape (K, 3) with 1 <= K <= 256, got"
                             f" {list(self.colours.shape)}")
        if self.indices.size and int(self.indices.max()) >= self.colours.shape[0]:
            raise ValueError(f"{where}: index {int(self.indices.max())} has no colour (only"
                             f" {self.colours.shape[0]} colours)")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)``: the shape of its RGB pixels."""
        return (*self.indices.shape, 3)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        rgb = self.colours[self.indices]
        return rgb if dtype is None else rgb.astype(dtype)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray | PalettedImage, level: int = PNG_LEVEL) -> bytes:
    """``image`` as the bytes of a PNG file, 8 bits per channel (or per palette index).

    Parameters
    ----------
    image : numpy.ndarray or PalettedImage
        ``uint8``, shape ``(H, W)`` (grey), ``(H, W, 1)``, ``(H, W, 3)`` (RGB) or
        ``(H, W, 4)`` (RGBA), with ``H, W >= 1``; or a `PalettedImage` (a palette PNG).
    level : int, default `PNG_LEVEL`
        zlib's compression level, 0 (none) to 9.

    Returns
    -------
    bytes
        A PNG file that decodes to exactly ``image`` (a `PalettedImage` to its indices and
        palette, i.e. to exactly its RGB pixels).

    Raises
    ------
    TypeError
        If ``image`` is not a uint8 numpy array.
    ValueError
        If its shape is none of the above, or ``level`` is not an int from 0 to 9.

    Examples
    --------
    >>> encode_png(np.zeros((2, 3, 3), dtype=np.uint8))[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    colours = None
    if isinstance(image, PalettedImage):
        image, colours = image.indices, image.colours
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError(f"nsp.viz.png.encode_png: expected a uint8 numpy array, got {type(image).__name__}"
                        f"{' of ' + str(image.dtype) if isinstance(image, np.ndarray) else ''}")
    array = image[:, :, None] if image.ndim == 2 else image
    if array.ndim != 3 or array.shape[2] not in _COLOUR_TYPE or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"nsp.viz.png.encode_png: expected an image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) with"
                         f" H, W >= 1, got shape {list(image.shape)}")
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 9:
        raise ValueError(f"nsp.viz.png.encode_png(level={level!r}): expected an int from 0 to 9")
    height, width, channels = array.shape
    rows = np.ascontiguousarray(array).reshape(height, width * channels)
    raw = np.empty((height, width * channels + 1), dtype=np.uint8)
    if colours is not None:
        # Palette indices are not intensities: a row's difference to the one above compresses no better
        # (measured on the spectrum's cards: 10 % larger, and a pass more), so each row is as it is.
        raw[:, 0] = _NONE
        raw[:, 1:] = rows
    else:
        # Each scanline is its filter type, then the row minus the row above, modulo 256.
        raw[:, 0] = _UP
        raw[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])
    kind = _COLOUR_TYPE[channels] if colours is None else _PALETTE
    header = struct.pack(">IIBBBBB", width, height, 8, kind, 0, 0, 0)
    table = [] if colours is None else [_chunk(b"PLTE", np.ascontiguousarray(colours).tobytes())]
    return b"".join([_SIGNATURE, _chunk(b"IHDR", header), *table, _chunk(b"IDAT", zlib.compress(raw.data, level)),
                     _chunk(b"IEND", b"")])
