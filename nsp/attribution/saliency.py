"""Vanilla gradient (saliency): the gradient of the target output with respect to the input."""

from __future__ import annotations

import torch

from nsp.attribution.backend import captum_attr
from nsp.attribution.base import Attribution, Inputs

__all__ = ["Saliency"]


class Saliency(Attribution):
    """The vanilla gradient ``d output[target] / d input``, signed (captum's ``Saliency``
    with ``abs=False``).

    Simonyan et al.'s saliency map is ``sign='absolute'``; ``sign='positive'`` and
    ``sign='negative'`` give the positive and negative saliency maps.

    Examples
    --------
    >>> model = torch.nn.Linear(3, 2)
    >>> a = Saliency(model).attribute(torch.ones(4, 3), target=1)
    >>> torch.equal(a, model.weight[1].detach().expand(4, 3))
    True
    """

    name = "saliency"
    one_pass = True

    def _attribute(self, inputs: Inputs, target: torch.Tensor | None) -> Inputs:
        captum = captum_attr(self._where)
        return captum.Saliency(self._explained).attribute(inputs, target=target, abs=False,
                                                          additional_forward_args=self._forward_args)
