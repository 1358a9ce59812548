"""Pseudo identities: DBSCAN on a sparse precomputed distance graph, plus their quality diagnostics."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from cpcl.clustering.distances import cosine_distance_graph, jaccard_distance

log = logging.getLogger(__name__)

DISTANCES = ("jaccard", "cosine")


@dataclass(frozen=True)
class ClusterResult:
    labels: np.ndarray  # (N,) int64, -1 = outlier, clusters numbered 0..C-1
    num_clusters: int
    outlier_fraction: float
    largest_fraction: float  # share of all samples in the largest cluster

    def degenerate(self, max_cluster_fraction: float) -> str | None:
        """Why this clustering cannot train prototypes, or None when it can."""
        if self.num_clusters == 0:
            return "no cluster at all (every sample is an outlier)"
        if self.num_clusters == 1 or self.largest_fraction > max_cluster_fraction:
            return f"one giant cluster holds {100 * self.largest_fraction:.0f}% of the samples"
        return None


def distance_graph(features: np.ndarray, distance: str, k1: int, k2: int, eps: float) -> sp.csr_matrix:
    """Sparse distances of every pair closer than (just above) ``eps``; what DBSCAN needs, nothing more."""
    if distance == "jaccard":
        return jaccard_distance(features, k1=k1, k2=k2, max_distance=min(1.0, eps + 1e-6))
    if distance == "cosine":
        return cosine_distance_graph(features, k=k1, max_distance=min(2.0, eps + 1e-6))
    raise ValueError(f"unknown clustering distance {distance!r}; choose one of {', '.join(DISTANCES)}")


def dbscan_labels(graph: sp.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    from sklearn.cluster import DBSCAN

    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(graph)
    return relabel(labels)


def relabel(labels: np.ndarray) -> np.ndarray:
    """Number clusters 0..C-1 in order of first appearance; keep -1 for outliers."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full_like(labels, -1)
    valid = labels >= 0
    if valid.any():
        _, first, inverse = np.unique(labels[valid], return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first))
        out[valid] = rank[inverse]
    return out


def summarise(labels: np.ndarray) -> ClusterResult:
    n = max(1, labels.size)
    valid = labels[labels >= 0]
    sizes = np.bincount(valid) if valid.size else np.zeros(0, np.int64)
    return ClusterResult(labels=labels, num_clusters=int(sizes.size), outlier_fraction=float((labels < 0).mean())
                         if labels.size else 0.0, largest_fraction=float(sizes.max() / n) if sizes.size else 0.0)


def cluster_features(features: np.ndarray, distance: str = "jaccard", k1: int = 30, k2: int = 6,
                     eps: float = 0.6, min_samples: int = 4) -> ClusterResult:
    """Cluster L2-normalised ``features`` (N, D) into pseudo identities (-1 = outlier)."""
    graph = distance_graph(features, distance, k1, k2, eps)
    return summarise(dbscan_labels(graph, eps, min_samples))


def pseudo_label_quality(pseudo: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """How well pseudo labels match hidden identities — for *reporting* only, never for training.

    NMI and ARI treat each outlier as its own singleton cluster; pairwise precision/recall count pairs of
    clustered samples that share a pseudo label / an identity.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    pseudo = np.asarray(pseudo, dtype=np.int64)
    truth = np.asarray(truth, dtype=np.int64)
    singletons = pseudo.copy()
    out_idx = np.where(pseudo < 0)[0]
    singletons[out_idx] = pseudo.max(initial=-1) + 1 + np.arange(out_idx.size)
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
