"""Retrieval metrics as the text-to-person field defines them (pure functions on tensors).

For each query (a caption) the gallery (images) is ranked by similarity, highest first; a gallery item
is relevant when its person id equals the query's.

- Rank-k (CMC): percentage of queries with at least one relevant item in the top k.
- mAP: mean over queries of average precision over *all* relevant items.
- mINP: mean over queries of (number of relevant items) / (1-based rank of the last relevant item).
- rSum: Rank-1 + Rank-5 + Rank-10.

Nothing sorts a gallery: the rank of each relevant item is counted (see :func:`relevant_ranks`), for a chunk
of queries at a time, on the similarity matrix's device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class RetrievalMetrics:
    """All values in percent."""

    rank1: float
    rank5: float
    rank10: float
    mAP: float  # noqa: N815 - the field's name
    mINP: float  # noqa: N815
    rSum: float  # noqa: N815
    num_queries: int
    num_gallery: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _as_tensor(x, dtype=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(dtype) if dtype is not None else t


def retrieval_metrics(similarity, query_ids, gallery_ids, chunk_size: int = 256) -> RetrievalMetrics:
    """Rank-1/5/10, mAP, mINP and rSum for a ``(Q, G)`` similarity matrix, on the matrix's device.

    ``query_ids`` (Q,) and ``gallery_ids`` (G,) are person ids. Every query must have at least one
    relevant gallery item (a ValueError says how many do not). Ties keep gallery order: an item ranks
    after every item with a higher score and after the items with the same score and a lower index.

    Nothing is sorted but the handful of relevant items of each query: the rank of a relevant item is the
    number of gallery items ahead of it, counted for a chunk of queries at a time (``O(Q G log R)`` time,
    ``O(chunk G)`` memory above the matrix, R = the most relevant items of a query).
    """
    sim = _as_tensor(similarity)
    q_ids = _as_tensor(query_ids, torch.long).to(sim.device)
    g_ids = _as_tensor(gallery_ids, torch.long).to(sim.device)
    if sim.ndim != 2 or sim.shape != (q_ids.numel(), g_ids.numel()):
        raise ValueError(f"similarity has shape {tuple(sim.shape)}, expected ({q_ids.numel()}, {g_ids.numel()})")
    num_q, num_g = sim.shape
    if num_q == 0 or num_g == 0:
        raise ValueError("empty query or gallery set")
    members, unique_ids = _members_by_id(g_ids)  # (U, R) gallery indices of each id, padded with num_g
    slot = torch.searchsorted(unique_ids, q_ids).clamp(max=len(unique_ids) - 1)
    no_relevant = int((unique_ids[slot] != q_ids).sum())
    if no_relevant:
        raise ValueError(f"{no_relevant} of {num_q} queries have no relevant gallery item; "
                         "remove them or add their images to the gallery")
    hits_at = torch.zeros(3, dtype=torch.float64)
    ap_sum = inp_sum = 0.0
    ks = torch.tensor([1, 5, 10], device=sim.device)
    for start in range(0, num_q, chunk_size):
        ranks = relevant_ranks(sim[start:start + chunk_size].float(), members[slot[start:start + chunk_size]])
        ranks = torch.sort(ranks, dim=1).values  # (q, R) 0-based ranks, padding (num_g) last
        valid = ranks < num_g
        num_rel = valid.sum(dim=1)
        hits_at += (ranks[:, :1] < ks[None, :]).sum(dim=0).double().cpu()
        position = torch.arange(1, ranks.shape[1] + 1, device=sim.device, dtype=torch.float64)
        precision = torch.where(valid, position / (ranks.double() + 1), 0.0)
        ap_sum += float((precision.sum(dim=1) / num_rel).sum())
        last = ranks.gather(1, (num_rel - 1)[:, None]).squeeze(1)
        inp_sum += float((num_rel.double() / (last.double() + 1)).sum())
    r1, r5, r10 = (100.0 * hits_at / num_q).tolist()
    return RetrievalMetrics(rank1=r1, rank5=r5, rank10=r10, mAP=100.0 * ap_sum / num_q,
                            mINP=100.0 * inp_sum / num_q, rSum=r1 + r5 + r10, num_queries=num_q,
                            num_gallery=num_g)


def _members_by_id(gallery_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(members, unique_ids)``: row u of ``members`` holds the gallery indices of ``unique_ids[u]`` in
    increasing order, padded with ``G`` to the size of the largest identity."""
    num_g = gallery_ids.numel()
    unique_ids, inverse, counts = torch.unique(gallery_ids, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)  # gallery indices grouped by identity, increasing within
    starts = torch.cumsum(counts, 0) - counts
    column = torch.arange(num_g, device=gallery_ids.device) - starts[inverse[order]]
    members = torch.full((len(unique_ids), int(counts.max())), num_g, dtype=torch.long, device=gallery_ids.device)
    members[inverse[order], column] = order
    return members, unique_ids


def relevant_ranks(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """0-based ranks of the relevant items in each row of ``scores`` (q, G), ties broken by gallery index.

    ``relevant`` (q, R) holds the relevant gallery indices of each row, padded with ``G``; padded entries
    come back as ``G``. Rank = #(items with a higher score) + #(items with the same score, lower index).
    """
    num_q, num_g = scores.shape
    pad = relevant >= num_g
    rel_scores = scores.gather(1, relevant.clamp(max=num_g - 1)).masked_fill(pad, float("inf"))
    rel_scores, order = torch.sort(rel_scores, dim=1, stable=True)  # ascending; padding (inf) last
    rel_index = relevant.gather(1, order)
    below = torch.searchsorted(rel_scores, scores, side="left")  # (q, G): relevant scores below each item
    # items with a higher score than the k-th relevant (ascending) are those with more than k below them
    at_most = torch.zeros(num_q, rel_scores.shape[1] + 1, dtype=torch.long, device=scores.device)
    at_most.scatter_add_(1, below, torch.ones_like(below)).cumsum_(1)
    ranks = num_g - at_most[:, :-1]
    # equal scores: an item of the same score ranks ahead when its index is lower
    not_above = torch.searchsorted(rel_scores, scores, side="right")
    rows, items = torch.nonzero(not_above > below, as_tuple=True)
    if rows.numel():
        lo, hi = below[rows, items], not_above[rows, items]
        repeat = hi - lo
        rows_k, items_k = rows.repeat_interleave(repeat), items.repeat_interleave(repeat)
        offsets = torch.arange(int(repeat.sum()), device=scores.device) - torch.repeat_interleave(
            torch.cumsum(repeat, 0) - repeat, repeat)
        k = lo.repeat_interleave(repeat) + offsets
        ahead = items_k < rel_index[rows_k, k]
        ranks.index_put_((rows_k[ahead], k[ahead]), torch.ones_like(k[ahead]), accumulate=True)
    ranks = ranks.masked_fill(rel_index >= num_g, num_g)
    return ranks


def chance_metrics(query_ids, gallery_ids, seed: int = 0) -> RetrievalMetrics:
    """The metrics of a random ranking (one seeded draw): the floor any model is compared against."""
    q = _as_tensor(query_ids, torch.long)
    g = _as_tensor(gallery_ids, torch.long)
    gen = torch.Generator().manual_seed(seed)
    return retrieval_metrics(torch.rand(q.numel(), g.numel(), generator=gen), q, g)
