"""Drawings registered for the drawing helper's tests: the helper imports this module by name."""

import os

import numpy as np

from nsp_lightning.probe.sinks.drawer import drawable


@drawable
def process_id() -> np.ndarray:
    """The id of the process that draws."""
    return np.array(os.getpid())
