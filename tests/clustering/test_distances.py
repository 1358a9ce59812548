import numpy as np
import pytest

from cpcl.clustering.distances import (
    cosine_distance_graph,
    dense_jaccard_reference,
    jaccard_distance,
    knn_inner_product,
)


def _blobs(n=150, centres=12, dim=16, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    x = c[rng.integers(0, centres, n)] + noise * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _dense(sparse, fill=1.0):
    out = np.full(sparse.shape, fill)
    coo = sparse.tocoo()
    out[coo.row, coo.col] = coo.data
    return out


@pytest.mark.parametrize("k1, k2", [(10, 3), (6, 1), (20, 6), (30, 6)])
def test_sparse_jaccard_equals_the_published_dense_algorithm(k1, k2):
    x = _blobs()
    got = _dense(jaccard_distance(x, k1, k2))
    want = dense_jaccard_reference(x, k1, k2)
    assert np.abs(got - want).max() < 1e-6


def test_max_distance_keeps_exactly_the_close_pairs():
    x = _blobs(n=200, centres=20)
    full = jaccard_distance(x, 20, 6)
    cut = jaccard_distance(x, 20, 6, max_distance=0.7)
    want = _dense(full) < 0.7
    assert np.array_equal(_dense(cut) < 0.7, want)
    assert cut.nnz == want.sum()
    assert np.allclose(cut.diagonal(), 0.0)


def test_jaccard_is_symmetric_and_sparse():
    x = _blobs(n=400, centres=40)
    d = jaccard_distance(x, 10, 3)
    assert abs(d - d.T).max() < 1e-9
    assert d.nnz < 400 * 400 / 4


def test_knn_is_exact():
    x = _blobs(n=80)
    idx = knn_inner_product(x, 5)
    brute = np.argsort(-(x @ x.T), axis=1, kind="stable")[:, :5]
    sims = x @ x.T
    assert np.allclose(np.take_along_axis(sims, idx, 1), np.take_along_axis(sims, brute, 1), atol=1e-6)


def test_cosine_graph():
    x = _blobs(n=60)
    d = cosine_distance_graph(x, k=5)
    coo = d.tocoo()
    assert np.allclose(coo.data, np.clip(1 - (x[coo.row] * x[coo.col]).sum(1), 0, None), atol=1e-6)
    assert abs(d - d.T).max() < 1e-6



def test_the_torch_knn_equals_faiss():
    """The CUDA path (chunked products and top-k) is the same search; run here on the CPU, in small chunks."""
    from cpcl.clustering.distances import knn_inner_product, knn_torch

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_array_equal(knn_torch(x, 7, "cpu", chunk_bytes=4 * 300 * 37), knn_inner_product(x, 7))


def test_a_hub_dominated_graph_is_refused_before_the_expensive_step():
    """Nearly collinear features (a collapsed or random-init model): refused in well under a second, where
    the sum of minima would compare most of the N^2 pairs; spread features pass."""
    import time

    from cpcl.clustering.distances import DegenerateNeighbourhoods
    from cpcl.clustering.pseudo_labels import cluster_features

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(600, 64))
    x = (centres[rng.integers(0, 600, 2000)] + 0.6 * rng.normal(size=(2000, 64))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    collapsed = (x[:1] + 0.02 * x).astype(np.float32)
    collapsed /= np.linalg.norm(collapsed, axis=1, keepdims=True)
    jaccard_distance(x, k1=30, k2=6, max_distance=0.6)  # spread: fine
    t0 = time.perf_counter()
    with pytest.raises(DegenerateNeighbourhoods, match="hub-dominated neighbour graph: .* share one neighbour"):
        jaccard_distance(collapsed, k1=30, k2=6, max_distance=0.6)
    result = cluster_features(collapsed, k1=30, k2=6, eps=0.6)
    assert time.perf_counter() - t0 < 5
    assert result.skipped and result.num_clusters == 0 and result.degenerate(0.5) == result.skipped


@pytest.mark.parametrize("k1, k2", [(10, 3), (20, 6), (30, 6)])
def test_the_field_convention_equals_cluster_contrasts_algorithm(k1, k2):
    """`knn_convention: field` against a transcription of cluster-contrast's compute_jaccard_distance (a
    k1-wide rank table, the point included), and different from Zhong et al.'s convention."""
    x = _blobs()
    field = _dense(jaccard_distance(x, k1, k2, knn_convention="field"))
    assert np.abs(field - dense_jaccard_reference(x, k1, k2, knn_convention="field")).max() < 1e-6
    assert np.abs(field - _dense(jaccard_distance(x, k1, k2))).max() > 1e-3
    with pytest.raises(ValueError, match="unknown knn_convention 'other'"):
        jaccard_distance(x, k1, k2, knn_convention="other")
