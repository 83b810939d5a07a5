"""A zoo of small test networks, each with one deterministic input.

:func:`build` returns ``(name, network, x)`` with the network in eval mode and ``x`` a
batch of one; the registered factories return ``(network, x)``. The networks cover every
child type the core supports, alone and composed (``nn.Sequential`` children, residual
blocks, a two-branch block), plus the two networks of the original package
(``tests/data/*.npz``), LeNet-5, a deep Tanh chain on which float64 fails, pruned
networks with dead ReLUs for ``INCL=False``, float64 networks, and float32 subnormal and
wide-range values. Everything except the networks marked ``slow`` has at most about 3,000
nodes.

Use :data:`ZOO` (name -> :class:`Entry`), :func:`build`, :func:`params` (pytest parameters,
slow ones marked) and :func:`cached` (network, input and reference, computed once per
session), or :func:`random_network` / :func:`random_networks` for seeded random CNN and MLP
chains.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

import reference

DATA = Path(__file__).parents[1] / "data"

Factory = Callable[[], tuple[nn.Module, torch.Tensor]]


@dataclass(frozen=True)
class Entry:
    """One zoo network: how to build it and whether its reference is slow (> ~3 s)."""

    name: str
    factory: Factory
    slow: bool = False


ZOO: dict[str, Entry] = {}


def _register(name: str, factory: Factory, slow: bool = False) -> None:
    if name in ZOO:
        raise ValueError(f"zoo: duplicate name {name!r}")
    ZOO[name] = Entry(name, factory, slow)


def build(name: str) -> tuple[str, nn.Module, torch.Tensor]:
    """Build the zoo network ``name``: ``(name, network in eval mode, input)``."""
    net, x = ZOO[name].factory()
    return name, net.eval(), x


def params(names: list[str] | None = None) -> list:
    """One ``pytest.param`` per zoo name (all by default), marked slow where the zoo says so."""
    names = list(ZOO) if names is None else names
    return [pytest.param(n, id=n, marks=[pytest.mark.slow] if ZOO[n].slow else []) for n in names]


@functools.lru_cache(maxsize=None)
def _cached_network(name: str) -> tuple[str, nn.Module, torch.Tensor]:
    return build(name)


@functools.lru_cache(maxsize=None)
def cached(name: str, incl: bool) -> tuple[nn.Module, torch.Tensor, reference.Reference]:
    """``(network, input, reference.reference(network, input, incl))``, built once per session.

    Both ``incl`` values share one network object.
    """
    _, net, x = _cached_network(name)
    return net, x, reference.reference(net, x, incl)


def _seeded(seed: int, make: Callable[[], nn.Module], shape: tuple[int, ...],
            scale: float = 1.0) -> tuple[nn.Module, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = make()
    x = torch.randn((1, *shape), generator=gen) * scale
    return net.eval(), x


def _sequential(seed: int, shape: tuple[int, ...], *modules: nn.Module | Callable[[], nn.Module],
                scale: float = 1.0) -> Factory:
    """A factory for ``nn.Sequential(*modules)``.

    Callables are instantiated after seeding; module instances are copied, so no two
    built networks share a module.
    """
    def factory():
        return _seeded(seed, lambda: nn.Sequential(*[copy.deepcopy(m) if isinstance(m, nn.Module) else m()
                                                     for m in modules]), shape, scale)
    return factory


def _randomize_batchnorm(net: nn.Module, seed: int) -> nn.Module:
    """Give every batch norm non-trivial running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.randn(m.num_features, generator=gen))
                    m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
    return net


# --------------------------------------------------------------------------- convolutions

_CONV2D = {
    "conv2d": dict(in_channels=2, out_channels=3, kernel_size=3),
    "conv2d_stride_pad": dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1),
    "conv2d_same_even_kernel": dict(in_channels=2, out_channels=3, kernel_size=(3, 4), padding="same"),
    "conv2d_same_dilated": dict(in_channels=2, out_channels=2, kernel_size=3, padding="same", dilation=2),
    "conv2d_dilation": dict(in_channels=2, out_channels=3, kernel_size=3, dilation=2, padding=1),
    "conv2d_groups": dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1),
    "conv2d_depthwise": dict(in_channels=4, out_channels=4, kernel_size=3, groups=4),
    "conv2d_rect_stride": dict(in_channels=2, out_channels=3, kernel_size=(2, 3), stride=(2, 1),
                               padding=(1, 0)),
    "conv2d_1x1": dict(in_channels=3, out_channels=2, kernel_size=1),
    "conv2d_no_bias_big_stride": dict(in_channels=2, out_channels=2, kernel_size=2, stride=3,
                                      padding=2, bias=False),
}
for _i, (_name, _kw) in enumerate(_CONV2D.items()):
    _register(_name, _sequential(100 + _i, (_kw["in_channels"], 7, 8),
                                 lambda kw=_kw: nn.Conv2d(**kw)))

_CONV1D = {
    "conv1d": dict(in_channels=2, out_channels=3, kernel_size=3),
    "conv1d_stride_pad_dilation": dict(in_channels=2, out_channels=3, kernel_size=3, stride=2,
                                       padding=2, dilation=2),
    "conv1d_same": dict(in_channels=2, out_channels=2, kernel_size=4, padding="same"),
    "conv1d_groups": dict(in_channels=4, out_channels=4, kernel_size=2, groups=2),
}
for _i, (_name, _kw) in enumerate(_CONV1D.items()):
    _register(_name, _sequential(200 + _i, (_kw["in_channels"], 11),
                                 lambda kw=_kw: nn.Conv1d(**kw)))

# --------------------------------------------------------------------------- pooling

_POOL2D = {
    "maxpool2d": lambda: nn.MaxPool2d(2),
    "maxpool2d_pad_stride": lambda: nn.MaxPool2d(3, stride=2, padding=1),
    "maxpool2d_dilation": lambda: nn.MaxPool2d(2, stride=1, dilation=2),
    "maxpool2d_ceil": lambda: nn.MaxPool2d(3, stride=2, ceil_mode=True),
    "maxpool2d_ceil_pad_dilation": lambda: nn.MaxPool2d((2, 3), stride=2, padding=1, dilation=(2, 1),
                                                        ceil_mode=True),
    "avgpool2d": lambda: nn.AvgPool2d(2),
    "avgpool2d_pad_include": lambda: nn.AvgPool2d(3, stride=2, padding=1),
    "avgpool2d_pad_exclude": lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
    "avgpool2d_ceil": lambda: nn.AvgPool2d(2, stride=2, ceil_mode=True),
    "avgpool2d_ceil_pad_divisor": lambda: nn.AvgPool2d((3, 2), stride=(2, 3), padding=1, ceil_mode=True,
                                                       divisor_override=5),
    "adaptive_avgpool2d": lambda: nn.AdaptiveAvgPool2d((3, 2)),
    "adaptive_avgpool2d_global": lambda: nn.AdaptiveAvgPool2d(1),
    "adaptive_avgpool2d_upsample": lambda: nn.AdaptiveAvgPool2d((9, None)),
    "adaptive_maxpool2d": lambda: nn.AdaptiveMaxPool2d((3, 5)),
    "adaptive_maxpool2d_none": lambda: nn.AdaptiveMaxPool2d((None, 3)),
}
for _i, (_name, _make) in enumerate(_POOL2D.items()):
    _register(_name, _sequential(300 + _i, (2, 7, 8), _make))

_POOL1D = {
    "maxpool1d": lambda: nn.MaxPool1d(2),
    "maxpool1d_pad_dilation_ceil": lambda: nn.MaxPool1d(3, stride=2, padding=1, dilation=2, ceil_mode=True),
    "avgpool1d_pad_include": lambda: nn.AvgPool1d(3, stride=2, padding=1),
    "avgpool1d_ceil_exclude": lambda: nn.AvgPool1d(3, stride=2, padding=1, ceil_mode=True,
                                                   count_include_pad=False),
    "adaptive_avgpool1d": lambda: nn.AdaptiveAvgPool1d(4),
    "adaptive_avgpool1d_upsample": lambda: nn.AdaptiveAvgPool1d(13),
    "adaptive_maxpool1d": lambda: nn.AdaptiveMaxPool1d(3),
}
for _i, (_name, _make) in enumerate(_POOL1D.items()):
    _register(_name, _sequential(400 + _i, (3, 11), _make))

# Pools after a convolution with a ReLU module in between, so the max-pool inputs hold
# ties at zero (INCL=False follows the index the max-pool returns).
_register("conv_relu_maxpool2d", _sequential(
    420, (1, 9, 9), lambda: nn.Conv2d(1, 3, 2), nn.ReLU(), lambda: nn.MaxPool2d(2, ceil_mode=True),
    lambda: nn.Conv2d(3, 2, 2)))
_register("conv_avgpool_adaptivemax", _sequential(
    421, (2, 8, 8), lambda: nn.Conv2d(2, 3, 3, padding=1), lambda: nn.AvgPool2d(2),
    lambda: nn.AdaptiveMaxPool2d(3)))

# --------------------------------------------------------------------------- batch norm, linear


def _bn_factory(seed, shape, *modules):
    base = _sequential(seed, shape, *modules)

    def factory():
        net, x = base()
        return _randomize_batchnorm(net, seed), x
    return factory


_register("batchnorm2d", _bn_factory(500, (3, 5, 5), lambda: nn.Conv2d(3, 3, 2), lambda: nn.BatchNorm2d(3)))
_register("batchnorm2d_no_affine", _bn_factory(501, (3, 5, 5), lambda: nn.BatchNorm2d(3, affine=False),
                                               lambda: nn.Conv2d(3, 2, 3)))
_register("batchnorm1d_sequence", _bn_factory(502, (3, 9), lambda: nn.Conv1d(3, 4, 3),
                                              lambda: nn.BatchNorm1d(4)))
_register("batchnorm1d_features", _bn_factory(503, (2, 4, 4), nn.Flatten(), lambda: nn.Linear(32, 6),
                                              lambda: nn.BatchNorm1d(6), nn.ReLU(), lambda: nn.Linear(6, 3)))
_register("mlp", _sequential(510, (7,), lambda: nn.Linear(7, 5), nn.ReLU(), lambda: nn.Linear(5, 4),
                             nn.Tanh(), lambda: nn.Linear(4, 2)))
_register("linear_single", _sequential(511, (3,), lambda: nn.Linear(3, 2)))
_register("flatten_linear", _sequential(512, (2, 4, 5), lambda: nn.Conv2d(2, 3, 2), nn.Flatten(),
                                        lambda: nn.Linear(36, 5)))
_register("identity_dropout", _sequential(513, (2, 6, 6), lambda: nn.Conv2d(2, 3, 3), nn.Identity(),
                                          nn.Dropout(0.5), nn.Dropout2d(0.3), lambda: nn.Conv2d(3, 2, 2),
                                          nn.Flatten(), nn.Dropout(0.2)))


class ViewNet(nn.Module):
    """Conv, functional ReLU, ``x.view`` in ``forward`` and a Linear on the result."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        x = F.relu(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


_register("view_linear", lambda: _seeded(514, ViewNet, (2, 7, 8)))


# --------------------------------------------------------------------------- activations

def _activations(channels: int) -> dict[str, Callable[[], nn.Module]]:
    return {
        "relu": nn.ReLU, "relu6": nn.ReLU6, "leakyrelu": lambda: nn.LeakyReLU(0.1),
        "prelu": lambda: nn.PReLU(channels, init=0.2), "elu": nn.ELU, "selu": nn.SELU,
        "celu": lambda: nn.CELU(0.7), "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU("tanh"),
        "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "hardtanh": lambda: nn.Hardtanh(-0.5, 0.5),
        "hardsigmoid": nn.Hardsigmoid, "hardswish": nn.Hardswish, "silu": nn.SiLU, "mish": nn.Mish,
        "softplus": lambda: nn.Softplus(beta=2.0, threshold=2.0), "softsign": nn.Softsign,
        "tanhshrink": nn.Tanhshrink, "softshrink": lambda: nn.Softshrink(0.4),
        "hardshrink": lambda: nn.Hardshrink(0.4), "threshold": lambda: nn.Threshold(0.1, -1.0),
        "logsigmoid": nn.LogSigmoid, "rrelu": nn.RReLU,
    }


# Inputs scaled by 2 so that pre-activations cross every kink (thresholds, shrink regions)
# while staying where float32 derivatives of the smooth functions are far from 0.
for _i, (_name, _make) in enumerate(_activations(3).items()):
    _register(f"act_{_name}", _sequential(600 + _i, (2, 5, 5), lambda: nn.Conv2d(2, 3, 2), _make,
                                          lambda: nn.Conv2d(3, 2, 2), scale=2.0))
    _register(f"act_{_name}_in_block", _sequential(
        650 + _i, (2, 5, 5), lambda mk=_make: nn.Sequential(nn.Conv2d(2, 3, 2), mk()),
        lambda: nn.Conv2d(3, 2, 2), scale=2.0))
for _i, (_name, _make) in enumerate(_activations(5).items()):
    _register(f"act_{_name}_mlp", _sequential(700 + _i, (6,), lambda: nn.Linear(6, 5), _make,
                                              lambda: nn.Linear(5, 3), scale=2.0))

_register("relu_inplace", _sequential(750, (2, 6, 6), lambda: nn.Conv2d(2, 3, 3), nn.ReLU(inplace=True),
                                      lambda: nn.Conv2d(3, 2, 2), nn.ReLU(inplace=True)))
_register("input_activation", _sequential(751, (2, 4, 4), nn.Tanh(), lambda: nn.Conv2d(2, 2, 2), nn.Sigmoid()))


# --------------------------------------------------------------------------- residual blocks

def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias, as in torchvision's ResNet."""
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias, as in torchvision's ResNet."""
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision-style ResNet basic block: two 3x3 convs plus the (downsampled) input."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision-style ResNet bottleneck: 1x1, 3x3 (strided), 1x1 plus the input."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))


class CrossBlock(nn.Module):
    """Two parallel branches, a 1x3 and a 3x1 convolution, summed.

    The union of the two receptive fields is a cross, not a product set.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.wide = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1))
        self.tall = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0))

    def forward(self, x):
        return torch.tanh(self.wide(x) + self.tall(x))


class TinyResNet(nn.Module):
    """Stem, max-pool, a basic block, a downsampling basic block, global pool, fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(4, 4))
        self.layer2 = nn.Sequential(BasicBlock(4, 8, 2, _downsample(4, 8, 2)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class NarrowResNet50(nn.Module):
    """torchvision's ResNet-50 layout at width 1/64: 7x7 stride-2 stem, max-pool,
    bottleneck stages of 3, 4, 6 and 3 blocks, global pool, fc (158 leaf calls)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 2, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(2)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, inplanes = [], 2
        for planes, blocks, stride in [(1, 3, 1), (2, 4, 2), (4, 6, 2), (8, 3, 2)]:
            stage = [Bottleneck(inplanes, planes, stride, _downsample(inplanes, planes * 4, stride))]
            inplanes = planes * 4
            stage += [Bottleneck(inplanes, planes) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _block_factory(seed: int, shape: tuple[int, ...], make: Callable[[], nn.Module]) -> Factory:
    def factory():
        net, x = _seeded(seed, make, shape)
        return _randomize_batchnorm(net, seed), x
    return factory


_register("basicblock", _block_factory(800, (4, 6, 6), lambda: nn.Sequential(BasicBlock(4, 4))))
_register("basicblock_downsample", _block_factory(
    801, (4, 7, 7), lambda: nn.Sequential(BasicBlock(4, 6, 2, _downsample(4, 6, 2)))))
_register("bottleneck", _block_factory(802, (8, 5, 5), lambda: nn.Sequential(Bottleneck(8, 2))))
_register("bottleneck_downsample", _block_factory(
    803, (4, 6, 6), lambda: nn.Sequential(Bottleneck(4, 2, 2, _downsample(4, 8, 2)))))
_register("resnet_blocks_chain", _block_factory(804, (3, 6, 6), lambda: nn.Sequential(
    nn.Conv2d(3, 4, 3, padding=1), BasicBlock(4, 4), BasicBlock(4, 4),
    Bottleneck(4, 1), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))))
_register("tiny_resnet", _block_factory(805, (3, 8, 8), TinyResNet))
_register("resnet50_narrow", _block_factory(808, (3, 16, 16), NarrowResNet50))
_register("cross_block", _block_factory(806, (2, 6, 6), lambda: nn.Sequential(
    nn.Conv2d(2, 2, 2), CrossBlock(2), CrossBlock(2))))
class FunctionalBlock(nn.Module):
    """A conv followed by an elementwise *function* (``F.relu``, ``torch.sigmoid``) inside a child."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], cin: int = 2, cout: int = 3):
        super().__init__()
        self.fn = fn
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return self.fn(self.conv(x))


class FunctionalBasicBlock(BasicBlock):
    """torchvision's BasicBlock with functional ReLUs, the last one after the residual sum."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.relu

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


# Elementwise functions inside a child must drop the Jacobian's zero rows (dead units) for
# INCL=False; the biases push about half the pre-activations below zero.
_register("functional_relu_block", _sequential(809, (1, 6, 6), lambda: nn.Conv2d(1, 2, 3, padding=1),
                                               lambda: FunctionalBlock(F.relu), lambda: nn.Conv2d(3, 2, 2)))
_register("functional_sigmoid_block", _sequential(810, (2, 5, 5), lambda: FunctionalBlock(torch.sigmoid),
                                                  lambda: nn.Conv2d(3, 2, 2), scale=20.0))
_register("functional_basicblock", _block_factory(811, (4, 6, 6), lambda: nn.Sequential(
    nn.Conv2d(4, 4, 1), FunctionalBasicBlock(4, 4), FunctionalBasicBlock(4, 6, 2, _downsample(4, 6, 2)))))
_register("sequential_children", _block_factory(807, (2, 8, 8), lambda: nn.Sequential(
    nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2)),
    nn.Sequential(nn.Conv2d(3, 4, 2, padding=1), nn.Sigmoid(), nn.AvgPool2d(2, ceil_mode=True)),
    nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 2)))))


# --------------------------------------------------------------------------- named networks

class ReadmeNet(nn.Module):
    """The seed README's network: sigmoid after each conv, ``view`` before ``fc1``."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels=1, out_channels=2, kernel_size=2)
        self.conv2 = nn.Conv2d(in_channels=2, out_channels=8, kernel_size=2)
        self.fc1 = nn.Linear(1 * 4 * 8, 8)

    def forward(self, x):
        x = torch.sigmoid(self.conv1(x))
        x = torch.sigmoid(self.conv2(x))
        x = x.view(-1, 1 * 4 * 8)
        return self.fc1(x)


class MnistTutorialNet(nn.Module):
    """The seed tutorial's MNIST network: functional ReLU after each conv."""

    def __init__(self):
        super().__init__()
        self.cnn1 = nn.Conv2d(in_channels=1, out_channels=10, kernel_size=5, stride=1, padding=0)
        self.maxpool1 = nn.MaxPool2d(kernel_size=2)
        self.cnn2 = nn.Conv2d(in_channels=10, out_channels=20, kernel_size=5, stride=1, padding=0)
        self.maxpool2 = nn.MaxPool2d(kernel_size=2)
        self.fc1 = nn.Linear(320, 10)

    def forward(self, x):
        out = self.maxpool1(F.relu(self.cnn1(x)))
        out = self.maxpool2(F.relu(self.cnn2(out)))
        return self.fc1(out.view(out.size(0), -1))


_NPZ_NETWORKS: dict[str, tuple[str, type[nn.Module]]] = {
    "readme": ("readme-net.npz", ReadmeNet),
    "mnist_tutorial": ("mnist-tutorial-net.npz", MnistTutorialNet),
}


def load_npz_network(name: str) -> tuple[nn.Module, torch.Tensor, dict[str, np.ndarray]]:
    """Load one of the original package's networks from ``tests/data``.

    Parameters
    ----------
    name : {'readme', 'mnist_tutorial'}

    Returns
    -------
    (nn.Module, torch.Tensor, dict)
        The network in eval mode with the stored parameters, the stored input, and every
        array of the file (keys as in shared/reference/README.md).
    """
    if name not in _NPZ_NETWORKS:
        raise ValueError(f"zoo.load_npz_network: unknown name {name!r}; expected one of {sorted(_NPZ_NETWORKS)}")
    filename, cls = _NPZ_NETWORKS[name]
    with np.load(DATA / filename, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    net = cls()
    state = {k[len("param."):]: torch.from_numpy(v) for k, v in data.items() if k.startswith("param.")}
    net.load_state_dict(state, strict=True)
    return net.eval(), torch.from_numpy(data["input"]), data


_register("readme_net", lambda: load_npz_network("readme")[:2])
_register("mnist_tutorial_net", lambda: load_npz_network("mnist_tutorial")[:2], slow=True)


class LeNet5(nn.Module):
    """LeNet-5 on 32x32: tanh after every layer but the last, average-pool subsampling."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5)
        self.s2 = nn.AvgPool2d(2)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.s4 = nn.AvgPool2d(2)
        self.c5 = nn.Conv2d(16, 120, 5)
        self.f6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, 10)

    def forward(self, x):
        x = self.s2(torch.tanh(self.c1(x)))
        x = self.s4(torch.tanh(self.c3(x)))
        x = torch.tanh(self.c5(x))
        x = torch.tanh(self.f6(x.view(-1, 120)))
        return self.output(x)


_register("lenet5", lambda: _seeded(900, LeNet5, (1, 32, 32)), slow=True)


def deep_tanh_chain() -> tuple[nn.Module, torch.Tensor]:
    """Eight 3x3 convolutions (6 channels, padding 1) with nn.Tanh between, then Flatten.

    Float64 forward substitution loses every digit here (relative errors of 2e-1 after the
    8th convolution, unbounded on the Flatten layer); the exact spectrum of the Flatten
    layer is 0.
    """
    def make():
        layers: list[nn.Module] = []
        for _ in range(8):
            layers += [nn.Conv2d(6, 6, 3, padding=1), nn.Tanh()]
        return nn.Sequential(*layers, nn.Flatten())
    return _seeded(901, make, (6, 10, 10))


_register("deep_tanh_chain", deep_tanh_chain, slow=True)


# --------------------------------------------------------------------------- order, dtype, range

class ReorderedNet(nn.Module):
    """Children registered in another order than they run, plus one that never runs.

    Layers follow execution order (conv, pool, fc); ``unused`` is not a layer.
    """

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 4)
        self.unused = nn.Linear(3, 3)
        self.pool = nn.MaxPool2d(2)
        self.conv = nn.Conv2d(2, 3, 2)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc(torch.flatten(x, 1))


_register("reordered_children", lambda: _seeded(1100, ReorderedNet, (2, 5, 5)))


def _float64(seed: int, shape: tuple[int, ...], make: Callable[[], nn.Module]) -> Factory:
    def factory():
        net, x = _seeded(seed, make, shape)
        return _randomize_batchnorm(net, seed).double(), x.double()
    return factory


_register("float64_cnn", _float64(1101, (2, 6, 6), lambda: nn.Sequential(
    nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(3, 2, 2),
    nn.Flatten(), nn.Linear(8, 3))))
_register("float64_mlp", _float64(1102, (5,), lambda: nn.Sequential(
    nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))))


def _extreme_values(values: list[float], weight_scale: float, seed: int) -> Factory:
    def factory():
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(len(values), 3), nn.Tanh(), nn.Linear(3, 2))
        with torch.no_grad():
            net[0].weight.mul_(weight_scale)
            net[0].bias.zero_()
        return net.eval(), torch.tensor([values], dtype=torch.float32)
    return factory


# Float32 subnormals (down to 2**-149) set the common power-of-two scale of the exact
# integers; the first Linear's outputs are subnormal too.
_register("subnormal_values", _extreme_values([1e-45, 3e-39, -2.5e-41, 1e-38], 1e-3, 1103))
# Sixty decades in one layer: the spectrum cancels catastrophically in float64.
_register("wide_range_values", _extreme_values([1e30, -3e-30, 1.0, 7e20, -1e-10], 1.0, 1104))


# --------------------------------------------------------------------------- pruned / dead units

def _prune(net: nn.Module, seed: int, fraction: float = 0.5) -> nn.Module:
    """Zero a random ``fraction`` of every weight, plus one whole output unit per layer."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                m.weight.mul_((torch.rand(m.weight.shape, generator=gen) >= fraction).to(m.weight.dtype))
                m.weight[0].zero_()
                if m.bias is not None:
                    m.bias[0] = 0.0
    return net


def _pruned_factory(seed: int, shape: tuple[int, ...], make: Callable[[], nn.Module]) -> Factory:
    def factory():
        net, x = _seeded(seed, make, shape)
        return _prune(_randomize_batchnorm(net, seed), seed), x
    return factory


# Output unit 0 of every pruned layer is exactly 0, so the ReLU after it sees exact zeros
# (relu'(0) = 0) and the max-pools see ties.
_register("pruned_cnn", _pruned_factory(1000, (2, 8, 8), lambda: nn.Sequential(
    nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 2), nn.ReLU(),
    nn.Flatten(), nn.Linear(16, 5), nn.ReLU(), nn.Linear(5, 3))))
_register("pruned_mlp", _pruned_factory(1001, (8,), lambda: nn.Sequential(
    nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))))
_register("pruned_resnet", _pruned_factory(1002, (4, 6, 6), lambda: nn.Sequential(
    BasicBlock(4, 4), BasicBlock(4, 6, 2, _downsample(4, 6, 2)))))


def _dead_relu() -> tuple[nn.Module, torch.Tensor]:
    net, x = _seeded(1003, lambda: nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(12, 4)), (2, 7, 7))
    with torch.no_grad():
        net[0].bias.copy_(torch.tensor([-3.0, -0.2, 0.0, 0.5]))
        net[2].bias.copy_(torch.tensor([-2.0, 0.0, -0.1]))
    return net, x


_register("dead_relu", _dead_relu)


# --------------------------------------------------------------------------- random chains

_RANDOM_ACTIVATIONS = [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.Hardtanh, nn.ELU, nn.GELU]


def random_network(seed: int, max_nodes: int = 1500) -> tuple[str, nn.Module, torch.Tensor]:
    """A random small CNN (1-D or 2-D) or MLP chain, fully determined by ``seed``.

    Children are drawn from convolutions, pools (plain and adaptive), batch norms,
    activation modules and, at the end, Flatten + Linear; some neighbours are merged into
    ``nn.Sequential`` children. Some weights are zeroed so that ``INCL=False`` differs from
    ``INCL=True``. Candidates that fail to run, produce non-finite values or would push
    the network over ``max_nodes`` are dropped.

    Returns
    -------
    (str, nn.Module, torch.Tensor)
        ``('random_<seed>', network in eval mode, input)``.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    kind = rng.choice(["cnn2d", "cnn1d", "mlp"])
    if kind == "mlp":
        shape: tuple[int, ...] = (int(rng.integers(2, 9)),)
    elif kind == "cnn1d":
        shape = (int(rng.integers(1, 4)), int(rng.integers(5, 13)))
    else:
        shape = (int(rng.integers(1, 4)), int(rng.integers(4, 9)), int(rng.integers(4, 9)))
    x = torch.from_numpy(rng.standard_normal((1, *shape)).astype(np.float32)) * 2
    children: list[nn.Module] = []
    current = x
    nodes = x.numel()

    def candidate(channels: int, dims: int) -> nn.Module:
        conv, maxp, avgp, amax, aavg, bn = (
            (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveMaxPool1d, nn.AdaptiveAvgPool1d, nn.BatchNorm1d)
            if dims == 1 else
            (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm2d))
        choice = rng.choice(["conv", "conv", "maxpool", "avgpool", "adaptive", "bn", "act"])
        k = int(rng.integers(1, 4))
        if choice == "conv":
            groups = int(rng.choice([g for g in (1, 2) if channels % g == 0]))
            out = groups * int(rng.integers(1, 3))
            return conv(channels, out, k, stride=int(rng.integers(1, 3)), padding=int(rng.integers(0, k // 2 + 1)),
                        dilation=int(rng.integers(1, 3)), groups=groups, bias=bool(rng.integers(0, 2)))
        if choice in ("maxpool", "avgpool"):
            k = max(k, 2)
            kw = dict(stride=int(rng.integers(1, 3)), padding=int(rng.integers(0, k // 2 + 1)),
                      ceil_mode=bool(rng.integers(0, 2)))
            if choice == "maxpool":
                return maxp(k, dilation=int(rng.integers(1, 3)), **kw)
            return avgp(k, count_include_pad=bool(rng.integers(0, 2)), **kw)
        if choice == "adaptive":
            size = int(rng.integers(1, 5))
            return (amax if rng.integers(0, 2) else aavg)(size)
        if choice == "bn":
            return bn(channels)
        return _RANDOM_ACTIVATIONS[int(rng.integers(0, len(_RANDOM_ACTIVATIONS)))]()

    spatial = len(shape) - 1
    for _ in range(int(rng.integers(1, 7))):
        if spatial == 0:
            child: nn.Module = (nn.Linear(current.shape[1], int(rng.integers(1, 7))) if rng.integers(0, 3)
                                else _RANDOM_ACTIVATIONS[int(rng.integers(0, len(_RANDOM_ACTIVATIONS)))]())
        else:
            child = candidate(current.shape[1], spatial)
        _randomize_batchnorm(child, seed)
        try:
            with torch.no_grad():
                out = child.eval()(current)
        except (RuntimeError, ValueError):
            continue
        # A max-pool window that lies entirely in the padding yields -inf.
        if out.numel() == 0 or nodes + out.numel() > max_nodes or not torch.isfinite(out).all():
            continue
        children.append(child)
        current, nodes = out, nodes + out.numel()
    if spatial and rng.integers(0, 2):
        children += [nn.Flatten(), nn.Linear(current[0].numel(), int(rng.integers(1, 6)))]
    if not children:
        children.append(nn.Identity())
    # Merge some neighbours into nn.Sequential children (composite children).
    merged: list[nn.Module] = []
    for child in children:
        if merged and rng.random() < 0.25:
            previous = merged.pop()
            parts = list(previous) if isinstance(previous, nn.Sequential) else [previous]
            merged.append(nn.Sequential(*parts, child))
        else:
            merged.append(child)
    net = nn.Sequential(*merged).eval()
    _prune(net, seed, fraction=float(rng.choice([0.0, 0.3])))
    return f"random_{seed}", net, x


def random_networks():
    """A hypothesis strategy of :func:`random_network` results (seed-driven)."""
    return st.integers(min_value=0, max_value=2**32 - 1).map(random_network)
