"""Label-free scores: how good a model is, told from held-out image-caption pairs and the run's own pseudo
labels, without a single identity label.

A weakly supervised user has pairs and nothing else; pairs the model was not trained on (the val split's,
identities ignored, or ``data.val_pairs_from_train``) still say how well captions find *their own* image:

- ``pair-R1`` / ``pair-mAP``: every held-out caption queries every held-out image; its own image is the one
  relevant item (so mAP is the mean reciprocal rank);
- ``pair-loss``: minus the contrastive loss of those captions against those images at the training
  temperature (higher is better, as for every score here);

whether the neighbourhoods of a pair agree across the modalities — what a model that maps a caption near
*every* image of its person changes, where retrieving the one paired image barely moves (candidates of the
identity-level evidence; ``k`` = 10):

- ``nbr-agree``: the held-out caption's top-k images against its own image's top-k image neighbours (itself
  included): the mean share of the caption's top-k that are among them (×100);
- ``nbr-agree-kr``: the same against its own image's k-reciprocal image neighbours (those of its top-k that
  have it in theirs): the mean share of them that the caption's top-k holds (×100);
- ``nbr-pairs``: the images of the caption's k nearest other captions (captions of its own image left out)
  against its own image's k nearest other images: the mean share they have in common (×100);

and, for runs with pseudo labels, what the run knows of its clusters (``clustering.quality``):

- ``agreement``: adjusted Rand index of each caption's cluster with its image's cluster;
- ``stability``: mean over the modalities of the adjusted Rand index with the previous epoch's clusters.

The pair and neighbourhood scores exist for every run, so only they compare an ITC run with a CPCL run.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cpcl.evaluation.metrics import retrieval_metrics

PAIR_SCORES = ("pair-mAP", "pair-R1", "pair-loss")
NEIGHBOURHOOD_SCORES = ("nbr-agree", "nbr-agree-kr", "nbr-pairs")
CLUSTER_SCORES = ("agreement", "stability")
SCORES = PAIR_SCORES + NEIGHBOURHOOD_SCORES + CLUSTER_SCORES
NEIGHBOURS = 10  # k of the neighbourhood scores
_ROWS = 4096  # query rows per similarity block: bounds the (rows, N) block at 10k held-out pairs


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


def neighbourhood_scores(text: torch.Tensor, image: torch.Tensor, caption_to_image: torch.Tensor,
                         k: int = NEIGHBOURS) -> dict[str, float]:
    """``text`` (N_cap, D) and ``image`` (N_img, D) unit features of held-out pairs, ``caption_to_image`` (N_cap,)
    -> ``nbr-agree``, ``nbr-agree-kr`` and ``nbr-pairs`` (×100; see the module). Empty where there are too few
    images for ``k`` neighbours besides the own one. No identity is read: only which caption belongs to which
    image."""
    num_images = image.shape[0]
    k = min(k, num_images - 1)
    own = caption_to_image.to(text.device)
    if k < 1:
        return {}
    image_knn = _top_k(image, image, k + 1)  # (N_img, k+1): itself first, as a rule (ties aside)
    caption_knn = _top_k(text, image, k)  # (N_cap, k)
    around_own = image_knn[own]  # (N_cap, k+1): the own image's neighbours, itself included
    agree = (caption_knn[:, :, None] == around_own[:, None, :k]).any(-1).float().mean(1)
    # k-reciprocal: j among i's k+1 nearest, and i among j's
    reciprocal = (image_knn[image_knn] == torch.arange(num_images, device=image.device)[:, None, None]).any(-1)
    mutual = reciprocal[own]  # (N_cap, k+1) over around_own
    held = (around_own[:, :, None] == caption_knn[:, None, :]).any(-1)  # (N_cap, k+1): in the caption's top-k
    agree_kr = (held & mutual).sum(1).float() / mutual.sum(1).clamp(min=1).float()
    # caption-caption neighbours (own image's captions left out) against image-image neighbours (own left out)
    k_text = min(k, text.shape[0] - int(torch.bincount(own).max()))
    scores = {"nbr-agree": 100 * float(agree.mean()), "nbr-agree-kr": 100 * float(agree_kr.mean())}
    if k_text >= 1:
        via_captions = own[_top_k(text, text, k_text, owner=own)]  # (N_cap, k_text)
        image_only = _drop_self(image_knn, k)[own]  # (N_cap, k)
        scores["nbr-pairs"] = 100 * float((via_captions[:, :, None] == image_only[:, None, :]).any(-1).float().mean())
    return scores


def _top_k(queries: torch.Tensor, keys: torch.Tensor, k: int, owner: torch.Tensor | None = None) -> torch.Tensor:
    """``(N_q, k)`` columns of ``keys`` nearest each query row (inner product), in blocks of rows; with ``owner``
    (queries and keys both captions, ``owner`` their images), keys of the query's own image are left out."""
    out = []
    for start in range(0, queries.shape[0], _ROWS):
        block = queries[start:start + _ROWS].float() @ keys.float().t()
        if owner is not None:
            block = block.masked_fill(owner[start:start + _ROWS, None] == owner[None, :], float("-inf"))
        out.append(block.topk(k, dim=1).indices)
    return torch.cat(out)


def _drop_self(knn: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's ``k`` neighbours other than the row itself, from ``k + 1`` that hold it (ties may put it later)."""
    rows = torch.arange(knn.shape[0], device=knn.device)[:, None]
    keep = knn != rows
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # the others first, in their order
    return torch.gather(knn, 1, order)[:, :k]


def cluster_scores(pseudo: dict[str, Any] | None) -> dict[str, float]:
    """The label-free signs of an epoch's pseudo labels (its ``metrics.jsonl`` ``pseudo`` entry), where they
    exist: ``agreement``, and ``stability`` from the second clustering on."""
    if not pseudo or "agreement" not in pseudo:
        return {}
    out = {"agreement": float(pseudo["agreement"])}
    if "image_stability" in pseudo:
        out["stability"] = (float(pseudo["image_stability"]) + float(pseudo["text_stability"])) / 2
    return out
