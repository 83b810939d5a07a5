"""The model-randomisation sanity check (Adebayo et al., 2018) for every attribution method.

Trains the digits CNN of the tests (tests/support/digits_cnn.py, about 3 s), randomises its
output layer on a copy, and prints, per method, the median Spearman rho between the
attributions of the trained and the randomised network on 32 validation digits (each
explains the trained network's predicted class), signed and on absolute values, as the
README's table. Low rho passes: the attribution depends on the layer that was randomised.

    python examples/attribution_sanity_menu.py [--probes 32] [--methods lime lrp ...]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from nsp.attribution import CAPTUM_TABLE, METHODS, attribute, randomize_top_layer, spearman

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from digits_cnn import DigitsCNN, digits, trained  # noqa: E402

LAYER = "conv2"
NEURON = (3, 4, 4)  # a unit of conv2's (16, 8, 8) output, near the centre


class _FunctionalFlatten(DigitsCNN):
    """The digits CNN flattening with a function: captum's LRP has no rule for nn.Flatten
    (and an identity rule there changes the relevance's shape, which captum refuses)."""

    def __init__(self) -> None:
        super().__init__()
        del self.flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x))))).flatten(1))


def without_flatten(model: DigitsCNN) -> DigitsCNN:
    """The same network, weights and mode, without its nn.Flatten module."""
    copy = _FunctionalFlatten()
    copy.load_state_dict({k: v for k, v in model.state_dict().items()})
    return copy.train(model.training)


def options_for(name: str, baselines: torch.Tensor) -> dict:
    """What each method needs on 1x8x8 digits."""
    spec = next((s for s in CAPTUM_TABLE if s.name == name), None)
    options: dict = {}
    if spec is not None and spec.family != "primary" or name in ("gradcam", "guided_gradcam"):
        options["layer"] = LAYER
    if spec is not None and spec.family == "neuron":
        options["neuron_selector"] = NEURON
    if name.endswith(("deeplift_shap", "gradient_shap")):  # a distribution of baselines: training digits
        options["baselines"] = baselines
    if name == "occlusion":
        options.update(window=2, stride=1)
    if name == "shapley_values":
        # Exact Shapley values enumerate every order of the features: four 4x4 quadrants.
        quadrant = (torch.arange(8).reshape(8, 1) // 4) * 2 + torch.arange(8).reshape(1, 8) // 4
        options["feature_mask"] = quadrant.reshape(1, 1, 8, 8)
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--methods", nargs="*", help="only these methods (default: every one in METHODS)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(1)
    model, accuracy = trained()
    x, _ = digits()
    probes, baselines = x[1500:1500 + args.probes], x[:16]
    randomized = randomize_top_layer(model)
    target = model(probes).argmax(1)
    print(f"digits CNN, accuracy {accuracy:.3f}, {len(probes)} probes, top layer 'fc' randomised")
    print("| method | rho (signed) | rho (absolute) | seconds |")
    print("|---|---|---|---|")
    for name, cls in METHODS.items():
        if args.methods and name not in args.methods:
            continue
        options = options_for(name, baselines)
        takes_target = cls.takes_target() if hasattr(cls, "takes_target") else True
        trained_model, random_model = model, randomized
        if name in ("lrp", "layer_lrp"):
            trained_model, random_model = without_flatten(model), without_flatten(randomized)
        start = time.perf_counter()
        try:
            a = attribute(trained_model, probes, name, target=target if takes_target else None, **options)
            b = attribute(random_model, probes, name, target=target if takes_target else None, **options)
        except ValueError as err:
            print(f"| `{name}` | fails: {str(err).splitlines()[0][:160]} | | |")
            continue
        seconds = time.perf_counter() - start
        signed = float(np.nanmedian(spearman(a, b)))
        absolute = float(np.nanmedian(spearman(a.abs(), b.abs())))
        print(f"| `{name}` | {signed:.2f} | {absolute:.2f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
