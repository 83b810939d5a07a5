"""Attribution: which parts of an input a network's output depends on.

One entry point, :func:`attribute`, and one class per method in captum's style
(``Method(model[, layer]).attribute(inputs, target, **options)``):

======================== ========================== ===============================
name                     class                      result shape
======================== ========================== ===============================
``'saliency'``           :class:`Saliency`          like the input
``'guided_backprop'``    :class:`GuidedBackprop`    like the input
``'smoothgrad'``         :class:`SmoothGrad`        like the input
``'guided_smoothgrad'``  :class:`GuidedSmoothGrad`  like the input
``'integrated_gradients'`` :class:`IntegratedGradients` like the input
``'gradcam'``            :class:`GradCam`           ``(N, 1, h, w)`` of the layer, or the input's
``'guided_gradcam'``     :class:`GuidedGradCam`     like the input
``'occlusion'``          :class:`Occlusion`         like the input
``'deconvolution'``      :class:`Deconvolution`     like the input
======================== ========================== ===============================

and the rest of captum 0.9's primary, layer and neuron methods, table-driven
(:data:`CAPTUM_TABLE` in :mod:`nsp.attribution.captum_methods`): ``'input_x_gradient'``,
``'deeplift'``, ``'gradient_shap'``, ``'feature_ablation'``, ``'lime'``, ``'kernel_shap'``,
``'lrp'``, ``'layer_conductance'``, ``'neuron_integrated_gradients'``, ... Their options are
captum's own keyword arguments; layer methods give the layer's shape, neuron methods
(``neuron_selector=``) the input's.

Every method takes a tensor or, except Grad-CAM, guided Grad-CAM and occlusion, a tuple of
tensors for a model with several inputs, and ``additional_forward_args`` (not occlusion).

The algorithms are captum's (the optional extra ``nsp-lightning[attribution]``),
imported on first use. nsp adds: one interface with a checked target (the prediction by
default) and checked options, a ``sign`` option (positive and negative saliency), grad
re-enabled under inference mode, guided backprop that is right on reused, in-place and
ReLU6 modules and refuses functional ReLUs by name, Grad-CAM for chosen channels and
refusal of reused layers, the sanity check (:mod:`nsp.attribution.sanity`) and pictures
(:mod:`nsp.attribution.plot`, imported on first use: it needs matplotlib).

:data:`METHODS` maps the names to the classes. A method of your own is added with
:func:`register_method` (which refuses to replace one unless ``override=True``), removed
with :func:`unregister_method`, and replaced for one block with :func:`using_methods`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from torch import nn

from nsp.attribution.base import SIGNS, Attribution, Inputs, LayerAttribution, Target
from nsp.attribution.captum_methods import CAPTUM_TABLE, captum_classes
from nsp.attribution.deconvolution import Deconvolution
from nsp.attribution.gradcam import GradCam
from nsp.attribution.guided_backprop import GuidedBackprop
from nsp.attribution.guided_gradcam import GuidedGradCam
from nsp.attribution.integrated_gradients import IntegratedGradients
from nsp.attribution.occlusion import Occlusion
from nsp.attribution.saliency import Saliency
from nsp.attribution.sanity import randomize_top_layer, spearman, top_layer
from nsp.attribution.smoothgrad import GuidedSmoothGrad, SmoothGrad
from nsp.common.registry import Registry

__all__ = [
    "METHODS",
    "SIGNS",
    "attribute",
    "register_method",
    "unregister_method",
    "using_methods",
    "Attribution",
    "LayerAttribution",
    "Saliency",
    "GuidedBackprop",
    "SmoothGrad",
    "GuidedSmoothGrad",
    "IntegratedGradients",
    "GradCam",
    "GuidedGradCam",
    "Occlusion",
    "Deconvolution",
    "CAPTUM_TABLE",
    "randomize_top_layer",
    "spearman",
    "top_layer",
]


def _check(name: Hashable, cls: Any, where: str) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{where}: expected a method name (a non-empty str), got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Attribution)):
        raise TypeError(f"{where}: expected a subclass of nsp.attribution.Attribution, got {cls!r}")


#: The methods by name: read like a dict; changed with :func:`register_method`,
#: :func:`unregister_method` and :func:`using_methods`.
METHODS: Registry[type[Attribution]] = Registry("nsp.attribution", "method", "using_methods", _check)


def register_method(name: str, cls: type[Attribution], *, override: bool = False) -> None:
    """Make ``cls`` the attribution method ``name`` (for :func:`attribute` and :data:`METHODS`).

    Parameters
    ----------
    name : str
        The method's name, usually ``cls.name``.
    cls : type
        A subclass of :class:`Attribution` (of :class:`LayerAttribution` for a method that
        takes a layer).
    override : bool, default False
        Replace the method already called ``name``.

    Raises
    ------
    ValueError
        If ``name`` is taken and ``override`` is false.
    TypeError
        If ``name`` is not a non-empty str or ``cls`` not an :class:`Attribution` subclass.
    """
    METHODS.register(name, cls, override=override)


def unregister_method(name: str) -> None:
    """Remove the attribution method ``name``.

    Raises
    ------
    KeyError
        If there is no method called ``name``.
    """
    METHODS.unregister(name)


def using_methods(overrides: Mapping[str, type[Attribution]]) -> contextlib.AbstractContextManager[None]:
    """A block in which ``overrides`` (``{name: cls}``) replace or add attribution methods.

    On leaving the block, also by an exception, :data:`METHODS` is exactly as before it.
    """
    return METHODS.using(overrides)


for _cls in (Saliency, GuidedBackprop, SmoothGrad, GuidedSmoothGrad, IntegratedGradients, GradCam, GuidedGradCam,
             Occlusion, Deconvolution, *captum_classes()):
    register_method(_cls.name, _cls)


def method_class(method: str, where: str = "nsp.attribution.attribute") -> type[Attribution]:
    """The class of a method name, or a ValueError that lists the names."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"{where}: unknown method {method!r}; expected one of {', '.join(map(repr, METHODS))}")
    return METHODS[method]


def attribute(model: nn.Module, inputs: Inputs, method: str, target: Target = None,
              layer: nn.Module | str | None = None, **options: Any) -> Inputs:
    """Attributions of ``model``'s ``target`` output for a batch of inputs.

    Parameters
    ----------
    model : torch.nn.Module
    inputs : torch.Tensor or tuple of torch.Tensor
        A batch ``(N, ...)``, floating point, or a tuple of them for ``model(*inputs)``.
    method : str
        A name in :data:`METHODS`.
    target : int, sequence of int, numpy or torch integer array, optional
        One class for the batch or one per input; by default each input's prediction.
    layer : torch.nn.Module or str, optional
        For the layer and neuron methods (``'gradcam'``, ``'guided_gradcam'``,
        ``'layer_*'``, ``'internal_influence'``, ``'neuron_*'``): the layer, or its dotted
        name; by default the last convolution that runs. Other methods take no layer.
    **options
        ``sign`` (one of :data:`SIGNS`), ``additional_forward_args`` (more arguments of
        the model, as captum takes them) and the method's options (``METHODS[m].options()``).

    Returns
    -------
    torch.Tensor or tuple of torch.Tensor
        Shaped like ``inputs``; ``(N, 1, h, w)`` for Grad-CAM (the input's ``h, w`` with
        ``upsample=True``); like the layer's output for the layer methods.

    Raises
    ------
    ValueError, TypeError
        See :meth:`Attribution.attribute`, plus an unknown method and a ``layer`` given
        to a method that takes none.
    ImportError
        If captum is not installed.

    Examples
    --------
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(),
    ...                             torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 3))
    >>> x = torch.randn(4, 1, 8, 8)
    >>> attribute(model, x, "saliency").shape
    torch.Size([4, 1, 8, 8])
    >>> attribute(model, x, "gradcam", layer="0", upsample=True).shape
    torch.Size([4, 1, 8, 8])
    >>> linear = torch.nn.Linear(3, 2)
    >>> a = attribute(linear, torch.ones(4, 3), "input_x_gradient", target=1)    # captum's InputXGradient
    >>> torch.equal(a, linear.weight[1].detach().expand(4, 3))
    True
    """
    cls = method_class(method)
    if issubclass(cls, LayerAttribution):
        instance: Attribution = cls(model, layer)
    elif layer is not None:
        raise ValueError(f"nsp.attribution.attribute: method {method!r} takes no layer (only "
                         f"{', '.join(repr(n) for n, c in METHODS.items() if issubclass(c, LayerAttribution))} do)")
    else:
        instance = cls(model)
    return instance.attribute(inputs, target, **options)
