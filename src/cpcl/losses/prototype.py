"""Prototype-level contrastive terms (HCM, CPCL_METHOD.md §8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prototype_loss(logits: torch.Tensor, labels: torch.Tensor,
                   count: torch.Tensor | float | None = None) -> torch.Tensor:
    """Cross-entropy of ``(B, C)`` prototype logits against pseudo labels (B,); outliers (-1) are ignored.

    The mean is over the labelled samples of the batch, or the sum divided by ``count`` when given (under
    distributed training: the labelled samples of all ranks divided by the number of ranks, so that the
    averaged gradient is the global batch's). Returns 0 (still connected to the graph) when no sample of
    the batch has a label.
    """
    valid = labels >= 0
    if not bool(valid.any()) or logits.shape[1] == 0:
        return logits.sum() * 0.0
    if count is None:
        return F.cross_entropy(logits[valid], labels[valid])
    return F.cross_entropy(logits[valid], labels[valid], reduction="sum") / count
