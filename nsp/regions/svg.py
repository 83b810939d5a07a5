"""The picture of a partition as SVG: every region a vector path, without matplotlib.

:func:`regions_svg` writes what :func:`nsp.regions.regions_picture` draws as pixels, at any
zoom: one closed ``<path>`` per region (filled with its pattern colour, outlined), the class
decision boundary as red segments, the probe as a ring, and a title with the count. The
groups carry ids (``regions``, ``class-boundary``, ``probe``) and each region's path its index
(``data-region``), so the file can be styled or read back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np

from nsp.regions.decision import decision_boundary
from nsp.regions.result import Regions

__all__ = ["regions_svg"]


def _hex(rgb: np.ndarray) -> list[str]:
    return ["#%02x%02x%02x" % tuple(c) for c in np.clip(np.round(rgb * 255), 0, 255).astype(int)]


def regions_svg(regions: Regions, path: str | Path | None = None, *, size: int = 512, title: str = "",
                probe: Sequence[float] | None = None, class_boundary: bool = False, seed: int = 0) -> str:
    """The partition as an SVG document; written to ``path`` when given.

    Parameters
    ----------
    regions : Regions
    path : str or Path, optional
        Write the document there (UTF-8).
    size : int
        Width of the plane in SVG pixels (>= 8); the height follows the box's aspect ratio.
    title : str
        Written before the count, e.g. ``"probe 0, epoch 3"``.
    probe : (u, v), optional
        A point of the plane to mark with a red ring.
    class_boundary : bool
        Draw the exact class decision boundary (:func:`nsp.regions.decision_boundary`) in red.
    seed : int
        For the pattern colours (as :meth:`Regions.colors`).

    Returns
    -------
    str
        The SVG document.

    Raises
    ------
    ValueError
        If ``size`` < 8.

    Examples
    --------
    >>> import torch, nsp.regions as R
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> svg = R.regions_svg(R.linear_regions(net, domain=(-1, 1, -1, 1)), class_boundary=True)
    >>> svg.startswith("<svg")
    True
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"nsp.regions_svg: expected `size` to be an int >= 8, but got {size!r}")
    u0, u1, v0, v1 = regions.domain
    width = float(size)
    height = width * (v1 - v0) / (u1 - u0)
    header = max(16.0, width / 24)
    scale = width / (u1 - u0)

    def xy(uv: np.ndarray) -> np.ndarray:
        return np.stack([(uv[:, 0] - u0) * scale, header + (v1 - uv[:, 1]) * scale], axis=1)

    count = f"{len(regions):,} linear region{'s' if len(regions) != 1 else ''}"
    text = f"{title}: {count}" if title else count
    stroke = max(0.4, width / 1024)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height + header:.0f}" '
        f'viewBox="0 0 {width:.3f} {height + header:.3f}">',
        f"<title>{escape(text)}</title>",
        f'<rect width="{width:.3f}" height="{height + header:.3f}" fill="#ffffff"/>',
        f'<text x="4" y="{header * 0.72:.2f}" font-family="sans-serif" font-size="{header * 0.7:.2f}">{escape(text)}</text>',
        f'<g id="regions" stroke="#282828" stroke-width="{stroke:.3f}" stroke-linejoin="round">',
    ]
    corners = xy(regions.vertices)
    for i, colour in enumerate(_hex(regions.colors(seed))):
        ring = corners[regions.face_vertices[regions.face_offsets[i]: regions.face_offsets[i + 1]]]
        d = "M" + "L".join(f"{x:.3f},{y:.3f}" for x, y in ring) + "Z"
        parts.append(f'<path data-region="{i}" d="{d}" fill="{colour}"/>')
    parts.append("</g>")
    if class_boundary:
        found = decision_boundary(regions)
        parts.append(f'<g id="class-boundary" stroke="#dc0000" stroke-width="{3 * stroke:.3f}" stroke-linecap="round">')
        for (a, b), (c, d), (k, m) in zip(xy(found.start), xy(found.end), found.classes):
            parts.append(f'<line x1="{a:.3f}" y1="{b:.3f}" x2="{c:.3f}" y2="{d:.3f}" data-classes="{k} {m}"/>')
        parts.append("</g>")
    if probe is not None:
        (x, y), = xy(np.asarray([probe], dtype=np.float64))
        parts.append(f'<circle id="probe" cx="{x:.3f}" cy="{y:.3f}" r="{max(3.0, width / 64):.2f}" fill="none" '
                     f'stroke="#dc0000" stroke-width="{2 * stroke:.3f}"/>')
    parts.append("</svg>")
    svg = "\n".join(parts) + "\n"
    if path is not None:
        Path(path).write_text(svg, encoding="utf-8")
    return svg
