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
    positives = pair_positives(image_index).float()
    targets = positives / positives.sum(dim=1, keepdim=True)
    return 0.5 * (_soft_ce(logits, targets) + _soft_ce(logits.t(), targets))


def _soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def sdm_loss(image_features: torch.Tensor, text_features: torch.Tensor, temperature: float,
             positives: torch.Tensor, epsilon: float = 1e-8) -> torch.Tensor:
    """Similarity-distribution matching (many-to-many): KL from the softmax over the batch to the
    uniform distribution over ``positives`` (B, B bool, row = image i, column = caption j), both ways."""
    logits = image_features @ text_features.t() / temperature
    pos = positives.float()
    i2t_target = pos / pos.sum(dim=1, keepdim=True)
    t2i_target = pos.t() / pos.t().sum(dim=1, keepdim=True)
    loss = 0.0
    for lg, target in ((logits, i2t_target), (logits.t(), t2i_target)):
        pred = F.softmax(lg, dim=1)
        loss = loss + (pred * (F.log_softmax(lg, dim=1) - torch.log(target + epsilon))).sum(dim=1).mean()
    return loss


def pair_positives(image_index: torch.Tensor, image_labels: torch.Tensor | None = None,
                   text_labels: torch.Tensor | None = None) -> torch.Tensor:
    """(B, B) bool: pair i's image and pair j's caption belong together — same image, or (when pseudo
    labels are given) the same image pseudo label or the same caption pseudo label (outliers, -1, only
    match their own image)."""
    pos = image_index[:, None] == image_index[None, :]
    for labels in (image_labels, text_labels):
        if labels is not None:
            pos = pos | ((labels[:, None] == labels[None, :]) & (labels[:, None] >= 0))
    return pos
