"""Pseudo identities: DBSCAN on a sparse precomputed distance graph."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from cpcl.clustering.distances import (
    DegenerateNeighbourhoods,
    cosine_distance_graph,
    jaccard_distance,
    knn_inner_product,
)
from cpcl.registry import Registry
from cpcl.threads import library_threads
from cpcl.timing import phase

log = logging.getLogger(__name__)

LABELS_DIR = "pseudo_labels"  # RUN_DIR/pseudo_labels/epoch_NNN.npz: the labels each epoch trained on

# cluster.distance -> (features, k1, k2, eps, k-NN table or None) -> sparse distances of every pair closer than
# (just above) eps
# (and the k-NN convention of the k-reciprocal sets, which the cosine graph does not use)
Distance = Callable[..., sp.csr_matrix]
DISTANCES: Registry[Distance] = Registry("clustering distance")
DISTANCES.register("jaccard", lambda x, k1, k2, eps, knn=None, knn_convention="zhong": jaccard_distance(
    x, k1=k1, k2=k2, max_distance=min(1.0, eps + 1e-6), knn=knn, knn_convention=knn_convention))
DISTANCES.register("cosine", lambda x, k1, k2, eps, knn=None, knn_convention="zhong": cosine_distance_graph(
    x, k=k1, max_distance=min(2.0, eps + 1e-6), knn=knn))


@dataclass(frozen=True)
class ClusterResult:
    labels: np.ndarray  # (N,) int64, -1 = outlier, clusters numbered 0..C-1
    num_clusters: int
    outlier_fraction: float
    largest_fraction: float  # share of all samples in the largest cluster
    skipped: str | None = None  # why the clustering was not run (every sample is then an outlier)
    seconds: dict[str, float] = field(default_factory=dict)  # per phase

    def degenerate(self, max_cluster_fraction: float) -> str | None:
        """Why this clustering cannot train prototypes, or None when it can."""
        if self.skipped:
            return self.skipped
        if self.num_clusters == 0:
            return "no cluster at all (every sample is an outlier)"
        if self.num_clusters == 1 or self.largest_fraction > max_cluster_fraction:
            return f"one giant cluster holds {100 * self.largest_fraction:.0f}% of the samples"
        return None


def distance_graph(features: np.ndarray, distance: str, k1: int, k2: int, eps: float,
                   knn: np.ndarray | None = None, knn_convention: str = "zhong") -> sp.csr_matrix:
    """Sparse distances of every pair closer than (just above) ``eps``; what DBSCAN needs, nothing more."""
    return DISTANCES.get(distance)(features, k1, k2, eps, knn, knn_convention)


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
                     eps: float = 0.6, min_samples: int = 4, device=None, name: str = "",
                     knn_convention: str = "zhong", threads: int | None = None) -> ClusterResult:
    """Cluster L2-normalised ``features`` (N, D) into pseudo identities (-1 = outlier).

    The k-NN runs on ``device`` when it is a CUDA device (faiss otherwise); PyTorch, numba and faiss with
    ``threads`` threads (default: the process's PyTorch thread count; :func:`cpcl.threads.library_threads`).
    Each phase is logged with its seconds (``name`` prefixes the lines). A hub-dominated neighbour graph
    (collapsed or badly initialised features) is not clustered: every sample comes back an outlier, with
    ``skipped`` saying what was seen.
    """
    n = len(features)
    seconds: dict[str, float] = {}
    prefix = f"{name} " if name else ""
    with library_threads(threads):
        with phase(log, f"{prefix}k-NN ({n} samples)", seconds):
            knn = knn_inner_product(features, max(min(k1, max(n - 1, 0)) + 1, k2), device) if n > 1 else None
        try:
            with phase(log, f"{prefix}{distance} distances", seconds):
                graph = distance_graph(features, distance, k1, k2, eps, knn, knn_convention)
        except DegenerateNeighbourhoods as exc:
            return replace(summarise(np.full(n, -1, dtype=np.int64)), skipped=str(exc), seconds=seconds)
        with phase(log, f"{prefix}DBSCAN", seconds):
            labels = dbscan_labels(graph, eps, min_samples)
    return replace(summarise(labels), seconds=seconds)
