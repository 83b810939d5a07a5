"""Probe analyses: the one small interface every analysis that :class:`~nsp_lightning.ProbeCallback` runs implements.

A *probe analysis* computes something from the model and a fixed batch of probe inputs at
chosen points of training (spectra, response maps, attributions, linear regions, or a
user's own statistic). :class:`~nsp_lightning.ProbeCallback` owns everything else: the
probe, the schedule, eval mode, no-grad and RNG isolation, rank 0 under DDP, resume,
the record store, logging and the report. An analysis only says

- what it checks and builds at fit start (:meth:`ProbeAnalysis.check`,
  :meth:`ProbeAnalysis.setup`, :meth:`ProbeAnalysis.header`);
- what it computes and keeps at a record (:meth:`ProbeAnalysis.compute`, returning an
  :class:`AnalysisRecord` of arrays, scalars and JSON metadata);
- how a record is drawn for the loggers (:meth:`ProbeAnalysis.log`, through a
  :class:`LogSink`: images, figures, histograms, text, embeddings) and in the report (:meth:`ProbeAnalysis.report`, returning
  :class:`~nsp_lightning.sections.Section` objects).

What the core calls, and when (``model`` is the LightningModule, ``probes`` the probe
batch ``(P, *input_shape)`` on the model's device and in its dtype):

==========================================  =====================  ==============================================
call                                        where                  when
==========================================  =====================  ==============================================
``check(model, probes)``                    every rank             fit start, also under ``fast_dev_run``
``setup(model, probes, context)``           rank 0                 fit start, before the baseline
``header()``                                rank 0                 fit start, after ``setup``: the series' config
``hparams()``, ``describe()``               rank 0                 train start: hparams and text card (loggers)
``custom_scalars()``                        rank 0                 fit start: TensorBoard custom-scalars charts
``compute(model, probes, context)``         rank 0                 at every record
``log(record, sink)``                       rank 0                 after ``compute``, if a logger that takes media
                                                                   exists (``sink.enabled``) or not
``report(records, header, context)``        ``nsp-report``         a classmethod; no model, no Lightning
``read_record(arrays, meta, path)``         any reader             a classmethod: validate a record read back
``check_header(header, path)``              any reader             a classmethod: validate the series' header
``check_record(record, header, path)``      any reader             a classmethod: a record against the header
==========================================  =====================  ==============================================

``check``, ``setup`` and ``compute`` run in eval mode, under ``torch.no_grad()``, with
autocast disabled and the RNG state of torch, numpy and ``random`` saved and restored.
An analysis that needs gradients (attribution, feature visualisation) wraps that part in
``with context.enable_grad():``.

Several analyses run in one :class:`~nsp_lightning.ProbeCallback`, sharing the probe's
forward pass, each writing its records to ``<dirpath>/<name>`` (``dirpath`` defaults to
``trainer.log_dir``)::

    ProbeCallback(probe, [SpectrumAnalysis(), ChannelMeans()], every_n_epochs=1, epochs=None,
                  dirpath=None, log_step="global_step")

Each record is an ``epoch-NNNNNN.npz`` (the arrays, the stored scalars as ``__scalars__``,
and the metadata as JSON) listed in the directory's ``manifest.json``, which also keeps the
header and the analysis's class (``"module:qualname"``). ``nsp_lightning.read_records``
reads any analysis's records back through :meth:`ProbeAnalysis.read_record`, and
``nsp-report RUN_DIR`` draws a section per analysis through :meth:`ProbeAnalysis.report`.

This module does not import Lightning: records and reports are read without it.

Example: the mean activation of each channel, per layer and probe::

    import numpy as np
    from nsp_lightning import AnalysisRecord, ProbeAnalysis

    class ChannelMeans(ProbeAnalysis):
        name = "channel_means"

        def compute(self, model, probes, context):
            arrays, scalars = {}, {}
            for layer, acts in context.layers().items():   # name -> (P, C, ...) tensor
                means = acts.flatten(2).mean(-1) if acts.dim() > 2 else acts
                arrays[layer] = means.double().cpu().numpy()
                scalars[f"{layer}/mean"] = float(means.mean())
            return AnalysisRecord(arrays=arrays, scalars=scalars)

        def log(self, record, sink):
            for layer, means in record.arrays.items():
                sink.histogram(f"{layer}/channels", means)
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

# The record types and the sink are defined beside this module and are part of the
# plug-in interface: an analysis imports everything it implements against from here.
from nsp_lightning.probe.records import (
    RESERVED_META,
    SCALARS_KEY,
    AnalysisRecord,
    ProbeRecord,
    check_arrays,
    read_probe_record,
)
from nsp_lightning.probe.sinks import LogSink

if TYPE_CHECKING:
    import nsp
    from nsp_lightning.report.sections import Section

__all__ = [
    "AnalysisRecord",
    "LogSink",
    "ProbeAnalysis",
    "ProbeContext",
    "ProbeRecord",
    "ReportContext",
    "RESERVED_META",
    "SCALARS_KEY",
    "analysis_class",
    "check_arrays",
    "check_analyses",
    "check_name",
    "class_path",
    "read_probe_record",
]

# An analysis's name is a directory's: lowercase, no path separators, short enough for any file system.
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_NAME_RULE = "lowercase letters, digits, '_' and '-', starting with a letter, at most 64 characters"
# Records written before analyses were plug-ins name no analysis: they are spectra.
_LEGACY_CLASS = "nsp_lightning.analyses.spectrum:SpectrumAnalysis"
_REGISTRY: dict[str, type["ProbeAnalysis"]] = {}


class ProbeContext:
    """What the analyses of one record (or of fit start) share.

    The core makes one context per record and hands it to every analysis of the
    callback in turn, so that they share work: :meth:`activations` runs
    ``nsp.Activations.from_batch`` once per choice of layers, :meth:`outputs` the model
    once.

    Attributes
    ----------
    model : torch.nn.Module
        The model, in eval mode.
    probes : torch.Tensor
        The probe batch ``(P, *input_shape)``, on the model's device, in its dtype.
    epoch : int
        The record number: training epochs completed (0: the baseline). At fit start
        (:meth:`ProbeAnalysis.setup`), the number a record taken now would have.
    global_step : int
        The Trainer's ``global_step``.
    trainer : object or None
        The Lightning Trainer (``None`` outside Lightning).
    labels : torch.Tensor or None
        The probes' labels, one per probe, where the probe was given as a batch ``(x, y)``
        with ``y`` of shape ``(P,)``; else None.
    directories : dict of str to str
        Each analysis's record directory, by analysis name (empty outside a callback).
        On resume an analysis finds its earlier records there (e.g. its baseline).
    """

    def __init__(
        self,
        model: nn.Module,
        probes: torch.Tensor,
        *,
        epoch: int,
        global_step: int,
        trainer: Any = None,
        labels: torch.Tensor | None = None,
        directories: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.probes = probes
        self.epoch = int(epoch)
        self.global_step = int(global_step)
        self.trainer = trainer
        self.labels = labels
        self.directories = dict(directories or {})
        self._activations: dict[Any, list[Any]] = {}
        self._outputs: torch.Tensor | None = None

    def activations(self, layers: Any = None, like: "nsp.Activations | None" = None) -> "list[nsp.Activations]":
        """Each probe's activation pattern, one forward pass for all analyses that ask.

        Parameters
        ----------
        layers : None, 'leaves', list of str or callable, optional
            As for :class:`nsp.Activations` (default: the model's top-level children).
        like : nsp.Activations, optional
            A pattern recorded earlier with the same ``layers``, whose graph the caller
            has built: the values of its layers are enough, recorded at about the cost of
            a forward pass, without the dataflow (``nsp.Activations``'s ``like``). Where
            the layers differ from ``like``'s, or another analysis asked for them in full
            already, the patterns come in full.

        Returns
        -------
        list of nsp.Activations
            One pattern per probe (``nsp.Activations.from_batch``), cached for this
            record: do not modify them in place.
        """
        import nsp

        key = _layers_key(layers)
        cached = self._activations.get(key)
        if cached is None or (like is None and not cached[0].has_dataflow):
            # A pattern recorded in full serves a request for values only, not the other way round.
            if like is None:
                self._activations[key] = nsp.Activations.from_batch(self.model, self.probes, layers)
            else:
                self._activations[key] = nsp.Activations.from_batch(self.model, self.probes, like=like)
        return self._activations[key]

    def layers(self, layers: Any = None) -> dict[str, torch.Tensor]:
        """Every recorded layer's activations for all probes, as ``name -> (P, *layer_shape)``.

        Built from :meth:`activations` (the same forward pass), with the input as ``"input"``;
        values only, so patterns recorded without the dataflow serve too.
        """
        patterns = self._activations.get(_layers_key(layers)) or self.activations(layers)
        names = patterns[0].layernames
        return {
            name: torch.stack([p.layeractivations[l] for p in patterns]) for l, name in enumerate(names)
        }

    def outputs(self) -> torch.Tensor:
        """``model(probes)``, computed once per record."""
        if self._outputs is None:
            self._outputs = self.model(self.probes)
        return self._outputs

    @contextlib.contextmanager
    def enable_grad(self) -> Iterator[None]:
        """Gradients on, for the analyses that need them (attribution, feature visualisation).

        Inside the block autograd works (``torch.inference_mode(False)`` and
        ``torch.enable_grad()``); the model stays in eval mode. Every parameter's
        ``.grad`` is set aside on entry and put back on exit, so ``backward()`` inside
        cannot disturb the training step's gradients. Prefer ``torch.autograd.grad``,
        which accumulates nothing.

        Example::

            with context.enable_grad():
                x = context.probes.clone().requires_grad_(True)
                (grad,) = torch.autograd.grad(context.model(x)[:, 0].sum(), x)
        """
        parameters = list(self.model.parameters())
        saved = [p.grad for p in parameters]
        try:
            for p in parameters:
                p.grad = None
            with torch.inference_mode(False), torch.enable_grad():
                yield
        finally:
            for p, grad in zip(parameters, saved):
                p.grad = grad


@dataclass(frozen=True)
class ReportContext:
    """What :meth:`ProbeAnalysis.report` gets besides the records and the header.

    Attributes
    ----------
    directory : pathlib.Path
        The analysis's record directory.
    name : str
        The analysis's name (its record directory's, in the manifest).
    step : callable
        ``step(what)`` advances the report's progress bar by one; see
        :meth:`ProbeAnalysis.report_steps`.
    """

    directory: Path
    name: str
    step: Callable[[str], None]


class ProbeAnalysis(abc.ABC):
    """An analysis of the probes that :class:`~nsp_lightning.ProbeCallback` runs at each record.

    Subclasses set :attr:`name` and implement :meth:`compute`; every other method has a
    default. Subclasses are registered by their import path, which the record directory's
    manifest keeps, so that ``nsp-report`` finds the class that draws their section.

    Attributes
    ----------
    name : str
        The analysis's id, lowercase letters, digits, ``_`` and ``-``, starting with a
        letter, at most 64 characters (:func:`check_name`): its record
        directory (``<dirpath>/<name>``, e.g. ``lightning_logs/version_0/attribution``),
        its TensorBoard tag prefix (unless :attr:`tag_prefix` says otherwise) and its
        report section's id. A class attribute; an instance may override it, so that one
        callback can run an analysis twice with different settings.
    tag_prefix : str or None
        The TensorBoard tag prefix of its scalars, images, histograms and text
        (default: :attr:`name`).
    title : str or None
        Human-readable name, for the report (default: :attr:`name`).
    store_scalars : bool
        Whether the record keeps :attr:`AnalysisRecord.scalars` (as an array
        ``__scalars__``). True by default; an analysis whose scalars derive from its
        arrays may set it False.

    Raises
    ------
    TypeError
        When a subclass sets an invalid :attr:`name`.
    ValueError
        When an instance sets an invalid :attr:`name` (e.g. ``name="../x"``).
    """

    name: ClassVar[str]
    tag_prefix: ClassVar[str | None] = None
    title: ClassVar[str | None] = None
    store_scalars: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is not None and not (isinstance(name, str) and _NAME.match(name)):
            raise TypeError(
                f"{cls.__qualname__}.name = {name!r}: expected {_NAME_RULE} (it names a directory and a"
                " TensorBoard tag)"
            )
        _REGISTRY[class_path(cls)] = cls

    def __setattr__(self, key: str, value: Any) -> None:
        # An instance's name (e.g. AttributionAnalysis(name=...)) names its record directory like a class's:
        # checked when it is set, so that no name with a path in it ever reaches the disk.
        if key == "name":
            check_name(value, f"{type(self).__name__}(name={value!r})")
        super().__setattr__(key, value)

    @property
    def prefix(self) -> str:
        """The tag prefix in use: :attr:`tag_prefix`, or :attr:`name`."""
        return self.tag_prefix or self.name

    def check(self, model: nn.Module, probes: torch.Tensor) -> None:
        """Check that the analysis can run on ``model`` and ``probes``; by default nothing.

        Called on every rank at fit start (under ``fast_dev_run`` too), after the core
        checked that the model runs the probe batch, so that a bad argument stops every
        process alike. Raise ``ValueError`` or ``TypeError`` naming the argument, e.g.
        ``"MyAnalysis(layers=['conv9']): unknown layers ['conv9']"``.
        """

    def setup(self, model: nn.Module, probes: torch.Tensor, context: ProbeContext) -> None:
        """Build what every record needs (a graph, a fitted layout); by default nothing.

        Called on rank 0 at fit start, after :meth:`check`, also when a run resumes from
        a checkpoint. ``context`` is shared with the analyses set up alongside (and with
        the baseline record, if one is taken next).
        """

    def header(self) -> dict[str, Any]:
        """The configuration of the series, as JSON; by default ``{}``.

        Written to the record directory's manifest at fit start (after :meth:`setup`).
        A run that resumes into the directory must have the same header, or it fails
        with an error that says so.
        """
        return {}

    def hparams(self) -> dict[str, Any]:
        """The analysis's configuration as TensorBoard hparams: ``{key: str, int, float or bool}``; by default ``{}``.

        The core logs them once training starts, as ``<tag_prefix>/<key>``, together with
        the hyperparameters Lightning logged, to every logger; call after :meth:`setup`.
        """
        return {}

    def describe(self) -> str | None:
        """A Markdown description of the series (configuration, what the colours mean); by default none.

        The core logs it as the text card ``<tag_prefix>/about`` once training starts, to every
        logger that takes text.
        """
        return None

    def custom_scalars(self) -> dict[str, dict[str, list[Any]]] | None:
        """TensorBoard custom-scalars charts for this analysis's scalars; by default none.

        Returns
        -------
        dict or None
            ``{category: {chart title: ["Multiline", [tag regex, ...]]}}`` as for
            ``SummaryWriter.add_custom_scalars``; the core merges those of every analysis
            of a callback and logs them once at fit start.
        """
        return None

    @abc.abstractmethod
    def compute(self, model: nn.Module, probes: torch.Tensor, context: ProbeContext) -> AnalysisRecord:
        """Compute the analysis at one record.

        Called on rank 0 at every scheduled record (the baseline included), in eval mode
        under ``torch.no_grad()``. Use ``context.activations()`` / ``context.layers()`` /
        ``context.outputs()`` rather than running the model yourself, so that analyses
        share the forward pass.

        Returns
        -------
        AnalysisRecord
            The arrays and scalars to keep, and JSON metadata.
        """

    def log(self, record: AnalysisRecord, sink: LogSink) -> None:
        """Draw a record for the loggers: ``sink.image``, ``sink.figure``, ``sink.histogram``, ``sink.text``, ``sink.embedding``.

        Called on rank 0 after :meth:`compute`; by default nothing. Scalars need no
        code here: the core logs ``record.scalars`` to every logger. When
        ``sink.enabled`` is False (no logger takes media) skip the drawing.
        """

    @classmethod
    def read_record(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any], path: Path) -> Any:
        """Turn a record file's contents into the record object :meth:`report` receives.

        The default checks the metadata the core writes and returns a
        :class:`ProbeRecord`. Override to validate the arrays (raise ``ValueError``
        naming ``path``) or to return a richer record.

        Raises
        ------
        ValueError
            If the record lacks the core's metadata, or its scalars do not match.
        """
        return read_probe_record(arrays, meta, path)

    @classmethod
    def check_header(cls, header: dict[str, Any], path: Path) -> None:
        """Check a series' header as read from its manifest ``path``; by default nothing.

        Called by every reader before any record of the series is read, so that
        :meth:`check_record` and :meth:`report` may rely on the header's types. Raise
        ``ValueError`` naming ``path`` and the field that is wrong.
        """

    @classmethod
    def check_record(cls, record: Any, header: dict[str, Any], path: Path) -> None:
        """Check a record (what :meth:`read_record` returned) against its series' header; by default nothing.

        Called by every reader after :meth:`read_record`, so that a record that contradicts
        the header (another architecture, another number of probes) is refused rather than
        reported. The core has checked the record's ``epoch``, ``global_step``,
        ``seconds`` and series already. Raise ``ValueError`` naming ``path`` and what
        does not match.
        """

    @classmethod
    def document_title(cls, header: Mapping[str, Any]) -> str:
        """The report's title when this analysis is the only one in it; by default ``"<title> report"``."""
        return f"{cls.title or getattr(cls, 'name', 'probe')} report"

    @classmethod
    def report_steps(cls, records: Sequence[Any], header: Mapping[str, Any]) -> int:
        """How many times :meth:`report` calls ``context.step``, for the progress bar; by default 1."""
        return 1

    @classmethod
    def report(
        cls, records: Sequence[Any], header: Mapping[str, Any], context: ReportContext
    ) -> "Section | list[Section]":
        """The analysis's section(s) of ``nsp-report``, from its records.

        A classmethod: the report runs without the model, without Lightning and without
        the analysis's constructor arguments (what it needs of them belongs in the
        header). The default shows the records' epochs, a chart of every stored scalar
        over the records, and the arrays of the last record.

        Parameters
        ----------
        records : sequence
            What :meth:`read_record` returned for every record, by increasing epoch.
        header : mapping
            What :meth:`header` returned for the series.
        context : ReportContext
            The record directory, and ``context.step(what)`` for the progress bar.

        Returns
        -------
        Section or list of Section
            Built from :mod:`nsp_lightning.sections` blocks; ids lowercase.
        """
        from nsp_lightning.report.sections import Facts, Section, Table, Text, scalar_chart

        title = cls.title or context.name
        epochs = [r.epoch for r in records]
        facts = [
            ("records", str(context.directory)),
            ("epochs", f"{len(records)} record(s) at epochs {', '.join(map(str, epochs))}"),
        ]
        facts += [(str(k), str(v)) for k, v in header.items()]
        blocks: list[Any] = [Facts(facts)]
        keys = list(getattr(records[-1], "scalars", {}))
        # At most 10 lines a chart, so that the legend stays readable.
        for start in range(0, len(keys), 10):
            series = {k: [float(getattr(r, "scalars", {}).get(k, math.nan)) for r in records] for k in keys[start : start + 10]}
            blocks.append(scalar_chart(epochs, series, f"{title}: scalars"))
        arrays = getattr(records[-1], "arrays", {})
        if arrays:
            rows = [[name, "×".join(map(str, a.shape)) or "scalar", str(a.dtype)] for name, a in arrays.items()]
            blocks.append(Table(f"arrays of the record at epoch {epochs[-1]}", ["array", "shape", "dtype"], rows))
        if not keys and not arrays:
            blocks.append(Text("The records hold no scalars or arrays."))
        context.step(f"section {context.name}")
        return Section(context.name, title, blocks)


def check_analyses(analyses: Any, who: str) -> list[ProbeAnalysis]:
    """``analyses`` (one :class:`ProbeAnalysis` or a sequence) as a list of analyses of distinct names.

    Raises
    ------
    TypeError
        If they are not analyses.
    ValueError
        If there are none, or two share a name (each writes to its own directory, named
        after it); the message begins with ``who``.
    """
    listed = [analyses] if isinstance(analyses, ProbeAnalysis) else analyses
    if not isinstance(listed, (list, tuple)) or not all(isinstance(a, ProbeAnalysis) for a in listed):
        raise TypeError(f"{who}(analyses={analyses!r}): expected a ProbeAnalysis or a list of them")
    if not listed:
        raise ValueError(f"{who}(analyses=[]): expected at least one analysis")
    names = [a.name for a in listed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"{who}(analyses=...): the names {repeated} repeat; each analysis writes to its own directory, named"
            " after it (set `name` on one of them)"
        )
    return list(listed)


def check_name(name: Any, who: str) -> str:
    """Check an analysis's name (a class's or an instance's), which names its record directory; return it.

    Raises
    ------
    ValueError
        If ``name`` is not lowercase letters, digits, ``_`` and ``-``, starting with a
        letter, at most 64 characters (so not a path, absolute or relative); the message
        begins with ``who``.

    Examples
    --------
    >>> check_name("saliency-2", "AttributionAnalysis(name='saliency-2')")
    'saliency-2'
    """
    if not (isinstance(name, str) and _NAME.match(name)):
        raise ValueError(f"{who}: expected {_NAME_RULE}; the name is a directory's and a TensorBoard tag's")
    return name


def class_path(cls: type) -> str:
    """``"module:qualname"`` of a class, as a record directory's manifest keeps it."""
    return f"{cls.__module__}:{cls.__qualname__}"


def analysis_class(path: str | None) -> type[ProbeAnalysis] | None:
    """The analysis class a manifest names, or None if it is not available.

    ``None`` (a manifest written before analyses were plug-ins) means
    :class:`~nsp_lightning.analyses.spectrum.analysis.SpectrumAnalysis`. A class defined or
    imported in this process is found by its path; one in a module of nsp_lightning is
    imported. Other modules are never imported on a manifest's word: import the module
    that defines the analysis first (``nsp-report --import MODULE``).
    """
    path = _LEGACY_CLASS if path is None else path
    if path in _REGISTRY:
        return _REGISTRY[path]
    module_name, _, qualname = path.partition(":")
    if not module_name.startswith("nsp_lightning."):
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    if path in _REGISTRY:
        return _REGISTRY[path]
    # A manifest written before nsp_lightning's analyses moved into packages names the
    # package (``nsp_lightning.analyses.spectrum:SpectrumAnalysis``), which re-exports it.
    cls = getattr(module, qualname, None)
    return cls if isinstance(cls, type) and _REGISTRY.get(class_path(cls)) is cls else None


def _layers_key(layers: Any) -> Any:
    if layers is None or isinstance(layers, str):
        return layers
    if callable(layers):
        return ("callable", id(layers))
    return tuple(layers)
