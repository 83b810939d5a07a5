"""150 attempts on the tools, through their public API: bad input, faults, unusual models.

Each attempt must be handled (a right result) or refused with a clear error that names the
argument, module or file at fault (:mod:`attempts`). The README's "Guarantees" table counts
these outcomes; :func:`test_the_readme_table_counts_these_attempts` keeps it honest.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
import resource
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from attempts import CLEAR, HANDLED, HOLE, LOSS, OUTCOMES, Attempt, classify
from torch import nn

import nsp
import nsp.common.memory as memory
from nsp import regions as R
from nsp.attribution import attribute, randomize_top_layer, spearman
from nsp.graph import rules
from nsp.response_map import NeuralResponseMap, spearman_vectors, to_rgb, tsne_layout

pytest.importorskip("captum.attr")
pytest.importorskip("sklearn")

from digits_cnn import DigitsCNN, digits  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"

# About 40 s in all (a few dozen one-epoch fits): with the slow tests, which CI runs.
pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------- models

def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return DigitsCNN().eval()


def x8(n: int = 4) -> torch.Tensor:
    return digits()[0][:n].clone()


class TupleOut(nn.Module):
    """A classifier that also returns its features, as many detection and distillation models do."""

    def __init__(self) -> None:
        super().__init__()
        self.net = cnn()

    def forward(self, x):
        return self.net(x), x.flatten(1)


class DictOut(TupleOut):
    def forward(self, x):
        return {"logits": self.net(x), "features": x.flatten(1)}


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(2, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 16, 3))

    def forward(self, x):
        return self.head(self.relu(self.conv(x)))


class Unused(nn.Module):
    """``extra`` is registered but never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.net = cnn()
        self.extra = nn.Conv2d(1, 1, 3)

    def forward(self, x):
        return self.net(x)


class Ignores(nn.Module):
    """Reads only the left half of each 8x8 digit, so occluding the right half changes nothing."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(x[..., :4].flatten(1))


def rgb_cnn() -> nn.Module:
    """A small RGB classifier for feature visualisation (its images have three channels)."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1), relu1=nn.ReLU(), conv2=nn.Conv2d(8, 16, 3, padding=1), relu2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(16, 10))).eval()


class RgbUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = rgb_cnn()
        self.extra = nn.Conv2d(3, 1, 3)

    def forward(self, x):
        return self.net(x)


def bn_train() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)).train()


def dropout_train() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10)).train()


def _vm_size() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _limited(fn, limit: int = 1 << 20):
    """Run ``fn`` with nsp.memory's limit set to ``limit`` bytes, and the address space capped
    2 GiB above today's: code that ignored the limit fails with an allocation error here
    instead of having the kernel kill the test run."""
    before = memory.MEMORY_LIMIT
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    memory.MEMORY_LIMIT = limit
    resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + (2 << 30), hard))
    try:
        return fn()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        memory.MEMORY_LIMIT = before


def _same_twice_and_mode_kept(fn, model):
    a, b = fn(model), fn(model)
    # A map is NaN outside its layout: NaN there on both calls is the same map.
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True) and model.training


def _state_kept(fn, model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fn(model)
    after = model.state_dict()
    return all(torch.equal(before[k], after[k]) for k in before) and model.training


def _shape(expected):
    return lambda result: tuple(result.shape) == tuple(expected)


MEM = (ValueError, MemoryError)
# An estimate made before allocating, against nsp.memory's limit (not numpy's "Unable to allocate").
MEMORY_SAYS = r"(?i)(needs?|estimat)[^.]*\d+(\.\d+)? ?(GiB|MiB|KiB|GB|MB)"

# ----------------------------------------------------------------------------- response maps

def _map(**kw) -> NeuralResponseMap:
    return NeuralResponseMap(cnn(), **kw)


def _trained_map() -> NeuralResponseMap:
    m = _map(perplexity=5, resolution=32)
    m.train_map(x8(64))
    return m


@functools.lru_cache(maxsize=1)
def _cached_map() -> NeuralResponseMap:
    return _trained_map()


def _nan_inputs(count: int) -> torch.Tensor:
    x = x8(64)
    x[:count, 0, 3, 3] = float("nan")
    return x


RESPONSE_MAPS = [
    Attempt("response maps", "model is not a module", lambda: NeuralResponseMap("net"), says=r"model"),
    Attempt("response maps", "unknown units", lambda: _map(units="pixels"), says=r"units"),
    Attempt("response maps", "negative perplexity", lambda: _map(perplexity=-1), says=r"perplexity"),
    Attempt("response maps", "resolution 0", lambda: _map(resolution=0), says=r"resolution"),
    Attempt("response maps", "resolution 30000 under a 1 MiB limit",
            lambda: _limited(lambda: _cached_map_with(resolution=30000)), says=MEMORY_SAYS, errors=MEM),
    Attempt("response maps", "batch_size 0", lambda: _map(batch_size=0), says=r"batch_size"),
    Attempt("response maps", "seed is a string", lambda: _map(seed="0"), says=r"seed"),
    Attempt("response maps", "inputs of the wrong shape", lambda: _map(perplexity=5).train_map(torch.rand(64, 1, 5)),
            says=r"input"),
    Attempt("response maps", "a single input", lambda: _map().train_map(x8(1)), says=r"input"),
    Attempt("response maps", "inputs are a numpy array", lambda: _map().train_map(x8(64).numpy()), says=r"inputs"),
    Attempt("response maps", "one NaN pixel in three inputs", lambda: _map(perplexity=5).train_map(_nan_inputs(3)),
            says=r"(?i)nan|finite"),
    Attempt("response maps", "all inputs NaN", lambda: _map(perplexity=5).train_map(_nan_inputs(64) * np.nan),
            says=r"(?i)nan|finite"),
    Attempt("response maps", "generate_map before train_map", lambda: _map().generate_map(x8(1)),
            says=r"train_map"),
    Attempt("response maps", "an unknown layer", lambda: _map(perplexity=5).train_map(x8(64), layers=["conv9"]),
            says=r"conv9"),
    Attempt("response maps", "layers given as modules",
            lambda: (lambda m, net: m.train_map(x8(64), layers=[net.conv1, net.conv2]))(*_model_and_map()),
            check=lambda layout: np.isfinite(layout).all() and len(layout) == 8 + 16),
    Attempt("response maps", "constant inputs", lambda: _map(perplexity=5).train_map(torch.zeros(64, 1, 8, 8)),
            says=r"(?i)vary|constant"),
    Attempt("response maps", "map of an input of the wrong shape", lambda: _cached_map().generate_map(torch.rand(1, 3)),
            says=r"input"),
    Attempt("response maps", "map_values of the wrong length", lambda: _cached_map().map_values(np.ones(3)),
            says=r"values"),
    Attempt("response maps", "an unknown interpolation", lambda: _cached_map().generate_map(x8(1), method="cubic9"),
            says=r"method"),
    Attempt("response maps", "integer inputs", lambda: _map(perplexity=5).train_map(torch.ones(64, 1, 8, 8, dtype=torch.long)),
            says=r"(?i)dtype|float|integer"),
    Attempt("response maps", "units='all' under a 1 MiB limit",
            lambda: _limited(lambda: _map(units="all", perplexity=5, resolution=64).train_map(x8(256))),
            says=r"responses of [\d,]+ neurons to 256 inputs needs about", errors=MEM),
    Attempt("response maps", "perplexity above the number of neurons", lambda: _map(perplexity=500).train_map(x8(64)),
            check=lambda layout: bool(np.isfinite(layout).all()), says=r"perplexity"),
    Attempt("response maps", "spearman_vectors of a constant neuron", lambda: spearman_vectors(np.ones((5, 3))),
            says=r"(?i)constant|vary"),
    Attempt("response maps", "spearman_vectors of a 1-D array", lambda: spearman_vectors(np.arange(5.0)),
            says=r"(?i)shape|2-D|\(P, N\)"),
    Attempt("response maps", "t-SNE of NaN vectors", lambda: tsne_layout(np.full((10, 3), np.nan)),
            says=r"(?i)nan|finite"),
    Attempt("response maps", "to_rgb of a 3-D grid", lambda: to_rgb(np.zeros((2, 2, 2))), says=r"grid"),
    Attempt("response maps", "to_rgb with an unknown colour map", lambda: to_rgb(np.zeros((2, 2)), cmap="nope9"),
            says=r"cmap|nope9"),
    Attempt("response maps", "a model with dropout left in train mode",
            lambda: _same_twice_and_mode_kept(lambda m: _dropout_map(m), dropout_train()), check=bool),
]


def _cached_map_with(**kw):
    m = _map(perplexity=5, **kw)
    m.train_map(x8(64))
    return m.generate_map(x8(1))


def _model_and_map():
    m = _map(perplexity=5)
    return m, m.model if hasattr(m, "model") else m.network


def _dropout_map(model):
    m = NeuralResponseMap(model, perplexity=5, resolution=16)
    m.train_map(x8(64))
    return m.generate_map(x8(1))


# ----------------------------------------------------------------------------- attribution

X = None


def xa(n: int = 2) -> torch.Tensor:
    return x8(n)


def _occlusion_of_an_ignored_half():
    a = attribute(Ignores().eval(), xa(2), "occlusion", target=0, window=2, stride=2)
    return a[..., 4:]


def _in_inference_mode():
    model, x = cnn(), xa(2)
    with torch.inference_mode():
        return attribute(model, x, "saliency", target=0)


ATTRIBUTION = [
    Attempt("attribution", "an unknown method", lambda: attribute(cnn(), xa(), "gradient"), says=r"gradient"),
    Attempt("attribution", "target beyond the classes", lambda: attribute(cnn(), xa(), "saliency", target=10),
            says=r"target"),
    Attempt("attribution", "a numpy integer target", lambda: attribute(cnn(), xa(), "saliency", target=np.int64(3)),
            check=lambda a: torch.equal(a, attribute(cnn(), xa(), "saliency", target=3))),
    Attempt("attribution", "a negative target", lambda: attribute(cnn(), xa(), "saliency", target=-1),
            says=r"target"),
    Attempt("attribution", "a float target", lambda: attribute(cnn(), xa(), "saliency", target=1.5), says=r"target"),
    Attempt("attribution", "one target for each of three inputs, for two",
            lambda: attribute(cnn(), xa(2), "saliency", target=[1, 2, 3]), says=r"target"),
    Attempt("attribution", "inputs as a numpy array", lambda: attribute(cnn(), xa().numpy(), "saliency"),
            says=r"inputs"),
    Attempt("attribution", "a 0-dim input", lambda: attribute(cnn(), torch.tensor(1.0), "saliency"),
            says=r"(?i)inputs|shape|batch"),
    Attempt("attribution", "Grad-CAM on a model without convolutions", lambda: attribute(mlp(), torch.rand(2, 2), "gradcam"),
            says=r"layer"),
    Attempt("attribution", "Grad-CAM on an unknown layer", lambda: attribute(cnn(), xa(), "gradcam", layer="conv9"),
            says=r"conv9"),
    Attempt("attribution", "Grad-CAM on a layer that never runs",
            lambda: attribute(Unused(), xa(), "gradcam", layer="extra"), says=r"(?i)does not run|never runs|not run"),
    Attempt("attribution", "Grad-CAM upsampled on a Conv1d",
            lambda: attribute(Conv1dNet(), torch.rand(2, 2, 16), "gradcam", target=0, upsample=True),
            check=_shape((2, 1, 16)), says=r"upsample"),
    Attempt("attribution", "SmoothGrad with 0 samples", lambda: attribute(cnn(), xa(), "smoothgrad", samples=0),
            says=r"samples"),
    Attempt("attribution", "integrated gradients with 0 steps",
            lambda: attribute(cnn(), xa(), "integrated_gradients", steps=0), says=r"steps"),
    Attempt("attribution", "an occlusion window larger than the input",
            lambda: attribute(cnn(), xa(), "occlusion", window=(9, 9)), says=r"window"),
    Attempt("attribution", "an occlusion window smaller than the default stride",
            lambda: attribute(cnn(), xa(), "occlusion", target=0, window=2),
            check=_shape((2, 1, 8, 8)), says=r"stride"),
    Attempt("attribution", "occluding a patch the model ignores gives exactly 0", _occlusion_of_an_ignored_half,
            check=lambda a: bool((a == 0).all())),
    Attempt("attribution", "a model returning a tuple", lambda: attribute(TupleOut().eval(), xa(), "saliency"),
            check=_shape((2, 1, 8, 8)), says=r"(?i)tuple|output"),
    Attempt("attribution", "a model returning a dict", lambda: attribute(DictOut().eval(), xa(), "saliency"),
            check=_shape((2, 1, 8, 8)), says=r"(?i)dict|output"),
    Attempt("attribution", "BatchNorm left in train mode: statistics and mode kept",
            lambda: _state_kept(lambda m: attribute(m, xa(4), "saliency", target=0), bn_train()), check=bool),
    Attempt("attribution", "dropout left in train mode: the same map twice",
            lambda: _same_twice_and_mode_kept(lambda m: attribute(m, xa(2), "saliency", target=0), dropout_train()),
            check=bool),
    Attempt("attribution", "inside torch.inference_mode()", _in_inference_mode, check=_shape((2, 1, 8, 8))),
    Attempt("attribution", "an in-place ReLU under guided backprop",
            lambda: attribute(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(inplace=True), nn.Linear(8, 3)).eval(),
                              xa(), "guided_backprop", target=0),
            check=lambda a: tuple(a.shape) == (2, 1, 8, 8) and bool(torch.isfinite(a).all())),
    Attempt("attribution", "randomize_top_layer of an unknown layer", lambda: randomize_top_layer(cnn(), "conv9"),
            says=r"conv9"),
    Attempt("attribution", "spearman of maps of different shapes", lambda: spearman(torch.rand(2, 4), torch.rand(2, 5)),
            says=r"shape"),
    Attempt("attribution", "integer inputs", lambda: attribute(cnn(), torch.ones(2, 1, 8, 8, dtype=torch.long), "saliency"),
            says=r"(?i)dtype|float|integer"),
    Attempt("attribution", "inputs on the meta device", lambda: attribute(cnn(), torch.empty(2, 1, 8, 8, device="meta"),
                                                                           "saliency"), says=r"meta device"),
    Attempt("attribution", "an empty batch", lambda: attribute(cnn(), torch.empty(0, 1, 8, 8), "saliency"),
            says=r"(?i)empty|batch|no input"),
    Attempt("attribution", "an unknown option", lambda: attribute(cnn(), xa(), "saliency", samples=3),
            says=r"samples"),
]


# ----------------------------------------------------------------------------- feature visualisation

def _vc(**kw):
    from nsp.optvis import visualize_channel

    kw.setdefault("steps", 4)
    kw.setdefault("size", 8)
    model = kw.pop("model", rgb_cnn())
    layer = kw.pop("layer", "conv2")
    channel = kw.pop("channel", 0)
    return visualize_channel(model, layer, channel, **kw)


def _vclass(**kw):
    from nsp.optvis import visualize_class

    kw.setdefault("steps", 4)
    kw.setdefault("size", 8)
    return visualize_class(kw.pop("model", rgb_cnn()), kw.pop("class_index", 3), **kw)


def _render_ok(r) -> bool:
    images = r.images if hasattr(r, "images") else r.image
    image = images[-1] if isinstance(images, (list, tuple)) else images
    return bool(torch.isfinite(torch.as_tensor(image)).all())


def _train_mode_kept():
    model = rgb_cnn().train()
    _vc(model=model)
    return model.training


def _fva(**kw):
    from nsp_lightning.analyses import FeatureVisAnalysis

    return FeatureVisAnalysis(**kw)


def _fva_check(model, **kw):
    analysis = _fva(**kw)
    analysis.check(model, x8(2))
    return analysis


def _in_inference_mode_vc():
    model = rgb_cnn()
    with torch.inference_mode():
        return _vc(model=model)


FEATURE_VIS = [
    Attempt("feature visualisation", "an unknown layer", lambda: _vc(layer="conv9"), says=r"conv9"),
    Attempt("feature visualisation", "a channel beyond the layer's", lambda: _vc(channel=99), says=r"channel"),
    Attempt("feature visualisation", "a negative channel", lambda: _vc(channel=-1), says=r"channel"),
    Attempt("feature visualisation", "0 steps", lambda: _vc(steps=0), says=r"steps"),
    Attempt("feature visualisation", "a negative learning rate", lambda: _vc(lr=-1.0), says=r"lr"),
    Attempt("feature visualisation", "size 0", lambda: _vc(size=0), says=r"size"),
    Attempt("feature visualisation", "a one-element size", lambda: _vc(size=(8,)), says=r"size"),
    Attempt("feature visualisation", "an unknown parametrisation", lambda: _vc(param="wavelet"), says=r"param"),
    Attempt("feature visualisation", "unknown transforms", lambda: _vc(transforms="heavy9"), says=r"transforms"),
    Attempt("feature visualisation", "class 10 of 10", lambda: _vclass(class_index=10), says=r"class"),
    Attempt("feature visualisation", "an unknown class objective", lambda: _vclass(objective="margin9"),
            says=r"objective"),
    Attempt("feature visualisation", "inside torch.inference_mode()", _in_inference_mode_vc, check=_render_ok,
            says=r"inference_mode"),
    Attempt("feature visualisation", "a model in train mode stays in train mode", _train_mode_kept, check=bool),
    Attempt("feature visualisation", "a bfloat16 model", lambda: _vc(model=rgb_cnn().to(torch.bfloat16)), check=_render_ok,
            says=r"(?i)bfloat16|dtype"),
    Attempt("feature visualisation", "a layer that never runs", lambda: _vc(model=RgbUnused(), layer="extra"),
            says=r"(?i)does not run|never runs|not run"),
    Attempt("feature visualisation", "thresholds beyond the steps (documented: thresholds set the steps)",
            lambda: _vc(steps=4, thresholds=[8]), check=lambda r: r.thresholds == [8] and len(r.images) == 1),
    Attempt("feature visualisation", "a string seed", lambda: _vc(seed="0"), says=r"seed"),
    Attempt("feature visualisation", "a 4096-pixel image under a 1 MiB limit", lambda: _limited(lambda: _vc(size=4096)),
            says=MEMORY_SAYS, errors=MEM),
    Attempt("feature visualisation", "FeatureVisAnalysis on an unknown layer",
            lambda: _fva_check(cnn(), channels={"conv9": [0]}), says=r"conv9"),
    Attempt("feature visualisation", "FeatureVisAnalysis of class -1", lambda: _fva(classes=[-1]), says=r"classes"),
    Attempt("feature visualisation", "FeatureVisAnalysis with 0 steps", lambda: _fva(classes=[1], steps=0),
            says=r"steps"),
    Attempt("feature visualisation", "FeatureVisAnalysis with a negative size", lambda: _fva(classes=[1], size=-3),
            says=r"size"),
    Attempt("feature visualisation", "deep_dream of a 1-D tensor",
            lambda: __import__("nsp.optvis", fromlist=["deep_dream"]).deep_dream(rgb_cnn(), torch.rand(8), "conv2", steps=2),
            says=r"image"),
    Attempt("feature visualisation", "invert an image of the wrong shape",
            lambda: __import__("nsp.optvis", fromlist=["invert"]).invert(rgb_cnn(), torch.rand(1, 1, 8, 8), "conv2", steps=2),
            says=r"(?i)image|shape|channel"),
    Attempt("feature visualisation", "style transfer with an unknown style layer",
            lambda: __import__("nsp.optvis", fromlist=["style_transfer"]).style_transfer(
                rgb_cnn(), torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), ["conv2"], ["conv9"], steps=2), says=r"conv9"),
]


# ----------------------------------------------------------------------------- linear regions

def _square(model=None, **kw):
    kw.setdefault("domain", (-1, 1, -1, 1))
    return R.linear_regions(model if model is not None else mlp(), **kw)


def _area_is_the_domain(regions) -> bool:
    return abs(float(regions.areas().sum()) - 4.0) < 1e-9


def _grid_patterns_found(regions) -> bool:
    # Every activation pattern a 64x64 grid of the square meets is one of the regions found.
    u = torch.linspace(-0.99, 0.99, 64, dtype=torch.float64)
    grid = torch.cartesian_prod(u, u).float()
    net = mlp()
    with torch.no_grad():
        patterns = {tuple((net[0](grid[i:i + 1]) > 0).int().flatten().tolist()) for i in range(len(grid))}
    return len(patterns) <= len(regions.areas()) and _area_is_the_domain(regions)


class Cube(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x):
        return self.net(x)


def _regions_in_inference_mode():
    with torch.inference_mode():
        return _square()


REGIONS = [
    Attempt("linear regions", "a 2-D input, no plane: the input space", lambda: _square(), check=_area_is_the_domain),
    Attempt("linear regions", "an empty domain", lambda: _square(domain=(1, -1, -1, 1)), says=r"domain"),
    Attempt("linear regions", "an infinite domain", lambda: _square(domain=(-np.inf, 1, -1, 1)), says=r"domain"),
    Attempt("linear regions", "a NaN domain", lambda: _square(domain=(np.nan, 1, -1, 1)), says=r"domain"),
    Attempt("linear regions", "a domain of three numbers", lambda: _square(domain=(0, 1, 2)), says=r"domain"),
    Attempt("linear regions", "a negative tolerance", lambda: _square(tol=-1.0), says=r"tol"),
    Attempt("linear regions", "batch_size 0", lambda: _square(batch_size=0), says=r"batch_size"),
    Attempt("linear regions", "an unknown backend", lambda: _square(backend="fast9"), says=r"backend"),
    Attempt("linear regions", "a 3-D input and no plane", lambda: R.linear_regions(Cube(), domain=(-1, 1, -1, 1)),
            says=r"plane|points"),
    Attempt("linear regions", "a tanh network", lambda: _square(nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))),
            says=r"Tanh", errors=(ValueError, TypeError, nsp.NotPiecewiseLinearError)),
    Attempt("linear regions", "a plane through collinear points",
            lambda: R.Plane.through(torch.zeros(2), torch.ones(2), 2 * torch.ones(2)), says=r"(?i)collinear|degenerate"),
    Attempt("linear regions", "a plane whose basis has the wrong shape", lambda: R.Plane(torch.zeros(3), torch.zeros(2, 2)),
            says=r"basis"),
    Attempt("linear regions", "two points instead of three", lambda: _square(points=[torch.zeros(2), torch.ones(2)]),
            says=r"points"),
    Attempt("linear regions", "points of different shapes",
            lambda: R.linear_regions(Cube(), points=[torch.zeros(1, 2, 6), torch.ones(1, 2, 6), torch.rand(12)]),
            says=r"(?i)shape|points"),
    Attempt("linear regions", "max-pool with ceil_mode",
            lambda: R.linear_regions(nn.Sequential(nn.Unflatten(1, (1, 1, 2)), nn.MaxPool2d((1, 2), ceil_mode=True),
                                                   nn.Flatten()), domain=(-1, 1, -1, 1)),
            says=r"(?i)ceil_mode|MaxPool", errors=(ValueError, TypeError, NotImplementedError,
                                                   nsp.NotPiecewiseLinearError)),
    Attempt("linear regions", "a linear model is one region",
            lambda: _square(nn.Sequential(nn.Linear(2, 3))),
            check=lambda r: len(r.areas()) == 1 and _area_is_the_domain(r)),
    Attempt("linear regions", "every pattern a grid meets is found", lambda: _square(), check=_grid_patterns_found),
    Attempt("linear regions", "dropout in train mode: the same regions twice, mode kept",
            lambda: _same_twice_and_mode_kept(
                lambda m: np.sort(_square(m).areas()),
                nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)).train()),
            check=bool),
    Attempt("linear regions", "a wide network under a 1 MiB limit",
            lambda: _limited(lambda: _square(nn.Sequential(nn.Linear(2, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                                           nn.Linear(512, 1)), domain=(-50, 50, -50, 50))),
            says=MEMORY_SAYS, errors=MEM),
    Attempt("linear regions", "plot_regions draws", lambda: R.plot_regions(_square()),
            check=lambda out: out[0] is not None),
    Attempt("linear regions", "a negative margin", lambda: R.linear_regions(mlp(), points=[torch.zeros(2), torch.ones(2),
                                                                                         torch.tensor([0.0, 1.0])],
                                                                             margin=-1.0), says=r"margin"),
    Attempt("linear regions", "a float64 network", lambda: _square(mlp().double()), check=_area_is_the_domain),
    Attempt("linear regions", "inside torch.inference_mode()", _regions_in_inference_mode, check=_area_is_the_domain),
    Attempt("linear regions", "a network on the meta device", lambda: _square(mlp().to("meta")), says=r"meta device"),
    Attempt("linear regions", "a model that is not a module", lambda: R.linear_regions("net", domain=(-1, 1, -1, 1)),
            says=r"model"),
]


# ----------------------------------------------------------------------------- spectra

class _CalledDict(nn.ModuleDict):
    def forward(self, x):
        return sum(layer(x) for layer in self.values())


def _called_module_dict():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), _CalledDict({"a": nn.ReLU(), "b": nn.Conv2d(2, 2, 1)}), nn.Flatten())
    acts = nsp.Activations(net.eval(), torch.rand(1, 1, 6, 6))
    return nsp.NNGraph(acts)


def _pickle_file(tmp: Path) -> Path:
    path = tmp / "graph.npz"
    path.write_bytes(pickle.dumps({"x": 1}))
    return path


def _spectrum_analysis(**kw):
    from nsp_lightning.analyses import SpectrumAnalysis

    return SpectrumAnalysis(**kw)


def _rule_again():
    rules.register_rule(nn.ReLU, rules.rule_for_module(nn.ReLU()) if hasattr(rules, "rule_for_module") else object())


SPECTRA = [
    Attempt("spectra", "input is a list", lambda: nsp.Activations(cnn(), [1, 2]), says=r"input"),
    Attempt("spectra", "network is a function", lambda: nsp.Activations(lambda x: x, x8(1)), says=r"network"),
    Attempt("spectra", "a complex input", lambda: nsp.Activations(cnn(), torch.zeros(1, 1, 8, 8, dtype=torch.cfloat)),
            says=r"complex"),
    Attempt("spectra", "an unknown transform", lambda: nsp.NNGraph(nsp.Activations(cnn(), x8(1))).get_transformer(type="x9"),
            says=r"x9"),
    Attempt("spectra", "a called ModuleDict child", _called_module_dict, check=lambda g: g.number_of_edges() > 0),
    Attempt("spectra", "SpectrumAnalysis with an unknown transform", lambda: _spectrum_analysis(transform="x9"),
            says=r"transform"),
    Attempt("spectra", "SpectrumAnalysis with INCL='yes'", lambda: _spectrum_analysis(INCL="yes"), says=r"INCL"),
    Attempt("spectra", "SpectrumAnalysis with an unknown colour scale", lambda: _spectrum_analysis(colour_scale="x9"),
            says=r"colour_scale"),
    Attempt("spectra", "registering a built-in rule again without override", _rule_again, says=r"override"),
    Attempt("spectra", "a pickle handed to OutputLoader.load",
            lambda: nsp.OutputLoader.load(_pickle_file(Path(os.environ["NSP_ATTEMPT_TMP"]))),
            says=r"graph\.npz", errors=(ValueError, TypeError, OSError), failure=HOLE),
]


# ----------------------------------------------------------------------------- probe core and report

def _tmp() -> Path:
    base = Path(os.environ["NSP_ATTEMPT_TMP"])
    path = base / f"run{len(list(base.iterdir()))}"
    path.mkdir()
    return path


def _probe(p: int = 2) -> torch.Tensor:
    from lightning_helpers import probe

    return probe(p)


def _fit(analyses, *, model=None, epochs: int = 2, validate_first: bool = False, dirpath=None, callbacks=None,
         **callback_kw) -> Path:
    """A short fit of TinyNet with ``ProbeCallback(probe, analyses)``; returns the run directory."""
    import lightning.pytorch as pl
    from lightning_helpers import TinyNet, loader, trainer_kwargs

    from nsp_lightning import ProbeCallback

    run = _tmp()
    probe = callback_kw.pop("probe", _probe())
    if callbacks is None:
        callbacks = [ProbeCallback(probe, analyses, dirpath=dirpath or run / "records", **callback_kw)]
    trainer = pl.Trainer(**trainer_kwargs(default_root_dir=run, max_epochs=epochs), callbacks=callbacks)
    model = model if model is not None else TinyNet()
    if validate_first:
        trainer.validate(model, loader())
    trainer.fit(model, loader())
    return run


def _records(run: Path, name: str) -> list:
    from nsp_lightning import read_records

    return read_records(run / "records" / name)


def _spectrum():
    return _spectrum_analysis()


def _attribution(**kw):
    from nsp_lightning.analyses import AttributionAnalysis

    kw.setdefault("sanity", False)
    return AttributionAnalysis(["saliency"], **kw)


def _callback(*args, **kw):
    from nsp_lightning import ProbeCallback

    return ProbeCallback(*args, **kw)


class _TinyTuple:
    """TinyNet returning (logits, features)."""

    def __new__(cls, kind: str = "tuple"):
        from lightning_helpers import TinyNet

        class Net(TinyNet):
            def forward(self, x):
                logits = super().forward(x)
                return (logits, x.flatten(1)) if kind == "tuple" else {"logits": logits}

            def training_step(self, batch, batch_idx):
                x, y = batch
                out = self(x)
                logits = out[0] if kind == "tuple" else out["logits"]
                return nn.functional.cross_entropy(logits, y)

        return Net()


class _TinyUnused:
    def __new__(cls):
        from lightning_helpers import TinyNet

        class Net(TinyNet):
            def __init__(self):
                super().__init__()
                self.unused = nn.Linear(3, 3)

        return Net()


def _lock_symlink():
    run = _tmp()
    victim = run / "victim.txt"
    victim.write_text("keep me\n")
    (run / "records" / "spectrum").mkdir(parents=True)
    (run / "records" / "spectrum" / ".lock").symlink_to(victim)
    try:
        _fit([_spectrum()], dirpath=run / "records", epochs=1)
    finally:
        if victim.read_text() != "keep me\n":
            return False
    return True


def _second_run_refused_first_intact():
    first = _fit([_spectrum()], epochs=2)
    folder = first / "records" / "spectrum"
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    count = len(_records(first, "spectrum"))
    try:
        _fit([_spectrum()], dirpath=first / "records", epochs=1)
    except Exception as err:  # noqa: BLE001 - refused is right; the check is on what is left
        refused = "spectrum" in str(err)
    else:
        refused = False
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name in before}
    return refused and before == after and len(_records(first, "spectrum")) == count


def _user_tmp_file_kept():
    run = _tmp()
    notes = run / "records" / "spectrum" / ".notes.tmp"
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    _fit([_spectrum()], dirpath=run / "records", epochs=1)
    return notes.exists() and notes.read_text() == "mine"


def _outside_record_symlinked():
    from nsp_lightning import read_records

    run = _fit([_spectrum()], epochs=1)
    other = _fit([_spectrum()], epochs=3)
    folder = run / "records" / "spectrum"
    (folder / "epoch-000001.npz").unlink()
    (folder / "epoch-000001.npz").symlink_to(other / "records" / "spectrum" / "epoch-000001.npz")
    return read_records(folder)


def _corrupt_record():
    from nsp_lightning import report

    run = _fit([_spectrum()], epochs=2)
    (run / "records" / "spectrum" / "epoch-000001.npz").write_bytes(b"not a zip")
    return report(run / "records", run / "r.html")


def _report_into_a_directory():
    from nsp_lightning import report

    run = _fit([_spectrum()], epochs=1)
    (run / "out").mkdir()
    return report(run / "records", run / "out")


def _two_callbacks_one_dir():
    run = _tmp()
    return _fit(None, callbacks=[_callback(_probe(), [_spectrum()], dirpath=run),
                                 _callback(_probe(), [_spectrum()], dirpath=run)])


class _TinyValidated:
    def __new__(cls):
        from lightning_helpers import TinyNet

        class Net(TinyNet):
            def validation_step(self, batch, batch_idx):
                x, y = batch
                self.log("val_loss", nn.functional.cross_entropy(self(x), y))

        return Net()


def _fit_then_records(name: str, **kw):
    run = _fit(**kw)
    return len(_records(run, name))


PROBE = [
    Attempt("probe core", "no analyses", lambda: _callback(_probe(), []), says=r"analyses"),
    Attempt("probe core", "an analysis that is not a ProbeAnalysis", lambda: _callback(_probe(), [object()]),
            says=r"ProbeAnalysis|analyses"),
    Attempt("probe core", "every_n_epochs=0", lambda: _callback(_probe(), [_spectrum()], every_n_epochs=0),
            says=r"every_n_epochs"),
    Attempt("probe core", "a negative epoch", lambda: _callback(_probe(), [_spectrum()], epochs=[-1]), says=r"epochs"),
    Attempt("probe core", "both every_n_epochs and epochs",
            lambda: _callback(_probe(), [_spectrum()], every_n_epochs=2, epochs=[1]), says=r"every_n_epochs|epochs"),
    Attempt("probe core", "an unknown log_step", lambda: _callback(_probe(), [_spectrum()], log_step="batch"),
            says=r"log_step"),
    Attempt("probe core", "an unknown on_error", lambda: _callback(_probe(), [_spectrum()], on_error="ignore"),
            says=r"on_error"),
    Attempt("probe core", "an empty probe", lambda: _callback(torch.empty(0, 1, 6, 6), [_spectrum()]), says=r"probe"),
    Attempt("probe core", "a probe of strings", lambda: _callback(["a", "b"], [_spectrum()]), says=r"probe"),
    Attempt("probe core", "a probe on the meta device",
            lambda: _fit([_spectrum()], probe=torch.empty(2, 1, 6, 6, device="meta"), epochs=1), says=r"meta device"),
    Attempt("probe core", "dirpath is a file",
            lambda: _fit([_spectrum()], dirpath=Path(os.environ["NSP_ATTEMPT_TMP"]) / "file.txt"
                         if (Path(os.environ["NSP_ATTEMPT_TMP"]) / "file.txt").write_text("x") else None, epochs=1),
            says=r"file\.txt", errors=(ValueError, TypeError, RuntimeError, OSError)),
    Attempt("probe core", "an analysis named ../../escaped", lambda: _attribution(name="../../escaped"), says=r"name"),
    Attempt("probe core", "an analysis named by an absolute path", lambda: _attribution(name="/tmp/abs"), says=r"name"),
    Attempt("probe core", "an analysis name with spaces and HTML", lambda: _attribution(name="a b<script>"),
            says=r"name"),
    Attempt("probe core", "two analyses of one name", lambda: _callback(_probe(), [_spectrum(), _spectrum()]),
            says=r"name|twice|duplicate"),
    Attempt("probe core", "an unknown spectrum layer", lambda: _fit([_spectrum_analysis(layers=["conv9"])], epochs=1),
            says=r"conv9", errors=(ValueError, TypeError, RuntimeError)),
    Attempt("probe core", "a sanity layer that never runs",
            lambda: _fit([_attribution(sanity=True, sanity_layer="unused")], model=_TinyUnused(), epochs=1),
            says=r"(?i)unused.*(never|not) run|(never|not) run.*unused|sanity_layer"),
    Attempt("probe core", "a symlink at the lock path", _lock_symlink, check=bool, says=r"(?i)symlink|\.lock",
            errors=(ValueError, RuntimeError, OSError), failure=HOLE),
    Attempt("probe core", "validate, then fit, on one Trainer",
            lambda: _fit_then_records("spectrum", analyses=[_spectrum()], model=_TinyValidated(), validate_first=True,
                                      epochs=2),
            check=lambda n: n >= 2),
    Attempt("probe core", "a second run into the same directory", _second_run_refused_first_intact, check=bool,
            failure=LOSS),
    Attempt("probe core", "attribution of a model returning a tuple",
            lambda: _fit_then_records("attribution", analyses=[_attribution()], model=_TinyTuple("tuple"), epochs=1),
            check=lambda n: n >= 1, says=r"(?i)tuple|output"),
    Attempt("probe core", "attribution of a model returning a dict",
            lambda: _fit_then_records("attribution", analyses=[_attribution()], model=_TinyTuple("dict"), epochs=1),
            check=lambda n: n >= 1, says=r"(?i)dict|output"),
    Attempt("probe core", "a user's .notes.tmp in the record directory", _user_tmp_file_kept, check=bool, failure=LOSS),
    Attempt("probe core", "a record of another run symlinked in place of one", _outside_record_symlinked,
            says=r"epoch-000001\.npz", errors=(ValueError, OSError, RuntimeError), failure=HOLE),
    Attempt("probe core", "two callbacks on one directory", _two_callbacks_one_dir, says=r"(?i)directory|dirpath",
            errors=(ValueError, RuntimeError)),
    Attempt("probe core", "ResponseMapAnalysis with unknown units",
            lambda: __import__("nsp_lightning.analyses", fromlist=["x"]).ResponseMapAnalysis(units="pixels"),
            says=r"units"),
    Attempt("probe core", "LinearRegionsAnalysis with resolution 0",
            lambda: __import__("nsp_lightning.analyses", fromlist=["x"]).LinearRegionsAnalysis(resolution=0),
            says=r"resolution"),
    Attempt("probe core", "SpectrumCallback with an unknown transform",
            lambda: __import__("nsp_lightning", fromlist=["x"]).SpectrumCallback(_probe(), transform="x9"),
            says=r"transform"),
    Attempt("report", "read_records of a missing directory",
            lambda: __import__("nsp_lightning", fromlist=["x"]).read_records("/nonexistent/records9"),
            says=r"records9", errors=(ValueError, OSError)),
    Attempt("report", "a report of an empty directory",
            lambda: __import__("nsp_lightning", fromlist=["x"]).report(_tmp()), says=r"run\d+",
            errors=(ValueError, OSError)),
    Attempt("report", "a report with a corrupted record", _corrupt_record, says=r"epoch-000001\.npz",
            errors=(ValueError, OSError)),
    Attempt("report", "a report written into a directory", _report_into_a_directory,
            check=lambda path: Path(path).is_file(), says=r"out"),
    Attempt("report", "a pickle in place of a record",
            lambda: (lambda run: ((run / "records" / "spectrum" / "epoch-000000.npz").write_bytes(pickle.dumps([1])),
                                  __import__("nsp_lightning", fromlist=["x"]).read_records(run / "records" / "spectrum"))
                     )(_fit([_spectrum()], epochs=1)),
            says=r"epoch-000000\.npz", errors=(ValueError, OSError), failure=HOLE),
]


ALL = RESPONSE_MAPS + ATTRIBUTION + FEATURE_VIS + REGIONS + SPECTRA + PROBE


#: Attempts whose outcome is not yet right, by test id, with the outcome seen: each is
#: counted as such in the README table and expected to fail here (strictly: one that starts
#: passing must leave this list, and the table be updated).
KNOWN: dict[str, str] = {}


def _param(attempt: Attempt):
    ident = re.sub(r"[^a-z0-9]+", "_", f"{attempt.tool} {attempt.what}".lower()).strip("_")
    marks = list(attempt.marks)
    if ident in KNOWN:
        marks.append(pytest.mark.xfail(reason=f"{KNOWN[ident]} (README 'Guarantees')", strict=True))
    return pytest.param(attempt, id=ident, marks=marks)


@pytest.fixture(autouse=True)
def _attempt_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("NSP_ATTEMPT_TMP", str(tmp_path))


#: What each attempt gave in this session, for the README table's test.
SEEN: dict[str, str] = {}


@pytest.mark.reliability
@pytest.mark.parametrize("attempt", [_param(a) for a in ALL])
def test_attempt(attempt):
    outcome, seen = classify(attempt)
    SEEN[f"{attempt.tool}: {attempt.what}"] = outcome
    assert outcome in (HANDLED, CLEAR), f"{attempt.tool}: {attempt.what}: {outcome}: {seen}"


def _table() -> dict[str, Counter]:
    rows: dict[str, Counter] = {}
    for attempt in ALL:
        rows.setdefault(attempt.tool, Counter())[SEEN[f"{attempt.tool}: {attempt.what}"]] += 1
    return rows


def readme_table() -> str:
    """The README's table of these attempts, from this session's outcomes."""
    rows = _table()
    head = "| tool | attempts | " + " | ".join(OUTCOMES) + " |"
    lines = [head, "|" + "---|" * (2 + len(OUTCOMES))]
    total = Counter()
    for tool, counts in rows.items():
        total += counts
        lines.append(f"| {tool} | {sum(counts.values())} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + " |")
    lines.append(f"| **all** | **{sum(total.values())}** | " + " | ".join(f"**{total[o]}**" for o in OUTCOMES) + " |")
    return "\n".join(lines)


@pytest.mark.reliability
def test_the_readme_table_counts_these_attempts():
    if len(SEEN) < len(ALL):
        pytest.skip("runs after every attempt of this file (not with -k or in parallel)")
    assert readme_table() in README.read_text(encoding="utf-8"), "README 'Guarantees' table:\n" + readme_table()
