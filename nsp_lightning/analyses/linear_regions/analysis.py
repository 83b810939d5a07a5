"""Linear regions over training
============================

:class:`LinearRegionsAnalysis` partitions a small square of a plane around each probe exactly
into the network's linear regions (:func:`nsp.regions.linear_regions`) at every record: how
many there are, how dense they are near the probe, and a picture of the partition. "How the
number of linear regions changes during training" (Hanin & Rolnick, 2019) becomes one
callback argument. Before partitioning, a grid scan estimates the count and the memory and
refuses, with the estimate, a box over ``max_regions`` or over the memory available: the
record is then missing (with a warning, under the callback's ``on_error="warn"``) and
training goes on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from nsp_lightning.probe.analysis import (
    AnalysisRecord,
    LogSink,
    ProbeAnalysis,
    ProbeContext,
    check_arrays,
    read_probe_record,
)

__all__ = ["LinearRegionsAnalysis"]

# Records written before issue 21 also hold "boundary_distance" (the distance from the probe to
# its region's boundary); it was ~1e-17 for every probe, which sits on a max-pool tie, and is no
# longer written. Old records stay readable.
_ARRAYS = ("regions", "density", "images")


class LinearRegionsAnalysis(ProbeAnalysis):
    """The exact linear regions of a piecewise-linear network on a plane through each probe.

    The plane of probe ``p``:

    - for a network with 2-D input, its input space (``domain`` is then required, e.g. the
      data's bounding box), the probe at its own coordinates;
    - otherwise the plane through the probe and two more inputs, ``spans[p]`` (default: the
      next two probes, cyclically, so at least 3 probes), with the probe at ``(0, 0)`` and an
      orthonormal basis. The box is ``domain`` if given; else, with ``zoom``, the square
      centred on the probe whose side is ``zoom`` times the longer side of the three inputs'
      bounding box; with ``zoom=None``, that bounding box widened by ``margin`` times its size
      on every side (regions grow with the box: the digits CNN of ``examples/demo_digits.py``
      has 5-301 regions per probe in its default square over 4 epochs, and 15,000-55,000 in
      the widened box, which takes minutes and gigabytes per probe).

    At every record, per probe (scalars ``probe_<p>/regions`` and ``probe_<p>/density``; image
    ``probe_<p>``):

    - the number of regions in the box;
    - their density near the probe: the number of regions meeting the disc of ``radius``
      around it, per unit area;
    - the partition, each region coloured by its activation pattern, every boundary drawn over
      it, the probe ringed in red and the count in the title (``resolution`` pixels a side); with
      ``class_boundary=True``, the exact class decision boundary (where the argmax of the
      logits changes, :func:`nsp.regions.decision_boundary`) in red.
      The record also keeps every partition's polygons (``p<p>_vertices``,
      ``p<p>_face_vertices``, ``p<p>_face_offsets``) and the boxes (``domains``).

    Before partitioning, each box's count and memory are estimated from the activation
    patterns on a grid (:func:`nsp.regions.estimate_regions`); a box estimated (or found, as it
    is partitioned) to hold more than ``max_regions`` regions, or to need more memory than is
    available (:mod:`nsp.common.memory`), is refused with the estimate: the record fails, and
    under ``ProbeCallback(on_error="warn")`` (the default) it is missing, with a warning that
    gives the estimate, and training goes on. A probe's box is the same at every record, so
    while its last count was at most a quarter of ``max_regions`` the grid scan is skipped
    (``linear_regions(..., estimate=False)``): the partition is then refused as it grows, as
    soon as a ReLU call's cuts make more than ``max_regions`` regions, after every other call,
    and before any step that would need more memory than is available; the warning then gives
    the count found instead of an estimate.

    Cost (``python benchmarks/regions_overhead.py``; a 2-core Xeon shared with other jobs, load
    average 4-9, one torch thread): in 3-epoch digits demo fits (4 probes, 4 records each) the
    records at the defaults took **8.1 %** of the fit (median of 3 fits; 15.7 % before issue 21's
    second round, at the old ``zoom=0.01``, in the same run). A record after the first took
    0.07 s on the untrained CNN (140 regions in all) and 0.24 s after 3 epochs (966 regions),
    against 0.32 s and 0.48 s before at the same zoom; the record at fit start also scans every
    box first. ``zoom=0.01`` (a square twice as wide, about twice the regions) took 0.08 s and
    0.37 s. Since issue 21's budgets (``zoom=0.0035`` from 0.005; one pass at the corners per
    partition), on a quiet 2-core machine in 4-epoch fits (``benchmarks/analysis_overhead.py``,
    one torch thread, BENCHMARKS.md "Quiet rerun of issue 21's and 23's acceptance figures"):
    a record holds the training thread 62 ms (min) / 94 ms (median), 4.0 % of the demo's
    epoch; the epoch takes 4.2 % longer and the fit 6.8 %, against 103 / 134 ms, +7.9 % and
    +9.3 % for the defaults before, measured beside it.

    TensorBoard shows at most 10 images per tag unless started with
    ``--samples_per_plugin images=N``; the records keep every image.

    Args:
        spans: ``(P, 2, *input_shape)``: the two inputs that span each probe's plane.
        domain: ``(u_min, u_max, v_min, v_max)``, the box in plane coordinates.
        zoom: See above (> 0), or None.
        margin: See above; used only with ``zoom=None``.
        radius: Radius of the density's disc (default: a tenth of the box's longer side).
        resolution: Pixels per side of the images.
        max_regions: The most regions a box may hold (see above).
        tol: As for :func:`nsp.regions.linear_regions`.
        class_boundary: Draw the class decision boundary on the pictures (one more forward pass
            over the partition's vertices per probe).
        name: The analysis's name (record directory and tag prefix).

    Raises:
        ValueError: If an argument is out of range, or (at fit start) the plane is degenerate, a
            2-D input space has no ``domain``, ``spans`` does not match the probes, or there are
            fewer than 3 probes without ``spans``.
        NotPiecewiseLinearError: At fit start, naming the module, for a network that is not
            piecewise linear.

    Example::

        analysis = LinearRegionsAnalysis(domain=(-2, 3, -1.5, 2))   # a 2-D toy problem
        trainer = Trainer(callbacks=[ProbeCallback(x_val[:4], analyses=[analysis])])
    """

    # Records name an analysis by its class's path; this is the public one, which does not
    # change when the package's modules are reorganised.
    __module__ = "nsp_lightning.analyses.linear_regions"

    name = "linear_regions"
    title = "Linear regions"

    def __init__(
        self,
        spans: torch.Tensor | None = None,
        *,
        domain: Sequence[float] | None = None,
        zoom: float | None = 0.0035,
        margin: float = 0.5,
        radius: float | None = None,
        resolution: int = 256,
        max_regions: int = 2000,
        tol: float = 1e-9,
        class_boundary: bool = False,
        name: str | None = None,
    ) -> None:
        where = "LinearRegionsAnalysis"
        if spans is not None and (not isinstance(spans, torch.Tensor) or spans.dim() < 3 or spans.shape[1] != 2):
            raise ValueError(f"{where}: expected `spans` to be a tensor (P, 2, *input_shape), got "
                             f"{type(spans).__name__ if not isinstance(spans, torch.Tensor) else list(spans.shape)}")
        if domain is not None:
            from nsp.regions.plane import check_domain

            try:
                domain = check_domain(domain)
            except ValueError as e:
                raise ValueError(f"{where}(domain={domain!r}): {e}") from None
        if zoom is not None and not (isinstance(zoom, (int, float)) and math.isfinite(zoom) and zoom > 0):
            raise ValueError(f"{where}: expected `zoom` > 0 or None, got {zoom!r}")
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"{where}: expected `margin` >= 0, got {margin!r}")
        if radius is not None and not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"{where}: expected `radius` > 0, got {radius!r}")
        if int(resolution) < 8:
            raise ValueError(f"{where}: expected `resolution` >= 8, got {resolution!r}")
        if isinstance(max_regions, bool) or not isinstance(max_regions, int) or max_regions < 1:
            raise ValueError(f"{where}: expected `max_regions` to be an int >= 1, got {max_regions!r}")
        if name is not None:
            self.name = name
        self.spans = None if spans is None else spans.detach()
        self.domain = domain
        self.zoom = None if zoom is None else float(zoom)
        self.margin = float(margin)
        self.radius = radius
        self.resolution = int(resolution)
        self.max_regions = max_regions
        self.tol = float(tol)
        self.class_boundary = bool(class_boundary)
        self.input_shape: tuple[int, ...] | None = None
        # Each probe's count at its last record: the estimate is skipped while it is far under budget.
        self.last_counts: dict[int, int] = {}

    def _planes(self, probes: torch.Tensor) -> list[tuple[Any, tuple[float, ...], np.ndarray]]:
        """Per probe: (plane, domain, the probe's plane coordinates)."""
        from nsp.regions import Plane

        x = probes.detach().to("cpu", torch.float64)
        where = "LinearRegionsAnalysis"
        if tuple(x.shape[1:]) == (2,) and self.spans is None:
            if self.domain is None:
                raise ValueError(f"{where}: the network's input space is 2-D: give `domain` (u_min, u_max, v_min, v_max)")
            plane = Plane(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
            return [(plane, self.domain, x[p].numpy()) for p in range(len(x))]
        if self.spans is None:
            if len(x) < 3:
                raise ValueError(f"{where}: {len(x)} probe(s): pass `spans` (two inputs per probe), or at least 3 probes")
            spans = torch.stack([torch.stack([x[(p + 1) % len(x)], x[(p + 2) % len(x)]]) for p in range(len(x))])
        else:
            spans = self.spans.to("cpu", torch.float64)
            if spans.shape[0] != len(x) or spans.shape[2:] != x.shape[1:]:
                raise ValueError(f"{where}: `spans` has shape {list(spans.shape)}, expected {[len(x), 2, *x.shape[1:]]}")
        out = []
        for p in range(len(x)):
            try:
                plane = Plane.through(x[p], spans[p, 0], spans[p, 1])
            except ValueError as e:
                raise ValueError(f"{where}: probe {p}: {e}") from None
            if self.domain is None:
                uv = plane.coordinates(torch.stack([x[p], spans[p, 0], spans[p, 1]]))
                lo, hi = uv.min(axis=0), uv.max(axis=0)
                if self.zoom is not None:
                    half = 0.5 * self.zoom * (hi - lo).max()
                    domain = (-half, half, -half, half)
                else:
                    pad = self.margin * (hi - lo).max()
                    domain = (lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad)
            else:
                domain = self.domain
            out.append((plane, tuple(float(d) for d in domain), np.zeros(2)))
        return out

    def check(self, model: nn.Module, probes: torch.Tensor) -> None:
        from nsp.regions.local_affine import activation_patterns

        self._planes(probes)
        self.last_counts = {}
        activation_patterns(model, probes[:1])  # raises, naming the module, if not piecewise linear
        self.input_shape = tuple(probes.shape[1:])

    def header(self) -> dict[str, Any]:
        dims = None if self.input_shape is None else math.prod(self.input_shape)
        if self.spans is None and self.input_shape == (2,):
            planes = "the input space (2-D)"
        else:
            planes = ("the plane through each probe and " + ("the next two probes" if self.spans is None else
                      "its two `spans` inputs") + (f", in the {dims}-D input space" if dims else ""))
        if self.domain is not None:
            box = f"given: {list(self.domain)}"
        elif self.zoom is not None:
            box = (f"a square centred on the probe, of side {self.zoom:g} times the longer side of the three "
                   "inputs' bounding box")
        else:
            box = f"the three inputs' bounding box, widened by {self.margin:g} of its size"
        return {
            "planes": planes,
            "box": box,
            "domain": None if self.domain is None else list(self.domain),
            "zoom": self.zoom,
            "margin": self.margin,
            "radius": self.radius,
            "resolution": self.resolution,
            "max_regions": self.max_regions,
            "tol": self.tol,
            "class_boundary": self.class_boundary,
        }

    def compute(self, model: nn.Module, probes: torch.Tensor, context: ProbeContext) -> AnalysisRecord:
        from nsp.regions import linear_regions
        from nsp.regions.plot import regions_picture

        arrays: dict[str, np.ndarray] = {}
        scalars: dict[str, float] = {}
        counts, density, images, domains = [], [], [], []
        for p, (plane, domain, at) in enumerate(self._planes(probes)):
            # The box is the same at every record; while its last count was under a quarter of the
            # budget, the grid scan is skipped and the partition is refused only as it outgrows it.
            far_under = self.last_counts.pop(p, self.max_regions) <= self.max_regions // 4
            try:
                regions = linear_regions(model, plane=plane, domain=domain, tol=self.tol, max_regions=self.max_regions,
                                         estimate=not far_under)
            except (ValueError, MemoryError) as err:
                raise type(err)(f"LinearRegionsAnalysis, probe {p}: {err}") from err
            self.last_counts[p] = len(regions)
            radius = self.radius or 0.1 * max(domain[1] - domain[0], domain[3] - domain[2])
            counts.append(len(regions))
            density.append(regions.density_near(at, radius))
            images.append(regions_picture(regions, self.resolution, title=f"probe {p}, epoch {context.epoch}", probe=at,
                                          class_boundary=self.class_boundary))
            domains.append(domain)
            arrays[f"p{p}_vertices"] = regions.vertices
            arrays[f"p{p}_face_vertices"] = regions.face_vertices
            arrays[f"p{p}_face_offsets"] = regions.face_offsets
            scalars[f"probe_{p}/regions"] = float(len(regions))
            scalars[f"probe_{p}/density"] = density[-1]
        arrays.update(regions=np.array(counts, dtype=np.int64), density=np.array(density), images=np.stack(images),
                      domains=np.array(domains, dtype=np.float64))
        return AnalysisRecord(arrays=arrays, scalars=scalars, meta={"regions": counts},
                              summary={"regions": counts})

    def log(self, record: AnalysisRecord, sink: LogSink) -> None:
        for p, image in enumerate(record.arrays["images"]):
            sink.image(f"probe_{p}", image)

    @classmethod
    def read_record(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any], path: Path) -> Any:
        missing = [name for name in _ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"LinearRegionsAnalysis: the record {path} lacks the array(s) {missing}")
        n = len(arrays["regions"])
        if arrays["images"].ndim != 4 or len(arrays["images"]) != n or arrays["images"].dtype != np.uint8:
            raise ValueError(f"LinearRegionsAnalysis: the record {path} has images of shape "
                             f"{list(arrays['images'].shape)} ({arrays['images'].dtype}) for {n} probe(s)")
        return read_probe_record(arrays, meta, path)

    @classmethod
    def check_record(cls, record: Any, header: dict[str, Any], path: Path) -> None:
        """One row per probe in every array the report reads; images as uint8 RGB(A)."""
        check_arrays(record.arrays, path, cls.__name__, {
            "regions": ("iu", 1), "density": ("f", 1), "images": ("u", 4),
            **({"boundary_distance": ("f", 1)} if "boundary_distance" in record.arrays else {}),
        })
        if record.arrays["images"].shape[-1] not in (3, 4):
            raise ValueError(f"{cls.__name__}: the record {path} has images of shape "
                             f"{list(record.arrays['images'].shape)}; expected RGB(A) images (P, H, W, 3 or 4)")

    @classmethod
    def report_steps(cls, records: Sequence[Any], header: Mapping[str, Any]) -> int:
        return 1 + len(records[-1].arrays["regions"])

    @classmethod
    def report(cls, records: Sequence[Any], header: Mapping[str, Any], context: Any) -> Any:
        from nsp_lightning.report.sections import Facts, Film, Frame, Image, Row, Section, Table, Text, scalar_chart

        epochs = [r.epoch for r in records]
        probes = len(records[-1].arrays["regions"])
        blocks: list[Any] = [
            Text("The exact linear regions of the network on a plane through each probe: every region is a "
                 "polygon on which the network is affine, coloured by its activation pattern."),
            Facts([
                ("records", str(context.directory)),
                ("epochs", ", ".join(map(str, epochs))),
                ("planes", str(header.get("planes"))),
                ("box", header.get("box") or ("given: " + str(header["domain"]) if header.get("domain") else
                        f"the three inputs' bounding box, widened by {header.get('margin')} of its size")),
            ]),
            scalar_chart(epochs, {f"probe {p}": [float(r.arrays["regions"][p]) for r in records] for p in range(probes)},
                         "number of linear regions"),
        ]
        films = []
        for p in range(probes):
            frames = [Frame(f"epoch {r.epoch}: {int(r.arrays['regions'][p]):,} regions",
                            Image.from_rgb(r.arrays["images"][p], f"probe {p}, epoch {r.epoch}", lossy=True)) for r in records]
            films.append(Film(f"probe {p}", frames))
            context.step(f"partitions of probe {p}")
        blocks.append(Row(films, heading="The partition per epoch"))
        rows = [[str(r.epoch), str(p), f"{int(r.arrays['regions'][p]):,}", f"{r.arrays['density'][p]:.4g}"]
                for r in records for p in range(probes)]
        blocks.append(Table("regions and their density near the probe (regions per unit area)",
                            ["epoch", "probe", "regions", "density"], rows))
        context.step(f"section {context.name}")
        return Section(context.name.replace("_", "-"), cls.title or context.name, blocks)
