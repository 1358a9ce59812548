"""Samplers over training pairs. The order of an epoch depends only on ``(seed, epoch)``."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class PseudoIdentitySampler(Sampler[int]):
    """P x K batches: runs of ``instances`` pairs that share a pseudo label, in random order.

    ``pair_labels`` (N,) is the pseudo label of each pair (its image's cluster; -1 for outliers, which
    come as runs of one). With a DataLoader of batch size P*K, most batches hold P pseudo identities
    with K pairs each, so prototype and many-to-many terms see positives inside every batch.
    """

    def __init__(self, pair_labels: np.ndarray, instances: int, generator: torch.Generator):
        self.labels = np.asarray(pair_labels, dtype=np.int64)
        self.instances = instances
        self.generator = generator

    def __len__(self) -> int:
        return int(self.labels.size)

    def __iter__(self) -> Iterator[int]:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
        rng = np.random.default_rng(seed)
        chunks: list[np.ndarray] = []
        clustered = self.labels >= 0
        for label in np.unique(self.labels[clustered]):
            members = rng.permutation(np.where(self.labels == label)[0])
            chunks += [members[i:i + self.instances] for i in range(0, members.size, self.instances)]
        chunks += [np.array([i]) for i in np.where(~clustered)[0]]
        order = rng.permutation(len(chunks))
        return iter(np.concatenate([chunks[i] for i in order]).tolist() if chunks else [])
