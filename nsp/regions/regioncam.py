"""The regioncam backend of :func:`nsp.regions.linear_regions` (``backend="regioncam"``).

regioncam (Rust, float32; ``pip install nsp-lightning[regions]``) partitions an
``nn.Sequential`` of Linear, ReLU and LeakyReLU layers; :func:`regioncam_regions` hands it the
network with the plane composed into the first layer, and returns its partition as
:class:`~nsp.regions.result.Regions`, oriented and labelled as nsp's own.

The result holds regioncam's partition and reads it out on first use: the faces when any of
``vertices``, ``face_vertices`` or ``face_offsets`` is first read, the activation patterns
when ``patterns`` is (``len`` asks regioncam). The call then costs what regioncam does;
reading every array adds 7-27 % of regioncam's time on a 2-64-64-64-2 MLP (BENCHMARKS.md),
which a caller that wants only the count, or the faces without the patterns, does not pay.
Until both are read the result keeps regioncam's partition alive, every layer's values at the
vertices and faces included (42 MB of float32 for that MLP's 6,668 regions).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from nsp.regions.plane import Plane
from nsp.regions.result import Regions

__all__ = ["regioncam_regions"]


def regioncam_regions(model: nn.Module, params: dict, plane: Plane, domain: tuple[float, float, float, float],
                      batch_size: int) -> Regions:
    """The partition computed by regioncam, as :class:`Regions` (its box [-1, 1]^2 mapped onto ``domain``).

    Parameters
    ----------
    model : nn.Module
        An ``nn.Sequential`` of Linear, ReLU and LeakyReLU layers that starts with a Linear.
    params : dict of str to torch.Tensor
        Its parameters, float64 on the CPU.
    plane : Plane
    domain : tuple of float
        ``(u_min, u_max, v_min, v_max)``, checked.
    batch_size : int
        Vertices per forward pass, when the result evaluates the network.

    Returns
    -------
    Regions

    Raises
    ------
    ImportError
        If regioncam is not installed.
    NotImplementedError
        For any other network, naming the layers regioncam cannot take.
    """
    try:
        import regioncam
    except ImportError:
        raise ImportError("nsp.linear_regions(backend='regioncam') needs regioncam: pip install nsp-lightning[regions]") from None
    layers = list(model) if isinstance(model, nn.Sequential) else []
    bad = [f"'{i}' ({type(m).__name__})" for i, m in enumerate(layers) if not isinstance(m, (nn.Linear, nn.ReLU, nn.LeakyReLU))]
    if not layers or bad or not isinstance(layers[0], nn.Linear):
        raise NotImplementedError("nsp.linear_regions(backend='regioncam'): expected an nn.Sequential of Linear, ReLU and "
                                  f"LeakyReLU layers that starts with a Linear; got {bad or type(model).__name__}. "
                                  "Use backend='nsp'.")
    u0, u1, v0, v1 = domain
    half, centre = np.array([(u1 - u0) / 2, (v1 - v0) / 2]), np.array([(u0 + u1) / 2, (v0 + v1) / 2])
    basis = plane.basis.reshape(2, -1).numpy()
    origin = plane.origin.reshape(-1).numpy() + centre @ basis
    rc = regioncam.Regioncam(size=1.0)
    pre_layers, keys = [], []
    for i, m in enumerate(layers):
        if isinstance(m, nn.Linear):
            w = params[f"{i}.weight"].numpy().T
            b = params[f"{i}.bias"].numpy() if f"{i}.bias" in params else np.zeros(w.shape[1])
            if i == 0:
                w, b = (half[:, None] * basis) @ w, origin @ w + b
            rc.linear(w.astype(np.float32), b.astype(np.float32))
        else:
            pre_layers.append(rc.num_layers - 1)
            keys.append(f"{i}:{'relu' if isinstance(m, nn.ReLU) else 'leaky_relu'}")
            rc.relu() if isinstance(m, nn.ReLU) else rc.leaky_relu(m.negative_slope)
    return _RegioncamRegions(rc, dict(zip(keys, pre_layers)), centre, half, plane, domain,
                             (model, params, len(keys), batch_size))


class _RegioncamRegions(Regions):
    """:class:`Regions` whose arrays are read out of a regioncam partition on first use.

    ``Regions.__init__`` is not called: its four array fields are properties here. The regioncam
    object is let go once both the faces and the patterns have been read.
    """

    def __init__(self, rc: Any, pre_layers: dict[str, int], centre: np.ndarray, half: np.ndarray, plane: Plane,
                 domain: tuple[float, float, float, float], network: tuple[nn.Module, dict, int, int]) -> None:
        self.plane, self.domain, self.calls = plane, domain, list(pre_layers)
        self._network, self._outputs, self._affine = network, None, None
        self._rc, self._pre_layers, self._centre, self._half = rc, pre_layers, centre, half
        self._faces: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._patterns: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        # The count without reading the faces: regioncam keeps it.
        return self._rc.num_faces if self._faces is None else len(self._faces[2]) - 1

    @property
    def vertices(self) -> np.ndarray:
        """As :class:`Regions`'s; read out of regioncam on first use."""
        return self._read_faces()[0]

    @property
    def face_vertices(self) -> np.ndarray:
        """As :class:`Regions`'s; read out of regioncam on first use."""
        return self._read_faces()[1]

    @property
    def face_offsets(self) -> np.ndarray:
        """As :class:`Regions`'s; read out of regioncam on first use."""
        return self._read_faces()[2]

    @property
    def patterns(self) -> dict[str, torch.Tensor]:
        """As :class:`Regions`'s; computed from regioncam's affine maps of the faces on first use."""
        return self._read_patterns()

    def _read_patterns(self) -> dict[str, torch.Tensor]:
        """The activation patterns; the regioncam object is let go after (the faces are read first)."""
        if self._patterns is None:
            _, flat, offsets, box = self._read_faces()
            # The pattern at each face's centre: [x, y, 1] @ regioncam's affine map of the layer on the face.
            centres = np.add.reduceat(box[flat], offsets[:-1], axis=0) / np.diff(offsets)[:, None]
            rows = np.concatenate([centres, np.ones((len(centres), 1))], axis=1)
            self._patterns = {key: torch.from_numpy(np.einsum("fi,fiu->fu", rows, self._rc.face_activations(layer)) > 0)
                              for key, layer in self._pre_layers.items()}
            self._rc = None
        return self._patterns

    def _read_faces(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(vertices, face_vertices, face_offsets, box)``, ``box`` the vertices in regioncam's [-1, 1]^2."""
        if self._faces is None:
            # regioncam gives each face's vertex ids as one Python object; everything after this
            # walk works on the flat array.
            ids = [face.vertex_ids for face in self._rc.faces]
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            offsets = np.zeros(len(ids) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            flat = np.concatenate(ids, dtype=np.int64, casting="unsafe")  # regioncam's ids are usize
            box = np.asarray(self._rc.vertex_inputs, dtype=np.float64)
            following = np.arange(1, len(flat) + 1)
            following[offsets[1:] - 1] = offsets[:-1]
            p = box[flat]
            q = p[following]
            # regioncam's faces all turn the way its square does (a split keeps the turn of the face
            # it splits); nsp's turn counter-clockwise. The sign of the total area (the box's) says
            # which way that is, where a sliver's own area could have either sign in float32.
            if p[:, 0] @ q[:, 1] - p[:, 1] @ q[:, 0] < 0:
                face = np.repeat(np.arange(len(ids)), lengths)
                flat = flat[offsets[face] + offsets[face + 1] - 1 - np.arange(len(flat))]
            self._faces = (self._centre + box * self._half, flat, offsets, box)
        return self._faces

    def __getstate__(self) -> dict:
        """Everything read out of regioncam first: its objects do not pickle."""
        self._read_patterns()  # reads the faces too, and lets the regioncam object go
        return self.__dict__
