"""Label-free signs of pseudo-label quality: what a weakly supervised run can know about its own clusters.

Unlike ``evaluation.diagnostics`` (which compares with the held-out identities, for the report only), these
read nothing but the pseudo labels, so training may act on them:

- *stability*: the adjusted Rand index between an epoch's labels and the previous epoch's, per modality
  (clusters that keep changing have not found persons);
- *agreement*: the adjusted Rand index between each caption's label and its image's label (two modalities
  clustered on their own that group the same pairs together; close to 1 by construction when the
  modalities are clustered on fused features).

Each outlier (-1) counts as a cluster of its own.
"""

from __future__ import annotations

import numpy as np


def outliers_as_singletons(labels: np.ndarray) -> np.ndarray:
    """``labels`` (int64 copy) with each outlier (-1) given a cluster of its own, numbered after the others."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    outliers = np.where(labels < 0)[0]
    labels[outliers] = labels.max(initial=-1) + 1 + np.arange(outliers.size)
    return labels


def label_free_quality(image: np.ndarray, text: np.ndarray, owner: np.ndarray,
                       previous: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """``image`` (N_img,) and ``text`` (N_cap,) pseudo labels, ``owner`` (N_cap,) the image of each caption,
    ``previous`` the last epoch's ``(image, text)`` labels -> ``agreement`` and, with ``previous``,
    ``image_stability`` and ``text_stability``."""
    from sklearn.metrics import adjusted_rand_score

    image, text = outliers_as_singletons(image), outliers_as_singletons(text)
    out = {"agreement": float(adjusted_rand_score(image[np.asarray(owner)], text))}
    if previous is not None:
        out["image_stability"] = float(adjusted_rand_score(outliers_as_singletons(previous[0]), image))
        out["text_stability"] = float(adjusted_rand_score(outliers_as_singletons(previous[1]), text))
    return out
