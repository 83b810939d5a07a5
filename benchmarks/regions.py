"""Exact linear regions on a plane: nsp.linear_regions against regioncam and grid sampling.

Three networks, each on one plane, all measured in this run:

- ``mlp``: a 2-64-64-64-2 ReLU MLP on its 2-D input space, the box [-s, s]^2;
- ``digits-cnn``: a CNN (3x3 convs, a strided one, 1,536 ReLUs) trained briefly on scikit-learn's
  digits, on the plane through three digits (spacing ``--spacing`` times their distance);
- ``digits-cnn-maxpool``: the same with a max-pool instead of the strided conv (regioncam has no
  spatial max-pool, so it has no regioncam row);
- ``resnet``: a small ResNet (stem, two residual blocks, a strided conv, global average pool) on
  three digit images.

regioncam (Rust, float32) gets the same network with every conv (BatchNorm folded in) as a
dense matrix, and the plane composed into the first layer, on the same box; its time includes
building those matrices. The grid lower bound counts the distinct activation patterns at the
centres of a ``--grid``² grid over the box (one batched forward pass).

    python benchmarks/regions.py [--grid 256] [--spacing 0.1] [--only mlp,digits-cnn,...]
    python benchmarks/regions.py --backend [--repeats 21] [--clock cpu]   (issue 23)
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import nsp
from nsp.regions.local_affine import activation_patterns
from nsp.regions import Plane, linear_regions


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 2)).eval()


class DigitsCNN(nn.Module):
    def __init__(self, maxpool: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, stride=1 if maxpool else 2)
        self.pool = nn.MaxPool2d(2) if maxpool else nn.Identity()
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        h = F.relu(self.conv1(x))
        h = self.pool(F.relu(self.conv2(h)))
        return self.fc(h.flatten(1))


class Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.block1 = Block(8)
        self.down = nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.block2 = Block(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = self.block1(h)
        h = F.relu(self.down(h))
        h = self.block2(h)
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1), torch.tensor(d.target)


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 3) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


# ------------------------------------------------------------------ regioncam with dense matrices
def dense(layer: nn.Module, in_shape: tuple[int, ...], bn: nn.Module | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The affine map of ``layer`` (then ``bn``) on flattened inputs: ``x @ W + b``."""
    n = int(np.prod(in_shape))
    f = layer if bn is None else nn.Sequential(layer, bn)
    with torch.no_grad():
        b = f(torch.zeros(1, *in_shape, dtype=torch.float64)).reshape(-1)
        w = f(torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)).reshape(n, -1) - b
    return w.numpy(), b.numpy()


def regioncam_partition(net: nn.Module, plane: Plane, s: float) -> int:
    import regioncam

    def lin(w, b):
        return regioncam.Linear(w.astype(np.float32), b.astype(np.float32))

    rc = regioncam.Regioncam(size=s)
    origin = plane.origin.reshape(1, -1).numpy()
    basis = plane.basis.reshape(2, -1).numpy()
    net = net.double()

    def first(w, b):  # compose the plane into the first affine layer
        return basis @ w, origin[0] @ w + b

    if isinstance(net, nn.Sequential):
        ws = [(m.weight.detach().numpy().T, m.bias.detach().numpy()) for m in net if isinstance(m, nn.Linear)]
        layers = [lin(*ws[0])] + sum(([regioncam.ReLU(), lin(*w)] for w in ws[1:]), [])
        rc.add(layers)
    elif isinstance(net, DigitsCNN):
        w1, b1 = dense(net.conv1, (1, 8, 8))
        w2, b2 = dense(net.conv2, (16, 8, 8))
        w3, b3 = net.fc.weight.detach().numpy().T, net.fc.bias.detach().numpy()
        rc.add([lin(*first(w1, b1)), regioncam.ReLU(), lin(w2, b2), regioncam.ReLU(), lin(w3, b3)])
    else:
        stem = first(*dense(net.stem, (1, 8, 8)))

        def block(c, hw):
            bl = net.block1 if c == 8 else net.block2
            return regioncam.Residual(regioncam.Sequential(
                lin(*dense(bl.conv1, (c, hw, hw), bl.bn1)), regioncam.ReLU(), lin(*dense(bl.conv2, (c, hw, hw), bl.bn2))))

        pool = np.kron(np.eye(16), np.full((16, 1), 1 / 16))  # global average over 4x4, per channel
        fc = pool @ net.fc.weight.detach().numpy().T, net.fc.bias.detach().numpy()
        rc.add([lin(*stem), regioncam.ReLU(), block(8, 8), regioncam.ReLU(), lin(*dense(net.down, (8, 8, 8))),
                regioncam.ReLU(), block(16, 4), regioncam.ReLU(), lin(*fc)])
    net.float()
    return rc.num_faces


def grid_count(net: nn.Module, plane: Plane, domain: tuple, size: int) -> int:
    u0, u1, v0, v1 = domain
    us = u0 + (np.arange(size) + 0.5) * (u1 - u0) / size
    vs = v0 + (np.arange(size) + 0.5) * (v1 - v0) / size
    uv = np.stack(np.meshgrid(us, vs), axis=-1).reshape(-1, 2)
    keys = []
    for chunk in np.array_split(uv, max(1, len(uv) // 16384)):
        _, pats = activation_patterns(net, plane(chunk).float())
        flat = np.concatenate([p.reshape(len(chunk), -1).numpy().astype(np.int16) for p in pats.values()], axis=1)
        keys.append(np.ascontiguousarray(flat).view(np.dtype((np.void, 2 * flat.shape[1]))).ravel())
    return len(np.unique(np.concatenate(keys)))


def plane_through(x: torch.Tensor, spacing: float) -> tuple[Plane, float]:
    """The plane through three inputs, centred on their mean, with the box [-s, s]^2 around them."""
    c = x.mean(dim=0)
    pts = [c + spacing * (xi - c) for xi in x]
    through = Plane.through(*pts)
    plane = Plane(torch.stack(pts).double().mean(dim=0), through.basis)
    s = 1.25 * float(np.abs(plane.coordinates(torch.stack(pts))).max())
    return plane, s


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def backend_against_direct(repeats: int, clock: str = "wall") -> None:
    """``linear_regions(backend="regioncam")`` against regioncam called directly on the MLP
    (issue 23), the backend with every array of its result read, and nsp's own backend: interleaved,
    order alternating, minimum of ``repeats`` after a warm-up. ``clock="cpu"`` times the process's CPU
    time instead of the wall clock (regioncam and nsp run on one thread): on a machine shared with
    other jobs, time spent waiting for a core is then left out."""
    net, plane = mlp(), Plane(torch.zeros(2), torch.eye(2))
    direct_net = mlp().double()
    def backend_read():  # the call, then every array of the result read (the faces, the patterns)
        regions = linear_regions(net, plane=plane, domain=(-1.0, 1.0, -1.0, 1.0), backend="regioncam")
        return regions.face_vertices, regions.patterns

    fns = {"backend": lambda: linear_regions(net, plane=plane, domain=(-1.0, 1.0, -1.0, 1.0), backend="regioncam"),
           "direct": lambda: regioncam_partition(direct_net, plane, 1.0),
           "read": backend_read,
           "nsp": lambda: linear_regions(net, plane=plane, domain=(-1.0, 1.0, -1.0, 1.0))}
    best = {name: float("inf") for name in fns}
    now = time.perf_counter if clock == "wall" else time.process_time
    for fn in fns.values():
        fn()
    for r in range(repeats):
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            start = now()
            fns[name]()
            best[name] = min(best[name], now() - start)
    print(f"MLP 2-64-64-64-2 on [-1, 1]^2, {clock} clock, minimum of {repeats} interleaved repeats: backend='regioncam' "
          f"{best['backend'] * 1e3:.1f} ms, regioncam directly {best['direct'] * 1e3:.1f} ms, "
          f"ratio {best['backend'] / best['direct']:.2f}; backend='regioncam' with its faces and patterns read "
          f"{best['read'] * 1e3:.1f} ms, ratio {best['read'] / best['direct']:.2f}; backend='nsp' {best['nsp'] * 1e3:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=int, default=256)
    parser.add_argument("--spacing", type=float, default=0.1)
    parser.add_argument("--only", default="mlp,digits-cnn,digits-cnn-maxpool,resnet")
    parser.add_argument("--backend", action="store_true",
                        help="only time backend='regioncam' against regioncam directly on the MLP")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="with --backend: time the wall clock or the process's CPU time")
    args = parser.parse_args()
    if args.backend:
        backend_against_direct(args.repeats, args.clock)
        return
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"nsp {nsp.__version__}")
    x, y = digits()
    three = x[[0, 1, 2]]
    cases = {}
    if "mlp" in args.only.split(","):
        cases["mlp"] = (mlp(), Plane(torch.zeros(2), torch.eye(2)), 1.0)
    only = args.only.split(",")
    for name, make in (("digits-cnn", lambda: DigitsCNN(False)), ("digits-cnn-maxpool", lambda: DigitsCNN(True)),
                       ("resnet", SmallResNet)):
        if name in only:
            torch.manual_seed(0)
            cases[name] = (train(make(), x, y), *plane_through(three, args.spacing))
    print("| network | ReLUs | nsp regions | nsp s | nsp regions/s | regioncam regions | regioncam s | "
          "regioncam regions/s | nsp/regioncam speed | grid regions | grid s | grid found | nsp s / forward of its vertices |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (net, plane, s) in cases.items():
        domain = (-s, s, -s, s)
        ours, t_ours = timed(lambda: linear_regions(net, plane=plane, domain=domain))
        units = sum(p[0].numel() for p in ours.patterns.values())
        if name.endswith("maxpool"):
            rc_count, t_rc = None, None
        else:
            rc_count, t_rc = timed(lambda: regioncam_partition(net, plane, s))
        g, t_grid = timed(lambda: grid_count(net, plane, domain, args.grid))
        pts = plane(ours.vertices).float()
        with torch.no_grad():
            net(pts)
            _, t_fwd = timed(lambda: net(pts))
        rc_cells = ("–", "–", "–", "–") if rc_count is None else (
            f"{rc_count:,}", f"{t_rc:.2f}", f"{rc_count / t_rc:,.0f}", f"{(len(ours) / t_ours) / (rc_count / t_rc):.2f}×")
        print(f"| {name} | {units:,} | {len(ours):,} | {t_ours:.2f} | {len(ours) / t_ours:,.0f} | " + " | ".join(rc_cells)
              + f" | {g:,} ({args.grid}²) | {t_grid:.2f} | {g / len(ours):.0%} | {t_ours / t_fwd:.0f} ({len(ours.vertices):,} vertices) |",
              flush=True)


if __name__ == "__main__":
    main()
