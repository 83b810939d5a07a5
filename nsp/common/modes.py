"""Running a model in eval mode for an analysis, and leaving it as it was.

Every tool evaluates the network it is given as deployed: BatchNorm with its running
statistics (and without updating them), dropout off. A model handed over in train mode,
as Lightning's hooks and a training loop do, is switched to eval mode for the analysis
only; each submodule's own flag is restored after, also when the analysis raises, so a
model whose submodules were deliberately in mixed modes gets exactly those modes back.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; every submodule's own mode is restored after.

    Parameters
    ----------
    model : torch.nn.Module

    Yields
    ------
    torch.nn.Module
        ``model`` itself.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()).train()
    >>> with eval_mode(net):
    ...     net.training
    False
    >>> net.training
    True
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
