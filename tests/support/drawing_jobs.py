"""Drawings registered for the drawing helper's tests: the helper imports this module by name."""

import os

import numpy as np

from nsp_lightning.probe.sinks.drawer import drawable


@drawable
def process_id() -> np.ndarray:
    """The id of the process that draws."""
    return np.array(os.getpid())


@drawable
def pid_image(width: int) -> np.ndarray:
    """A 1 × ``width`` RGB image whose first pixel holds the drawing process's id (three bytes of it)."""
    image = np.zeros((1, width, 3), np.uint8)
    image[0, 0] = [(os.getpid() >> shift) & 0xFF for shift in (16, 8, 0)]
    return image


def pid_of(image: np.ndarray) -> int:
    """The process id :func:`pid_image` wrote into ``image``."""
    r, g, b = (int(v) for v in image[0, 0])
    return (r << 16) | (g << 8) | b


@drawable
def float_image() -> np.ndarray:
    """An image of floats, which no logger's event file takes as it is."""
    return np.full((2, 2), 0.5)
