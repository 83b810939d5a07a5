"""The probe batch: taken from what the user passed, and put on the model's device and dtype.

:class:`~nsp_lightning.ProbeCallback` accepts a tensor ``(P, *input_shape)``, a batch whose
first item is one (``(x, y)``: ``y`` gives the probes' labels), a DataLoader (its first
batch) or a LightningDataModule (the first batch of its validation or training loader).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

import lightning.pytorch as pl
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

__all__ = ["MANY_PROBES", "datamodule_probe", "module_device", "on_model", "probe_batch"]

# More probe inputs than this is usually a whole batch passed by mistake.
MANY_PROBES = 16


def probe_batch(probe: Any, who: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The probe tensor, and the labels where ``probe`` is a batch ``(x, y)`` with one label per input.

    Parameters
    ----------
    probe : torch.Tensor, tuple, list or torch.utils.data.DataLoader
        A tensor ``(P, *input_shape)``, a batch whose first item is one, or a DataLoader
        (its first batch is taken).
    who : str
        The callback, for the messages.

    Returns
    -------
    probes : torch.Tensor
        The probe inputs, detached.
    labels : torch.Tensor or None
        One label per probe, on the CPU, where the batch has them.

    Raises
    ------
    TypeError
        If ``probe`` is none of these, or is complex.
    ValueError
        If it is empty, has fewer than 2 dimensions, or the DataLoader yields nothing.
    """
    source = probe
    if isinstance(probe, DataLoader):
        try:
            probe = next(iter(probe))
        except StopIteration:
            raise ValueError(f"{who}(probe=<DataLoader>): the DataLoader yields no batch") from None
    x = _probe_tensor(probe, who, source)
    labels = None
    if isinstance(probe, (tuple, list)) and len(probe) > 1 and isinstance(probe[1], torch.Tensor):
        if probe[1].shape == (len(x),):
            labels = probe[1].detach().cpu()
    if len(x) > MANY_PROBES:
        rank_zero_warn(
            f"{who}(probe): the probe holds {len(x)} inputs, and every record analyses, stores and logs each of"
            f" them (a spectrum logs 2 images per layer per input). A whole batch is rarely meant: pass a few"
            f" inputs, e.g. `x[:4]`."
        )
    return x, labels


def _probe_tensor(probe: Any, who: str, source: Any) -> torch.Tensor:
    if isinstance(probe, (tuple, list)):
        if not probe:
            raise ValueError(f"{who}(probe): the batch is an empty {type(probe).__name__}")
        probe = probe[0]
    if not isinstance(probe, torch.Tensor):
        raise TypeError(
            f"{who}(probe): expected a tensor of shape (P, *input_shape), a batch whose first item is one,"
            f" a DataLoader or a LightningDataModule, got {type(source).__name__}"
            + (f" holding {type(probe).__name__}" if probe is not source else "")
        )
    if probe.dim() < 2:
        raise ValueError(
            f"{who}(probe): expected a tensor of shape (P, *input_shape), got shape {list(probe.shape)};"
            " the first dimension indexes the probe inputs (one input is x[None])"
        )
    if probe.numel() == 0:
        raise ValueError(f"{who}(probe): the probe is empty (shape {list(probe.shape)})")
    if probe.device.type == "meta":
        raise ValueError(f"{who}(probe): the probe is on the meta device, which holds shapes but no values; "
                         "pass real inputs (the callback moves them to the model's device)")
    if probe.is_complex():
        raise TypeError(
            f"{who}(probe): the probe is complex ({probe.dtype}); analyses record real activations and would drop"
            " the imaginary part. Pass real inputs, e.g. torch.view_as_real(x)"
        )
    return probe.detach()


def datamodule_probe(datamodule: "pl.LightningDataModule", who: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first batch of ``datamodule``'s ``val_dataloader()`` (``train_dataloader()`` if it has none), as :func:`probe_batch`.

    Raises
    ------
    ValueError
        If no batch can be taken (the DataModule is not set up, or its loader fails).
    """
    method = "val_dataloader" if is_overridden("val_dataloader", datamodule) else "train_dataloader"
    try:
        loader = getattr(datamodule, method)()
        batch = next(iter(loader))
    except Exception as err:
        raise ValueError(
            f"{who}(probe=<{type(datamodule).__name__}>): could not take a batch from its {method}()"
            f" ({type(err).__name__}: {err}); pass the DataModule given to trainer.fit, or a tensor"
        ) from err
    return probe_batch(batch, who)


def module_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model that has none."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _probe_dtype(model: nn.Module, probe: torch.Tensor) -> torch.dtype:
    if not probe.is_floating_point():
        return probe.dtype
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return probe.dtype


def on_model(probe: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``probe`` on ``model``'s device; a floating-point probe also in the dtype of its parameters."""
    return probe.to(device=module_device(model), dtype=_probe_dtype(model, probe))
