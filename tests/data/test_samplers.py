import numpy as np
import torch

from cpcl.data.samplers import PseudoIdentitySampler


def _runs(seq: list[int]) -> int:
    """Maximal runs of equal labels; every outlier (-1) is a run of its own."""
    return sum(1 for i, x in enumerate(seq) if i == 0 or x < 0 or x != seq[i - 1])


def test_pk_runs_share_a_label_and_cover_every_pair_once():
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, -1, -1, 2, 2])
    for seed in range(20):
        order = list(PseudoIdentitySampler(labels, 2, torch.Generator().manual_seed(seed)))
        assert sorted(order) == list(range(12))
        # chunks: label 0 -> 3 (2+2+1), label 1 -> 2, label 2 -> 1, outliers -> 2: at most 8 runs
        assert _runs([int(labels[i]) for i in order]) <= 8
    a = list(PseudoIdentitySampler(labels, 2, torch.Generator().manual_seed(0)))
    assert a == list(PseudoIdentitySampler(labels, 2, torch.Generator().manual_seed(0)))
    assert a != list(PseudoIdentitySampler(labels, 2, torch.Generator().manual_seed(1)))
