"""Independent dense reference for the neuron graph and its causal spectrum.

Every numerical claim of ``nsp`` is tested against this module. It is slow, dense and
deliberately simple, and it never imports ``nsp``.

Semantics (the seed's, made precise):

- Layers are the network input, then the output of every top-level child, in execution
  order, without the batch dimension. Nodes are the scalars of the layers, numbered layer
  by layer, row-major inside a layer (the order of ``np.ndindex``).
- Edges go from layer ``L-1`` to layer ``L``. The input a child receives is an elementwise
  image of layer ``L-1``, possibly reshaped row-major, so child-input position ``i`` (flat)
  is layer-``L-1`` node ``i`` (flat).
  - ``INCL=False``: the nonzero entries of the child's Jacobian at the input it actually
    received, in the child's own dtype (:func:`jacobian_edges`).
  - ``INCL=True``: the structural dependence (:func:`structural_edges`).
- The causal spectrum is the Moebius inversion over the reachability order:
  ``s_hat(x) = s(x) - sum_{y < x} s_hat(y)`` over all strict ancestors ``y``
  (:func:`exact_spectrum`, exact; :func:`float64_spectrum`, the original's float64
  forward substitution, which loses every digit on deep networks).

Edges are kept as one dense boolean matrix per child, ``E[L-1]`` of shape
``(N_L, N_{L-1})`` with ``E[L-1][x, y]`` true when ``(y, x)`` is an edge.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

#: Modules that act elementwise (or as the identity in eval mode). The structural
#: pattern (INCL=True) treats them as the identity.
ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU,
    nn.CELU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish,
    nn.SiLU, nn.Mish, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.Softshrink,
    nn.Hardshrink, nn.Threshold, nn.LogSigmoid, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)


@dataclass
class Capture:
    """What one forward pass of a batch-1 input recorded.

    Attributes
    ----------
    names : list of str
        ``['input', <child names in execution order>]``.
    modules : list of nn.Module
        The top-level children in execution order (one fewer than ``names``).
    inputs : list of torch.Tensor
        The input each child actually received, with its batch dimension of 1.
    layers : list of torch.Tensor
        The input, then each child's output, without the batch dimension.
    """

    names: list[str]
    modules: list[nn.Module]
    inputs: list[torch.Tensor]
    layers: list[torch.Tensor]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Layer shapes without the batch dimension."""
        return [tuple(t.shape) for t in self.layers]


@dataclass
class Reference:
    """The reference graph and spectrum of one network on one input.

    Attributes
    ----------
    capture : Capture
        The recorded forward pass.
    edges : list of np.ndarray
        ``edges[L-1]``: bool ``(N_L, N_{L-1})``, ``[x, y]`` true when ``(y, x)`` is an edge.
    spectrum : list of np.ndarray
        The exact causal spectrum, one float64 array per layer, in the layer shapes.
    """

    capture: Capture
    edges: list[np.ndarray]
    spectrum: list[np.ndarray]

    @property
    def number_of_edges(self) -> int:
        """Total number of edges."""
        return int(sum(int(e.sum()) for e in self.edges))


def capture(network: nn.Module, x: torch.Tensor) -> Capture:
    """Run ``network(x)`` once and record every top-level child's input and output.

    Inputs are cloned before the child runs and outputs right after, so in-place children
    (``nn.ReLU(inplace=True)``) cannot overwrite what was recorded.

    Parameters
    ----------
    network : nn.Module
        The network; used in whatever train/eval mode it is in.
    x : torch.Tensor
        One input with a batch dimension of 1.

    Returns
    -------
    Capture

    Raises
    ------
    ValueError
        If ``x`` or a child's output is not a batch of one, a child runs twice, or a
        child's input does not have as many elements as the previous layer.
    TypeError
        If a child's input or output is not a tensor.
    """
    if x.dim() == 0 or x.shape[0] != 1:
        raise ValueError(f"reference.capture: expected a batch of one input, got shape {tuple(x.shape)}")
    order: list[str] = []
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    modules = dict(network.named_children())

    def pre_hook(name):
        def hook(module, args):
            if name in inputs:
                raise ValueError(f"reference.capture: child {name!r} ran more than once")
            if not args or not isinstance(args[0], torch.Tensor):
                raise TypeError(f"reference.capture: child {name!r} did not receive a tensor")
            inputs[name] = args[0].detach().clone()
        return hook

    def post_hook(name):
        def hook(module, args, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"reference.capture: child {name!r} returned {type(output).__name__}")
            if output.dim() == 0 or output.shape[0] != 1:
                raise ValueError(f"reference.capture: child {name!r} returned shape {tuple(output.shape)}, "
                                 "not a batch of one")
            outputs[name] = output.detach().clone()
            order.append(name)
        return hook

    handles = []
    try:
        for name, child in modules.items():
            handles.append(child.register_forward_pre_hook(pre_hook(name)))
            handles.append(child.register_forward_hook(post_hook(name)))
        with torch.no_grad():
            network(x)
    finally:
        for handle in handles:
            handle.remove()

    layers = [x.detach().clone()[0]]
    for name in order:
        if inputs[name].numel() != layers[-1].numel():
            raise ValueError(
                f"reference.capture: child {name!r} received {inputs[name].numel()} values "
                f"but the previous layer has {layers[-1].numel()}")
        layers.append(outputs[name][0])
    return Capture(names=["input", *order], modules=[modules[n] for n in order],
                   inputs=[inputs[n] for n in order], layers=layers)


def jacobian(module: nn.Module, inp: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """The Jacobian of one child at its recorded input, in the child's own dtype.

    Row ``k`` is the gradient of output ``k``. The input is replicated along the batch
    dimension and output ``k`` of replica ``k`` is backpropagated, so one backward pass
    gives ``chunk`` rows. This equals ``torch.autograd.functional.jacobian`` (checked in
    tests/test_reference.py) whenever the batch samples do not interact, which holds
    for every module in eval mode that the zoo uses, and is much faster on wide layers.

    Parameters
    ----------
    module : nn.Module
        The child, used in its current mode.
    inp : torch.Tensor
        Its input, with the batch dimension of 1.
    chunk : int
        Rows per backward pass.

    Returns
    -------
    torch.Tensor
        ``(N_out, N_in)``.
    """
    shape = tuple(inp.shape[1:])
    n_in = inp.numel()
    with torch.no_grad():
        n_out = module(inp.detach().clone()).numel()
    rows = []
    for start in range(0, n_out, chunk):
        k = min(chunk, n_out - start)
        leaf = inp.detach().expand(k, *shape).clone().requires_grad_(True)
        # The clone keeps in-place children from writing into the leaf.
        out = module(leaf.clone()).reshape(k, n_out)
        seed = torch.zeros_like(out)
        seed[torch.arange(k), torch.arange(start, start + k)] = 1
        (grad,) = torch.autograd.grad(out, leaf, seed, allow_unused=True)
        rows.append(torch.zeros(k, n_in, dtype=inp.dtype) if grad is None else grad.reshape(k, n_in))
    return torch.cat(rows, dim=0) if rows else torch.zeros(0, n_in, dtype=inp.dtype)


def jacobian_edges(module: nn.Module, inp: torch.Tensor) -> np.ndarray:
    """The ``INCL=False`` edges of one child: the nonzero pattern of its Jacobian.

    The Jacobian is taken by autograd (:func:`jacobian`) at ``inp``, the input the child
    actually received, in the child's own dtype and mode. Whatever autograd says is the
    definition: zero weights give zero entries, a max-pool routes the gradient to the
    index it returned (the first maximum on ties), ``relu'(0) = 0``, and a float32
    derivative that rounds to 0 (a saturated ``tanh``) drops the edge.

    Parameters
    ----------
    module : nn.Module
        The child.
    inp : torch.Tensor
        Its input, with the batch dimension of 1.

    Returns
    -------
    np.ndarray
        bool ``(N_out, N_in)``.
    """
    return (jacobian(module, inp) != 0).numpy()


def _identity_for_elementwise(module: nn.Module) -> nn.Module:
    if isinstance(module, ELEMENTWISE_MODULES):
        return nn.Identity()
    for name, child in module.named_children():
        setattr(module, name, _identity_for_elementwise(child))
    return module


def positive_copy(module: nn.Module) -> nn.Module:
    """A float64, eval-mode copy of ``module`` that is monotone and zero at zero.

    Every elementwise module becomes ``nn.Identity``, every parameter named ``bias``
    becomes 0, every other parameter becomes ``|w| + 0.5`` (so zero weights count), and
    batch-norm statistics become mean 0, variance 1.

    Parameters
    ----------
    module : nn.Module
        The child to copy; it is not modified.

    Returns
    -------
    nn.Module
    """
    probe = _identity_for_elementwise(copy.deepcopy(module)).double().eval()
    with torch.no_grad():
        for name, param in probe.named_parameters():
            if name.rsplit(".", 1)[-1] == "bias":
                param.zero_()
            else:
                param.copy_(param.abs() + 0.5)
        for name, buf in probe.named_buffers():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_mean":
                buf.zero_()
            elif leaf == "running_var":
                buf.fill_(1.0)
    return probe


def structural_edges(module: nn.Module, inp: torch.Tensor, chunk: int = 256) -> np.ndarray:
    """The ``INCL=True`` edges of one child, found by one-hot probing.

    Method. Take :func:`positive_copy` of the child. In that copy every weight is at
    least 0.5, every bias and running mean is 0 and elementwise modules are the identity,
    so all that remains are sums and positive multiples (conv, linear, batch norm, average
    pools, residual additions), maxima (max pools) and whatever positively homogeneous
    functionals the child's own ``forward`` applies (``F.relu`` is the identity on the
    values that occur). On the all-zero input every value is 0. On the one-hot input
    ``e_y`` every value is >= 0, and a value is > 0 exactly when some path of the
    computation leads to it from position ``y``: a sum or positive multiple of
    non-negative terms is positive iff one term is, and a maximum over a window of
    non-negative values is positive iff a member of the window is. Hence output ``x``
    differs from its zero-input value iff ``x`` depends structurally on ``y``. Padding
    never counts (zero padding adds nothing, max-pool padding is ``-inf``); ``ceil_mode``,
    dilation, ``count_include_pad`` and adaptive windows are all evaluated by torch
    itself; composite children give the union of their paths.

    Parameters
    ----------
    module : nn.Module
        The child.
    inp : torch.Tensor
        Its input (for the shape), with the batch dimension of 1. The child's
        ``forward`` must accept a larger batch.
    chunk : int
        How many one-hot inputs to run per batch.

    Returns
    -------
    np.ndarray
        bool ``(N_out, N_in)``.
    """
    probe = positive_copy(module)
    shape = tuple(inp.shape[1:])
    n_in = inp.numel()
    with torch.no_grad():
        base = probe(torch.zeros((1, *shape), dtype=torch.float64)).reshape(1, -1)
        columns = []
        for start in range(0, n_in, chunk):
            stop = min(start + chunk, n_in)
            onehot = torch.zeros((stop - start, n_in), dtype=torch.float64)
            onehot[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            out = probe(onehot.reshape(stop - start, *shape)).reshape(stop - start, -1)
            columns.append((out != base).numpy())
    return np.concatenate(columns, axis=0).T.copy()


def edge_matrices(cap: Capture, incl: bool) -> list[np.ndarray]:
    """Per-child edge matrices for a captured forward pass.

    Parameters
    ----------
    cap : Capture
    incl : bool
        ``True``: structural edges; ``False``: nonzero Jacobian entries.

    Returns
    -------
    list of np.ndarray
        ``edges[L-1]``: bool ``(N_L, N_{L-1})``.
    """
    find = structural_edges if incl else jacobian_edges
    return [find(m, i) for m, i in zip(cap.modules, cap.inputs)]


def offsets(shapes: Sequence[Sequence[int]]) -> np.ndarray:
    """Global id of the first node of each layer, plus the total node count at the end."""
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def edge_array(edges: Sequence[np.ndarray]) -> np.ndarray:
    """All edges as global ``(from, to)`` node ids, sorted lexicographically.

    Parameters
    ----------
    edges : list of np.ndarray
        Per-child edge matrices as returned by :func:`edge_matrices`.

    Returns
    -------
    np.ndarray
        int64 ``(E, 2)``.
    """
    starts = np.concatenate([[0], np.cumsum([e.shape[1] for e in edges])])
    parts = []
    for k, e in enumerate(edges):
        to, frm = np.nonzero(e)
        parts.append(np.stack([frm + starts[k], to + starts[k + 1]], axis=1))
    out = np.concatenate(parts, axis=0).astype(np.int64) if parts else np.zeros((0, 2), np.int64)
    return out[np.lexsort((out[:, 1], out[:, 0]))]


def node_tuple(shapes: Sequence[Sequence[int]], node_id: int) -> tuple[int, ...]:
    """The node ``(layer_index, *index_in_layer)`` with global id ``node_id``."""
    offs = offsets(shapes)
    layer = int(np.searchsorted(offs, node_id, side="right") - 1)
    index = np.unravel_index(int(node_id - offs[layer]), tuple(shapes[layer]))
    return (layer, *(int(i) for i in index))


def edge_node_pairs(shapes: Sequence[Sequence[int]], edges: Sequence[np.ndarray]) -> set:
    """All edges as ``((L-1, *index), (L, *index))`` node-tuple pairs, as ``nsp.NNGraph`` names them.

    Parameters
    ----------
    shapes : sequence of shapes
        Layer shapes (without the batch dimension).
    edges : list of np.ndarray
        Per-child edge matrices.

    Returns
    -------
    set of tuple
    """
    pairs = set()
    for k, e in enumerate(edges):
        to, frm = np.nonzero(e)
        src = zip(*(i.tolist() for i in np.unravel_index(frm, tuple(shapes[k]))))
        dst = zip(*(i.tolist() for i in np.unravel_index(to, tuple(shapes[k + 1]))))
        pairs.update(((k, *a), (k + 1, *b)) for a, b in zip(src, dst))
    return pairs


def ancestor_matrices(edges: Sequence[np.ndarray]):
    """Yield, for each layer ``L >= 1``, the dense ancestor matrix over earlier layers.

    ``anc_L[x, y]`` is true when node ``y`` (global id, ``y < offset_L``) is a strict
    ancestor of node ``x`` of layer ``L``. Edges only join consecutive layers, so the
    ancestors of ``x`` are its parents plus the ancestors of its parents:
    ``anc_L = [E_L @ anc_{L-1} > 0 | E_L]``. The product counts paths in float32, exact
    below 2**24 and only tested against 0.

    Parameters
    ----------
    edges : list of np.ndarray
        Per-child edge matrices.

    Yields
    ------
    np.ndarray
        bool ``(N_L, offset_L)`` for ``L = 1, 2, ...``.
    """
    prev = np.zeros((edges[0].shape[1], 0), dtype=bool) if edges else None
    for e in edges:
        through = (e.astype(np.float32) @ prev.astype(np.float32)) > 0
        prev = np.concatenate([through, e], axis=1)
        yield prev


def _layer_values(layers: Sequence) -> list[np.ndarray]:
    out = []
    for layer in layers:
        arr = layer.detach().cpu().double().numpy() if isinstance(layer, torch.Tensor) \
            else np.asarray(layer, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError("reference: activations must be finite")
        out.append(arr)
    return out


def mobius_integers(layers: Sequence, edges: Sequence[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """The exact Moebius inversion, scaled to integers.

    Every float is a binary rational, so multiplying all activations by ``2**shift``
    (``shift`` set by the smallest set bit among them) makes them Python ints, and the
    Moebius inversion has integer coefficients. ``s_hat_L = s_L - anc_L @ s_hat_{<L}`` is
    then evaluated in Python ints, layer by layer (nodes in one layer are never ordered).

    Parameters
    ----------
    layers : sequence of array-like or torch.Tensor
        The activations, one entry per layer.
    edges : list of np.ndarray
        Per-child edge matrices (``len(layers) - 1`` of them).

    Returns
    -------
    (list of np.ndarray, int)
        Per layer a flat object array of Python ints ``2**shift * s_hat``, and ``shift``.
    """
    values = _layer_values(layers)
    if len(edges) != len(values) - 1:
        raise ValueError(f"reference: {len(values)} layers need {len(values) - 1} edge matrices, got {len(edges)}")
    ratios = [[float(v).as_integer_ratio() for v in a.ravel()] for a in values]
    shift = max((d.bit_length() - 1 for layer in ratios for _, d in layer), default=0)
    signal = [np.array([n << (shift - d.bit_length() + 1) for n, d in layer], dtype=object)
              for layer in ratios]
    hats = [signal[0].copy()]
    flat = signal[0].copy()
    for s, anc in zip(signal[1:], ancestor_matrices(edges)):
        sums = np.array([sum(flat[row].tolist()) for row in anc], dtype=object)
        hat = s - sums
        hats.append(hat)
        flat = np.concatenate([flat, hat])
    return hats, shift


def exact_spectrum(layers: Sequence, edges: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The causal spectrum, exact and then rounded once to float64.

    Parameters
    ----------
    layers : sequence of array-like or torch.Tensor
        The activations, one entry per layer (any float dtype; the values are taken as
        exact binary rationals).
    edges : list of np.ndarray
        Per-child edge matrices.

    Returns
    -------
    list of np.ndarray
        float64 spectra in the layer shapes. Each entry is correctly rounded: CPython's
        ``int / int`` true division rounds correctly.
    """
    hats, shift = mobius_integers(layers, edges)
    scale = 1 << shift
    shapes = [np.shape(a) for a in _layer_values(layers)]
    return [np.array([n / scale for n in hat.tolist()], dtype=np.float64).reshape(shape)
            for hat, shape in zip(hats, shapes)]


def float64_spectrum(layers: Sequence, edges: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The causal spectrum by float64 forward substitution (the original package's method).

    Same recursion as :func:`mobius_integers`, ``s_hat_L = s_L - anc_L @ s_hat_{<L}``, in
    float64. Right on shallow networks; loses every digit on deep ones, where the Möbius
    function of the reachability order grows exponentially with depth.

    Parameters
    ----------
    layers : sequence of array-like or torch.Tensor
    edges : list of np.ndarray

    Returns
    -------
    list of np.ndarray
        float64 spectra in the layer shapes.
    """
    values = _layer_values(layers)
    hats = [values[0].ravel().copy()]
    flat = hats[0].copy()
    for s, anc in zip(values[1:], ancestor_matrices(edges)):
        hat = s.ravel() - anc.astype(np.float64) @ flat
        hats.append(hat)
        flat = np.concatenate([flat, hat])
    return [h.reshape(v.shape) for h, v in zip(hats, values)]


def relative_errors(spectrum: Sequence, reference: Sequence[np.ndarray]) -> list[float]:
    """Per-layer ``||a_L - r_L||_2 / ||r_L||_2``, comparing the layers flattened row-major.

    A layer whose reference is all zero gives 0 if ``a_L`` is exactly zero and ``inf``
    otherwise. Both vectors are scaled by their largest entry first, so spectra near the
    ends of the float64 range neither underflow nor overflow in the norms.
    """
    values = _layer_values(spectrum)
    if len(values) != len(reference):
        raise ValueError(f"reference.relative_errors: {len(values)} layers against {len(reference)} in the reference")
    errors = []
    for layer, (a, r) in enumerate(zip(values, reference)):
        ref = np.asarray(r, dtype=np.float64).ravel()
        if a.size != ref.size:
            raise ValueError(f"reference.relative_errors: layer {layer} has {a.size} values, the reference {ref.size}")
        diff = a.ravel() - ref
        if not np.any(diff):
            errors.append(0.0)
        elif not np.any(ref):
            errors.append(float("inf"))
        else:
            scale = max(np.abs(diff).max(), np.abs(ref).max())
            errors.append(float(np.linalg.norm(diff / scale) / np.linalg.norm(ref / scale)))
    return errors


def reference(network: nn.Module, x: torch.Tensor, incl: bool) -> Reference:
    """Capture, edges and exact spectrum of ``network`` on the single input ``x``.

    Parameters
    ----------
    network : nn.Module
    x : torch.Tensor
        Batch of one.
    incl : bool
        The ``INCL`` flag of ``nsp.NNGraph``.

    Returns
    -------
    Reference
    """
    cap = capture(network, x)
    edges = edge_matrices(cap, incl)
    return Reference(capture=cap, edges=edges, spectrum=exact_spectrum(cap.layers, edges))
