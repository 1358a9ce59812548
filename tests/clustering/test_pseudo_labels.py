import numpy as np

from cpcl.clustering.pseudo_labels import (
    cluster_features,
    dbscan_labels,
    relabel,
    summarise,
)


def test_separated_groups_cluster_and_a_far_point_is_an_outlier():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:4]
    x = np.concatenate([c + 0.02 * rng.normal(size=(6, 8)) for c in centres] + [np.eye(8)[7:8]])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for distance, eps in (("jaccard", 0.6), ("cosine", 0.2)):
        res = cluster_features(x, distance=distance, k1=5, k2=2, eps=eps, min_samples=3)
        assert res.num_clusters == 4, distance
        assert res.labels[-1] == -1
        groups = res.labels[:-1].reshape(4, 6)
        assert all(len(set(g)) == 1 for g in groups) and len({g[0] for g in groups}) == 4


def test_dbscan_on_a_hand_made_sparse_graph():
    import scipy.sparse as sp

    # 0-1-2 chained within eps; 3 alone; min_samples 2 (a point counts itself)
    rows, cols, vals = [0, 1, 1, 2], [1, 0, 2, 1], [0.1, 0.1, 0.2, 0.2]
    g = sp.csr_matrix((vals, (rows, cols)), shape=(4, 4))
    assert dbscan_labels(g, eps=0.3, min_samples=2).tolist() == [0, 0, 0, -1]


def test_relabel_and_summary():
    assert relabel(np.array([7, -1, 3, 7, 3])).tolist() == [0, -1, 1, 0, 1]
    s = summarise(np.array([0, 0, 0, 1, -1]))
    assert (s.num_clusters, s.outlier_fraction, s.largest_fraction) == (2, 0.2, 0.6)
    assert s.degenerate(0.5) and not s.degenerate(0.7)
    assert "no cluster" in summarise(np.array([-1, -1])).degenerate(0.5)
