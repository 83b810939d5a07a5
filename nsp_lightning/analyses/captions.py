"""The words every analysis writes on its images: which probe, its label and prediction, which record.

A TensorBoard image card shows an image with nothing but its tag, so each image names
what it shows; these helpers keep the wording the same across analyses.
"""

from __future__ import annotations

from typing import Sequence

import torch

from nsp_lightning.probe.analysis import ProbeContext

__all__ = ["probe_predictions", "probe_caption", "record_caption"]


def probe_predictions(context: ProbeContext) -> list[tuple[str, str, str]]:
    """Per probe: its label (or ''), the predicted class and its softmax probability, for classifier outputs.

    Returns
    -------
    list of (str, str, str)
        One triple per probe; empty where the model's output is not one tensor
        ``(P, classes)``.
    """
    try:
        outputs = context.outputs()
    except Exception:  # a model whose outputs are not one tensor has no prediction to show
        return []
    if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2 or outputs.shape[0] != len(context.probes):
        return []
    probs = torch.softmax(outputs.detach().double().cpu(), dim=1)
    prob, pred = probs.max(dim=1)
    labels = context.labels
    return [
        ("" if labels is None else str(int(labels[p])), str(int(pred[p])), f"{float(prob[p]):.3f}")
        for p in range(len(pred))
    ]


def probe_caption(p: int, predictions: Sequence[tuple[str, str, str]]) -> str:
    """``'probe 2 · label 7 · predicted 7 (p 0.981)'``; the parts not known are left out."""
    parts = [f"probe {p}"]
    if p < len(predictions):
        label, predicted, probability = predictions[p]
        if label:
            parts.append(f"label {label}")
        parts.append(f"predicted {predicted} (p {probability})")
    return " · ".join(parts)


def record_caption(epoch: int, step: int) -> str:
    """``'epoch 3 · step 120'``: the record an image shows."""
    return f"epoch {epoch} · step {step}"
