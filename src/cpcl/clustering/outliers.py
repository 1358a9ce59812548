"""OPLM: outlier pseudo-label mining across modalities (reconstruction, CPCL_METHOD.md §6).

DBSCAN leaves outliers (-1) in each modality. An image outlier whose caption sits in a text cluster
borrows the label of the most similar clustered image among those that have a caption in that text
cluster; symmetrically, a caption outlier whose image sits in an image cluster borrows the label of the
most similar clustered caption among those of that image cluster. Only the image-caption pairing is
used — never an identity label. Both directions read the labels as they were before mining.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# rows x candidates of one similarity block at most (64 MB of float32)
BLOCK = 1 << 24


@dataclass(frozen=True)
class MiningResult:
    image_labels: np.ndarray
    text_labels: np.ndarray
    image_recovered: np.ndarray  # indices of image outliers that got a label
    text_recovered: np.ndarray


def _most_similar(queries: np.ndarray, query_groups: np.ndarray, candidates: np.ndarray,
                  candidate_groups: np.ndarray, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the most similar candidate of its group (cosine of ``features`` rows).

    ``queries`` / ``candidates``: row indices; ``*_groups``: their group (cluster) ids. Each group's candidate
    rows are gathered once and compared with all of its queries in blocks of at most :data:`BLOCK` entries.
    -> ``(best candidate row, its similarity)`` per query; -1 and -inf where the group has no candidate. Ties
    go to the lowest candidate row.
    """
    best = np.full(len(queries), -1, dtype=np.int64)
    score = np.full(len(queries), -np.inf, dtype=np.float32)
    if not len(queries):
        return best, score
    q_order = np.argsort(query_groups, kind="stable")
    c_order = np.lexsort((candidates, candidate_groups))
    c_groups, c_sorted = candidate_groups[c_order], candidates[c_order]
    groups, q_starts = np.unique(query_groups[q_order], return_index=True)
    q_ends = np.append(q_starts[1:], len(q_order))
    c_starts, c_ends = np.searchsorted(c_groups, groups, "left"), np.searchsorted(c_groups, groups, "right")
    for q0, q1, c0, c1 in zip(q_starts, q_ends, c_starts, c_ends, strict=True):
        if c0 == c1:
            continue
        rows, cands = q_order[q0:q1], c_sorted[c0:c1]
        bank = features[torch.from_numpy(cands)]
        step = max(1, BLOCK // len(cands))
        for r0 in range(0, len(rows), step):
            block = rows[r0:r0 + step]
            sims = features[torch.from_numpy(queries[block])] @ bank.T
            value, position = sims.max(dim=1)  # the first maximum: the lowest candidate row
            best[block], score[block] = cands[position.numpy()], value.numpy()
    return best, score


def mine_outliers(image_labels: np.ndarray, text_labels: np.ndarray, image_features: np.ndarray,
                  text_features: np.ndarray, caption_to_image: np.ndarray,
                  threshold: float | None = None) -> MiningResult:
    """Recover outliers of each modality through the cluster of the paired sample in the other.

    ``image_labels`` (N_img,), ``text_labels`` (N_cap,) pseudo labels with -1 for outliers;
    ``image_features`` (N_img, D) and ``text_features`` (N_cap, D) unit vectors; ``caption_to_image``
    (N_cap,) the image of each caption; ``threshold``: minimum cosine to the chosen candidate.
    Vectorised per cluster: each cluster's candidates are gathered once (:func:`_most_similar`).
    """
    y_img = np.asarray(image_labels, dtype=np.int64)
    y_txt = np.asarray(text_labels, dtype=np.int64)
    owner = np.asarray(caption_to_image, dtype=np.int64)
    f_img = torch.from_numpy(np.ascontiguousarray(image_features, dtype=np.float32))
    f_txt = torch.from_numpy(np.ascontiguousarray(text_features, dtype=np.float32))
    caption_clustered, image_of_caption = y_txt >= 0, y_img[owner]
    both = caption_clustered & (image_of_caption >= 0)

    # an image outlier: candidates are the clustered images with a caption in the text cluster of any of its
    # captions; the best over its clusters wins (ties: the lowest image index)
    pairs = caption_clustered & (image_of_caption < 0)
    queries = np.unique(np.stack([owner[pairs], y_txt[pairs]], axis=1), axis=0).reshape(-1, 2)
    members = np.unique(np.stack([owner[both], y_txt[both]], axis=1), axis=0).reshape(-1, 2)
    cand, sim = _most_similar(queries[:, 0], queries[:, 1], members[:, 0], members[:, 1], f_img)
    found = cand >= 0
    queries, cand, sim = queries[found, 0], cand[found], sim[found]
    order = np.lexsort((cand, -sim, queries))  # per outlier: highest similarity first, then lowest index
    first = np.unique(queries[order], return_index=True)[1]
    img_out, img_cand, img_sim = queries[order][first], cand[order][first], sim[order][first]
    new_img, img_rec = _assign(y_img, img_out, img_cand, img_sim, threshold)

    # a caption outlier: candidates are the clustered captions of its image's cluster
    txt_out = np.where(~caption_clustered & (image_of_caption >= 0))[0]
    members = np.where(both)[0]
    cand, sim = _most_similar(txt_out, image_of_caption[txt_out], members, image_of_caption[members], f_txt)
    new_txt, txt_rec = _assign(y_txt, txt_out, cand, sim, threshold)
    return MiningResult(new_img, new_txt, img_rec, txt_rec)


def _assign(labels: np.ndarray, outliers: np.ndarray, candidates: np.ndarray, similarity: np.ndarray,
            threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Outliers take their candidate's label (where they have one at or above ``threshold``); labels are
    read as they were before mining."""
    keep = candidates >= 0
    if threshold is not None:
        keep &= similarity >= threshold
    new = labels.copy()
    new[outliers[keep]] = labels[candidates[keep]]
    return new, np.sort(outliers[keep]).astype(np.int64)
