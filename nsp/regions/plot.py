"""Pictures of a partition: :func:`plot_regions` with matplotlib, :func:`regions_rgb` and
:func:`regions_picture` (titled, for logs and reports) without.

Regions are coloured by activation pattern (:meth:`~nsp.regions.result.Regions.colors`).
matplotlib is imported only when :func:`plot_regions` runs.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from nsp.regions.decision import decision_boundary
from nsp.regions.mesh import ragged_slots
from nsp.regions.result import Regions

__all__ = ["plot_regions", "regions_picture", "regions_rgb"]


def plot_regions(regions: Regions, ax: Any = None, *, decision: Callable | None = None, edgecolor: str = "k",
                 linewidth: float = 0.3, seed: int = 0, probe: Sequence[float] | None = None,
                 class_boundary: bool = False) -> tuple[Any, Any]:
    """Draw the regions, coloured by activation pattern, with their boundaries.

    Parameters
    ----------
    regions : Regions
    ax : matplotlib Axes, optional
        Draw into it; otherwise a new figure is made (without pyplot).
    decision : callable, optional
        ``decision(outputs (n, *out)) -> (n,)`` values in [0, 1] (say, a class probability) shown as
        a grey-scale underlay through semi-transparent regions, with its 0.5 level (the decision
        boundary) in red.
    probe : (u, v), optional
        Mark this point.
    class_boundary : bool
        Draw the exact class decision boundary (:func:`nsp.regions.decision_boundary`: where the
        argmax of the logits changes) over the regions, in red.

    Returns
    -------
    (Figure, Axes)
    """
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    colors = regions.colors(seed)
    alpha = 1.0
    if decision is not None:
        img = _decision_raster(regions, decision, 256)
        u0, u1, v0, v1 = regions.domain
        ax.imshow(img, extent=(u0, u1, v0, v1), origin="lower", cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.contour(img, levels=[0.5], extent=(u0, u1, v0, v1), origin="lower", colors="red", linewidths=1.5)
        alpha = 0.6
    ax.add_collection(PolyCollection(regions.polygons(), facecolors=colors, edgecolors=edgecolor,
                                     linewidths=linewidth, alpha=alpha))
    if class_boundary:
        found = decision_boundary(regions)
        ax.add_collection(LineCollection(np.stack([found.start, found.end], axis=1), colors="red", linewidths=1.5))
    if probe is not None:
        ax.plot([probe[0]], [probe[1]], marker="*", color="red", markersize=10)
    u0, u1, v0, v1 = regions.domain
    ax.set_xlim(u0, u1)
    ax.set_ylim(v0, v1)
    ax.set_aspect("equal")
    ax.set_title(f"{len(regions)} linear regions")
    return fig, ax


def _pixel_regions(regions: Regions, size: int) -> np.ndarray:
    """``(size, size)`` index of the region under each pixel centre (row 0 at the top)."""
    u0, u1, v0, v1 = regions.domain
    us = u0 + (np.arange(size) + 0.5) * (u1 - u0) / size
    vs = v1 - (np.arange(size) + 0.5) * (v1 - v0) / size
    owner = np.full((size, size), -1, dtype=np.int64)
    lens = np.diff(regions.face_offsets)
    slot, face, nxt = ragged_slots(regions.face_offsets[:-1], lens)
    p = regions.vertices[regions.face_vertices[slot]]
    q = regions.vertices[regions.face_vertices[nxt]]
    lo = np.full((len(regions), 2), np.inf)
    hi = np.full((len(regions), 2), -np.inf)
    np.minimum.at(lo, face, p)
    np.maximum.at(hi, face, p)
    # Candidate pixels: each region's bounding box; then the half-plane test of every edge.
    c0 = np.clip(np.ceil((lo[:, 0] - u0) * size / (u1 - u0) - 0.5), 0, size).astype(np.int64)
    c1 = np.clip(np.floor((hi[:, 0] - u0) * size / (u1 - u0) - 0.5), -1, size - 1).astype(np.int64)
    r0 = np.clip(np.ceil((v1 - hi[:, 1]) * size / (v1 - v0) - 0.5), 0, size).astype(np.int64)
    r1 = np.clip(np.floor((v1 - lo[:, 1]) * size / (v1 - v0) - 0.5), -1, size - 1).astype(np.int64)
    nc, nr = np.maximum(c1 - c0 + 1, 0), np.maximum(r1 - r0 + 1, 0)
    n_cand = nc * nr
    region = np.repeat(np.arange(len(regions)), n_cand)
    k = np.arange(n_cand.sum()) - np.repeat(np.cumsum(n_cand) - n_cand, n_cand)
    col = c0[region] + k % np.maximum(nc[region], 1)
    row = r0[region] + k // np.maximum(nc[region], 1)
    inside = np.ones(len(region), dtype=bool)
    for j in range(int(lens.max())):
        has = lens > j
        e = regions.face_offsets[:-1] + np.minimum(j, lens - 1)
        e_next = regions.face_offsets[:-1] + (np.minimum(j, lens - 1) + 1) % lens
        pa = regions.vertices[regions.face_vertices[e]][region]
        pb = regions.vertices[regions.face_vertices[e_next]][region]
        cross = (pb[:, 0] - pa[:, 0]) * (vs[row] - pa[:, 1]) - (pb[:, 1] - pa[:, 1]) * (us[col] - pa[:, 0])
        inside &= ~has[region] | (cross >= 0)
    owner[row[inside], col[inside]] = region[inside]
    del p, q
    return owner


def regions_rgb(regions: Regions, size: int = 256, *, boundaries: bool = True, seed: int = 0) -> np.ndarray:
    """The partition as an RGB image ``(size, size, 3)`` uint8 (``v`` upwards), without matplotlib:
    each pixel takes its region's pattern colour; pixels whose neighbour lies in another region are
    drawn dark when ``boundaries``."""
    owner = _pixel_regions(regions, size)
    colors = np.concatenate([regions.colors(seed), [[1.0, 1.0, 1.0]]])
    img = (colors[owner] * 255).astype(np.uint8)
    if boundaries:
        edge = np.zeros_like(owner, dtype=bool)
        edge[:, 1:] |= owner[:, 1:] != owner[:, :-1]
        edge[1:, :] |= owner[1:, :] != owner[:-1, :]
        img[edge] = (img[edge] * 0.3).astype(np.uint8)
    return img


def regions_picture(regions: Regions, size: int = 256, *, title: str = "", probe: Sequence[float] | None = None,
                    seed: int = 0, class_boundary: bool = False) -> np.ndarray:
    """The partition as a titled RGB image, ``(size + header, size, 3)`` uint8, without matplotlib.

    Regions are filled with their pattern colours, and every region boundary is drawn over them
    as a line from the exact polygons (so a region thinner than a pixel still shows as a
    boundary); the box's sides are not boundaries. A header strip above the plane reads
    ``title`` and the region count; ``probe`` ``(u, v)`` is marked with a red ring.

    Parameters
    ----------
    regions : Regions
    size : int
        Pixels per side of the plane (>= 8).
    title : str
        Written before the count, e.g. ``"probe 0, epoch 3"``.
    probe : (u, v), optional
        A point of the plane to mark.
    seed : int
        For the pattern colours.
    class_boundary : bool
        Draw the exact class decision boundary (:func:`nsp.regions.decision_boundary`) in red,
        two pixels wide.

    Returns
    -------
    numpy.ndarray
    """
    from PIL import Image, ImageDraw, ImageFont

    if int(size) < 8:
        raise ValueError(f"nsp.regions_picture: expected `size` >= 8, but got {size!r}")
    size = int(size)
    u0, u1, v0, v1 = regions.domain
    p, q, _ = regions.inner_edges()

    def pixel(uv: np.ndarray) -> np.ndarray:
        return np.stack([(uv[:, 0] - u0) / (u1 - u0) * size, (v1 - uv[:, 1]) / (v1 - v0) * size], axis=1)

    # Polygons filled by PIL (pixel centres at half-integers), 5-20x faster than testing every
    # pixel centre against every region (_pixel_regions) on the digits demo; the boundaries are
    # drawn over the fill's edges.
    plane = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(plane)
    corners = [tuple(c) for c in (pixel(regions.vertices) - 0.5).tolist()]
    for i, colour in enumerate(map(tuple, np.round(regions.colors(seed) * 255).astype(int).tolist())):
        draw.polygon([corners[v] for v in regions.face_vertices[regions.face_offsets[i]: regions.face_offsets[i + 1]]],
                     fill=colour)
    # Each inner edge belongs to the two regions it separates: draw it once.
    ends = np.round(np.concatenate([pixel(p), pixel(q)], axis=1), 1)
    swap = (ends[:, 0] > ends[:, 2]) | ((ends[:, 0] == ends[:, 2]) & (ends[:, 1] > ends[:, 3]))
    ends[swap] = ends[swap][:, [2, 3, 0, 1]]
    for a, b, c, d in np.unique(ends, axis=0):
        draw.line([(a, b), (c, d)], fill=(40, 40, 40), width=1)
    if class_boundary:
        found = decision_boundary(regions)
        for (a, b), (c, d) in zip(pixel(found.start), pixel(found.end)):
            draw.line([(a, b), (c, d)], fill=(220, 0, 0), width=2)
    if probe is not None:
        (x, y), = pixel(np.asarray([probe], dtype=np.float64))
        r = max(3, size // 64)
        draw.ellipse([x - r, y - r, x + r, y + r], outline=(220, 0, 0), width=2)
    count = f"{len(regions):,} linear region{'s' if len(regions) != 1 else ''}"
    text = f"{title}: {count}" if title else count
    font = ImageFont.load_default(size=max(10, size // 20))
    header = max(14, size // 16)
    out = Image.new("RGB", (size, size + header), (255, 255, 255))
    out.paste(plane, (0, header))
    ImageDraw.Draw(out).text((4, header // 2), text, fill=(0, 0, 0), font=font, anchor="lm")
    return np.asarray(out)


def _decision_raster(regions: Regions, decision: Callable, size: int) -> np.ndarray:
    owner = _pixel_regions(regions, size)[::-1]  # origin="lower"
    u0, u1, v0, v1 = regions.domain
    us = u0 + (np.arange(size) + 0.5) * (u1 - u0) / size
    vs = v0 + (np.arange(size) + 0.5) * (v1 - v0) / size
    uu, vv = np.meshgrid(us, vs)
    a = regions.affine.reshape(len(regions), 3, -1)[np.maximum(owner, 0)]
    out = uu[..., None] * a[..., 0, :] + vv[..., None] * a[..., 1, :] + a[..., 2, :]
    vals = np.asarray(decision(out.reshape(size * size, *regions.vertex_outputs.shape[1:])), dtype=np.float64)
    return vals.reshape(size, size)
