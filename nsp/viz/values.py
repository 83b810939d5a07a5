"""The values a picture is drawn from: argument checks, and conversion to float64 arrays.

Every drawing function of `nsp.viz` accepts numpy arrays and torch tensors (of any real
dtype, on any device) and turns them into float64 arrays here, with errors that name the
caller and its argument.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["positive_int", "as_float64", "unpack_pattern", "describe_layer"]


def positive_int(value: Any, argname: str, where: str, minimum: int) -> int:
    """``value`` as an int, if it is an integer (not a bool) of at least ``minimum``.

    Raises
    ------
    ValueError
        Otherwise, naming ``where`` and ``argname``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{where}: expected {argname} to be an int >= {minimum}, got {value!r}")
    return int(value)


def as_float64(values: Any, argname: str, where: str) -> np.ndarray:
    """``values`` (array-like or tensor, any real dtype or device) as a float64 numpy array.

    Raises
    ------
    TypeError
        For complex values or anything that is not an array of real numbers.
    """
    if isinstance(values, torch.Tensor):
        if values.is_complex():
            raise TypeError(f"{where}: {argname} is a complex tensor; pass real values (e.g. .abs() or .real)")
        tensor = values.detach().cpu()
        # numpy converts without torch's thread pool, which is far slower under load;
        # bfloat16 has no numpy dtype and goes through float32 (exactly).
        return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy().astype(np.float64)
    if np.iscomplexobj(values):
        raise TypeError(f"{where}: {argname} is complex; pass real values (e.g. np.abs or .real)")
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{where}: expected {argname} to be a numpy array or torch tensor of real numbers, "
            f"got {type(values).__name__}"
        ) from err


def unpack_pattern(
    layers: Any, names: Sequence[str] | None, argname: str, where: str
) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Per-layer float64 arrays, names and type names from an Activations or a sequence.

    Names default to ``layers.layernames``, else ``'0', '1', ...``; type names come from
    ``layers.layerdescriptions`` (see `describe_layer`), else are empty.

    Raises
    ------
    TypeError
        If ``layers`` is neither an Activations nor a sequence of arrays.
    ValueError
        If ``names`` does not have one name per layer.
    """
    values = getattr(layers, "layeractivations", layers)
    if isinstance(values, (np.ndarray, torch.Tensor)) or not isinstance(values, Sequence):
        raise TypeError(
            f"{where}: expected {argname} to be an nsp.Activations or a sequence of per-layer arrays, "
            f"got {type(layers).__name__}"
        )
    arrays = [as_float64(v, f"{argname}[{i}]", where) for i, v in enumerate(values)]
    if names is None:
        names = getattr(layers, "layernames", None) or [str(i) for i in range(len(arrays))]
    names = [str(n) for n in names]
    if len(names) != len(arrays):
        raise ValueError(f"{where}: got {len(names)} names for {len(arrays)} layers in {argname}")
    descriptions = getattr(layers, "layerdescriptions", None)
    kinds = [describe_layer(d) for d in descriptions] if descriptions is not None else [""] * len(arrays)
    return arrays, names, kinds


def describe_layer(description: Any) -> str:
    """A short type name for an entry of ``Activations.layerdescriptions``.

    ``'Input[1, 1, 4, 4]'`` becomes ``'Input'`` and a module its class name.
    """
    if isinstance(description, str):
        return description.split("[", 1)[0]
    return type(description).__name__
