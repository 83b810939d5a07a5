"""Finding a line of label text in a rendered image, by its exact pixels.

Labels are drawn by `nsp.viz.text.text_line` in black on white; the same call here draws
the line a test expects, and `has_text` looks for exactly those pixels in the image. A
label that is missing, misspelled, cut short or drawn in another size is not found.
"""

from __future__ import annotations

import numpy as np

from nsp.viz.text import LABEL_PT, label_palette, text_line


def find(image: np.ndarray, part: np.ndarray) -> tuple[int, int] | None:
    """The top-left ``(y, x)`` where ``part`` occurs in ``image`` pixel for pixel, or None."""
    image, part = np.asarray(image), np.asarray(part)
    h, w = part.shape[:2]
    if h > image.shape[0] or w > image.shape[1] or h == 0 or w == 0:
        return None
    # Anchor on the part's darkest pixel (ink), which is rare in the image; then compare whole.
    dy, dx = np.unravel_index(int(np.argmin(part.astype(np.int32).sum(axis=2))), (h, w))
    ys, xs = np.nonzero(np.all(image == part[dy, dx], axis=2))
    for y, x in zip(ys - dy, xs - dx):
        if 0 <= y <= image.shape[0] - h and 0 <= x <= image.shape[1] - w and np.array_equal(image[y: y + h, x: x + w], part):
            return int(y), int(x)
    return None


def has_text(image: np.ndarray, text: str, points: float = LABEL_PT) -> bool:
    """Whether ``text`` is written in ``image`` as one line of black-on-white label text."""
    return find(image, text_line(text, label_palette(), points)) is not None
