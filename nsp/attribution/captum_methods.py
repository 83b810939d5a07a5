"""The rest of captum's menu, table-driven: one row per captum class, one small wrapper per
family (primary, layer, neuron) instead of one hand-written class per method.

Each row names the nsp method, the ``captum.attr`` class, its family, whether it draws
random numbers (then it takes ``seed``, as SmoothGrad does) and the rule it applies at
modules, which decides what nsp checks before captum runs:

- ``'relu'``: a modified gradient at each ReLU (guided backprop, deconvolution). The
  neuron variants get nsp's exact hooks (:mod:`nsp.attribution.guided_backprop`,
  :mod:`nsp.attribution.deconvolution`); functional ReLUs are refused by name.
- ``'deeplift'``: DeepLift's multipliers at captum's supported nonlinear modules. A
  functional ReLU would silently get the plain gradient, an ``nn.ReLU6`` has no rule in
  captum, and a nonlinear module that runs twice keeps only one call's activations: all
  three are refused by name.
- ``'lrp'``: LRP's rules at every layer; a functional ReLU and a layer that runs twice
  are refused by name (captum itself refuses layers without a rule).

A method's options are captum's own keyword arguments, of the class (``multiply_by_inputs``,
``interpretable_model``, ...) and of its ``attribute`` (``baselines``, ``n_steps``,
``feature_mask``, ``neuron_selector``, ...), with captum's defaults, less
``return_convergence_delta`` (nsp returns attributions only); captum's ``method`` (the
quadrature of the path methods) is ``quadrature``, since ``attribute``'s ``method`` names
the method. What captum refuses is
re-raised as a ValueError that names the method.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from nsp.attribution.backend import captum_attr
from nsp.attribution.base import GRAPH_CUT, Attribution, Inputs, LayerAttribution, Target, seeded
from nsp.attribution.deconvolution import captum_deconvolution
from nsp.attribution.guided_backprop import captum_guided_backprop
from nsp.common.tracer import Trace

__all__ = ["CaptumSpec", "CAPTUM_TABLE", "DEEPLIFT_NONLINEAR", "CaptumAttribution", "CaptumLayerAttribution",
           "CaptumNeuronAttribution", "captum_classes"]

# Arguments that nsp fills in itself (the model, the layer, the inputs, the target, the
# extra forward arguments) or that would change what is returned.
_OWN = {"self", "forward_func", "model", "layer", "layers", "device_ids", "inputs", "target",
        "additional_forward_args", "return_convergence_delta"}
# captum's names that nsp spells otherwise: attribute()'s own ``method`` argument names the
# method, so captum's quadrature rule is ``quadrature`` (as for 'integrated_gradients').
_RENAMED = {"method": "quadrature"}


@dataclass(frozen=True)
class CaptumSpec:
    """One captum class offered by name."""

    name: str
    captum: str
    family: str  # 'primary', 'layer' or 'neuron'
    seeded: bool = False
    rule: str = ""  # '', 'relu', 'deeplift' or 'lrp'


#: The captum classes offered by the table (the others: :data:`nsp.attribution.METHODS`).
CAPTUM_TABLE: tuple[CaptumSpec, ...] = (
    CaptumSpec("input_x_gradient", "InputXGradient", "primary"),
    CaptumSpec("deeplift", "DeepLift", "primary", rule="deeplift"),
    CaptumSpec("deeplift_shap", "DeepLiftShap", "primary", rule="deeplift"),
    CaptumSpec("gradient_shap", "GradientShap", "primary", seeded=True),
    CaptumSpec("feature_ablation", "FeatureAblation", "primary"),
    CaptumSpec("feature_permutation", "FeaturePermutation", "primary", seeded=True),
    CaptumSpec("shapley_value_sampling", "ShapleyValueSampling", "primary", seeded=True),
    CaptumSpec("shapley_values", "ShapleyValues", "primary"),
    CaptumSpec("lime", "Lime", "primary", seeded=True),
    CaptumSpec("kernel_shap", "KernelShap", "primary", seeded=True),
    CaptumSpec("lrp", "LRP", "primary", rule="lrp"),
    CaptumSpec("layer_activation", "LayerActivation", "layer"),
    CaptumSpec("layer_gradient_x_activation", "LayerGradientXActivation", "layer"),
    CaptumSpec("layer_conductance", "LayerConductance", "layer"),
    CaptumSpec("internal_influence", "InternalInfluence", "layer"),
    CaptumSpec("layer_integrated_gradients", "LayerIntegratedGradients", "layer"),
    CaptumSpec("layer_deeplift", "LayerDeepLift", "layer", rule="deeplift"),
    CaptumSpec("layer_deeplift_shap", "LayerDeepLiftShap", "layer", rule="deeplift"),
    CaptumSpec("layer_gradient_shap", "LayerGradientShap", "layer", seeded=True),
    CaptumSpec("layer_feature_ablation", "LayerFeatureAblation", "layer"),
    CaptumSpec("layer_feature_permutation", "LayerFeaturePermutation", "layer", seeded=True),
    CaptumSpec("layer_lrp", "LayerLRP", "layer", rule="lrp"),
    CaptumSpec("neuron_gradient", "NeuronGradient", "neuron"),
    CaptumSpec("neuron_integrated_gradients", "NeuronIntegratedGradients", "neuron"),
    CaptumSpec("neuron_conductance", "NeuronConductance", "neuron"),
    CaptumSpec("neuron_deeplift", "NeuronDeepLift", "neuron", rule="deeplift"),
    CaptumSpec("neuron_deeplift_shap", "NeuronDeepLiftShap", "neuron", rule="deeplift"),
    CaptumSpec("neuron_gradient_shap", "NeuronGradientShap", "neuron", seeded=True),
    CaptumSpec("neuron_feature_ablation", "NeuronFeatureAblation", "neuron"),
    CaptumSpec("neuron_guided_backprop", "NeuronGuidedBackprop", "neuron", rule="relu"),
    CaptumSpec("neuron_deconvolution", "NeuronDeconvolution", "neuron", rule="relu"),
)

#: The modules at which captum 0.9's DeepLift applies its multipliers (captum's private
#: ``SUPPORTED_NON_LINEAR``, matched by exact type as captum does; a test compares them).
DEEPLIFT_NONLINEAR: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.Softmax)

# The neuron variants of the ReLU-rule methods keep captum's method in an attribute: nsp's
# exact version replaces it.
_EXACT_RELU_RULES: dict[str, tuple[str, Callable[[], type]]] = {
    "NeuronGuidedBackprop": ("guided_backprop", captum_guided_backprop),
    "NeuronDeconvolution": ("deconv", captum_deconvolution),
}


class _CaptumMethod:
    """What the three families share: options read from captum's signatures, the checks
    of the table's rules, and the call."""

    spec: CaptumSpec

    @classmethod
    def _parameters(cls) -> tuple[dict[str, inspect.Parameter], dict[str, inspect.Parameter]]:
        """captum's class and ``attribute`` keyword parameters that a user may set."""
        captum_cls = getattr(captum_attr(f"nsp.attribution.{cls.__name__}"), cls.spec.captum)
        init = inspect.signature(captum_cls.__init__).parameters
        call = inspect.signature(captum_cls.attribute).parameters
        usable = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return ({_RENAMED.get(n, n): p for n, p in init.items() if n not in _OWN and p.kind in usable},
                {_RENAMED.get(n, n): p for n, p in call.items() if n not in _OWN and p.kind in usable})

    @classmethod
    def options(cls) -> dict[str, Any]:
        """captum's keyword arguments for this method and their defaults (``inspect.Parameter.empty``
        where captum requires one), plus ``seed`` for the methods that draw random numbers."""
        init, call = cls._parameters()
        found = {n: p.default for n, p in {**init, **call}.items()}
        if cls.spec.seeded:
            found["seed"] = 0
        return found

    @classmethod
    def takes_target(cls) -> bool:
        """Whether captum's ``attribute`` takes a target (layer activations and most neuron methods do not)."""
        captum_cls = getattr(captum_attr(f"nsp.attribution.{cls.__name__}"), cls.spec.captum)
        return "target" in inspect.signature(captum_cls.attribute).parameters

    def _target(self, target: Target, output: Any, batch: int) -> torch.Tensor | None:
        if self.takes_target():
            return super()._target(target, output, batch)  # type: ignore[misc]
        if target is not None:
            raise ValueError(f"{self._where}: {self.spec.name!r} explains a layer or a neuron, not an output: it "
                             f"takes no target (pass target=None)")
        return None

    def _check_options(self, traced: Trace, options: dict[str, Any]) -> None:
        """The required options are given, and the table's rule can be applied to every module."""
        missing = [n for n, d in self.options().items() if d is inspect.Parameter.empty and n not in options]
        if missing:
            raise ValueError(f"{self._where}: {self.spec.name!r} needs the option(s) {', '.join(missing)} "
                             f"(captum's {self.spec.captum} has no default for them)")
        seed = options.get("seed", 0)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"{self._where}: expected seed to be an int or None, got {seed!r}")
        if self.spec.rule in ("deeplift", "lrp"):
            _check_module_rules(traced, self.spec, self._where)

    def _call_captum(self, inputs: Inputs, target: torch.Tensor | None, layer: nn.Module | None,
                     options: dict[str, Any]) -> Inputs:
        spec = self.spec
        captum_cls = getattr(captum_attr(self._where), spec.captum)
        init, _ = self._parameters()
        seed = options.pop("seed", 0)
        captum_names = {new: old for old, new in _RENAMED.items()}
        init_kw = {captum_names.get(n, n): v for n, v in options.items() if n in init}
        call_kw = {captum_names.get(n, n): v for n, v in options.items() if n not in init}
        if self.takes_target():
            call_kw["target"] = target
        first = inputs[0] if isinstance(inputs, tuple) else inputs
        try:
            method = captum_cls(self.model, **init_kw) if layer is None else captum_cls(self.model, layer, **init_kw)
            if spec.captum in _EXACT_RELU_RULES:
                attr, exact = _EXACT_RELU_RULES[spec.captum]
                setattr(method, attr, exact()(self.model))
            with seeded(seed if spec.seeded else None, first.device):
                return method.attribute(inputs, additional_forward_args=self._forward_args, **call_kw)
        except (AssertionError, AttributeError, KeyError, ValueError, TypeError, IndexError, RuntimeError) as err:
            if isinstance(err, RuntimeError) and any(text in str(err) for text in GRAPH_CUT):
                raise
            given = ", ".join(sorted(set(options))) or "no options"
            hint = (" (captum's LRP needs a rule for every module of the model, used or not: set module.rule, "
                    "or compute nn.Flatten's and batch norm's work otherwise)") if spec.rule == "lrp" else ""
            raise ValueError(f"{self._where}: captum's {spec.captum} failed ({given}): "
                             f"{type(err).__name__}: {err}{hint}") from err


def _check_module_rules(traced: Trace, spec: CaptumSpec, where: str) -> None:
    """Refuse the modules where captum's DeepLift or LRP rules would silently be wrong."""
    for module in traced.order:
        if next(module.children(), None) is not None:
            continue
        ruled = type(module) in DEEPLIFT_NONLINEAR if spec.rule == "deeplift" else True
        if isinstance(module, nn.ReLU6) and spec.rule == "deeplift":
            raise ValueError(f"{where}: {traced.describe(module)} is a ReLU6, for which captum's DeepLift has no rule "
                             f"(it would silently pass the plain gradient); {spec.name!r} needs nn.ReLU there")
        if ruled and traced.calls.get(module, 0) > 1:
            raise ValueError(f"{where}: {traced.describe(module)} runs {traced.calls[module]} times per forward pass; "
                             f"captum's {spec.captum} keeps one call's activations per module, so {spec.name!r} "
                             f"needs a separate module for each use")


class CaptumAttribution(_CaptumMethod, Attribution):
    """A captum primary attribution method from :data:`CAPTUM_TABLE`: results shaped like the inputs."""

    def _prepare(self, traced: Trace, inputs: Inputs, options: dict[str, Any]) -> None:
        self._check_options(traced, options)

    def _attribute(self, inputs: Inputs, target: torch.Tensor | None, **options: Any) -> Inputs:
        return self._call_captum(inputs, target, None, options)


class CaptumLayerAttribution(_CaptumMethod, LayerAttribution):
    """A captum layer method from :data:`CAPTUM_TABLE`: results shaped like the layer's output
    (or its input, with captum's ``attribute_to_layer_input=True``)."""

    def _prepare(self, traced: Trace, inputs: Inputs, options: dict[str, Any]) -> None:
        super()._prepare(traced, inputs, options)
        self._check_options(traced, options)

    def _attribute(self, inputs: Inputs, target: torch.Tensor | None, **options: Any) -> Inputs:
        return self._call_captum(inputs, target, self.layer, options)


class CaptumNeuronAttribution(CaptumLayerAttribution):
    """A captum neuron method from :data:`CAPTUM_TABLE`: how each input element drives one
    neuron of the layer (``neuron_selector``: a tuple of indices into the layer's output
    without the batch dimension, an int for a layer with outputs ``(N, F)``, or captum's
    callable); results shaped like the inputs."""

    def _prepare(self, traced: Trace, inputs: Inputs, options: dict[str, Any]) -> None:
        super()._prepare(traced, inputs, options)
        if options.get("attribute_to_neuron_input"):
            return
        shape = traced.output_shapes[self.layer][1:]
        selector = options["neuron_selector"]
        if callable(selector):
            return
        index = (selector,) if isinstance(selector, int) and not isinstance(selector, bool) else selector
        if not (isinstance(index, tuple) and all(
                isinstance(i, slice) or (isinstance(i, int) and not isinstance(i, bool)) for i in index)):
            raise TypeError(f"{self._where}: expected neuron_selector to be an int, a tuple of int (or slice) or a "
                            f"callable, got {selector!r}")
        if len(index) != len(shape):
            raise ValueError(f"{self._where}: neuron_selector {selector!r} has {len(index)} index(es), but layer "
                             f"{traced.describe(self.layer)} has outputs of shape (N, {', '.join(map(str, shape))}): "
                             f"give {len(shape)}")
        bad = [(i, s) for i, s in zip(index, shape) if isinstance(i, int) and not 0 <= i < s]
        if bad:
            raise ValueError(f"{self._where}: neuron_selector {selector!r} is out of range for layer "
                             f"{traced.describe(self.layer)} with outputs of shape (N, {', '.join(map(str, shape))})")


_FAMILIES: dict[str, type[Attribution]] = {"primary": CaptumAttribution, "layer": CaptumLayerAttribution,
                                           "neuron": CaptumNeuronAttribution}


def captum_classes() -> list[type[Attribution]]:
    """One :class:`~nsp.attribution.Attribution` subclass per row of :data:`CAPTUM_TABLE`,
    named after its captum class (``nsp.attribution.InputXGradient``, ...)."""
    made = []
    for spec in CAPTUM_TABLE:
        doc = (f"captum's ``{spec.captum}`` as nsp method {spec.name!r} (see :mod:`nsp.attribution.captum_methods`): "
               f"options are captum's keyword arguments" + ("; ``seed`` (default 0) seeds its random draws in a "
                                                            "forked RNG." if spec.seeded else "."))
        made.append(type(spec.captum, (_FAMILIES[spec.family],), {
            "name": spec.name, "spec": spec, "guided": bool(spec.rule), "__doc__": doc,
            "__module__": __name__}))
    return made
