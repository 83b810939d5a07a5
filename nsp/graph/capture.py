"""Recording the activation pattern that one probe input produces in a network.

The pattern has one *layer* for the input and one for the output of every top-level
child module, in execution order: the seed's layers, which every other choice of layers
reduces to by default. Tensors are stored without the batch dimension, detached and on
the CPU.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from nsp.common.layers import find_layers
from nsp.graph.dataflow import Op, Program, Recorder, Ref, first_tensor, version_counter
from nsp.graph.rules import is_leaf_module

__all__ = ["Activations", "Op", "Program", "Ref"]


def _check_arguments(network: Any, input: Any) -> None:
    if not isinstance(network, nn.Module):
        raise TypeError(f"nsp.Activations: expected `network` to be a torch.nn.Module, got {type(network).__name__}")
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"nsp.Activations: expected `input` to be a torch.Tensor, got {type(input).__name__}")
    if input.is_complex():
        raise TypeError(
            f"nsp.Activations: `input` is complex ({input.dtype}); activation patterns are real, and the imaginary"
            " part would be dropped. Pass the real and imaginary parts as real channels, e.g. torch.view_as_real(x)"
        )


@dataclass
class _Recorded:
    """One forward pass: per executed top-level child, its name, module, input, output and program."""

    input: torch.Tensor
    # The layer choice as given (``layers=``) and the modules it chose, for ``like=``.
    layers: Any = None
    chosen: list[tuple[str, nn.Module]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    modules: list[nn.Module] = field(default_factory=list)
    inputs: list[torch.Tensor] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)
    programs: list[Program] = field(default_factory=list)


# Buffers a normalisation layer updates in training mode (BatchNorm, SyncBatchNorm, InstanceNorm
# with track_running_stats, and custom layers that follow torch's names).
_RUNNING_STATISTICS = frozenset({"running_mean", "running_var", "num_batches_tracked"})


def _capture(network: nn.Module, input: torch.Tensor, layers: Any, like: "Activations | None" = None) -> _Recorded:
    # A normalisation layer in training mode updates its running statistics on every pass:
    # recording a pattern must leave the network as it was (NNGraph then refuses such a layer).
    norms = [m for m in network.modules() if m.training and _RUNNING_STATISTICS & {n for n, _ in m.named_buffers(recurse=False)}]
    saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None} for m in norms]
    try:
        recorded = _record_outputs(network, input, like) if like is not None else None
        if recorded is None:
            recorded = _capture_pass(network, input, layers)
    finally:
        with torch.no_grad():
            for module, buffers in zip(norms, saved):
                for name, value in buffers.items():
                    getattr(module, name).copy_(value)
    complex_ = [n for n, out in zip(recorded.names, recorded.outputs) if out.is_complex()]
    if complex_:
        raise TypeError(
            f"nsp.Activations: the layers {complex_} are complex; activation patterns are real, and their imaginary"
            " parts would be dropped"
        )
    return recorded


def _capture_pass(network: nn.Module, input: torch.Tensor, layers: Any) -> _Recorded:
    chosen = _candidates(network, layers)
    if layers is None:
        recorded = _record(network, input, chosen)
        if not _chained(recorded):
            # The parent's forward does more between its children than hand one's output to
            # the next (ViT's class token, an LSTM classifier's last step): record its dataflow.
            recorded = _record_dataflow(network, input, list(zip(recorded.names, recorded.modules)), False)
    else:
        recorded = _record_dataflow(network, input, chosen, isinstance(layers, (list, tuple, nn.Module)))
    recorded.layers, recorded.chosen = layers, chosen
    return recorded


def _candidates(network: nn.Module, layers: Any) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are layers when they run, with their names."""
    return top_level(network) if layers is None else _choose(network, layers)


def _record_outputs(network: nn.Module, input: torch.Tensor, like: "Activations") -> _Recorded | None:
    """The layers of ``like`` from one pass of ``network(input)``, outputs only; None where they differ.

    A forward hook on each module that ``like``'s choice of layers chose, and nothing
    else: no dataflow recorder and no torch-function mode, so the pass costs about a plain
    forward pass. The result is None (the caller records in full) unless the choice picks
    the same modules under the same names now, and the layers that run have ``like``'s
    names, in its order, and its shapes.
    """
    layers, chosen = like._choice
    now = _candidates(network, layers)
    if len(now) != len(chosen) or any(n != m or a is not b for (n, a), (m, b) in zip(now, chosen)):
        return None
    recorded = _Recorded(input.detach().to("cpu", copy=True), layers, chosen)
    calls: dict[str, int] = {}

    def keep(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            # Named as the full capture names a module called again (name, name:1, ...).
            calls[name] = calls.get(name, 0) + 1
            output = first_tensor(output)
            recorded.names.append(name if calls[name] == 1 else f"{name}:{calls[name] - 1}")
            recorded.modules.append(module)
            # Cloned: a later in-place op (e.g. ReLU(inplace=True)) would overwrite it.
            recorded.outputs.append(output.detach().to("cpu", copy=True) if isinstance(output, torch.Tensor) else None)

        return hook

    handles = []
    try:
        for name, module in chosen:
            handles.append(module.register_forward_hook(keep(name)))
        with torch.no_grad():
            network(input)
    finally:
        for handle in handles:
            handle.remove()
    shapes = like.shapes
    same = recorded.names == like.layernames[1:] and tuple(recorded.input.shape[1:]) == shapes[0] and all(
        out is not None and tuple(out.shape[1:]) == shape for out, shape in zip(recorded.outputs, shapes[1:])
    )
    return recorded if same else None


def _chained(recorded: _Recorded) -> bool:
    """Whether every child received as many values as the layer before it has (an elementwise image of it)."""
    before = [recorded.input] + recorded.outputs[:-1]
    return all(x.numel() == b.numel() for x, b in zip(recorded.inputs, before))


def top_level(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are the default layers: the children, with the items of a
    ``ModuleList``/``ModuleDict`` child in its place when the container has no forward of
    its own (it cannot be called then). A subclass with a forward (torchvision's
    ``_DenseBlock``) is called like any module, and is one layer."""
    out = []
    for name, child in network.named_children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)) and type(child).forward is nn.Module.forward:
            out += [(f"{name}.{n}", m) for n, m in top_level(child)]
        else:
            out.append((name, child))
    return out


def _record(network: nn.Module, input: torch.Tensor, children: list[tuple[str, nn.Module]]) -> _Recorded:
    """Run ``network(input)`` once, recording every top-level child (``children``) that runs."""
    recorded = _Recorded(input.detach().to("cpu", copy=True))
    recorder = Recorder(is_leaf_module)
    seen: set[str] = set()
    pending: dict[str, torch.Tensor] = {}
    # The last child's output, its version counter then, and nsp's copy of it.
    last: list[Any] = [None, None, None]

    def begin(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if name in seen:
                raise ValueError(
                    f"nsp.Activations: child '{name}' ({type(module).__name__}) ran more than once in one "
                    "forward pass; a layer must be produced by exactly one call"
                )
            seen.add(name)
            if not args or not isinstance(args[0], torch.Tensor):
                raise TypeError(
                    f"nsp.Activations: child '{name}' ({type(module).__name__}) was not called with a tensor "
                    "as its first argument"
                )
            # Cloned now: an in-place op inside the child may overwrite its input. The
            # previous child's output, unchanged since (a chain), was cloned already.
            unchanged = args[0] is last[0] and last[1] is not None and version_counter(args[0]) == last[1]
            pending[name] = last[2] if unchanged else _copy(args[0])
            recorder.begin(args[0])

        return hook

    def end(name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            program = recorder.end(output)
            output = first_tensor(output)
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"nsp.Activations: child '{name}' ({type(module).__name__}) returned "
                    f"{type(output).__name__}; a layer must be a single tensor"
                )
            recorded.names.append(name)
            recorded.modules.append(module)
            # Cloned: a later in-place op (e.g. ReLU(inplace=True)) would overwrite it.
            recorded.outputs.append(_copy(output))
            recorded.inputs.append(pending.pop(name))
            recorded.programs.append(program)
            last[:] = output, version_counter(output), recorded.outputs[-1]

        return hook

    handles = []
    tops = {id(child) for _, child in children}
    try:
        for name, child in children:
            # Registration order is call order: begin runs before the child's own
            # recorder hooks, end runs after them. What runs inside a child is watched
            # through the hooks common to all modules (two in all; torch runs them first).
            handles.append(child.register_forward_pre_hook(begin(name)))
            recorder.watch([(name, child)])
            handles.append(child.register_forward_hook(end(name)))
            recorder.watch([(n, m) for n, m in child.named_modules(prefix=name) if id(m) not in tops], shared=True)
        with torch.no_grad(), recorder:
            network(input)
    finally:
        recorder.unwatch()
        for handle in handles:
            handle.remove()
    if not recorded.names:
        raise ValueError(
            f"nsp.Activations: no top-level child of the {type(network).__name__} ran in the forward pass, so the "
            "pattern has no layers after the input (layers are the outputs of top-level children); wrap the module, "
            "e.g. nn.Sequential(module), or choose layers with `layers=`"
        )
    return recorded


def _copy(t: torch.Tensor) -> torch.Tensor:
    """nsp's own copy of a recorded tensor, on the CPU."""
    return t.detach().to("cpu", copy=True)


def _choose(network: nn.Module, layers: Any) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of the modules whose outputs are layers.

    ``'leaves'`` and predicates choose among the modules that nsp can see run: parts of a
    module recorded whole (one with a rule, e.g. ``nn.MultiheadAttention``'s
    ``out_proj``) are left out.
    """
    modules, visible, leaves = _walk(network)
    if layers == "leaves":
        names = leaves
    elif isinstance(layers, (list, tuple, nn.Module)):
        names = [n for n, _ in find_layers(network, layers, "nsp.Activations")]
    elif callable(layers):
        names = [n for n, m in visible.items() if layers(n, m)]
    else:
        raise TypeError(
            "nsp.Activations: expected `layers` to be None, 'leaves', a list of module names or modules, a module, "
            f"or a predicate (name, module) -> bool, got {layers!r}"
        )
    if not names:
        raise ValueError(f"nsp.Activations: `layers`={layers!r} chose no module of the network")
    return [(n, modules[n]) for n in names]


def _walk(network: nn.Module) -> tuple[dict[str, nn.Module], dict[str, nn.Module], list[str]]:
    """The network's modules by qualified name (``named_modules()`` order, without the network);
    those nsp can see run (no proper ancestor recorded whole); the names of the visible leaves.

    One walk with an explicit stack that hands "inside a module recorded whole" down, and one
    rule look-up per type (a rule depends on the type alone): name prefixes, per-module
    look-ups and nested generators took 1.2 ms of ShuffleNet's capture.
    """
    modules: dict[str, nn.Module] = {}
    visible: dict[str, nn.Module] = {}
    leaves: list[str] = []
    whole_types: dict[type, bool] = {}
    # As named_modules: a module met again (shared) is yielded, and walked, under its first path only.
    seen = {id(network)}
    stack = [(n, c, False) for n, c in reversed(network._modules.items()) if c is not None]
    while stack:
        name, module, hidden = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        modules[name] = module
        whole = whole_types.get(type(module))
        if whole is None:
            whole = whole_types[type(module)] = is_leaf_module(module)
        children = [(f"{name}.{n}", c, hidden or whole) for n, c in module._modules.items() if c is not None]
        if not hidden:
            visible[name] = module
            if whole or not children:
                leaves.append(name)
        stack.extend(reversed(children))
    return modules, visible, leaves


def _record_dataflow(
    network: nn.Module, input: torch.Tensor, modules: list[tuple[str, nn.Module]], strict: bool
) -> _Recorded:
    """Run ``network(input)`` once, recording the whole dataflow and the outputs of ``modules``."""
    recorded = _Recorded(input.detach().to("cpu", copy=True))
    chosen = {id(m): n for n, m in modules}
    recorder = Recorder(is_leaf_module)

    calls: dict[str, int] = {}

    def mark(module: nn.Module, args: tuple, output: Any) -> None:
        name = chosen[id(module)]
        # A module called again (torchvision blocks reuse one ReLU) gives a new layer each time.
        calls[name] = calls.get(name, 0) + 1
        if calls[name] > 1:
            name = f"{name}:{calls[name] - 1}"
        output = first_tensor(output)
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"nsp.Activations: layer '{name}' ({type(module).__name__}) returned {type(output).__name__}; "
                "a layer must be a single tensor"
            )
        recorded.names.append(name)
        recorded.modules.append(module)
        with recorder.paused():
            recorded.outputs.append(output.detach().to("cpu", copy=True))
            recorder.mark(len(recorded.names), output)

    handles = []
    try:
        # The network itself is named by its class, so errors in its forward say where.
        # Torch runs these common hooks before a module's own: mark sees a layer after the
        # recorder has recorded its module.
        named = list(network.named_modules())
        recorder.watch([(name or type(network).__name__, m) for name, m in named], shared=True)
        for name, module in named:
            if id(module) in chosen:
                handles.append(module.register_forward_hook(mark))
        recorder.begin(input)
        with torch.no_grad(), recorder:
            output = network(input)
        recorded.programs.append(recorder.end(output))
    finally:
        recorder.unwatch()
        for handle in handles:
            handle.remove()
    # 'leaves' and predicates describe which modules are layers when they run (a skipped
    # branch, an unused module); a list of names promises that each one runs.
    missing = [n for n in chosen.values() if n not in calls] if strict else []
    if missing:
        raise ValueError(f"nsp.Activations: the chosen layer(s) {missing} did not run in the forward pass")
    return recorded


def _layers_of(layers: Any, like: Any, who: str) -> Any:
    """The layer choice: ``layers``, or ``like``'s where ``like`` is given."""
    if like is None:
        return layers
    if not isinstance(like, Activations) or not hasattr(like, "_choice"):
        raise TypeError(f"{who}: expected `like` to be a pattern recorded by nsp.Activations, got {type(like).__name__}")
    if layers is not None:
        raise ValueError(f"{who}: pass `layers` or `like` (which records like's layers), not both")
    return like._choice[0]


class Activations:
    """The activation pattern generated by one input of a network.

    Parameters
    ----------
    network : torch.nn.Module
        The network under observation.
    input : torch.Tensor
        A single input *with* a batch dimension of size 1, e.g. shape ``(1, C, H, W)``.
    layers : None, 'leaves', list of str or modules, module, or callable, optional
        Which module outputs are layers (after the input), in execution order:

        - ``None`` (the seed's default): the top-level children (the items of a
          ``ModuleList`` or ``ModuleDict`` child in its place). A child's input is
          taken to be an elementwise image of the previous layer, possibly reshaped
          row-major (as ``x.view(...)`` before a Linear). Where a child receives a
          different number of values than the layer before it has (ViT's class token,
          an LSTM classifier that reads its last step), the network's whole dataflow is
          recorded instead, as for a list of names.
        - ``'leaves'``: every module without children.
        - a list of qualified module names at any depth, e.g. ``['layer1.0.conv1', 'fc']``,
          or of the submodules themselves (``[net.layer1[0].conv1, net.fc]``), or one
          submodule.
        - a predicate ``(name, module) -> bool`` over ``network.named_modules()``.

        A chosen module that runs several times gives a layer per call, named
        ``name``, ``name:1``, ``name:2``, ... With ``'leaves'`` or a predicate, a chosen
        module that does not run (a skipped branch) is no layer; a listed one must run. A
        module that returns a tuple (``nn.LSTM``) gives its first output. With a choice,
        edges come from the dataflow
        recorded during this forward pass:
        everything between two chosen layers (functional ops, unchosen modules,
        residual additions, concatenations) is composed, and a layer may feed any later
        one (skips and merges make a DAG). For ``INCL=False`` elementwise functions
        between layers count like modules, so a dead functional ReLU drops edges.
    like : Activations, optional
        A pattern of this network recorded in full (without ``like``), whose graph is
        built already: record the same layers, their values only, at about the cost of
        a plain forward pass (a forward hook on each layer's module; no dataflow). The
        result cannot build a graph (``has_dataflow`` is False); it is for transforming
        on ``like``'s graph, as a training callback does at every record. Where the
        layers differ from ``like``'s (the choice now picks other modules, or the
        layers that run have other names, order or shapes), the pattern is recorded in
        full instead, as without ``like``. A change inside a layer that keeps its
        output's shape (a smaller kernel in a block) is not seen: compare the modules'
        structure yourself where the model may change so (``SpectrumAnalysis`` hashes
        each layer module's ``repr``). Pass ``layers`` or ``like``, not both.

    Attributes
    ----------
    layernames : list of str
        ``'input'`` followed by the names of the children that ran.
    layerdescriptions : list
        ``'Input[<shape>]'`` followed by the child modules themselves.
    layeractivations : list of torch.Tensor
        One tensor per layer, batch dimension removed, detached, on the CPU.

    Raises
    ------
    TypeError
        If ``network`` is not a module or ``input`` is not a tensor, or a child returns
        something other than one tensor, or ``like`` is not a pattern recorded by
        ``nsp.Activations``.
    ValueError
        If ``input`` is not a batch of exactly one input, a top-level child runs more than
        once (default layers), a listed layer is not in the network, a chosen layer
        does not run, or both ``layers`` and ``like`` are given.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> acts = Activations(net, torch.ones(1, 2))
    >>> acts.layernames
    ['input', '0', '1']
    >>> [tuple(a.shape) for a in acts.layeractivations]
    [(2,), (3,), (3,)]
    """

    def __init__(
        self, network: nn.Module, input: torch.Tensor, layers: Any = None, *, like: "Activations | None" = None
    ) -> None:
        _check_arguments(network, input)
        if input.dim() < 2 or input.shape[0] != 1:
            raise ValueError(
                "nsp.Activations: expected `input` to be a single input with a batch dimension of size 1, "
                f"got shape {list(input.shape)}; pass e.g. x[:1] or x.unsqueeze(0), "
                "or use Activations.from_batch for several probes"
            )
        layers = _layers_of(layers, like, "nsp.Activations")
        self._set(_capture(network, input, layers, like), 0)

    @classmethod
    def from_batch(
        cls, network: nn.Module, inputs: torch.Tensor, layers: Any = None, *, like: "Activations | None" = None
    ) -> list["Activations"]:
        """Record the patterns of ``P`` probe inputs in one forward pass.

        Parameters
        ----------
        network : torch.nn.Module
        inputs : torch.Tensor
            A batch ``(P, *input_shape)``. The network must treat batch items
            independently (eval mode: no batch statistics).
        layers : optional
            As for ``Activations``.
        like : Activations, optional
            As for ``Activations``: one pattern (e.g. the first probe's) recorded in
            full, whose layers every probe's pattern then has.

        Returns
        -------
        list of Activations
            One pattern per probe, with the same layers as
            ``Activations(network, inputs[p:p+1])``. Values may differ from a single-probe
            pass in the last bits (batched kernels round differently), and spectra
            magnify such differences: compare like with like.

        Examples
        --------
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> patterns = Activations.from_batch(net, torch.randn(4, 2))
        >>> len(patterns), patterns[0].shapes
        (4, [(2,), (3,), (3,)])
        """
        _check_arguments(network, inputs)
        if inputs.dim() < 2 or inputs.shape[0] < 1:
            raise ValueError(
                f"nsp.Activations.from_batch: expected `inputs` of shape (P, *input_shape) with P >= 1, "
                f"got {list(inputs.shape)}"
            )
        layers = _layers_of(layers, like, "nsp.Activations.from_batch")
        recorded = _capture(network, inputs, layers, like)
        patterns = []
        for p in range(inputs.shape[0]):
            pattern = cls.__new__(cls)
            pattern._set(recorded, p)
            patterns.append(pattern)
        return patterns

    def _set(self, recorded: "_Recorded", p: int) -> None:
        self.layernames = ["input"] + recorded.names
        self.layerdescriptions = [f"Input[1, {', '.join(map(str, recorded.input.shape[1:]))}]"] + recorded.modules

        # The recorded tensors are nsp's own copies: with one probe, its item is all of one
        # and needs no second copy; with several, each probe's is copied out of the batch.
        def item(t: torch.Tensor) -> torch.Tensor:
            return t[p] if t.shape[0] == 1 else t[p].clone()

        self.layeractivations = [item(recorded.input)] + [item(out) for out in recorded.outputs]
        # What each child received; NNGraph needs it for data-dependent (INCL=False) edges.
        self._layerinputs = [None] + [item(x) for x in recorded.inputs]
        # How each child maps its input to its output, recorded during the same pass; or,
        # with layers chosen at any depth, the dataflow of the whole network.
        self._programs = [None] + recorded.programs if recorded.inputs else None
        self._dataflow = None if recorded.inputs or not recorded.programs else recorded.programs[0]
        self._choice = (recorded.layers, recorded.chosen)

    def __len__(self) -> int:
        return len(self.layeractivations)

    def __repr__(self) -> str:
        layers = ", ".join(f"{n}{list(a.shape)}" for n, a in zip(self.layernames, self.layeractivations))
        return f"Activations({layers})"

    @property
    def has_dataflow(self) -> bool:
        """Whether the dataflow between the layers was recorded, so that ``NNGraph`` can be built
        from this pattern (False for one recorded with ``like=`` or read back from a file)."""
        programs = getattr(self, "_programs", None)
        return getattr(self, "_dataflow", None) is not None or (
            programs is not None and all(p is not None for p in programs[1:])
        )

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The shape of every layer, without the batch dimension."""
        return [tuple(a.shape) for a in self.layeractivations]

    def to_numpy(self) -> np.ndarray:
        """All values as one float64 vector, layer by layer, row-major.

        Float32, float16 and bfloat16 values convert to float64 exactly.
        """
        # Filled in place: on large networks a list of per-layer copies doubled the peak.
        out = np.empty(sum(a.numel() for a in self.layeractivations))
        offset = 0
        for a in self.layeractivations:
            out[offset: offset + a.numel()] = (a.float() if a.dtype == torch.bfloat16 else a).numpy().reshape(-1)
            offset += a.numel()
        return out

    def to_vector(self) -> list[float]:
        """All values as one list, layer by layer, row-major (the seed's format)."""
        return self.to_numpy().tolist()

    def to_activations(self, signal: Sequence[float] | np.ndarray | torch.Tensor) -> "Activations":
        """A copy of this pattern whose values come from ``signal``.

        Parameters
        ----------
        signal : sequence of float, numpy.ndarray or torch.Tensor
            One value per node, layer by layer, row-major (the order of ``to_vector``).

        Returns
        -------
        Activations
            Same names and descriptions; float64 tensors of the same shapes.

        Raises
        ------
        ValueError
            If ``signal`` does not have one value per node.
        """
        values = torch.as_tensor(np.asarray(signal, dtype=np.float64)).reshape(-1)
        sizes = [a.numel() for a in self.layeractivations]
        if values.numel() != sum(sizes):
            raise ValueError(
                f"nsp.Activations.to_activations: `signal` has {values.numel()} values, "
                f"but the pattern has {sum(sizes)} nodes"
            )
        other = copy.copy(self)
        other.layernames = list(self.layernames)
        other.layerdescriptions = list(self.layerdescriptions)
        other.layeractivations = [
            chunk.reshape(a.shape).clone() for chunk, a in zip(torch.split(values, sizes), self.layeractivations)
        ]
        return other
