"""The networks people train, in small pieces, against the independent dense reference.

Each piece is built from torchvision's own classes (or torch's), at tiny width and
resolution: the first stages of MobileNetV3, EfficientNet, ShuffleNet and ConvNeXt, a ViT
with one block, a Swin stage with a shifted window (V1 and V2), a 2-layer
``nn.TransformerEncoder`` and LSTM/GRU classifiers. For INCL True and False, with
top-level layers and with every leaf, the graph's blocks must equal the reference's
(so the edge counts match) and every layer's spectrum must be within 1e-9 relative of
the exact one. The reference (tests/nsp/graph/test_structure_layers.py) takes its edges
from autograd Jacobians and one-hot bumps of the network itself, never from nsp's rules.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nsp
import nsp.graph.permutations
from test_structure_layers import exact_dag_spectrum, reference_blocks

torchvision = pytest.importorskip("torchvision")
from torchvision.models import convnext, efficientnet, mobilenetv3, shufflenetv2, swin_transformer  # noqa: E402
from torchvision.models.vision_transformer import VisionTransformer  # noqa: E402


def check(net, x, layers, incl):
    """Blocks, edge count and per-layer spectrum against the reference; returns the pattern."""
    acts = nsp.Activations(net, x, layers=layers)
    graph = nsp.NNGraph(acts, INCL=incl)
    blocks = reference_blocks(net, x, acts.layernames[1:], incl)
    if not x.is_floating_point():
        # Token ids have no derivative and cannot be bumped: the embedding reads its own id.
        e = acts.layeractivations[1].shape[-1]
        blocks[(1, 0)] = np.kron(np.eye(x.numel(), dtype=bool), np.ones((e, 1), dtype=bool))
    nnz = lambda r: r.nnz() if incl else r.nnz  # noqa: E731
    got = {(l, k) for l, parents in enumerate(graph.structure.parents) for k, r in parents.items() if nnz(r)}
    assert got == set(blocks)
    for (l, k), expected in blocks.items():
        rel = graph.structure.parents[l][k]
        np.testing.assert_array_equal(rel.dense() if incl else rel.toarray(), expected,
                                      err_msg=f"{acts.layernames[l]} <- {acts.layernames[k]}")
    assert graph.number_of_edges() == sum(int(b.sum()) for b in blocks.values())
    sizes = [a.numel() for a in acts.layeractivations]
    exact = exact_dag_spectrum(acts.to_numpy(), blocks, sizes)
    spectrum = graph.transform(acts).to_numpy()
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    for l in range(len(sizes)):
        a, r = spectrum[offsets[l]:offsets[l + 1]], exact[offsets[l]:offsets[l + 1]]
        assert np.linalg.norm(a - r) <= 1e-9 * np.linalg.norm(r) or np.array_equal(a, r), acts.layernames[l]
    return acts


def _seeded(make, shape, seed=0):
    torch.manual_seed(seed)
    net = make().eval()
    x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed + 1))
    return net, x


def mobilenet_v3_stage():
    # Stem and the first inverted residual: depthwise conv, SE gate (functional
    # adaptive_avg_pool2d, mul), Hardswish/Hardsigmoid, at a quarter of the width.
    return _seeded(lambda: mobilenetv3.mobilenet_v3_small(width_mult=0.25, num_classes=3).features[:2], (3, 16, 16))


def efficientnet_stages():
    # Stem, an MBConv1 and two MBConv6 (SE gates, SiLU, StochasticDepth in eval, the
    # residual add), head with functional pooling, flatten and dropout.
    def make():
        setting = [efficientnet.MBConvConfig(1, 3, 1, 32, 16, 1, width_mult=0.25),
                   efficientnet.MBConvConfig(6, 3, 2, 16, 24, 2, width_mult=0.25)]
        return efficientnet.EfficientNet(setting, dropout=0.2, stochastic_depth_prob=0.2, num_classes=3)
    return _seeded(make, (3, 8, 8))


def shufflenet_stages():
    # chunk, concatenation and the channel shuffle (view, transpose, flatten).
    return _seeded(lambda: shufflenetv2.ShuffleNetV2([2, 1, 1], [8, 8, 16, 16, 16], num_classes=3), (3, 16, 16))


def convnext_stages():
    # Patchify stem, LayerNorm2d (channels-first, through permute), CNBlocks (depthwise
    # conv, Permute, LayerNorm, Linear, GELU, layer scale, StochasticDepth), downsampling.
    def make():
        setting = [convnext.CNBlockConfig(8, 16, 1), convnext.CNBlockConfig(16, None, 1)]
        return convnext.ConvNeXt(setting, stochastic_depth_prob=0.1, layer_scale=0.5, num_classes=3)
    return _seeded(make, (3, 16, 16))


def vit_block():
    # conv_proj, reshape and permute in the parent, class token cat, position
    # embedding, one encoder block (LayerNorm, MultiheadAttention, MLP), the head on token 0.
    return _seeded(lambda: VisionTransformer(8, 4, 1, 2, 8, 16, num_classes=3), (3, 8, 8))


def swin_stage(v2=False):
    # Patch embedding, two Swin blocks (the second with a shifted window: padding, roll
    # and the mask), patch merging, a last stage where the window covers the map.
    def make():
        extra = dict(block=swin_transformer.SwinTransformerBlockV2,
                     downsample_layer=swin_transformer.PatchMergingV2) if v2 else {}
        return swin_transformer.SwinTransformer([2, 2], 8, [2, 1], [2, 2], [2, 2], stochastic_depth_prob=0.1,
                                                num_classes=3, **extra)
    return _seeded(make, (3, 8, 8))


def transformer_encoder():
    def make():
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
        return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    return _seeded(make, (4, 8))


class RecurrentClassifier(nn.Module):
    """A classifier on the last step of a 2-layer recurrent network (a tuple output, a slice in forward)."""

    def __init__(self, cell, bidirectional=False, vocabulary=None):
        super().__init__()
        self.embed = nn.Embedding(vocabulary, 4) if vocabulary else None
        self.rnn = cell(4, 5, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(10 if bidirectional else 5, 3)

    def forward(self, x):
        if self.embed is not None:
            x = self.embed(x)
        out, _ = self.rnn(x)
        return self.fc(torch.relu(out[:, -1]))


def lstm_classifier():
    return _seeded(lambda: RecurrentClassifier(nn.LSTM), (5, 4))


def gru_classifier():
    return _seeded(lambda: RecurrentClassifier(nn.GRU, bidirectional=True), (5, 4))


def embedding_lstm_classifier():
    torch.manual_seed(0)
    return RecurrentClassifier(nn.LSTM, vocabulary=7).eval(), torch.tensor([[3, 1, 6, 1, 0]])


PIECES = {
    "mobilenet_v3_stage": mobilenet_v3_stage,
    "efficientnet_stages": efficientnet_stages,
    "shufflenet_stages": shufflenet_stages,
    "convnext_stages": convnext_stages,
    "vit_block": vit_block,
    "swin_stage": swin_stage,
    "swin_v2_stage": lambda: swin_stage(v2=True),
    "transformer_encoder": transformer_encoder,
    "lstm_classifier": lstm_classifier,
    "gru_classifier": gru_classifier,
    "embedding_lstm_classifier": embedding_lstm_classifier,
}
# Pieces whose reference takes more than a few seconds, with every leaf or always.
SLOW = {"efficientnet_stages", "convnext_stages", "swin_v2_stage", "shufflenet_stages", ("swin_stage", "leaves")}


def _params():
    return [pytest.param(name, layers, id=f"{name}-{layers or 'top'}",
                         marks=[pytest.mark.slow] if {name, (name, layers)} & SLOW else [])
            for name in PIECES for layers in (None, "leaves")]


@pytest.mark.parametrize("incl", [True, False])
@pytest.mark.parametrize("piece, layers", _params())
def test_pieces_of_modern_networks_match_the_reference(piece, layers, incl):
    net, x = PIECES[piece]()
    check(net, x, layers, incl)


def test_top_level_layers_of_networks_that_do_more_than_chain_their_children():
    # Before: refused ('encoder' received 40 values but 'conv_proj' has 32; no top-level
    # child of a TransformerEncoder ran; 'fc' received 5 values but 'rnn' has 25).
    assert nsp.Activations(*vit_block()).layernames == ["input", "conv_proj", "encoder", "heads"]
    assert nsp.Activations(*transformer_encoder()).layernames == ["input", "layers.0", "layers.1"]
    assert nsp.Activations(*lstm_classifier()).layernames == ["input", "rnn", "fc"]


@pytest.mark.parametrize("incl", [True, False])
def test_convnext_permute_layers_cut_into_products(monkeypatch, incl):
    # At 32x32 a Permute layer's merged factor has 37.7 million entries; here the
    # relabelled term (Term.in_order) is forced at tiny size and checked against the reference.
    monkeypatch.setattr(nsp.graph.permutations, "MERGED_PERMUTE_ENTRIES", 0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), convnext.CNBlock(3, 0.5, 0.0)).eval()
    check(net, torch.randn(1, 2, 3, 4), "leaves", incl)


class _WindowAttention(nn.Module):
    def __init__(self, channels, window, shift, heads):
        super().__init__()
        self.proj = nn.Linear(channels, channels)
        self.attn = swin_transformer.ShiftedWindowAttention(channels, window, shift, heads)

    def forward(self, x):
        return self.attn(self.proj(x))


@settings(max_examples=8, deadline=None)
@given(h=st.integers(1, 5), w=st.integers(1, 5), wh=st.integers(1, 3), ww=st.integers(1, 3),
       sh=st.integers(0, 2), sw=st.integers(0, 2), incl=st.booleans(), seed=st.integers(0, 100))
def test_shifted_window_attention_at_random_sizes(h, w, wh, ww, sh, sw, incl, seed):
    # Windows that do not divide the map (padding), shifts up to the window size
    # (a shift of the full window is no shift after the roll), windows larger than the map.
    torch.manual_seed(seed)
    net = _WindowAttention(4, [wh, ww], [min(sh, wh - 1), min(sw, ww - 1)], 2).eval()
    check(net, torch.randn(1, h, w, 4), "leaves", incl)


@settings(max_examples=10, deadline=None)
@given(shape=st.lists(st.integers(1, 3), min_size=2, max_size=4), data=st.data(), incl=st.booleans(),
       cut=st.booleans())
def test_permute_then_axis_rules_at_random_shapes(shape, data, incl, cut):
    # Any permutation kept aside, a LayerNorm and a Linear on the last axis in permuted
    # order, the permutation materialised at a layer (merged or cut into products).
    perm = data.draw(st.permutations(range(1, len(shape) + 1)))
    torch.manual_seed(0)

    class Permuted(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Linear(shape[-1], shape[-1])
            self.norm = nn.LayerNorm(shape[perm[-1] - 1])
            self.fc = nn.Linear(shape[perm[-1] - 1], 2)

        def forward(self, x):
            return self.fc(torch.sigmoid(self.norm(self.conv(x).permute(0, *perm))))

    limit = 0 if cut else nsp.graph.permutations.MERGED_PERMUTE_ENTRIES
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nsp.graph.permutations, "MERGED_PERMUTE_ENTRIES", limit)
        check(Permuted().eval(), torch.randn(1, *shape), "leaves", incl)


class _Transpose(nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return x.transpose(self.a, self.b)


class _Cumsum(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.cumsum(self.dim)


class _Reshape(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=3), data=st.data(), incl=st.booleans())
def test_random_chains_of_permutes_transposes_and_reshapes_match_the_reference(shape, data, incl):
    # Every permutation is a layer, so relabelled terms (Term.in_order) reach the graph's
    # blocks and the transform's ancestor relations, meet reshapes that split or merge
    # the relabelled axes, and meet the other branch of a residual add.
    shape_in, shape = list(shape), list(shape)
    layers: list[nn.Module] = []
    # A permutation first, then any chain (prefix sums twice as likely, as they keep terms relabelled).
    kinds = ["permute"] + data.draw(st.lists(st.sampled_from(
        ["permute", "transpose", "reshape", "linear", "cumsum", "cumsum"]), min_size=1, max_size=4))
    for kind in kinds:
        if kind == "permute":
            perm = data.draw(st.permutations(range(len(shape))))
            layers.append(convnext.Permute([0] + [p + 1 for p in perm]))
            shape = [shape[p] for p in perm]
        elif kind == "transpose":
            a, b = data.draw(st.lists(st.integers(0, len(shape) - 1), min_size=2, max_size=2, unique=True))
            layers.append(_Transpose(a + 1, b + 1))
            shape[a], shape[b] = shape[b], shape[a]
        elif kind == "reshape":
            n = int(np.prod(shape))
            first = data.draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
            shape = [first, n // first]
            layers.append(_Reshape(tuple(shape)))
        elif kind == "cumsum":
            # Prefix sums along one axis: a factor of rank above 1 that keeps a term relabelled.
            layers.append(_Cumsum(data.draw(st.integers(1, len(shape)))))
        else:
            layers.append(nn.Linear(shape[-1], shape[-1]))
    torch.manual_seed(0)

    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(*layers)
            self.head = nn.Linear(shape[-1], 2)

        def forward(self, x):
            y = self.body(x)
            return self.head(torch.tanh(y) + y)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nsp.graph.permutations, "MERGED_PERMUTE_ENTRIES", 0)
        check(Chain().eval(), torch.randn(1, *shape_in), "leaves", incl)
