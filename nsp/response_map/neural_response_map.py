"""The neural response map: neurons laid out by how they co-vary, coloured by one input's response.

The seed ``neural-response-map`` (TensorFlow/Keras) in PyTorch, after DeepMind's response
maps (arXiv 1807.01281). :class:`NeuralResponseMap` records the chosen layers' outputs over a
set of inputs, places neurons whose activations correlate (Spearman) next to each other with
t-SNE, and draws an input's scaled activations over that layout.

What is computed follows the original's ``mappers.py``, except where noted:

- a layer output ``(B, C, *spatial)`` is averaged over space, so a channel is one neuron
  (``units="all"`` makes every element a neuron); ``(B, F)`` gives ``F`` neurons;
- every neuron is min-max scaled to [0, 1] over the training inputs, and neurons that never
  change are dropped;
- the distance is 1 − ρ (Spearman), and t-SNE (perplexity 30) lays the neurons out; the
  layout is scaled to [−1, 1] per axis;
- maps are ``scipy.interpolate.griddata`` onto a square grid spanning the layout ("linear":
  Delaunay barycentric; "nearest": the nearest neuron, blank outside the convex hull), drawn
  with ``vmin=0, vmax=1``.

Deviations, and why:

- No N×N matrix. With ranks standardised to unit vectors u, ‖u_i − u_j‖² = 2(1 − ρ_ij), so
  openTSNE's approximate nearest neighbours on the vectors give the correlation layout in
  about O(N log N) time and O(N·P) memory (the original built the N×N correlation).
- The Delaunay triangulation and each grid point's triangle and barycentric weights are found
  once per layout; a map is then a weighted sum (identical to ``griddata``).
- Row 0 of a map is the top of the layout (y = max): the original's ``imshow`` drew it
  upside down.
- ``CircleProjection`` reads every sector's extent before moving any point; the original
  overwrote points while reading them, so its result depended on the order of the neurons.
- Layouts are reproducible: ``seed`` fixes openTSNE's random state.

Beyond the original: ``metric='pearson'`` or ``'cosine'`` instead of Spearman's ρ; a layout
from a neuron × input matrix (:meth:`NeuralResponseMap.from_responses`); further neurons
placed on a fitted layout (:meth:`NeuralResponseMap.add_neurons`, openTSNE's ``transform``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

import nsp.common.memory as memory
from nsp.response_map.drawing import map_figure
from nsp.response_map.layout import Grid, check_iterations, circle_projection, scale_layout, tsne_embedding, tsne_layout
from nsp.response_map.responses import METRICS, ChosenLayer, choose_layers, metric_vectors, non_finite_rows, record

__all__ = ["NeuralResponseMap"]

_MIN_INPUTS = 3
_MIN_NEURONS = 5
# The seed's method named in errors about the chosen layers (train_map and load_state choose them).
_CHOOSE = "nsp.NeuralResponseMap.TrainMap"


class NeuralResponseMap:
    """Neurons laid out by correlation, and any input's response drawn over the layout.

    Parameters
    ----------
    model : torch.nn.Module
        The network. It is run in eval mode without gradients; its train/eval flags are
        restored afterwards.
    units : {'channels', 'all'}
        ``'channels'`` (the original): a layer output ``(B, C, *spatial)`` is averaged over
        space, so each channel is a neuron. ``'all'``: every element is a neuron.
    perplexity : float
        t-SNE perplexity (the original's 30).
    seed : int
        Makes the layout reproducible.
    resolution : int
        Grid points per side of a map (the original's 1000).
    batch_size : int
        Inputs per forward pass.
    n_jobs : int
        openTSNE threads.
    metric : {'spearman', 'pearson', 'cosine'}
        The neurons' similarity: Spearman's ρ (the original's; robust to monotone scaling),
        Pearson's r, or the cosine similarity of the raw responses. The layout's distance is
        1 − similarity.

    Attributes
    ----------
    layout : numpy.ndarray or None
        ``(N, 2)`` neuron positions, after :meth:`train_map`.
    neurons : list of (str, int)
        For each laid-out neuron, its layer's name and its channel (or flat unit) index.
    layers : list of str
        The recorded layers, in execution order.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 2))
    >>> nrm = NeuralResponseMap(net)
    >>> layout = nrm.train_map(torch.randn(64, 4))
    >>> nrm.generate_map(torch.randn(1, 4), method="linear").shape
    (1000, 1000)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        units: str = "channels",
        perplexity: float = 30.0,
        seed: int = 0,
        resolution: int = 1000,
        batch_size: int = 256,
        n_jobs: int = 1,
        metric: str = "spearman",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"nsp.NeuralResponseMap: expected `model` to be a torch.nn.Module, got {type(model).__name__}")
        self._configure(model, units, perplexity, seed, resolution, batch_size, n_jobs, metric)

    def _configure(self, model: nn.Module | None, units: str, perplexity: float, seed: int, resolution: int,
                   batch_size: int, n_jobs: int, metric: str) -> None:
        if metric not in METRICS:
            raise ValueError(f"nsp.NeuralResponseMap: expected `metric` to be one of {METRICS}, got {metric!r}")
        if units not in ("channels", "all"):
            raise ValueError(f"nsp.NeuralResponseMap: expected `units` to be 'channels' or 'all', got {units!r}")
        if isinstance(perplexity, bool) or not isinstance(perplexity, (int, float)) or not 0 < perplexity < math.inf:
            raise ValueError(f"nsp.NeuralResponseMap: expected `perplexity` > 0, got {perplexity!r}")
        for argname, value, low in (("resolution", resolution, 2), ("batch_size", batch_size, 1), ("seed", seed, 0),
                                    ("n_jobs", n_jobs, -1024)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"nsp.NeuralResponseMap: expected `{argname}` to be an int, got {value!r}")
            if value < low:
                raise ValueError(f"nsp.NeuralResponseMap: expected `{argname}` >= {low}, got {value!r}")
        # The map's grid and its nearest-neuron index are resolution x resolution arrays, and
        # each generated map is one more.
        memory.require(4 * 8 * int(resolution) ** 2, f"nsp.NeuralResponseMap: a {resolution}x{resolution} map",
                       "choose a smaller resolution")
        self.model = model
        self.units = units
        self.perplexity = float(perplexity)
        self.seed = int(seed)
        self.resolution = int(resolution)
        self.batch_size = int(batch_size)
        self.n_jobs = int(n_jobs)
        self.metric = metric
        self.layout: np.ndarray | None = None
        self.neurons: list[tuple[str, int]] = []
        self.layers: list[str] = []
        self._chosen: list[ChosenLayer] | None = None
        self._input_shape: tuple[int, ...] | None = None
        self._keep: np.ndarray | None = None
        self._lo: np.ndarray | None = None
        self._span: np.ndarray | None = None
        self._raw: np.ndarray | None = None
        self._grid: Grid | None = None
        # The fitted openTSNE embedding, which add_neurons places new neurons on; None after
        # a refit or load_state, and once the layout is circle-projected.
        self._embedding: Any = None
        self._inputs_fitted = 0

    @classmethod
    def from_responses(
        cls,
        matrix: np.ndarray | torch.Tensor,
        names: Sequence[str] | None = None,
        *,
        perplexity: float = 30.0,
        seed: int = 0,
        resolution: int = 1000,
        n_jobs: int = 1,
        metric: str = "spearman",
    ) -> "NeuralResponseMap":
        """A map laid out from responses recorded elsewhere: one row per neuron, one column per input.

        The layout is the one :meth:`train_map` makes from the same responses under the same
        options (constant neurons dropped, min-max scaling, t-SNE on the ``metric``). With no
        model, maps are drawn with :meth:`map_values` (one value per laid-out neuron).

        Parameters
        ----------
        matrix : numpy.ndarray or torch.Tensor
            ``(N, P)`` real, finite responses of ``N`` neurons to ``P >= 3`` inputs.
        names : sequence of str, optional
            One name per row; default ``"0"``, ``"1"``, …. :attr:`neurons` holds
            ``(name, row)`` for each laid-out neuron.
        perplexity, seed, resolution, n_jobs, metric
            As for :class:`NeuralResponseMap`.

        Returns
        -------
        NeuralResponseMap
            Fitted; :attr:`layers` is empty and ``model`` is None.

        Raises
        ------
        TypeError
            If ``matrix`` is not a real array or ``names`` not strings.
        ValueError
            If ``matrix`` is not 2-D, holds NaN or infinite values (the rows are named), has
            fewer than 3 inputs or fewer than 5 neurons that vary, or ``names`` has another length.
        """
        where = "nsp.NeuralResponseMap.from_responses"
        values = _response_matrix(matrix, "matrix", where)
        if names is None:
            labels = [str(i) for i in range(values.shape[0])]
        else:
            labels = list(names) if not isinstance(names, str) else [names]
            if not all(isinstance(n, str) for n in labels):
                raise TypeError(f"{where}: expected `names` to be strings, one per row of `matrix`")
            if len(labels) != values.shape[0]:
                raise ValueError(f"{where}: got {len(labels)} name(s) for {values.shape[0]} rows of `matrix`")
        nrm = cls.__new__(cls)
        nrm._configure(None, "channels", perplexity, seed, resolution, 1, n_jobs, metric)
        nrm._fit(values.T, [(label, i) for i, label in enumerate(labels)], where)
        return nrm

    # --- the seed's API -------------------------------------------------------------

    def TrainMap(self, inputs: torch.Tensor, layers: Sequence[Any] | None = None) -> None:
        """Record ``layers`` over ``inputs``, correlate the neurons and lay them out.

        ``layers``: ``None`` (the original's ``model.layers[1:-1]``: every top-level child
        except the one that produces the output), or module names at any depth (``'conv1'``,
        ``'layer1.0.conv2'``), or the submodules themselves. See :meth:`train_map`.
        """
        self.train_map(inputs, layers)

    def GenerateMap(
        self,
        inputs: torch.Tensor,
        method: str = "nearest",
        cmap: str = "viridis",
        size: tuple[float, float] = (5, 5),
        file: str | None = None,
    ) -> Any:
        """Draw the map of ``inputs`` (the mean map of several) and return the figure.

        Parameters
        ----------
        inputs : torch.Tensor
            ``(B, *input_shape)``, e.g. ``inputs[1:2]``.
        method : {'nearest', 'linear'}
        cmap : str
            A matplotlib colormap.
        size : tuple of float
            Figure size in inches.
        file : str, optional
            Where to save the figure (format from the extension).

        Returns
        -------
        matplotlib.figure.Figure
            Not registered with pyplot, so it leaves no open figure behind.
        """
        from nsp.viz.colors import colormap

        where = "nsp.NeuralResponseMap.GenerateMap"
        colormap(cmap, where)
        grid = self.generate_map(inputs, method=method)
        return map_figure(grid, self._grid.extent, cmap, size, file, where)

    def CircleProjection(self) -> None:
        """Map the layout onto a disc (see :func:`circle_projection`)."""
        self.circle_projection()

    # --- arrays -----------------------------------------------------------------------

    def train_map(self, inputs: torch.Tensor, layers: Sequence[Any] | None = None, *,
                  iterations: tuple[int, int] | None = None) -> np.ndarray:
        """Fit the layout; returns it, ``(N, 2)`` in [−1, 1].

        ``iterations``: t-SNE's ``(early exaggeration, then plain)`` iterations; default
        openTSNE's ``(250, 500)``. Fewer cost proportionally less and give a coarser layout.

        Raises
        ------
        ValueError
            If a layer is unknown or does not run, ``inputs`` are fewer than 3, the model
            fails on them, or fewer than 5 neurons vary over them.
        TypeError
            If ``inputs`` is not a tensor, or a layer does not output one tensor.
        """
        where = "nsp.NeuralResponseMap.train_map"
        check_iterations(iterations, where)
        inputs = self._check_inputs(inputs, where, training=True)
        self._chosen = choose_layers(self.model, layers, inputs[:1], _CHOOSE)
        self._input_shape = tuple(inputs.shape[1:])
        values, widths = self._record(inputs, where)
        self.layers = [layer.name for layer in self._chosen]
        names = [(layer.name, j) for layer, width in zip(self._chosen, widths) for j in range(width)]
        return self._fit(values, names, where, iterations)

    def _fit(self, values: np.ndarray, names: list[tuple[str, int]], where: str,
             iterations: tuple[int, int] | None = None) -> np.ndarray:
        """Lay out the neurons of ``values`` ``(inputs, neurons)``; returns the layout."""
        if values.shape[0] < _MIN_INPUTS:
            raise ValueError(
                f"{where}: got {values.shape[0]} input(s); at least {_MIN_INPUTS} are needed to correlate neurons"
            )
        lo, hi = values.min(axis=0), values.max(axis=0)
        keep = hi > lo
        if keep.sum() < _MIN_NEURONS:
            raise ValueError(
                f"{where}: only {int(keep.sum())} of {keep.size} neurons vary over the {values.shape[0]} inputs; "
                f"at least {_MIN_NEURONS} are needed for a layout"
            )
        self._keep, self._lo, self._span = keep, lo[keep], (hi - lo)[keep]
        self.neurons = [n for n, k in zip(names, keep) if k]
        exaggeration, plain = (None, None) if iterations is None else (int(iterations[0]), int(iterations[1]))
        embedding = tsne_embedding(
            metric_vectors(values[:, keep], self.metric), perplexity=self.perplexity, seed=self.seed,
            n_jobs=self.n_jobs, n_iter=plain, exaggeration_iter=exaggeration,
        )
        raw = np.asarray(embedding, dtype=np.float64)
        self._set_layout(raw, scale_layout(raw))
        self._embedding = embedding
        self._inputs_fitted = values.shape[0]
        return self.layout

    def add_neurons(self, responses: np.ndarray | torch.Tensor, perplexity: float = 5.0,
                    n_iter: int = 250) -> np.ndarray:
        """Place further neurons on the fitted layout, as openTSNE's ``transform`` does.

        Each new neuron starts at the median of its nearest laid-out neurons (under the map's
        metric) and is optimised against the laid-out neurons, which stay where they are; the
        map itself is unchanged, so its maps stay comparable.

        Parameters
        ----------
        responses : numpy.ndarray or torch.Tensor
            ``(M, P)``: the new neurons' responses to the ``P`` inputs the layout was fitted
            on, in the same order; real and finite, no neuron constant.
        perplexity : float
            openTSNE's ``transform`` perplexity (its default, 5).
        n_iter : int
            Optimisation iterations.

        Returns
        -------
        numpy.ndarray
            ``(M, 2)`` positions in the map's coordinates (those of :attr:`layout`; they may
            fall outside [−1, 1]).

        Raises
        ------
        RuntimeError
            If the layout was not fitted in this session (after :meth:`load_state` or
            :meth:`refit`) or was circle-projected.
        ValueError
            If ``responses`` is not ``(M, P)``, holds NaN or infinite values, or a neuron is constant.
        """
        where = "nsp.NeuralResponseMap.add_neurons"
        self._require_layout(where)
        if self._embedding is None:
            raise RuntimeError(f"{where}: new neurons are placed on a layout fitted in this session by train_map or "
                               "from_responses, not yet refitted or circle-projected; fit it again first")
        values = _response_matrix(responses, "responses", where)
        if values.shape[1] != self._inputs_fitted:
            raise ValueError(f"{where}: expected `responses` of shape (M, {self._inputs_fitted}), one column per input "
                             f"the layout was fitted on, got {list(values.shape)}")
        if not (isinstance(perplexity, (int, float)) and 0 < perplexity < math.inf) or isinstance(perplexity, bool):
            raise ValueError(f"{where}: expected `perplexity` > 0, got {perplexity!r}")
        if isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral) or n_iter < 1:
            raise ValueError(f"{where}: expected `n_iter` to be an int >= 1, got {n_iter!r}")
        memory.require(4 * 8 * values.size, f"{where}: {values.shape[0]:,} new neurons", "add fewer at a time")
        vectors = metric_vectors(values.T, self.metric)
        k = len(self._raw) - 1
        raw = np.asarray(self._embedding.transform(
            np.ascontiguousarray(vectors), perplexity=min(float(perplexity), k / 3), k=min(25, k), n_iter=int(n_iter),
        ), dtype=np.float64)
        lo, hi = self._raw.min(axis=0), self._raw.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        return 2 * (raw - lo) / span - 1

    def refit(self, inputs: torch.Tensor, n_iter: int = 250) -> float:
        """Refit the layout on ``inputs`` for the current weights, starting from the present one.

        The same neurons are laid out (a neuron that has become constant keeps its place),
        and their scaling is taken afresh from ``inputs``. Starting from the previous t-SNE
        coordinates with ``n_iter`` iterations and no early exaggeration keeps the new layout
        aligned with the old one.

        Returns
        -------
        float
            The Procrustes disparity between the old and the new layout (0: the same up to
            rotation, reflection and scale).
        """
        from scipy.spatial import procrustes

        where = "nsp.NeuralResponseMap.refit"
        self._require_layout(where)
        inputs = self._check_inputs(inputs, where)
        values = self._record(inputs, where)[0][:, self._keep]
        if values.shape[0] < _MIN_INPUTS:
            raise ValueError(f"{where}: got {values.shape[0]} input(s); at least {_MIN_INPUTS} are needed")
        lo, hi = values.min(axis=0), values.max(axis=0)
        varies = hi > lo
        raw = self._raw.copy()
        if varies.sum() >= _MIN_NEURONS:
            raw[varies] = tsne_layout(
                metric_vectors(values[:, varies], self.metric),
                perplexity=self.perplexity,
                seed=self.seed,
                n_jobs=self.n_jobs,
                initialization=self._raw[varies],
                n_iter=n_iter,
            )
        # A constant neuron is drawn at 0, as at training time: (x - lo) / span with span 1.
        self._lo, self._span = lo, np.where(varies, hi - lo, 1.0)
        previous = self.layout
        layout = scale_layout(raw)
        self._set_layout(raw, layout)
        self._embedding = None
        return float(procrustes(previous, layout)[2])

    def rescale(self, inputs: torch.Tensor) -> None:
        """Take each laid-out neuron's [0, 1] range from ``inputs`` (e.g. the training inputs
        again, after the weights changed); the layout stays. A neuron constant over
        ``inputs`` is drawn as 0 at its value."""
        where = "nsp.NeuralResponseMap.rescale"
        self._require_layout(where)
        values = self._record(self._check_inputs(inputs, where), where)[0][:, self._keep]
        lo, hi = values.min(axis=0), values.max(axis=0)
        self._lo, self._span = lo, np.where(hi > lo, hi - lo, 1.0)

    def responses(self, inputs: torch.Tensor) -> np.ndarray:
        """Each laid-out neuron's response to ``inputs``: scaled to [0, 1] by the training
        range, clipped, and averaged over the inputs (the original's ``Z``); ``(N,)``."""
        return self.scaled_responses(inputs).mean(axis=0)

    def scaled_responses(self, inputs: torch.Tensor) -> np.ndarray:
        """Every input's scaled, clipped responses, ``(B, N)`` (one forward pass per batch)."""
        where = "nsp.NeuralResponseMap.responses"
        self._require_layout(where)
        values = self._record(self._check_inputs(inputs, where), where)[0][:, self._keep]
        return np.clip((values - self._lo) / self._span, 0, 1)

    def generate_map(self, inputs: torch.Tensor, method: str = "nearest") -> np.ndarray:
        """The map of ``inputs`` as an array ``(resolution, resolution)``, row 0 at the top;
        NaN outside the layout's convex hull."""
        where = "nsp.NeuralResponseMap.generate_map"
        if method not in ("nearest", "linear"):
            raise ValueError(f"{where}: expected `method` to be 'nearest' or 'linear', got {method!r}")
        return self.map_values(self.responses(inputs), method)

    def map_values(self, values: np.ndarray, method: str = "nearest") -> np.ndarray:
        """Interpolate one value per laid-out neuron over the layout's grid (as
        :meth:`generate_map`, for values computed elsewhere)."""
        where = "nsp.NeuralResponseMap.map_values"
        self._require_layout(where)
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(self.layout),):
            raise ValueError(f"{where}: expected one value per neuron, shape ({len(self.layout)},), got {values.shape}")
        if method not in ("nearest", "linear"):
            raise ValueError(f"{where}: expected `method` to be 'nearest' or 'linear', got {method!r}")
        if self._grid is None:
            self._grid = Grid(self.layout, self.resolution)
        return self._grid.map(values, method)

    def circle_projection(self) -> np.ndarray:
        """Map the layout onto a disc (see :func:`circle_projection`); returns the new layout."""
        self._require_layout("nsp.NeuralResponseMap.circle_projection")
        self._set_layout(self._raw, circle_projection(self.layout))
        self._embedding = None
        return self.layout

    def state(self) -> dict[str, np.ndarray]:
        """The fitted layout as arrays, for :meth:`load_state` (e.g. to continue a run).

        Returns
        -------
        dict of str to numpy.ndarray
            ``keep`` (bool, one per neuron of the chosen layers: laid out or dropped as
            constant), ``raw`` (the t-SNE coordinates, ``(N, 2)``), ``layout`` (the map's
            coordinates, ``(N, 2)``), ``lo`` and ``span`` (each laid-out neuron's scaling).
        """
        self._require_layout("nsp.NeuralResponseMap.state")
        return {
            "keep": self._keep.copy(),
            "raw": np.asarray(self._raw, dtype=np.float64).copy(),
            "layout": np.asarray(self.layout, dtype=np.float64).copy(),
            "lo": np.asarray(self._lo, dtype=np.float64).copy(),
            "span": np.asarray(self._span, dtype=np.float64).copy(),
        }

    def load_state(self, inputs: torch.Tensor, layers: Sequence[Any] | None, state: Mapping[str, np.ndarray]) -> None:
        """Take back a layout saved by :meth:`state`, without fitting anew.

        Parameters
        ----------
        inputs : torch.Tensor
            Inputs of the model's input shape ``(B, *input_shape)``; one forward pass of the
            first one checks that the chosen layers still have the neurons of ``state``.
        layers : sequence or None
            The layers chosen when the layout was fitted, as for :meth:`train_map`.
        state : mapping of str to numpy.ndarray
            What :meth:`state` returned.

        Raises
        ------
        ValueError
            If an array is missing or has another shape, dtype or range than a layout of
            these layers can have.
        """
        where = "nsp.NeuralResponseMap.load_state"
        inputs = self._check_inputs(inputs, where, training=True)
        missing = [k for k in ("keep", "raw", "layout", "lo", "span") if k not in state]
        if missing:
            raise ValueError(f"{where}: the state lacks the array(s) {missing}")
        chosen = choose_layers(self.model, layers, inputs[:1], _CHOOSE)
        self._chosen = chosen
        widths = self._record(inputs[:1], where)[1]
        keep = np.asarray(state["keep"])
        if keep.dtype != np.bool_ or keep.shape != (sum(widths),):
            raise ValueError(
                f"{where}: `keep` must be a bool array with one entry per neuron of the layers "
                f"({sum(widths)}), got {keep.dtype} {list(keep.shape)}"
            )
        n = int(keep.sum())
        arrays = {k: np.asarray(state[k], dtype=np.float64) for k in ("raw", "layout", "lo", "span")}
        for k, shape in (("raw", (n, 2)), ("layout", (n, 2)), ("lo", (n,)), ("span", (n,))):
            if arrays[k].shape != shape or not np.isfinite(arrays[k]).all():
                raise ValueError(f"{where}: `{k}` must be finite of shape {list(shape)}, got {list(arrays[k].shape)}")
        if n < _MIN_NEURONS or not (arrays["span"] > 0).all():
            raise ValueError(f"{where}: the state lays out {n} neuron(s) or has a span <= 0; it is not a fitted layout")
        self._input_shape = tuple(inputs.shape[1:])
        self.layers = [layer.name for layer in chosen]
        names = [(layer.name, j) for layer, width in zip(chosen, widths) for j in range(width)]
        self.neurons = [name for name, k in zip(names, keep) if k]
        self._keep, self._lo, self._span = keep.copy(), arrays["lo"], arrays["span"]
        self._set_layout(arrays["raw"], arrays["layout"])
        self._embedding = None

    # --- internals --------------------------------------------------------------------

    def _set_layout(self, raw: np.ndarray, layout: np.ndarray) -> None:
        self._raw, self.layout, self._grid = raw, layout, None

    def _require_layout(self, where: str) -> None:
        if self.layout is None:
            raise RuntimeError(f"{where}: no layout yet; call TrainMap (train_map) first")

    def _check_inputs(self, inputs: Any, where: str, training: bool = False) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError(f"{where}: this map was made from a response matrix (from_responses) and has no model "
                               "to run; draw responses with map_values")
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"{where}: expected `inputs` to be a torch.Tensor, got {type(inputs).__name__}")
        if inputs.dim() < 1 or inputs.shape[0] < 1:
            raise ValueError(f"{where}: expected `inputs` of shape (B, *input_shape) with B >= 1, got {list(inputs.shape)}")
        if inputs.device.type == "meta":
            raise ValueError(f"{where}: `inputs` are on the meta device, which holds shapes but no values")
        shown = non_finite_rows(inputs)
        if shown:
            raise ValueError(f"{where}: `inputs` {shown} hold NaN or infinite values, which would silently drop "
                             f"every neuron they reach; remove or repair them first")
        if not training and tuple(inputs.shape[1:]) != self._input_shape:
            raise ValueError(
                f"{where}: expected `inputs` of shape (B, {', '.join(map(str, self._input_shape))}) like the "
                f"training inputs, got {list(inputs.shape)}; for one input pass e.g. inputs[i:i+1]"
            )
        return inputs

    def _record(self, inputs: torch.Tensor, where: str) -> tuple[np.ndarray, list[int]]:
        return record(self.model, self._chosen, inputs, self.units, self.batch_size, where)


def _response_matrix(matrix: Any, argname: str, where: str) -> np.ndarray:
    """``matrix`` as a finite float64 ``(neurons, inputs)`` array, or an error naming its bad rows."""
    if isinstance(matrix, torch.Tensor):
        if matrix.device.type == "meta":
            raise ValueError(f"{where}: `{argname}` is on the meta device, which holds shapes but no values")
        matrix = matrix.detach().cpu().numpy()
    if not isinstance(matrix, np.ndarray) or matrix.dtype.kind not in "fiub":
        kind = matrix.dtype if isinstance(matrix, np.ndarray) else type(matrix).__name__
        raise TypeError(f"{where}: expected `{argname}` to be a real numpy array or tensor, got {kind}")
    if matrix.ndim != 2:
        raise ValueError(f"{where}: expected `{argname}` of shape (neurons, inputs), got {list(matrix.shape)}")
    memory.require(4 * 8 * matrix.size, f"{where}: `{argname}` of shape {list(matrix.shape)} as float64 vectors",
                   "pass fewer neurons or inputs")
    values = matrix.astype(np.float64)
    bad = (~np.isfinite(values)).any(axis=1).nonzero()[0].tolist()
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise ValueError(f"{where}: rows {shown} of `{argname}` hold NaN or infinite values; remove or repair them "
                         "(a neuron with a non-finite response has no place on a layout)")
    return values
