"""Label-free scores: how good a model is, told from held-out image-caption pairs and the run's own pseudo
labels, without a single identity label.

A weakly supervised user has pairs and nothing else; pairs the model was not trained on (the val split's,
identities ignored, or ``data.val_pairs_from_train``) still say how well captions find *their own* image:

- ``pair-R1`` / ``pair-mAP``: every held-out caption queries every held-out image; its own image is the one
  relevant item (so mAP is the mean reciprocal rank);
- ``pair-loss``: minus the contrastive loss of those captions against those images at the training
  temperature (higher is better, as for every score here);

and, for runs with pseudo labels, what the run knows of its clusters (``clustering.quality``):

- ``agreement``: adjusted Rand index of each caption's cluster with its image's cluster;
- ``stability``: mean over the modalities of the adjusted Rand index with the previous epoch's clusters.

Only the pair scores exist for every run, so only they compare an ITC run with a CPCL run.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cpcl.evaluation.metrics import retrieval_metrics

PAIR_SCORES = ("pair-mAP", "pair-R1", "pair-loss")
CLUSTER_SCORES = ("agreement", "stability")
SCORES = PAIR_SCORES + CLUSTER_SCORES


def pair_scores(similarity: torch.Tensor, caption_to_image: torch.Tensor,
                temperature: float | None = None) -> dict[str, float]:
    """``similarity`` (N_cap, N_img) cosine of held-out captions to held-out images, ``caption_to_image``
    (N_cap,) the column of each caption's own image -> ``pair-R1``, ``pair-mAP`` (×100) and, given the
    training ``temperature``, ``pair-loss``."""
    own = caption_to_image.to(similarity.device)
    metrics = retrieval_metrics(similarity, own, torch.arange(similarity.shape[1], device=similarity.device))
    scores = {"pair-R1": metrics.rank1, "pair-mAP": metrics.mAP}
    if temperature is not None:
        scores["pair-loss"] = -float(F.cross_entropy(similarity.float() / temperature, own))
    return scores


def cluster_scores(pseudo: dict[str, Any] | None) -> dict[str, float]:
    """The label-free signs of an epoch's pseudo labels (its ``metrics.jsonl`` ``pseudo`` entry), where they
    exist: ``agreement``, and ``stability`` from the second clustering on."""
    if not pseudo or "agreement" not in pseudo:
        return {}
    out = {"agreement": float(pseudo["agreement"])}
    if "image_stability" in pseudo:
        out["stability"] = (float(pseudo["image_stability"]) + float(pseudo["text_stability"])) / 2
    return out
