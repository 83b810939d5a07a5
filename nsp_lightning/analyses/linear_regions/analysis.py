"""Linear regions over training
============================

:class:`LinearRegionsAnalysis` partitions a plane around each probe exactly into the
network's linear regions (:func:`nsp.regions.linear_regions`) at every record: how many
there are, how dense they are near the probe, how far the probe is from the nearest region
boundary, and a picture of the partition. "How the number of linear regions changes during
training" (Hanin & Rolnick, 2019) becomes one callback argument.
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

_ARRAYS = ("regions", "density", "boundary_distance", "images")


class LinearRegionsAnalysis(ProbeAnalysis):
    """The exact linear regions of a piecewise-linear network on a plane through each probe.

    The plane of probe ``p``:

    - for a network with 2-D input, its input space (``domain`` is then required, e.g. the
      data's bounding box), the probe at its own coordinates;
    - otherwise the plane through the probe and two more inputs, ``spans[p]`` (default: the
      next two probes, cyclically, so at least 3 probes), with the probe at ``(0, 0)`` and an
      orthonormal basis; the box is the three inputs' bounding box widened by ``margin`` times
      its size on every side, unless ``domain`` gives it.

    At every record, per probe (scalars ``probe_<p>/regions``, ``probe_<p>/density`` and
    ``probe_<p>/boundary_distance``; image ``probe_<p>``):

    - the number of regions in the box;
    - their density near the probe: the number of regions meeting the disc of ``radius``
      around it, per unit area;
    - the distance in the plane from the probe to the nearest boundary of its region;
    - the partition, each region coloured by its activation pattern, with the boundaries dark
      (a ``resolution``² RGB raster). The record also keeps every partition's polygons
      (``p<p>_vertices``, ``p<p>_face_vertices``, ``p<p>_face_offsets``).

    TensorBoard shows at most 10 images per tag unless started with
    ``--samples_per_plugin images=N``; the records keep every image.

    Args:
        spans: ``(P, 2, *input_shape)``: the two inputs that span each probe's plane.
        domain: ``(u_min, u_max, v_min, v_max)``, the box in plane coordinates.
        margin: See above.
        radius: Radius of the density's disc (default: a tenth of the box's longer side).
        resolution: Pixels per side of the images.
        tol: As for :func:`nsp.regions.linear_regions`.
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
        margin: float = 0.5,
        radius: float | None = None,
        resolution: int = 128,
        tol: float = 1e-9,
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
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"{where}: expected `margin` >= 0, got {margin!r}")
        if radius is not None and not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"{where}: expected `radius` > 0, got {radius!r}")
        if int(resolution) < 8:
            raise ValueError(f"{where}: expected `resolution` >= 8, got {resolution!r}")
        if name is not None:
            self.name = name
        self.spans = None if spans is None else spans.detach()
        self.domain = domain
        self.margin = float(margin)
        self.radius = radius
        self.resolution = int(resolution)
        self.tol = float(tol)

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
                pad = self.margin * (hi - lo).max()
                domain = (lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad)
            else:
                domain = self.domain
            out.append((plane, tuple(float(d) for d in domain), np.zeros(2)))
        return out

    def check(self, model: nn.Module, probes: torch.Tensor) -> None:
        from nsp.regions.local_affine import activation_patterns

        self._planes(probes)
        activation_patterns(model, probes[:1])  # raises, naming the module, if not piecewise linear

    def header(self) -> dict[str, Any]:
        return {
            "planes": "the input space (2-D)" if self.spans is None and self.domain is not None else
                      "through each probe and two more inputs" + (" (the next two probes)" if self.spans is None else ""),
            "domain": None if self.domain is None else list(self.domain),
            "margin": self.margin,
            "radius": self.radius,
            "resolution": self.resolution,
            "tol": self.tol,
        }

    def compute(self, model: nn.Module, probes: torch.Tensor, context: ProbeContext) -> AnalysisRecord:
        from nsp.regions import linear_regions, regions_rgb

        arrays: dict[str, np.ndarray] = {}
        scalars: dict[str, float] = {}
        counts, density, distance, images, domains = [], [], [], [], []
        for p, (plane, domain, at) in enumerate(self._planes(probes)):
            regions = linear_regions(model, plane=plane, domain=domain, tol=self.tol)
            radius = self.radius or 0.1 * max(domain[1] - domain[0], domain[3] - domain[2])
            counts.append(len(regions))
            density.append(regions.density_near(at, radius))
            distance.append(regions.distance_to_boundary(at))
            images.append(regions_rgb(regions, self.resolution))
            domains.append(domain)
            arrays[f"p{p}_vertices"] = regions.vertices
            arrays[f"p{p}_face_vertices"] = regions.face_vertices
            arrays[f"p{p}_face_offsets"] = regions.face_offsets
            scalars[f"probe_{p}/regions"] = float(len(regions))
            scalars[f"probe_{p}/density"] = density[-1]
            scalars[f"probe_{p}/boundary_distance"] = distance[-1]
        arrays.update(regions=np.array(counts, dtype=np.int64), density=np.array(density),
                      boundary_distance=np.array(distance), images=np.stack(images),
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
            "regions": ("iu", 1), "density": ("f", 1), "boundary_distance": ("f", 1), "images": ("u", 4),
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
                ("box", "given: " + str(header["domain"]) if header.get("domain") else
                        f"the three inputs' bounding box, widened by {header.get('margin')} of its size"),
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
        rows = [[str(r.epoch), str(p), f"{int(r.arrays['regions'][p]):,}", f"{r.arrays['density'][p]:.4g}",
                 f"{r.arrays['boundary_distance'][p]:.4g}"] for r in records for p in range(probes)]
        blocks.append(Table("regions, density near the probe (regions per unit area) and distance to the nearest "
                            "boundary", ["epoch", "probe", "regions", "density", "distance"], rows))
        context.step(f"section {context.name}")
        return Section(context.name.replace("_", "-"), cls.title or context.name, blocks)
