"""The regioncam backend of :func:`nsp.regions.linear_regions` (``backend="regioncam"``).

regioncam (Rust, float32; ``pip install nsp-lightning[regions]``) partitions an
``nn.Sequential`` of Linear, ReLU and LeakyReLU layers; :func:`regioncam_regions` hands it the
network with the plane composed into the first layer, and returns its partition as
:class:`~nsp.regions.result.Regions`, oriented and labelled as nsp's own.
"""

from __future__ import annotations

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
    box = np.asarray(rc.vertex_inputs, dtype=np.float64)
    # regioncam gives faces one Python object at a time; everything after this walk is done
    # on the flat index array, per-face numpy calls having cost 2.3-2.8x regioncam's own time.
    faces = [f.vertex_ids for f in rc.faces]
    lengths = np.fromiter(map(len, faces), dtype=np.int64, count=len(faces))
    flat = np.concatenate(faces).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    starts = offsets[:-1]
    face_of = np.repeat(np.arange(len(faces)), lengths)
    position = np.arange(len(flat)) - starts[face_of]
    following = flat[starts[face_of] + (position + 1) % lengths[face_of]]
    vertices = centre + box * half
    p, q = vertices[flat], vertices[following]
    area = np.add.reduceat(p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0], starts)
    # Counter-clockwise polygons, as nsp's own partition gives them.
    flip = (area <= 0)[face_of]
    flat = np.where(flip, flat[starts[face_of] + lengths[face_of] - 1 - position], flat)
    mean = np.add.reduceat(box[flat], starts, axis=0) / lengths[:, None]
    ones = np.concatenate([mean, np.ones((len(mean), 1))], axis=1)
    patterns = {key: torch.from_numpy(np.einsum("fi,fiu->fu", ones, np.asarray(rc.face_activations(layer))) > 0)
                for key, layer in zip(keys, pre_layers)}
    return Regions(vertices=vertices, face_vertices=flat, face_offsets=offsets, patterns=patterns,
                   plane=plane, domain=domain, calls=keys, _network=(model, params, len(keys), batch_size))

