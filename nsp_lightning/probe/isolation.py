"""Probing isolated from training: eval mode, no grad, no autocast, random state saved and restored.

Whatever an analysis does while the callback probes, training goes on as if nothing had
happened: every module's train/eval flag, the gradients, and the random streams of torch
(CPU and the model's device), numpy and ``random`` are as before.
"""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch
from torch import nn

from nsp_lightning.probe.inputs import module_device

__all__ = ["nonfinite_parameters", "probing"]


@contextlib.contextmanager
def probing(model: nn.Module) -> Iterator[None]:
    """Eval mode, no grad, no autocast, RNG saved; every module's train flag and the RNG restored afterwards.

    Parameters
    ----------
    model : torch.nn.Module
        The model probed; its device says which accelerator's random state is saved.
    """
    modes = {name: module.training for name, module in model.named_modules()}
    device = module_device(model)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    accelerator = [] if device.type == "cpu" else [device]
    try:
        with torch.random.fork_rng(devices=accelerator, device_type=device.type if accelerator else "cuda"):
            model.eval()
            with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
                yield
    finally:
        for name, module in model.named_modules():
            if name in modes:
                module.training = modes[name]
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the floating-point (or complex) parameters of ``model`` that hold a nan or an infinity."""
    return [
        name for name, p in model.named_parameters()
        if (p.is_floating_point() or p.is_complex()) and not bool(torch.isfinite(p.detach()).all())
    ]
