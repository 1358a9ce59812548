"""Retrieval metrics as the text-to-person field defines them (pure functions on tensors).

For each query (a caption) the gallery (images) is ranked by similarity, highest first; a gallery item
is relevant when its person id equals the query's.

- Rank-k (CMC): percentage of queries with at least one relevant item in the top k.
- mAP: mean over queries of average precision over *all* relevant items.
- mINP: mean over queries of (number of relevant items) / (1-based rank of the last relevant item).
- rSum: Rank-1 + Rank-5 + Rank-10.

Queries are processed in chunks so that a 20k x 20k evaluation never holds the full argsort.
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


def retrieval_metrics(similarity, query_ids, gallery_ids, chunk_size: int = 512) -> RetrievalMetrics:
    """Rank-1/5/10, mAP, mINP and rSum for a ``(Q, G)`` similarity matrix.

    ``query_ids`` (Q,) and ``gallery_ids`` (G,) are person ids. Every query must have at least one
    relevant gallery item (a ValueError says how many do not). Ties keep gallery order.
    """
    sim = _as_tensor(similarity)
    q_ids = _as_tensor(query_ids, torch.long).to(sim.device)
    g_ids = _as_tensor(gallery_ids, torch.long).to(sim.device)
    if sim.ndim != 2 or sim.shape != (q_ids.numel(), g_ids.numel()):
        raise ValueError(f"similarity has shape {tuple(sim.shape)}, expected ({q_ids.numel()}, {g_ids.numel()})")
    num_q, num_g = sim.shape
    if num_q == 0 or num_g == 0:
        raise ValueError("empty query or gallery set")
    hits_at = torch.zeros(3, dtype=torch.float64)
    ap_sum = 0.0
    inp_sum = 0.0
    no_relevant = 0
    ks = torch.tensor([1, 5, 10], device=sim.device)
    positions = torch.arange(1, num_g + 1, device=sim.device, dtype=torch.float64)
    for start in range(0, num_q, chunk_size):
        block = sim[start:start + chunk_size].float()
        order = torch.argsort(block, dim=1, descending=True, stable=True)
        matches = g_ids[order] == q_ids[start:start + chunk_size, None]  # (q, G) bool, ranked
        num_rel = matches.sum(dim=1)
        no_relevant += int((num_rel == 0).sum())
        if no_relevant:
            continue
        first_hit = matches.float().argmax(dim=1)  # 0-based rank of the first relevant item
        hits_at += (first_hit[:, None] < ks[None, :]).sum(dim=0).double().cpu()
        cum = matches.cumsum(dim=1, dtype=torch.float64)
        precision_at_hits = (cum / positions) * matches
        ap_sum += float((precision_at_hits.sum(dim=1) / num_rel).sum())
        last_hit = num_g - 1 - matches.flip(dims=[1]).float().argmax(dim=1)
        inp_sum += float((num_rel.double() / (last_hit.double() + 1)).sum())
    if no_relevant:
        raise ValueError(f"{no_relevant} of {num_q} queries have no relevant gallery item; "
                         "remove them or add their images to the gallery")
    r1, r5, r10 = (100.0 * hits_at / num_q).tolist()
    return RetrievalMetrics(rank1=r1, rank5=r5, rank10=r10, mAP=100.0 * ap_sum / num_q,
                            mINP=100.0 * inp_sum / num_q, rSum=r1 + r5 + r10, num_queries=num_q,
                            num_gallery=num_g)


def chance_metrics(query_ids, gallery_ids, seed: int = 0) -> RetrievalMetrics:
    """The metrics of a random ranking (one seeded draw): the floor any model is compared against."""
    q = _as_tensor(query_ids, torch.long)
    g = _as_tensor(gallery_ids, torch.long)
    gen = torch.Generator().manual_seed(seed)
    return retrieval_metrics(torch.rand(q.numel(), g.numel(), generator=gen), q, g)
