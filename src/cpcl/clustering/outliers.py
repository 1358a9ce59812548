"""OPLM: outlier pseudo-label mining across modalities (reconstruction, CPCL_METHOD.md §6).

DBSCAN leaves outliers (-1) in each modality. An image outlier whose caption sits in a text cluster
borrows the label of the most similar clustered image among those that have a caption in that text
cluster; symmetrically, a caption outlier whose image sits in an image cluster borrows the label of the
most similar clustered caption among those of that image cluster. Only the image-caption pairing is
used — never an identity label. Both directions read the labels as they were before mining.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MiningResult:
    image_labels: np.ndarray
    text_labels: np.ndarray
    image_recovered: np.ndarray  # indices of image outliers that got a label
    text_recovered: np.ndarray


def _recover(outliers: np.ndarray, candidate_sets: list[np.ndarray], labels: np.ndarray, features: np.ndarray,
             threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    new = labels.copy()
    recovered = []
    for idx, cands in zip(outliers, candidate_sets, strict=True):
        if cands.size == 0:
            continue
        sims = features[cands] @ features[idx]
        best = int(np.argmax(sims))
        if threshold is not None and sims[best] < threshold:
            continue
        new[idx] = labels[cands[best]]
        recovered.append(idx)
    return new, np.asarray(recovered, dtype=np.int64)


def mine_outliers(image_labels: np.ndarray, text_labels: np.ndarray, image_features: np.ndarray,
                  text_features: np.ndarray, caption_to_image: np.ndarray,
                  threshold: float | None = None) -> MiningResult:
    """Recover outliers of each modality through the cluster of the paired sample in the other.

    ``image_labels`` (N_img,), ``text_labels`` (N_cap,) pseudo labels with -1 for outliers;
    ``image_features`` (N_img, D) and ``text_features`` (N_cap, D) unit vectors; ``caption_to_image``
    (N_cap,) the image of each caption; ``threshold``: minimum cosine to the chosen candidate.
    """
    y_img = np.asarray(image_labels, dtype=np.int64)
    y_txt = np.asarray(text_labels, dtype=np.int64)
    owner = np.asarray(caption_to_image, dtype=np.int64)
    captions_of = defaultdict(list)
    for cap, img in enumerate(owner):
        captions_of[int(img)].append(cap)

    # text cluster -> clustered images with a caption in it; image cluster -> clustered captions of it
    images_in_text_cluster: dict[int, set[int]] = defaultdict(set)
    captions_in_image_cluster: dict[int, list[int]] = defaultdict(list)
    for cap, img in enumerate(owner):
        if y_txt[cap] >= 0 and y_img[img] >= 0:
            images_in_text_cluster[int(y_txt[cap])].add(int(img))
            captions_in_image_cluster[int(y_img[img])].append(cap)

    img_out = np.where(y_img < 0)[0]
    img_cands = []
    for img in img_out:
        cands: set[int] = set()
        for cap in captions_of[int(img)]:
            if y_txt[cap] >= 0:
                cands |= images_in_text_cluster[int(y_txt[cap])]
        img_cands.append(np.fromiter(sorted(cands), dtype=np.int64, count=len(cands)))
    new_img, img_rec = _recover(img_out, img_cands, y_img, image_features, threshold)

    txt_out = np.where(y_txt < 0)[0]
    txt_cands = []
    for cap in txt_out:
        g = y_img[owner[cap]]
        txt_cands.append(np.asarray(captions_in_image_cluster[int(g)] if g >= 0 else [], dtype=np.int64))
    new_txt, txt_rec = _recover(txt_out, txt_cands, y_txt, text_features, threshold)
    return MiningResult(new_img, new_txt, img_rec, txt_rec)
