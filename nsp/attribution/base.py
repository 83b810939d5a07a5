"""The shared interface of the attribution methods, and the checks every method runs.

An attribution method is a class constructed with the model (and a layer, for the layer
methods), whose :meth:`Attribution.attribute` takes a batch of inputs and a target and
returns one attribution per input, as captum's classes do. The base class does what is
the same for every method: it validates the inputs, the target and the options, records
the forward pass (:mod:`nsp.common.tracer`) for the default target and the architecture
checks, re-enables grad (attribution needs it even under Lightning's inference mode) and
post-processes the sign.

The methods that differentiate one forward pass of the inputs themselves (saliency, guided
backprop, deconvolution, Grad-CAM, guided Grad-CAM: :attr:`Attribution.one_pass`) record
captum's own forward pass: captum is handed a module that runs the model, checks it, picks
the target and returns the target's output, so they cost what captum costs (issue 23: a
pass of its own had cost 1.5-2x captum on ResNet-18). The others (SmoothGrad, integrated
gradients, occlusion and captum's table methods, :mod:`nsp.attribution.captum_methods`)
get their default target and their checks from a traced no-grad pass of their own.

Inputs are a tensor or a tuple of tensors (a model called as ``model(*inputs)``), and the
model's further arguments are captum's ``additional_forward_args``: the call's value is
``self._forward_args`` while a method runs, for the method to hand to captum.
"""

from __future__ import annotations

import contextlib
import inspect
import numbers
import warnings
import weakref
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from nsp.common.layers import find_layer
from nsp.common.modes import eval_mode
from nsp.common.tracer import GUIDED_MODULES, Trace, tracing

__all__ = ["SIGNS", "GRAPH_CUT", "Attribution", "LayerAttribution", "resolve_layer", "run_model", "seeded"]

# The layers a layer method defaults to (the last one the model runs); lazy ones subclass these.
_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

SIGNS: tuple[str, ...] = ("signed", "absolute", "positive", "negative")

Target = int | Sequence[int] | np.ndarray | torch.Tensor | None
Inputs = torch.Tensor | tuple[torch.Tensor, ...]

# What a RuntimeError says when the model's output does not depend differentiably on the input.
GRAPH_CUT = ("does not require grad", "does not have a grad_fn", "not have been used in the graph")


class Attribution:
    """One attribution method for a model.

    Subclasses set :attr:`name` and implement ``_attribute(inputs, target, **options)``,
    whose keyword-only parameters are the method's options.

    Parameters
    ----------
    model : torch.nn.Module
        The network. It is explained as deployed: :meth:`attribute` runs it in eval mode
        (batch norm with its running statistics, which it does not update; dropout off)
        and gives every submodule its own mode back after (:func:`nsp.common.modes.eval_mode`).

    Raises
    ------
    TypeError
        If ``model`` is not a module.
    """

    #: The method's name in :data:`nsp.attribution.METHODS`.
    name: str = ""
    #: Whether the method rectifies gradients at ReLUs (and so must see every ReLU).
    guided: bool = False
    #: Whether ``_attribute`` runs the model on the inputs themselves, unaltered, through
    #: ``self._explained``: it is then called with target None while ``self._explained``
    #: is a module that checks the pass, picks the target and returns its output per
    #: input. Otherwise ``_attribute`` gets the target from a traced pass of its own.
    one_pass: bool = False
    #: Whether the method takes a tuple of input tensors (a model with several inputs).
    tuple_inputs: bool = True
    #: Whether the method passes ``additional_forward_args`` on to the model.
    forward_args: bool = True

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self._where}: expected model to be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self._explained: nn.Module = model
        # The call's additional_forward_args, as captum takes them (None or a tuple).
        self._forward_args: tuple | None = None

    @property
    def _where(self) -> str:
        return f"nsp.attribution.{type(self).__name__}"

    @classmethod
    def options(cls) -> dict[str, Any]:
        """The method's options and their defaults (besides ``sign``)."""
        params = inspect.signature(cls._attribute).parameters.values()
        return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def attribute(self, inputs: Inputs, target: Target = None, *, sign: str = "signed",
                  additional_forward_args: Any = None, **options: Any) -> Inputs:
        """Attributions of ``target`` for each input of a batch.

        Parameters
        ----------
        inputs : torch.Tensor or tuple of torch.Tensor
            A batch ``(N, ...)`` of floating-point inputs, or a tuple of such batches (the
            same ``N``) for a model called as ``model(*inputs)``. Not modified.
        target : int, sequence of int, numpy or torch integer array, optional
            The output index (class) to explain: one for the whole batch or one per input.
            Any integer type is taken (``numpy.int64``, a label tensor).
            By default each input's predicted class (the argmax of the model's output).
            Must be None when the model returns one value per input (shape ``(N,)``).
        sign : str, default 'signed'
            One of :data:`SIGNS`: the attribution as computed, its absolute value, its
            positive part, or its negative part as a positive map (negative saliency).
        additional_forward_args : object, optional
            More arguments of the model, not attributed, as captum takes them: the model
            is called as ``model(*inputs, *additional_forward_args)`` (a non-tuple is one
            argument). Tensors among them with the batch's first dimension are expanded
            with the inputs where a method runs the model on several copies.
        **options
            The method's own options (:meth:`options`).

        Returns
        -------
        torch.Tensor or tuple of torch.Tensor
            Detached, on the inputs' device: shaped like ``inputs`` (a tuple for a tuple)
            for input attributions, like the layer's output for layer methods (one
            channel for Grad-CAM).

        Raises
        ------
        TypeError
            If ``inputs`` is not a floating-point tensor or a tuple of them (an integer
            tensor has no gradient), or an option is unknown.
        ValueError
            For a target out of range, a bad option value, a model output that is not
            ``(N, classes)`` or ``(N,)``, a model whose output does not depend
            differentiably on the input, and the method-specific checks (a layer that
            does not run once, a ReLU that guided backprop cannot see).
        """
        where = self._where
        several = isinstance(inputs, tuple)
        if several and not self.tuple_inputs:
            raise TypeError(f"{where}: {self.name!r} takes one input tensor, got a tuple of {len(inputs)}; for a "
                            f"model with several inputs choose a method that takes them (see the README's table)")
        if additional_forward_args is not None and not self.forward_args:
            raise TypeError(f"{where}: {self.name!r} takes no additional_forward_args (see the README's table)")
        parts = inputs if several else (inputs,)
        if several and not parts:
            raise ValueError(f"{where}: expected inputs to be a tensor or a non-empty tuple of tensors, got ()")
        for i, part in enumerate(parts):
            _check_inputs(part, where, f"inputs[{i}]" if several else "inputs")
        if len({part.shape[0] for part in parts}) > 1:
            raise ValueError(f"{where}: the input tensors must share their batch size (first dimension), got "
                             f"shapes {', '.join(str(tuple(p.shape)) for p in parts)}")
        extra = _forward_args(additional_forward_args)
        if sign not in SIGNS:
            raise ValueError(f"{where}: unknown sign={sign!r}; expected one of {', '.join(map(repr, SIGNS))}")
        known = self.options()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"{where}: unknown option(s) {', '.join(unknown)}; {self.name!r} takes "
                            f"{', '.join(known) if known else 'no options'} (and sign)")
        # Lightning validates and tests under torch.inference_mode(): tensors made there
        # cannot enter autograd, so attribution works on a clone made with grad enabled.
        with eval_mode(self.model), torch.inference_mode(False), torch.enable_grad():
            xs = tuple(part.detach().clone().requires_grad_() for part in parts)
            x = xs if several else xs[0]
            self._forward_args = extra
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
                    if self.one_pass:
                        result = self._in_one_pass(x, target, options)
                    else:
                        with torch.no_grad(), tracing(self.model, watch_relus=self.guided) as traced:
                            traced.output = run_model(self.model, xs, extra, where)
                        result = self._attribute(x, self._check(traced, target, x, options), **options)
            except RuntimeError as err:
                if any(text in str(err) for text in GRAPH_CUT):
                    raise ValueError(
                        f"{where}: the model's output does not depend differentiably on its input "
                        f"(does its forward detach, round or index with the input?): {err}"
                    ) from err
                raise
            finally:
                self._forward_args = None
        if isinstance(result, tuple):
            return tuple(_apply_sign(r.detach(), sign) for r in result)
        return _apply_sign(result.detach(), sign)

    def _in_one_pass(self, x: Inputs, target: Target, options: dict[str, Any]) -> Inputs:
        """``_attribute`` with captum's forward pass checked, for :attr:`one_pass` methods."""
        self._explained = _CheckedForward(self, x, target, options)
        try:
            return self._attribute(x, None, **options)
        finally:
            self._explained = self.model

    def _watched(self) -> list[nn.Module] | None:
        """The modules whose calls the checks count (None: every module)."""
        return None if self.guided else []

    def _check(self, traced: Trace, target: Target, inputs: Inputs,
               options: dict[str, Any]) -> torch.Tensor | None:
        """The checks against a forward pass of the inputs; the target per input (None for scalar outputs)."""
        if self.guided:
            _check_guided(traced, self._where, self.name)
        batch = (inputs[0] if isinstance(inputs, tuple) else inputs).shape[0]
        target_t = self._target(target, traced.output, batch)
        self._prepare(traced, inputs, options)
        return target_t

    def _target(self, target: Target, output: Any, batch: int) -> torch.Tensor | None:
        """The target per input, checked against the model's output."""
        return _resolve_target(target, output, batch, self._where)

    def _prepare(self, traced: Trace, inputs: Inputs, options: dict[str, Any]) -> None:
        """Method-specific checks against the forward pass, before any gradient."""

    def _attribute(self, inputs: Inputs, target: torch.Tensor | None) -> Inputs:
        raise NotImplementedError


class LayerAttribution(Attribution):
    """An attribution method that reads one layer of the model (Grad-CAM and relatives).

    Parameters
    ----------
    model : torch.nn.Module
    layer : torch.nn.Module or str, optional
        A submodule of ``model`` or its dotted name (as in ``model.named_modules()``).
        By default the last convolution that runs in the forward pass.

    Raises
    ------
    ValueError
        If ``layer`` is not a submodule of ``model`` (the error lists the model's layers).
    """

    def __init__(self, model: nn.Module, layer: nn.Module | str | None = None) -> None:
        super().__init__(model)
        self._requested = None if layer is None else resolve_layer(model, layer, self._where)
        self.layer: nn.Module | None = self._requested
        self._guessing = False

    def _in_one_pass(self, x: Inputs, target: Target, options: dict[str, Any]) -> Inputs:
        if self._requested is not None:
            self.layer = self._requested
            return super()._in_one_pass(x, target, options)
        # captum hooks the layer before the pass that tells which convolution runs last, so
        # the pass checks a guess: the last call's default, or the last convolution defined.
        convs = [m for m in self.model.modules() if isinstance(m, _CONVOLUTIONS)]
        if not convs:
            raise ValueError(f"{self._where}: the model has no convolution to default to; pass layer= (a module or "
                             f"its dotted name)")
        self.layer = _DEFAULT_LAYERS.get(self.model, convs[-1])
        self._guessing = True
        try:
            result = super()._in_one_pass(x, target, options)
        except _OtherDefault as found:
            self.layer = found.layer
            self._guessing = False
            result = super()._in_one_pass(x, target, options)
        finally:
            self._guessing = False
        _DEFAULT_LAYERS[self.model] = self.layer
        return result

    def _watched(self) -> list[nn.Module] | None:
        if self.guided:
            return None
        if self._requested is not None:
            return [self._requested]
        return [m for m in self.model.modules() if isinstance(m, _CONVOLUTIONS)]

    def _prepare(self, traced: Trace, inputs: torch.Tensor, options: dict[str, Any]) -> None:
        where = self._where
        if self._requested is None:
            convs = [m for m in traced.order if isinstance(m, _CONVOLUTIONS) and traced.calls[m] == 1]
            if not convs:
                raise ValueError(f"{where}: the model runs no convolution once per forward pass to default to; "
                                 f"pass layer= (a module or its dotted name)")
            if self._guessing and convs[-1] is not self.layer:
                raise _OtherDefault(convs[-1])
            self.layer = convs[-1]
        layer = self.layer
        calls = traced.calls.get(layer, 0)
        if calls == 0:
            raise ValueError(f"{where}: layer {traced.describe(layer)} does not run in the model's forward pass")
        if calls > 1:
            parent = traced.name(layer).rpartition(".")[0]
            hint = f", such as its parent {parent!r}" if parent else ""
            raise ValueError(
                f"{where}: layer {traced.describe(layer)} runs {calls} times per forward pass (a reused module), "
                f"so it has no single output to explain; choose a module that runs once{hint}"
            )
        shape = traced.output_shapes.get(layer)
        if shape is None or len(shape) < 2:
            raise ValueError(f"{where}: layer {traced.describe(layer)} must return one tensor of shape "
                             f"(N, channels, ...), got {shape!r}")


class _OtherDefault(Exception):
    """The pass of a one-pass layer method ran with a layer other than the default (found here)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__("internal: retry with the default layer")
        self.layer = layer


# The default layer each model's last one-pass call found: the next call's guess. Weak,
# so that it keeps no model alive.
_DEFAULT_LAYERS: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


class _CheckedForward(nn.Module):
    """What a one-pass method hands captum in place of the model: it runs the model, checks
    the first pass as a traced pass would be checked (the architecture, the output, the
    target, the method's options) and returns the target's output per input, so that captum
    is called with target None. A later pass (guided Grad-CAM runs two) reuses that target.

    Selecting the target here is what captum's ``_select_targets`` does with a target per
    input (a gather along dimension 1), so the gradients are captum's, bit for bit.
    """

    def __init__(self, method: Attribution, inputs: Inputs, target: Target, options: dict[str, Any]) -> None:
        super().__init__()
        self.model = method.model
        self._method = method
        self._inputs = inputs
        self._target = target
        self._options = options
        self._checked = False
        self._target_t: torch.Tensor | None = None

    def forward(self, *args: Any) -> torch.Tensor:
        method = self._method
        if self._checked:
            output = self.model(*args)
        else:
            with tracing(self.model, method._watched(), watch_relus=method.guided) as traced:
                traced.output = output = run_model(self.model, args, (), method._where)
            self._target_t = method._check(traced, self._target, self._inputs, self._options)
            self._checked = True
        if self._target_t is None:
            return output
        return torch.gather(output, 1, self._target_t.reshape(len(output), 1)).squeeze(-1)


def run_model(model: nn.Module, inputs: tuple, extra: tuple | None, where: str) -> Any:
    """``model(*inputs, *extra)``, with a failure of the model's own forward reported as a ValueError."""
    try:
        return model(*inputs, *(extra or ()))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        shapes = ", ".join(str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__ for x in inputs)
        more = f" and {len(extra)} additional_forward_args" if extra else ""
        raise ValueError(f"{where}: the model's forward pass ({type(model).__name__}) failed on inputs "
                         f"of shape {shapes}{more}: {err}") from err


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """A block whose random draws are seeded by ``seed`` in forked RNGs (the caller's streams
    are untouched): torch's on the CPU and ``device``, and numpy's global one (captum's
    GradientShap draws its path points there); None draws from the global RNGs."""
    if seed is None:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed)
            yield
    finally:
        np.random.set_state(state)


def _forward_args(value: Any) -> tuple | None:
    """``additional_forward_args`` as a tuple of the model's extra arguments (captum's convention)."""
    if value is None:
        return None
    return value if isinstance(value, tuple) else (value,)


def resolve_layer(model: nn.Module, layer: nn.Module | str, where: str) -> nn.Module:
    """The submodule ``layer`` of ``model`` (given as a module or a dotted name); see :func:`nsp.common.layers.find_layer`."""
    return find_layer(model, layer, where, allow_model=True)[1]


def _check_inputs(inputs: Any, where: str, argname: str = "inputs") -> None:
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"{where}: expected {argname} to be a torch.Tensor (a batch) or a tuple of them, got "
                        f"{type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"{where}: {argname} has dtype {inputs.dtype}, which has no gradient; attribution needs a "
                        f"floating-point tensor (for example inputs.float())")
    if inputs.device.type == "meta":
        raise ValueError(f"{where}: {argname} are on the meta device, which holds shapes but no values; "
                         f"move them (and the model) to a real device first")
    if inputs.dim() < 2 or inputs.shape[0] == 0:
        raise ValueError(f"{where}: expected {argname} to be a non-empty batch (N, ...), got shape "
                         f"{tuple(inputs.shape)}")


def _resolve_target(target: Target, output: Any, batch: int, where: str) -> torch.Tensor | None:
    """One class index per input, checked against the model's output; None for scalar outputs."""
    if not isinstance(output, torch.Tensor) or output.dim() not in (1, 2) or output.shape[0] != batch:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"{where}: expected the model to return a tensor (N, classes) or (N,) for N={batch} "
                         f"inputs, got {shape}")
    if output.dim() == 1:
        if target is not None:
            raise ValueError(f"{where}: the model returns one value per input (shape {tuple(output.shape)}); "
                             f"pass target=None")
        return None
    classes = output.shape[1]
    if target is None:
        return output.argmax(dim=1)
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool or target.dim() > 1:
            raise TypeError(f"{where}: expected target to be an int or integer indices, got a tensor of "
                            f"dtype {target.dtype} and shape {tuple(target.shape)}")
        values = target.reshape(-1).tolist()
    elif isinstance(target, (bool, np.bool_)):
        raise TypeError(f"{where}: expected target to be an int or a sequence of int, got a bool")
    elif isinstance(target, numbers.Integral):
        values = [int(target)]
    elif isinstance(target, np.ndarray) and target.dtype.kind in "iu" and target.ndim <= 1:
        values = [int(t) for t in target.reshape(-1)]
    elif isinstance(target, Sequence) and all(
            isinstance(t, numbers.Integral) and not isinstance(t, (bool, np.bool_)) for t in target):
        values = [int(t) for t in target]
    else:
        raise TypeError(f"{where}: expected target to be an int, a sequence of int or an integer tensor, "
                        f"got {target!r}")
    if len(values) not in (1, batch):
        raise ValueError(f"{where}: expected one target or one per input ({batch}), got {len(values)}")
    bad = [t for t in values if not 0 <= t < classes]
    if bad:
        raise ValueError(f"{where}: target {bad[0]} is out of range for a model with {classes} outputs "
                         f"(valid: 0..{classes - 1})")
    if len(values) == 1:
        values = values * batch
    return torch.tensor(values, dtype=torch.long, device=output.device)


def _check_guided(traced: Trace, where: str, name: str) -> None:
    if not traced.functional_relus:
        return
    found = traced.functional_relus[0]
    module = f"module {found.module!r} ({found.kind})" if found.module else f"the model's own forward ({found.kind})"
    more = len(traced.functional_relus) - 1
    others = f" (and {more} more place(s): " + ", ".join(
        repr(f.module or f.kind) for f in traced.functional_relus[1:]) + ")" if more else ""
    kinds = "/".join(m.__name__ for m in GUIDED_MODULES)
    raise ValueError(
        f"{where}: {module} computes a ReLU with {found.function} in its forward{others}. {name!r} applies "
        f"its rule at ReLU modules ({kinds}) only, so it would silently pass the vanilla gradient "
        f"through this one. Use an nn.ReLU module there."
    )


def _apply_sign(a: torch.Tensor, sign: str) -> torch.Tensor:
    if sign == "absolute":
        return a.abs()
    if sign == "positive":
        return a.clamp(min=0)
    if sign == "negative":
        return (-a).clamp(min=0)
    return a
