"""Feature visualisation: images optimised to show what a network responds to, after lucid.

The pieces lucid made standard, small and composable:

- :mod:`nsp.optvis.objectives`: what to maximise (a channel, a neuron, a layer's L2, a
  class logit, a direction; sums, differences and multiples of these);
- :mod:`nsp.optvis.param`: how the image is parameterised (pixels, or a Fourier-space
  image with decorrelated colour and a sigmoid range);
- :mod:`nsp.optvis.augment`: transformation robustness (pad, jitter, scale, rotate);
- :mod:`nsp.optvis.optimize`: the optimiser loop (seed, steps, progress bar, thresholds),
  and :func:`normalized`, which gives a model's input convention (mean, std, size) once;

and the netlens tasks as one-liners (:mod:`nsp.optvis.tasks`): :func:`visualize_channel`,
:func:`visualize_class`, :func:`deep_dream`, :func:`invert` and :func:`style_transfer`.

Example::

    import torchvision
    from nsp import optvis

    net = optvis.normalized(torchvision.models.resnet18(weights="DEFAULT"),
                            optvis.IMAGENET_MEAN, optvis.IMAGENET_STD)
    result = optvis.visualize_channel(net, "layer3", 17, size=128, save="channel17.png")
"""

from nsp.optvis.objectives import (
    INPUT,
    OUTPUT,
    Objective,
    channel,
    channel_batch,
    class_batch,
    class_log_probability,
    class_logit,
    deepdream,
    direction,
    gram_match,
    l2,
    match,
    neuron,
    total_variation,
)
from nsp.optvis.param import FourierImage, ImageParam, PixelImage, fourier_image, pixel_image
from nsp.optvis.optimize import IMAGENET_MEAN, IMAGENET_STD, Normalized, Render, evaluate, normalized, render, save_images
from nsp.optvis.tasks import deep_dream, invert, style_transfer, visualize_channel, visualize_class
from nsp.optvis.augment import compose, jitter, pad, random_rotate, random_scale, standard_transforms

__all__ = [
    "INPUT", "OUTPUT", "Objective", "channel", "channel_batch", "class_batch", "class_log_probability", "class_logit",
    "deepdream", "direction", "gram_match", "l2", "match", "neuron", "total_variation",
    "FourierImage", "ImageParam", "PixelImage", "fourier_image", "pixel_image",
    "IMAGENET_MEAN", "IMAGENET_STD", "Normalized", "Render", "evaluate", "normalized", "render", "save_images",
    "deep_dream", "invert", "style_transfer", "visualize_channel", "visualize_class",
    "compose", "jitter", "pad", "random_rotate", "random_scale", "standard_transforms",
]
