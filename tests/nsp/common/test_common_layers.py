"""nsp.common.layers: one resolver, and every public `layer=`/`layers=` argument takes a dotted name or the module.

Each entry point is run twice, once with the name and once with the module, and must give
the same result; an unknown name or a foreign module must raise an error that names the
argument and lists the model's layers.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nsp
from nsp import optvis
from nsp.common.layers import describe_layers, find_layer, find_layers, layer_names


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 6 * 6, 3)).eval()


X = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------- the resolver


def test_a_name_and_a_module_resolve_to_the_same_layer():
    net = _cnn()
    assert find_layer(net, "2", "t") == ("2", net[2])
    assert find_layer(net, net[2], "t") == ("2", net[2])
    assert find_layers(net, ["5", net[0]], "t") == [("5", net[5]), ("0", net[0])]
    assert find_layers(net, net[1], "t") == [("1", net[1])]
    assert layer_names(net) == ["0", "1", "2", "3", "4", "5"]


def test_a_module_registered_twice_is_named_by_its_first_name():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Linear(2, 2), relu, nn.Linear(2, 2), relu)
    assert find_layer(net, relu, "t") == ("1", relu)


def test_unknown_names_are_listed_with_the_argument_and_the_model_layers():
    net = _cnn()
    with pytest.raises(ValueError, match=r"^t: unknown layer '9' in `layer`: the model \(Sequential\) has no submodule "
                                         r"of that name; its layers are: 0, 1, 2, 3, 4, 5$"):
        find_layer(net, "9", "t")
    with pytest.raises(ValueError, match=r"^t: unknown layers \['x', '7'\] in `layers`: the model \(Sequential\) has no "
                                         r"submodules of those names"):
        find_layers(net, ["x", "0", "7"], "t")
    with pytest.raises(ValueError, match=r"unknown layer 'features.3' in `chosen`: .* \(did you mean 'features.0', 'features'\?\)"):
        find_layer(_features(), "features.3", "t", "chosen")


def _features() -> nn.Module:
    net = nn.Module()
    net.features = nn.Sequential(nn.ReLU())
    return net


def test_a_foreign_module_the_model_itself_and_other_types_are_refused():
    net = _cnn()
    with pytest.raises(ValueError, match=r"^t: `layer` \(Conv2d\) is not a submodule of the model \(Sequential\); its "
                                         r"layers are: 0, 1, 2, 3, 4, 5$"):
        find_layer(net, nn.Conv2d(1, 4, 3), "t")
    with pytest.raises(ValueError, match=r"`layer` is the model \(Sequential\) itself, not one of its layers"):
        find_layer(net, net, "t")
    assert find_layer(net, net, "t", allow_model=True) == ("", net)
    with pytest.raises(ValueError, match=r"unknown layer '' in `layer`"):
        find_layer(net, "", "t")
    with pytest.raises(TypeError, match=r"t: expected `layer` to hold dotted module names or torch.nn.Modules, got int"):
        find_layer(net, 3, "t")
    with pytest.raises(TypeError, match=r"t: expected `layers` to be a dotted module name, a torch.nn.Module or a list"):
        find_layers(net, 3, "t")


def test_a_long_list_of_layers_is_shortened_to_its_start_and_end():
    net = nn.Sequential(*[nn.ReLU() for _ in range(40)])
    assert describe_layers(net) == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ..., 38, 39 (40 in all)"
    assert describe_layers(nn.ReLU()) == "none (it has no submodules)"


# ----------------------------------------------------------------------------- every entry point


def test_activations_take_modules():
    net = _cnn()
    by_name = nsp.Activations(net, X[:1], layers=["0", "3"])
    by_module = nsp.Activations(net, X[:1], layers=[net[0], net[3]])
    assert by_module.layernames == by_name.layernames == ["input", "0", "3"]
    for a, b in zip(by_name.layeractivations, by_module.layeractivations):
        assert torch.equal(a, b)
    assert nsp.Activations(net, X[:1], layers=net[2]).layernames == ["input", "2"]
    assert nsp.Activations.from_batch(net, X, layers=[net[5]])[1].layernames == ["input", "5"]
    with pytest.raises(ValueError, match=r"nsp.Activations: `layers` \(Linear\) is not a submodule of the model "
                                         r"\(Sequential\); its layers are: 0, 1, 2, 3, 4, 5"):
        nsp.Activations(net, X[:1], layers=[net[0], nn.Linear(2, 2)])


class _Spare(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.spare = _cnn(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_listed_module_must_run():
    net = _Spare()
    with pytest.raises(ValueError, match=r"the chosen layer\(s\) \['spare'\] did not run"):
        nsp.Activations(net, X[:1], layers=net.spare)
    assert nsp.Activations(net, X[:1], layers=lambda name, m: m is net.spare or name == "body.0").layernames == [
        "input", "body.0"]


def test_attribution_layers_take_modules():
    pytest.importorskip("captum.attr")
    from nsp.attribution import GradCam, GuidedGradCam, attribute, randomize_top_layer

    net = _cnn()
    assert GradCam(net, net[2]).layer is net[2]
    assert GradCam(net, "2").layer is net[2]
    torch.testing.assert_close(attribute(net, X, "gradcam", layer=net[2]), attribute(net, X, "gradcam", layer="2"))
    torch.testing.assert_close(GuidedGradCam(net, net[0]).attribute(X), GuidedGradCam(net, "0").attribute(X))
    by_module, by_name = randomize_top_layer(net, layer=net[2], seed=4), randomize_top_layer(net, layer="2", seed=4)
    assert torch.equal(by_module[2].weight, by_name[2].weight)
    assert not torch.equal(by_module[2].weight, net[2].weight)
    assert torch.equal(by_module[5].weight, net[5].weight)
    with pytest.raises(ValueError, match=r"nsp.attribution.GradCam: unknown layer 'conv' in `layer`: .* its layers "
                                         r"are: 0, 1, 2, 3, 4, 5"):
        GradCam(net, "conv")
    with pytest.raises(ValueError, match=r"randomize_top_layer: `layer` \(ReLU\) is not a submodule"):
        randomize_top_layer(net, layer=nn.ReLU())


def test_optvis_objectives_and_tasks_take_modules():
    net = optvis.normalized(_cnn(), [0.5], [0.5], size=6)
    inner = net.model
    images = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    for make in (lambda l: optvis.channel(l, 1), lambda l: optvis.neuron(l, 2), lambda l: optvis.l2(l),
                 lambda l: optvis.direction(l, [1.0, 0.0, -1.0, 0.5, 0.0, 2.0])):
        torch.testing.assert_close(optvis.evaluate(net, make(inner[2]), images), optvis.evaluate(net, make("2"), images))
    assert repr(optvis.channel(inner[2], 1)) == "Objective(channel Conv2d:1)"
    by_module = optvis.visualize_channel(net, inner[2], 3, steps=2, transforms=None)
    by_name = optvis.visualize_channel(net, "2", 3, steps=2, transforms=None)
    torch.testing.assert_close(by_module.image, by_name.image)
    with pytest.raises(ValueError, match=r"nsp.optvis.visualize_channel: `layer` \(Conv2d\) is not a submodule of the "
                                         r"model \(Sequential\); its layers are: 0, 1, 2"):
        optvis.visualize_channel(net, nn.Conv2d(1, 4, 3), 0, steps=2)
    with pytest.raises(TypeError, match=r"expected a layer's dotted module name or the module itself, got 3"):
        optvis.channel(3, 0)


def test_response_map_takes_modules():
    pytest.importorskip("openTSNE")
    net = nn.Sequential(nn.Linear(4, 12), nn.Tanh(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 2))
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(3))
    by_module = nsp.NeuralResponseMap(net, resolution=8)
    by_module.train_map(x, layers=[net[1], net[3]])
    by_name = nsp.NeuralResponseMap(net, resolution=8)
    by_name.train_map(x, layers=["1", "3"])
    assert by_module.layers == by_name.layers == ["1", "3"]
    assert by_module.neurons == by_name.neurons
    with pytest.raises(ValueError, match=r"NeuralResponseMap.TrainMap: unknown layer 'fc' in `layers`: .* its layers "
                                         r"are: 0, 1, 2, 3, 4"):
        nsp.NeuralResponseMap(net).train_map(x, layers=["fc"])
