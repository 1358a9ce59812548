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

