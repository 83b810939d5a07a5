"""The INCL=False fingerprint changes exactly when the INCL=False graph can change."""

import torch
from torch import nn
from torch.nn.utils import prune

import nsp


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 4)
    ).eval()


def _graph_edges(net, x):
    acts = nsp.Activations(net, x)
    return set(nsp.NNGraph(acts, INCL=False).edges()), nsp.fingerprint(acts)


def test_same_pattern_same_fingerprint_and_weights_values_do_not_matter():
    net, x = _net(), torch.randn(1, 1, 4, 4)
    a = nsp.fingerprint(nsp.Activations(net, x))
    assert a == nsp.fingerprint(nsp.Activations(net, x)) and len(a) == 32
    with torch.no_grad():
        net[4].weight.mul_(2.0)  # same zero pattern, same argmax, same ReLU activity
    assert nsp.fingerprint(nsp.Activations(net, x)) == a


def test_pruning_changes_fingerprint_and_graph():
    net, x = _net(), torch.randn(1, 1, 4, 4)
    edges, before = _graph_edges(net, x)
    prune.l1_unstructured(net[4], "weight", amount=0.5)
    pruned_edges, after = _graph_edges(net, x)
    assert after != before and pruned_edges < edges


def test_relu_activity_and_argmax_change_the_fingerprint():
    net = _net()
    x = torch.randn(1, 1, 4, 4)
    base = nsp.fingerprint(nsp.Activations(net, x))
    assert nsp.fingerprint(nsp.Activations(net, -x)) != base
    with torch.no_grad():
        net[0].bias.add_(100.0)  # every ReLU active now
    assert nsp.fingerprint(nsp.Activations(net, x)) != base
