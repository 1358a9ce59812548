"""PMM: one prototype memory per modality (reconstruction, CPCL_METHOD.md §7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PrototypeMemory(nn.Module):
    """``C x D`` unit-norm prototypes of pseudo identities.

    ``reset`` rebuilds them as normalised cluster means after each clustering; ``update`` moves them
    towards the batch features after each optimiser step (``m ← μ m + (1 − μ) x``, renormalised), in
    batch order, skipping outliers (-1). With ``hard=True`` each prototype moves towards its least
    similar instance of the batch instead (cluster-contrast's hard variant). Nothing happens in backward.
    """

    def __init__(self, dim: int, momentum: float = 0.2, hard: bool = False):
        super().__init__()
        self.momentum = momentum
        self.hard = hard
        self.register_buffer("prototypes", torch.zeros(0, dim))

    @property
    def num_prototypes(self) -> int:
        return int(self.prototypes.shape[0])

    @torch.no_grad()
    def reset(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """``features`` (N, D), ``labels`` (N,) in 0..C-1 or -1."""
        labels = labels.to(features.device)
        valid = labels >= 0
        num = int(labels[valid].max()) + 1 if valid.any() else 0
        sums = torch.zeros(num, features.shape[1], device=features.device, dtype=features.dtype)
        sums.index_add_(0, labels[valid], features[valid])
        self.prototypes = F.normalize(sums, dim=1)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Momentum update with a batch ``features`` (B, D) and their ``labels`` (B,) (-1 skipped)."""
        features = features.detach().to(self.prototypes.dtype)
        labels = labels.to(features.device)
        mu = self.momentum
        if self.hard:
            for y in torch.unique(labels[labels >= 0]).tolist():
                members = features[labels == y]
                hardest = members[torch.argmin(members @ self.prototypes[y])]
                self.prototypes[y] = F.normalize(mu * self.prototypes[y] + (1 - mu) * hardest, dim=0)
            return
        for x, y in zip(features, labels.tolist(), strict=True):
            if y >= 0:
                self.prototypes[y] = F.normalize(mu * self.prototypes[y] + (1 - mu) * x, dim=0)

    def logits(self, features: torch.Tensor, temperature: float) -> torch.Tensor:
        """``(B, C)`` similarities to every prototype divided by ``temperature``."""
        return features @ self.prototypes.to(features.dtype).t() / temperature
