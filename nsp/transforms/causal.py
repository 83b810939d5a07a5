"""The causal (Möbius) Fourier transform, computed exactly.

The signal on a DAG is ``s(x) = Σ_{y ≤ x} ŝ(y)`` over the reachability order; the
spectrum ``ŝ`` is its Möbius inversion ``ŝ(x) = s(x) − Σ_{y < x} ŝ(y)`` over all strict
ancestors ``y`` (Seifert, Wendler and Püschel, "Causal Fourier analysis on directed acyclic
graphs and posets", arXiv 2209.07970).

Float64 forward substitution loses every digit on deep networks: the Möbius function of
these orders grows exponentially with depth, and spectra reach 1e54 on ResNet-18 while
the activations stay below 1.4. So this module computes in exact integer arithmetic and
rounds once:

1. Float activations are binary rationals. Scaled by a common power of two (per probe)
   they become integers, held as *limbs*: ``value = Σ_j limb_j · 2^(j·b)`` in int64
   (:mod:`nsp.transforms.limbs`).
2. Layer by layer, ``ŝ_L = s_L − Σ_{K<L} A_{L,K} ŝ_K``, where ``A_{L,K}`` is the ancestor
   relation of layer L in layer K. Additions run on limbs with carries left pending; the
   limb width ``b`` is chosen so that no int64 can overflow before the one carry pass per
   layer. Nothing is ever reduced modulo anything, so nothing needs division.
3. Each coefficient is rounded once, correctly, to float64 (:func:`nsp.transforms.limbs.from_limbs`).

Layers stream through these steps: a layer becomes limbs when its turn comes, and its
limbs are dropped after the last layer that reads them directly; later layers read the
axis sums they need (a convolution sums all channels below it), kept until their last
use. ResNet-50 at 224×224 with every leaf module as a layer (480 M neurons) holds a few
layers' limbs at a time, not 70 GB of them.

The number of limbs per layer comes from the values, not from a bound: a layer takes the
limbs of the widest layer it reads (the partial sums then fit, limb by limb, whatever
their size), and after the carry pass :func:`~nsp.transforms.limbs.fit` cuts the result to
the limbs it needs, adding one where the sum outgrew them. The majorant
``|ŝ(x)| ≤ max|s| · G(x)`` with ``G(x) = 1 + Σ_{y<x} G(y)``, computed once per graph,
bounds the memory only: on MobileNet-v2 with every leaf it asks 16 limbs of 32 bits at
depth where the spectra need 12, and BatchNorm and ReLU, whose spectra are their signal
less their parent's, need 3.

Two kernels evaluate ``Σ_K A_{L,K} X_K``:

- with ``INCL=True`` the relations are unions of Kronecker products of small per-axis
  0/1 factors (:mod:`nsp.graph.relations`), applied with axis sums and prefix sums in about
  O(N·L) work, never forming an N×N matrix (:mod:`nsp.transforms.product_kernel`);
- with ``INCL=False`` (data-dependent graphs, not products) the ancestor sets are kept
  explicitly, sparse inside receptive fields or as packed bitsets where they are dense
  (:mod:`nsp.transforms.ancestor_sets`), and applied by exact float64 matrix products.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from nsp.common import memory
from nsp.common.progress import Progress
from nsp.graph.relations import StructureError
from nsp.graph.structure import NetworkStructure
from nsp.transforms.ancestor_sets import AncestorSets
from nsp.transforms.base import GraphTransform
from nsp.transforms.growth import growth_bound
from nsp.transforms.limbs import (
    decompose,
    fit,
    float32_scale,
    float_limbs,
    from_limbs,
    general_scale,
    normalize,
    split_int64,
    to_limbs,
)
from nsp.transforms.product_kernel import ProductKernel

__all__ = ["CausalTransform"]

# Consecutive small layers of equal limb count are rounded together up to this many limbs
# (numpy's per-call overhead dominates rounding a small layer); a layer of at least
# _ROUND_ALONE limbs is rounded alone, without copying it into a group.
_ROUND_GROUP = 1 << 20
_ROUND_ALONE = 1 << 14
# Columns of the signals read at once for their scale: their temporaries stay in cache (one
# slice of all of ResNet-18's 323,000 values took 0.55 ms against 0.38 ms in slices of this).
_SCALE_SPAN = 1 << 16


class CausalTransform(GraphTransform):
    """The exact causal Fourier transform of an ``NNGraph``, as an operator.

    Built once per graph; apply it to any number of signals, singly or batched.

    Parameters
    ----------
    structure : NetworkStructure
        The layers and edges, as built by ``NNGraph`` (``graph.structure``).

    Raises
    ------
    MemoryError
        For an ``INCL=False`` graph whose ancestor sets would exceed
        ``nsp.transforms.ancestor_sets.ANCESTOR_MEMORY_LIMIT``; the message says where.
    StructureError
        If spectra could exceed the float64 range, so the limb count cannot be bounded
        (with ``INCL=False``, from :func:`nsp.transforms.growth.growth_bound`, before the
        ancestor sets are built: densenet121 with every leaf is refused in seconds).

    Examples
    --------
    >>> import torch, nsp
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 1))
    >>> graph = nsp.NNGraph(nsp.Activations(net, torch.ones(1, 2)))
    >>> op = graph.get_transformer()
    >>> op.forward([1.0, 2.0, 10.0])      # ŝ = s − Σ ancestors' ŝ
    array([1., 2., 7.])
    >>> op.inverse([1.0, 2.0, 7.0])
    array([ 1.,  2., 10.])
    """

    def __init__(self, structure: NetworkStructure) -> None:
        self.structure = structure
        self.n = structure.n
        if not structure.incl:
            # Refuses a graph too deep for float64 in seconds, not after minutes of ancestor sets.
            growth_bound(structure)
        self._kernel: ProductKernel | AncestorSets = (
            ProductKernel(structure) if structure.incl else AncestorSets(structure)
        )
        self.limb_bits = self._kernel.limb_bits
        self.growth_bits = self._kernel.growth_bits()
        self._peaks: dict[tuple[tuple[int, ...], bool], int] = {}
        # The scale is read from the values a few numpy passes per array: consecutive small
        # layers are read as one slice of the signals (a large layer alone), so that a net
        # of many small layers pays those passes a few times, not once per layer.
        self._scale_spans = _spans([int(n) for n in structure.sizes], _SCALE_SPAN)
        # Per layer, the layers whose signals it copies or gathers (forward transform, INCL=True),
        # and where each such signal is read for the last time.
        self._sources: list = getattr(self._kernel, "sources", [None] * len(structure.sizes))
        self._signals_last = {q: layer for layer, sources in enumerate(self._sources) for q, _, _ in sources or ()}
        self._signals_done: list[list[int]] = [[] for _ in self._sources]
        for q, layer in self._signals_last.items():
            self._signals_done[layer].append(q)

    def _limbs_per_layer(self, value_bits: int) -> list[int]:
        counts, current = [], 1
        for bits in self.growth_bits:
            current = max(current, math.ceil((value_bits + bits + 2) / self.limb_bits))
            counts.append(current)
        return counts

    def _forward(self, signals: np.ndarray) -> np.ndarray:
        return self._run(signals, inverse=False)

    def _inverse(self, spectra: np.ndarray) -> np.ndarray:
        return self._run(spectra, inverse=True)

    def _run(self, values: np.ndarray, inverse: bool) -> np.ndarray:
        b = self.limb_bits
        offsets = self.structure.offsets
        parts = [values[:, int(offsets[i]): int(offsets[i + 1])] for i in range(offsets.size - 1)]
        spans = [values[:, a:z] for a, z in self._scale_spans]
        scaled = float32_scale(spans)
        small = scaled if scaled is not None and scaled[1] <= min(62, 2 * b - 1) else None
        emin, value_bits = scaled if scaled is not None else general_scale(spans)
        # The majorant's limb counts size the memory check; the pass itself takes as many
        # limbs as the values need (see below): as many as these at most, or one more where
        # a value lies within a factor 2 of the majorant (fit keeps a 3-bit margin, it 2).
        need = self._peak_bytes(self._limbs_per_layer(value_bits), values.shape[0], inverse)
        memory.require(
            need,
            f"the exact {'inverse ' if inverse else ''}transform of {values.shape[0]} signal(s) on this "
            f"{self.n:,}-node graph",
            "transform fewer signals at a time, or use fewer or smaller probe layers or a smaller input",
        )
        # Else every call gets its limbs' pages from the kernel afresh, zeroed (a third of the time).
        memory.keep_freed(need)
        scale = np.exp2(-emin.astype(np.float64))[:, None]
        unscale = np.exp2(emin.astype(np.float64))[:, None]
        # Scaled by 2^-emin, the values are exact float64 integers, cut into limbs in float64.
        floats = small is None and value_bits <= 1000 and int(emin.min()) > -1000
        # With k limbs of a layer fitted (limbs.fit), |ŝ · 2^-emin| < 2^(k·b - 3): where that
        # is inside the float64 range, rounding needs no check for overflow.
        emax = int(emin.max())
        # A layer's own values (or a copy's signal less its parent's) need this many limbs.
        own = max(1, math.ceil((value_bits + 4) / b))
        out = np.empty(values.shape)
        bounds = [int(o) for o in offsets]
        # A difference of two values below 2^(value_bits + emax) stays below 2^1023: finite.
        differences = value_bits + 1 + emax < 1023
        # Layers stream through: each is converted to limbs when its turn comes and kept
        # only while a later layer still reads it (its axis sums outlive it in `memo`), so
        # the peak is a few layers' limbs rather than the whole network's.
        reads: dict[int, np.ndarray] = {}
        memo: dict = {}
        pending: list[int] = []
        results: dict[int, np.ndarray] = {}
        # The limbs of the signals that later copies or gathers read (float64 cuts only): each
        # signal is cut into limbs once, not again as a parent.
        signals: dict[int, np.ndarray] = {}
        widest = 0
        progress = Progress("exact inverse transform" if inverse else "exact transform", self.structure.names)
        gathers = None if inverse else getattr(self._kernel, "parent_signals", None)
        for layer, part in enumerate(parts):
            # A node whose one parent node is y (a copy of its layer's parent through the
            # identity: BatchNorm, ReLU; or a concatenation) has as ancestors y and y's
            # ancestors, whose spectra sum to s_y: so ŝ = s − s_y, with no relation to apply.
            parent = None if gathers is None else gathers(layer, parts)
            cols = slice(bounds[layer], bounds[layer + 1])
            subtracted = parent is not None and differences
            if subtracted:
                # ŝ = s − s_y exactly, and IEEE subtraction rounds that once, correctly (a difference
                # below the normal range is exact): the limbs are only for the later layers.
                np.subtract(part, parent, out=out[:, cols], dtype=np.float64)
            # The limbs are the values' own, or as many as the widest layer read so far when
            # the kernel adds earlier layers in: every partial sum then fits, limb by limb,
            # and the result may need more, which `fit` adds after the carry pass. For a copy
            # or gather the forward kernel adds nothing; the inverse reads its inputs (`own`).
            count = own if parent is not None or not layer else max(own, widest)
            direct = None
            # Limbs split from one int64 each are normalised already.
            split = False
            if small is not None:
                v = np.empty(part.shape, dtype=np.int64)
                # Exact integers below 2^62: the cast in the product's own pass truncates nothing.
                np.multiply(part, scale, out=v, casting="unsafe")
                if parent is not None and small[1] + 1 <= min(62, 2 * b - 1):
                    below = np.empty(parent.shape, dtype=np.int64)
                    np.multiply(parent, scale, out=below, casting="unsafe")
                    v -= below
                    parent = None
                    split = True
                    # ŝ = v · 2^emin, exactly v (the kernel adds nothing for a copy or gather):
                    # its limbs need no carries (one or two limbs are normalised as split), and
                    # it is rounded by one int64 → float64 conversion.
                    direct = v if count <= 2 and count * b - 3 + emax < 1020 and not subtracted \
                        and not self._kernel.plans[layer] else None
                given = split_int64(v, b, count)
            elif floats:
                given = np.empty((count,) + part.shape, dtype=np.int64)
                given[own:] = 0
                float_limbs(part * scale, b, out=given[:own])
                if gathers is not None and layer in self._signals_last:
                    signals[layer] = given[:own].copy()
            else:
                given = to_limbs(*decompose(part), emin, b, count)
            if parent is not None:
                given[:own] -= self._parent_limbs(layer, signals, parent.shape) if floats \
                    else to_limbs(*decompose(parent), emin, b, own)
            # The inverse reads its inputs again for later layers, so it must not add into them.
            acc = given.copy() if inverse else given
            if layer:
                # For a copy the kernel adds nothing (it keeps the prefix sums of layer totals).
                self._kernel.accumulate(layer, reads, acc, +1 if inverse else -1, memo)
            if not split:
                normalize(acc, b)
            acc = fit(acc, b)
            if self._kernel.last_read[layer] > layer:
                reads[layer] = given if inverse else acc
                widest = max(widest, reads[layer].shape[0])
            if direct is not None:
                # Rounded by its own conversion: the layers pending around it stay one group.
                np.multiply(direct, unscale, out=out[:, cols])
            elif not subtracted:
                alone = acc.size >= _ROUND_ALONE
                if pending and (
                    alone or acc.shape[0] != results[pending[0]].shape[0]
                    or sum(results[k].size for k in pending) + acc.size > _ROUND_GROUP
                ):
                    self._round(pending, results, out, emin)
                pending.append(layer)
                results[layer] = acc
                if alone:
                    self._round(pending, results, out, emin)
            for k in [k for k in reads if self._kernel.last_read[k] <= layer]:
                del reads[k]
            for q in self._signals_done[layer]:
                signals.pop(q, None)
            progress.done(layer)
        if pending:
            self._round(pending, results, out, emin)
        return out

    def _parent_limbs(self, layer: int, signals: dict[int, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        """The limbs of the parent node's signal of each node of a copy or gather, from the parents' own."""
        sources = self._sources[layer]
        if len(sources) == 1 and sources[0][1] == slice(None):
            q, _, nodes = sources[0]
            return signals[q][:, :, nodes]
        out = np.empty((signals[sources[0][0]].shape[0],) + shape, dtype=np.int64)
        for q, rows, nodes in sources:
            out[:, :, rows] = signals[q][:, :, nodes]
        return out

    def _peak_bytes(self, counts: list[int], p: int, inverse: bool) -> int:
        """An estimate of the peak memory of ``_run``: the output, the limbs of the layers
        still read when each layer's turn comes, and that layer's own limbs and rounding
        temporaries. The INCL=False kernel also holds each read layer as float64."""
        key = (tuple(counts), inverse)
        if key not in self._peaks:
            # Quadratic in the layers, in Python: once per limb plan, not once per signal.
            sizes = [int(n) for n in self.structure.sizes]
            held = 2 if isinstance(self._kernel, AncestorSets) else 1
            peak = 0
            for layer, n in enumerate(sizes):
                kept = sum(counts[k] * sizes[k] for k in range(layer) if self._kernel.last_read[k] >= layer)
                peak = max(peak, held * kept + (counts[layer] + 1) * n * (3 if inverse else 2))
            self._peaks[key] = peak
        return 8 * p * (self.n + self._peaks[key])

    def _round(self, layers: list[int], results: dict[int, np.ndarray], out: np.ndarray, emin: np.ndarray) -> None:
        """Round layers of equal limb count into ``out`` in one pass, and forget them.

        numpy's per-call overhead, not arithmetic, dominates rounding on small layers, so
        they are rounded together; padding every layer to the widest limb count would
        multiply the work of the large early layers. Layers in a row are rounded straight
        into ``out``; others (a copy between them was converted on its own) through one
        temporary. The limbs are fitted (:func:`~nsp.transforms.limbs.fit`):
        ``|value| < 2^(k·b - 3)``.
        """
        offsets = self.structure.offsets
        limbs = np.concatenate([results.pop(k) for k in layers], axis=2) if len(layers) > 1 else results.pop(layers[0])
        in_a_row = layers[-1] - layers[0] == len(layers) - 1
        if in_a_row:
            rounded = out[:, int(offsets[layers[0]]): int(offsets[layers[-1] + 1])]
        else:
            rounded = np.empty((out.shape[0], limbs.shape[2]))
        with np.errstate(over="ignore"):
            # One or two fitted limbs always hold an int64.
            from_limbs(limbs, self.limb_bits, emin, int64=True, out=rounded)
        starts = list(itertools.accumulate((int(offsets[k + 1] - offsets[k]) for k in layers), initial=0))
        if not in_a_row:
            for k, a, b in zip(layers, starts, starts[1:]):
                out[:, int(offsets[k]): int(offsets[k + 1])] = rounded[:, a:b]
        if limbs.shape[0] * self.limb_bits - 3 + int(emin.max()) >= 1020 and not np.isfinite(rounded).all():
            # The exact value exists but float64 cannot hold it: refuse rather than return ±inf.
            column = int(np.argwhere(~np.isfinite(rounded))[0, 1])
            layer = layers[int(np.searchsorted(starts, column, side="right")) - 1]
            raise StructureError(
                f"nsp: {int((~np.isfinite(rounded)).sum())} exact coefficient(s) of layer '{self.structure.names[layer]}' "
                "exceed the float64 range (|value| > 1.8e308); the network is too deep, or its activations too "
                "large, for a float64 result"
            )
        layers.clear()


def _spans(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """Column ranges ``[a, z)`` of the signals that cover the layers of ``sizes`` in order:
    consecutive layers together up to ``limit`` columns, a larger layer alone."""
    spans: list[tuple[int, int]] = []
    start = end = 0
    for n in sizes:
        if end > start and end - start + n > limit:
            spans.append((start, end))
            start = end
        end += n
    if end > start or not spans:
        spans.append((start, end))
    return spans
