"""The identity-label diagnostics (report only) on hand-made cases."""

import numpy as np

from cpcl.clustering.outliers import MiningResult
from cpcl.evaluation.diagnostics import pseudo_label_quality, recovery_purity


def test_quality_on_a_known_case():
    truth = np.array([1, 1, 2, 2, 3])
    perfect = pseudo_label_quality(np.array([0, 0, 1, 1, -1]), truth)
    assert perfect["pair_precision"] == 1.0 and perfect["pair_recall"] == 1.0 and perfect["nmi"] > 0.99
    merged = pseudo_label_quality(np.array([0, 0, 0, 0, -1]), truth)
    assert merged["pair_precision"] == 2 / 6 and merged["pair_recall"] == 1.0


def test_recovery_purity_on_a_constructed_case():
    ids = np.array([1, 1, 2, 1, 2])
    # images 3 and 4 were outliers, both joined cluster 0 (members 0 and 1, identity 1)
    mined = MiningResult(np.array([0, 0, 1, 0, 0]), np.array([0, 0, 1, 0, 0]), np.array([3, 4]), np.array([]))
    out = recovery_purity(mined, ids, np.arange(5))
    assert out == {"image_recovered_purity": 0.5}
