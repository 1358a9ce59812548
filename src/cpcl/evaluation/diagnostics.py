"""Pseudo-label diagnostics from the held-out identity labels: for the *report* only.

This module and the evaluation are the only readers of identity labels in a weakly supervised run; nothing
here feeds a loss, a sampler, the outlier mining or a setting (a test trains with permuted identities and
gets the same model, with other diagnostics).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from cpcl.clustering.outliers import MiningResult
from cpcl.clustering.quality import outliers_as_singletons


def pseudo_label_quality(pseudo: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """How well pseudo labels match hidden identities — for *reporting* only, never for training.

    NMI and ARI treat each outlier as its own singleton cluster; pairwise precision/recall count pairs of
    clustered samples that share a pseudo label / an identity.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    pseudo = np.asarray(pseudo, dtype=np.int64)
    truth = np.asarray(truth, dtype=np.int64)
    singletons = outliers_as_singletons(pseudo)
    clustered = pseudo >= 0
    same_pseudo = _pair_count(pseudo[clustered])
    same_true = _pair_count(truth)
    both = _pair_count(pseudo[clustered] * (truth.max(initial=0) + 1) + truth[clustered]) if clustered.any() else 0
    return {
        "nmi": float(normalized_mutual_info_score(truth, singletons)),
        "ari": float(adjusted_rand_score(truth, singletons)),
        "pair_precision": float(both / same_pseudo) if same_pseudo else 0.0,
        "pair_recall": float(both / same_true) if same_true else 0.0,
    }


def _pair_count(labels: np.ndarray) -> int:
    if labels.size == 0:
        return 0
    _, counts = np.unique(labels, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def recovery_purity(mined: MiningResult, ids: np.ndarray, owner: np.ndarray) -> dict[str, float]:
    """Share of recovered outliers whose new cluster's other members are mostly their own identity."""
    out = {}
    for name, rec, new, truth in (("image", mined.image_recovered, mined.image_labels, ids),
                                  ("text", mined.text_recovered, mined.text_labels, ids[owner])):
        if rec.size == 0:
            continue
        counts: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for label, person in zip(new.tolist(), truth.tolist(), strict=True):
            if label >= 0:
                counts[label][person] += 1
        hits = 0
        for idx in rec.tolist():
            members = counts[int(new[idx])]
            own = members[int(truth[idx])] - 1  # the other members of its identity
            others = max((n for person, n in members.items() if person != truth[idx]), default=0)
            hits += int(own > 0 and own >= others)
        out[f"{name}_recovered_purity"] = hits / rec.size
    return out
