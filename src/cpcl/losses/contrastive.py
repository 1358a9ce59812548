"""Instance-level image-text contrastive losses (ITC, SDM).

Both compare a batch's features (the rows) with a set of keys (the columns): by default the batch itself;
under distributed training the batches of all ranks, so that every rank sees the negatives of the global
batch. ``positives`` (B, M) says which row pair and which column pair belong together; the relation is
symmetric (same image, or same pseudo label), so one mask serves both directions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def itc_loss(image_features: torch.Tensor, text_features: torch.Tensor, temperature: float,
             image_index: torch.Tensor | None = None, *, image_keys: torch.Tensor | None = None,
             text_keys: torch.Tensor | None = None, positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE.

    ``image_features`` and ``text_features`` are ``(B, D)`` unit vectors, row ``i`` of each forming pair
    ``i``; logits are cosine similarities divided by ``temperature``. When ``image_index`` (B,) is given,
    pairs that share an image (two captions of one picture) are all positives of each other, with equal
    weight; this is the pairing signal itself, not an identity label. ``image_keys``/``text_keys`` (M, D)
    and ``positives`` (B, M) replace the batch as columns (see the module docstring).
    """
    if positives is None:
        positives = (pair_positives(image_index) if image_index is not None
                     else torch.eye(len(image_features), dtype=torch.bool, device=image_features.device))
    targets = positives.float() / positives.sum(dim=1, keepdim=True)
    i2t, t2i = _logits(image_features, text_features, temperature, image_keys, text_keys)
    return 0.5 * (_soft_ce(i2t, targets) + _soft_ce(t2i, targets))


def _logits(image_features, text_features, temperature, image_keys, text_keys):
    """Image-to-text and text-to-image logits; without keys, one product and its transpose."""
    if image_keys is None and text_keys is None:
        i2t = image_features @ text_features.t() / temperature
        return i2t, i2t.t()
    image_keys = image_features if image_keys is None else image_keys
    text_keys = text_features if text_keys is None else text_keys
    return image_features @ text_keys.t() / temperature, text_features @ image_keys.t() / temperature


def _soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def sdm_loss(image_features: torch.Tensor, text_features: torch.Tensor, temperature: float,
             positives: torch.Tensor, epsilon: float = 1e-8, *, image_keys: torch.Tensor | None = None,
             text_keys: torch.Tensor | None = None) -> torch.Tensor:
    """Similarity-distribution matching (many-to-many): KL from the softmax over the keys to the uniform
    distribution over ``positives`` (B, M bool, symmetric relation of row pair and column pair), both ways."""
    target = positives.float() / positives.sum(dim=1, keepdim=True)
    log_target = torch.log(target + epsilon)
    loss = 0.0
    for logits in _logits(image_features, text_features, temperature, image_keys, text_keys):
        pred = F.softmax(logits, dim=1)
        loss = loss + (pred * (F.log_softmax(logits, dim=1) - log_target)).sum(dim=1).mean()
    return loss


class Pairs(NamedTuple):
    """What makes pairs positives of each other: the image of each pair and, where used, the pseudo label of
    its image and of its caption (-1: outlier)."""

    image_index: torch.Tensor
    image_labels: torch.Tensor | None = None
    text_labels: torch.Tensor | None = None


def pair_positives(image_index: torch.Tensor, image_labels: torch.Tensor | None = None,
                   text_labels: torch.Tensor | None = None, columns: Pairs | None = None) -> torch.Tensor:
    """(B, M) bool: pair i's image and pair j's caption belong together — same image, or (when pseudo
    labels are given) the same image pseudo label or the same caption pseudo label (outliers, -1, only
    match their own image). ``columns``: the M column pairs (default: the rows themselves, M = B)."""
    col_index, col_image, col_text = columns if columns is not None else (image_index, image_labels, text_labels)
    pos = image_index[:, None] == col_index[None, :]
    for rows, cols in ((image_labels, col_image), (text_labels, col_text)):
        if rows is not None:
            pos = pos | ((rows[:, None] == cols[None, :]) & (rows[:, None] >= 0))
    return pos
