"""Instance-level image-text contrastive loss (ITC)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def itc_loss(image_features: torch.Tensor, text_features: torch.Tensor, temperature: float,
             image_index: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of pairs.

    ``image_features`` and ``text_features`` are ``(B, D)`` unit vectors, row ``i`` of each forming pair
    ``i``; logits are cosine similarities divided by ``temperature``. When ``image_index`` (B,) is given,
    pairs that share an image (two captions of one picture) are all positives of each other, with equal
    weight; this is the pairing signal itself, not an identity label.
    """
    logits = image_features @ text_features.t() / temperature
    if image_index is None:
        targets = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))
    positives = (image_index[:, None] == image_index[None, :]).float()
    targets = positives / positives.sum(dim=1, keepdim=True)
    return 0.5 * (_soft_ce(logits, targets) + _soft_ce(logits.t(), targets))


def _soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
