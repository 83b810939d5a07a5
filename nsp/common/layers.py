"""The layer resolver: a ``layer=`` or ``layers=`` argument to the model's submodules and their names.

Every tool that reads a layer of a model (:class:`nsp.Activations`, the attribution
methods, :mod:`nsp.optvis`, :class:`nsp.NeuralResponseMap`) takes it as the dotted name
of a submodule, as in ``model.named_modules()`` (``'layer1.0.conv2'``), or as the
submodule itself. :func:`find_layer` and :func:`find_layers` turn either into
``(name, module)``. An unknown name, or a module that is not in the model, is an error
that names the tool and the argument and lists the model's layers.

Examples
--------
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
>>> find_layer(net, "1", "example")
('1', ReLU())
>>> find_layers(net, [net[0], "1"], "example")
[('0', Linear(in_features=2, out_features=3, bias=True)), ('1', ReLU())]
>>> find_layer(net, "2", "example")
Traceback (most recent call last):
...
ValueError: example: unknown layer '2' in `layer`: the model (Sequential) has no submodule of that name; its layers are: 0, 1
"""

from __future__ import annotations

import difflib
from typing import Iterable, Union

from torch import nn

__all__ = ["Layer", "describe_layers", "find_layer", "find_layers", "layer_names"]

#: A layer as the tools take it: a dotted submodule name or the submodule itself.
Layer = Union[str, nn.Module]

# Names listed in full in an error; a longer list shows its start and end.
_SHOWN = 12


def layer_names(model: nn.Module) -> list[str]:
    """The dotted name of every submodule of ``model`` (the model itself, ``''``, left out)."""
    return [name for name, _ in model.named_modules() if name]


def describe_layers(model: nn.Module) -> str:
    """``model``'s layer names for a message, shortened to their start and end when there are many."""
    names = layer_names(model)
    if not names:
        return "none (it has no submodules)"
    if len(names) <= _SHOWN:
        return ", ".join(names)
    return f"{', '.join(names[:_SHOWN - 2])}, ..., {', '.join(names[-2:])} ({len(names)} in all)"


def find_layer(model: nn.Module, layer: Layer, where: str, argument: str = "layer", *,
               allow_model: bool = False) -> tuple[str, nn.Module]:
    """The name and module of one layer of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
    layer : str or torch.nn.Module
        A dotted name in ``model.named_modules()`` or a submodule of ``model``.
    where : str
        The function or class named in errors, e.g. ``'nsp.attribution.GradCam'``.
    argument : str
        The argument named in errors.
    allow_model : bool
        Accept ``model`` itself as a module (its name is ``''``).

    Returns
    -------
    (str, torch.nn.Module)
        The name (the first, for a module registered under several) and the module.

    Raises
    ------
    ValueError
        For an unknown name or a module that is not in ``model``, listing its layers.
    TypeError
        If ``layer`` is neither a string nor a module.
    """
    return find_layers(model, [layer], where, argument, allow_model=allow_model)[0]


def find_layers(model: nn.Module, layers: Layer | Iterable[Layer], where: str, argument: str = "layers", *,
                allow_model: bool = False) -> list[tuple[str, nn.Module]]:
    """The names and modules of several layers of ``model``, in the order given.

    ``layers`` is one layer or an iterable of them, each a dotted name or a module, as
    for :func:`find_layer`; every unknown name is listed in one error.

    Returns
    -------
    list of (str, torch.nn.Module)
    """
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    elif not isinstance(layers, Iterable):
        raise TypeError(f"{where}: expected `{argument}` to be a dotted module name, a torch.nn.Module or a list of "
                        f"them, got {type(layers).__name__}")
    modules = dict(model.named_modules())
    names_of: dict[int, str] = {}
    for name, module in modules.items():
        names_of.setdefault(id(module), name)
    found: list[tuple[str, nn.Module]] = []
    unknown: list[str] = []
    for layer in layers:
        if isinstance(layer, str):
            if layer and layer in modules:
                found.append((layer, modules[layer]))
            else:
                unknown.append(layer)
        elif isinstance(layer, nn.Module):
            if layer is model and not allow_model:
                raise ValueError(f"{where}: `{argument}` is the model ({type(model).__name__}) itself, not one of its "
                                 f"layers; its layers are: {describe_layers(model)}")
            if id(layer) not in names_of:
                raise ValueError(f"{where}: `{argument}` ({type(layer).__name__}) is not a submodule of the model "
                                 f"({type(model).__name__}); its layers are: {describe_layers(model)}")
            found.append((names_of[id(layer)], layer))
        else:
            raise TypeError(f"{where}: expected `{argument}` to hold dotted module names or torch.nn.Modules, got "
                            f"{type(layer).__name__} {layer!r}")
    if unknown:
        raise ValueError(_unknown(model, unknown, where, argument))
    return found


def _unknown(model: nn.Module, unknown: list[str], where: str, argument: str) -> str:
    names = layer_names(model)
    close = [c for name in unknown for c in difflib.get_close_matches(name, names, n=3)]
    hint = f" (did you mean {', '.join(map(repr, dict.fromkeys(close)))}?)" if close else ""
    what = f"layer {unknown[0]!r}" if len(unknown) == 1 else f"layers {unknown}"
    which = "submodule of that name" if len(unknown) == 1 else "submodules of those names"
    return (f"{where}: unknown {what} in `{argument}`: the model ({type(model).__name__}) has no {which}{hint}; "
            f"its layers are: {describe_layers(model)}")

