"""One place that seeds every random number generator, per-rank streams, and per-(seed, epoch) local
generators."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator for the sampler of one epoch: order depends only on (seed, epoch)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


def rank_seed(seed: int, rank: int) -> int:
    """The seed of one rank's own streams: ``seed`` on rank 0 (a single-process run is rank 0), and a seed drawn
    from ``(seed, rank)`` on the others."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def resumed_rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a rank that a run resumed after ``epoch`` did not have (it was saved on fewer ranks): drawn
    from ``(seed, epoch, rank)``, so it depends on the run's ``train.seed`` and differs from every other rank's."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def seed_rank_streams(seed: int, rank: int) -> None:
    """After every rank has built the same model from ``seed``: each rank other than 0 reseeds the generators
    its augmentations draw from (and its DataLoader workers' seeds, drawn from torch's generator each epoch),
    so ranks augment differently, as open_clip's ``random_seed(seed, rank)`` and IRRA's ``set_seed(1 + rank)``
    do. Rank 0 keeps its stream: a run on N ranks augments rank 0's share as the single-process run would."""
    if rank:
        seed_everything(rank_seed(seed, rank))
