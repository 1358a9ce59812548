"""k-reciprocal Jaccard distance (Zhong et al., CVPR 2017), sparse.

The published implementation (and every cluster-contrast descendant) holds several dense ``N x N``
matrices: about 18.6 GB each for the 68k CUHK-PEDES captions. Here every step is a sparse matrix with
``O(N * k1)`` (after query expansion ``O(N * k1 * k2)``) non-zeros:

1. exact k-NN by inner product (faiss ``IndexFlatIP``), ``k1 + 1`` neighbours including the point itself;
2. k-reciprocal sets ``R(i)`` (``j`` in the top ``k1 + 1`` of ``i`` and ``i`` in the top ``k1 + 1`` of ``j``)
   and the half sets ``H(c)`` with ``round(k1 / 2)``;
3. expansion: ``R*(i) = R(i) ∪ H(c)`` for every ``c ∈ R(i)`` with ``|H(c) ∩ R(i)| > 2/3 |H(c)|``;
4. ``V[i, j] = softmax_j(-d(i, j))`` over ``j ∈ R*(i)``, with ``d = 2 - 2 cos``;
5. query expansion: ``V[i] = mean(V[top k2 of i])``;
6. Jaccard: ``d_J(i, j) = 1 - s / (2 - s)`` with ``s = Σ_k min(V[i, k], V[j, k])``; pairs that share no
   column have distance 1 and are not stored.

The result is the same as the dense algorithm (tested against a direct transcription of it).
"""

from __future__ import annotations

import logging

import numba
import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)


class DegenerateNeighbourhoods(RuntimeError):
    """The neighbour graph is dominated by hubs (collapsed or badly initialised features): the Jaccard step
    would compare a large share of all N^2 pairs. The message says what was seen."""


def knn_inner_product(features: np.ndarray, k: int, device=None) -> np.ndarray:
    """Indices ``(N, k)`` of the ``k`` most similar rows (by inner product) of each row, best first.

    Exact search: on a CUDA ``device`` as chunked matrix products and top-k (:func:`knn_torch`), otherwise
    with faiss (flat index, BLAS; faster than PyTorch on a CPU). O(N^2 D) time, O(N k) memory. The point
    itself is normally first (its own similarity is the largest for unit vectors).
    """
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        return knn_torch(features, k, device)
    import faiss

    x = np.ascontiguousarray(features, dtype=np.float32)
    k = min(k, x.shape[0])
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index.search(x, k)[1].astype(np.int64)


def knn_torch(features: np.ndarray, k: int, device, chunk_bytes: int = 1 << 30) -> np.ndarray:
    """:func:`knn_inner_product` with PyTorch on ``device``: rows in chunks whose similarity block stays
    under ``chunk_bytes``."""
    import torch

    x = torch.as_tensor(np.ascontiguousarray(features, dtype=np.float32)).to(device)
    n = x.shape[0]
    k = min(k, n)
    rows = max(1, chunk_bytes // (4 * max(1, n)))
    out = torch.empty(n, k, dtype=torch.long, device=device)
    for start in range(0, n, rows):
        out[start:start + rows] = (x[start:start + rows] @ x.t()).topk(k, dim=1).indices
    return out.cpu().numpy()


def _rows_to_csr(rows: np.ndarray, n: int, values: np.ndarray | None = None) -> sp.csr_matrix:
    """A CSR matrix with ``rows[i]`` as the column indices of row ``i``."""
    m = rows.shape[1]
    data = np.ones(rows.size, np.float64) if values is None else values.ravel()
    indptr = np.arange(0, rows.size + 1, m)
    mat = sp.csr_matrix((data, rows.ravel(), indptr), shape=(n, n))
    mat.sum_duplicates()
    return mat


def _reciprocal(knn: np.ndarray, k: int) -> sp.csr_matrix:
    """Boolean k-reciprocal adjacency from the first ``k + 1`` neighbours of each point."""
    n = knn.shape[0]
    a = _rows_to_csr(knn[:, : k + 1], n)
    r = a.multiply(a.T).tocsr()
    r.data[:] = 1.0
    return r


@numba.njit(parallel=True, cache=True)
def _row_dots(features, indptr, indices, out):  # pragma: no cover - compiled
    n = indptr.shape[0] - 1
    for i in numba.prange(n):
        fi = features[i]
        for p in range(indptr[i], indptr[i + 1]):
            fj = features[indices[p]]
            acc = 0.0
            for d in range(fi.shape[0]):
                acc += fi[d] * fj[d]
            out[p] = acc


def _pairwise_cosine(features: np.ndarray, pattern: sp.csr_matrix) -> np.ndarray:
    """Inner product of every stored ``(i, j)`` of ``pattern`` in its CSR order, without gathering rows."""
    out = np.empty(pattern.indices.size, np.float32)
    _row_dots(features, pattern.indptr.astype(np.int64), pattern.indices.astype(np.int64), out)
    return out


@numba.njit(cache=True, nogil=True)
def _min_product_rows(start, stop, indptr, indices, data, cindptr, cindices, cdata, s_min, fill, row_ptr,
                      out_idx, out_val, counts):  # pragma: no cover - compiled
    n = cindptr.shape[0] - 1
    acc = np.zeros(n)
    seen = np.zeros(n, np.bool_)
    touched = np.empty(n, np.int64)
    for i in range(start, stop):
        nt = 0
        for p in range(indptr[i], indptr[i + 1]):
            k = indices[p]
            a = data[p]
            for q in range(cindptr[k], cindptr[k + 1]):
                j = cindices[q]
                if not seen[j]:
                    seen[j] = True
                    touched[nt] = j
                    nt += 1
                b = cdata[q]
                acc[j] += a if a < b else b
        c = 0
        for t in range(nt):
            j = touched[t]
            if acc[j] > s_min:
                if fill:
                    out_idx[row_ptr[i] + c] = j
                    out_val[row_ptr[i] + c] = acc[j]
                c += 1
            acc[j] = 0.0
            seen[j] = False
        counts[i] = c


@numba.njit(parallel=True, cache=True)
def _min_product(indptr, indices, data, cindptr, cindices, cdata, s_min, fill, row_ptr, out_idx, out_val,
                 counts):  # pragma: no cover - compiled
    n = indptr.shape[0] - 1
    chunks = 64
    for c in numba.prange(chunks):
        _min_product_rows(c * n // chunks, (c + 1) * n // chunks, indptr, indices, data, cindptr, cindices,
                          cdata, s_min, fill, row_ptr, out_idx, out_val, counts)


def _sum_of_minima(v: sp.csr_matrix, s_min: float = 0.0) -> sp.csr_matrix:
    """``S[i, j] = Σ_k min(V[i, k], V[j, k])`` for every pair with ``S > s_min`` (sparse, symmetric).

    A Gustavson-style sparse product with ``min`` in place of ``*``, compiled with numba: one pass counts
    each row's entries, the second fills them, so memory is the output itself.
    """
    n = v.shape[0]
    vc = v.tocsc()
    args = (v.indptr.astype(np.int64), v.indices.astype(np.int64), v.data.astype(np.float64),
            vc.indptr.astype(np.int64), vc.indices.astype(np.int64), vc.data.astype(np.float64), float(s_min))
    counts = np.zeros(n, np.int64)
    empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float64)
    _min_product(*args, False, counts, empty_i, empty_f, counts)
    row_ptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=row_ptr[1:])
    out_idx = np.empty(row_ptr[-1], np.int64)
    out_val = np.empty(row_ptr[-1], np.float64)
    _min_product(*args, True, row_ptr, out_idx, out_val, np.zeros(n, np.int64))
    out = sp.csr_matrix((out_val, out_idx, row_ptr), shape=(n, n))
    out.sort_indices()
    return out


KNN_CONVENTIONS = ("zhong", "field")


def jaccard_distance(features: np.ndarray, k1: int = 30, k2: int = 6, max_distance: float = 1.0,
                     knn: np.ndarray | None = None, max_hub_ratio: float = 4.0,
                     max_pair_work: float = 5e9, knn_convention: str = "zhong") -> sp.csr_matrix:
    """Sparse k-reciprocal Jaccard distances of L2-normalised ``features`` (N, D).

    Returns a CSR ``(N, N)`` matrix holding ``d_J(i, j)`` for every pair with ``d_J < max_distance`` (the
    diagonal, distance 0, is stored explicitly). Unstored pairs have distance >= ``max_distance``.
    Memory is ``O(N * k1 * k2)`` on a healthy neighbour graph.

    ``knn_convention``: ``zhong`` builds the k-reciprocal sets from the point and its k1 nearest others, as
    Zhong et al.'s ``re_ranking`` does; ``field`` from a neighbour table k1 wide that includes the point
    (k1 - 1 others), as cluster-contrast's ``compute_jaccard_distance`` does (it searches k1 neighbours and
    slices k1 + 1 columns of them), and with it the weakly supervised text-to-person code that copies it.
    Given the same table the two are the same algorithm; their own tables differ by one neighbour.

    Before the one step whose cost can grow to N^2 (the sum of minima over shared neighbours), its work is
    counted — ``Σ_k c_k²`` pair updates for c_k samples sharing neighbour k — and a graph dominated by hubs
    raises :class:`DegenerateNeighbourhoods` instead: when one neighbour is shared by more than half of the
    samples (and by more than 20 k1: no k1-neighbourhood reaches that far; nearly collinear features give
    80 %), when the work is ``max_hub_ratio`` times what the same number of neighbour entries spread evenly
    would cost (1.0-1.6 on trained and on random small-model features; 4-20 on collapsed ones), or when it
    is above ``max_pair_work`` pair updates.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    if n == 0:
        return sp.csr_matrix((0, 0))
    k1 = min(k1, n - 1) if n > 1 else 0
    if knn is None:
        knn = knn_inner_product(x, max(k1 + 1, k2))
    if knn_convention == "field":  # the table is k1 wide, the point included
        knn = knn[:, :max(k1, 1)]
    elif knn_convention != "zhong":
        raise ValueError(f"unknown knn_convention {knn_convention!r}; choose one of {', '.join(KNN_CONVENTIONS)}")
    r = _reciprocal(knn, k1)
    half = _reciprocal(knn, int(np.around(k1 / 2)))
    # |H(c) ∩ R(i)| for every c in R(i)
    overlap = r.multiply(r @ half.T).tocsr()
    half_size = np.asarray(half.sum(axis=1)).ravel()
    coo = overlap.tocoo()
    keep = coo.data > (2.0 / 3.0) * half_size[coo.col]
    chosen = sp.csr_matrix((np.ones(int(keep.sum())), (coo.row[keep], coo.col[keep])), shape=(n, n))
    expanded = (r + chosen @ half).tocsr()
    expanded.data[:] = 1.0
    expanded.sort_indices()
    # V: softmax of -(2 - 2 cos) over each expanded set
    cos = _pairwise_cosine(x, expanded)
    logits = -(2.0 - 2.0 * cos.astype(np.float64))
    rows = np.repeat(np.arange(n), np.diff(expanded.indptr))
    row_max = np.full(n, -np.inf)
    np.maximum.at(row_max, rows, logits)
    w = np.exp(logits - row_max[rows])
    w /= np.bincount(rows, weights=w, minlength=n)[rows]
    v = sp.csr_matrix((w, expanded.indices.copy(), expanded.indptr.copy()), shape=(n, n))
    if k2 > 1:
        q = _rows_to_csr(knn[:, :k2], n, np.full(n * min(k2, knn.shape[1]), 1.0 / min(k2, knn.shape[1])))
        v = (q @ v).tocsr()
    _check_hubs(v, k1, max_hub_ratio, max_pair_work)
    # d_J < max_distance  <=>  s > 2 (1 - max_distance) / (2 - max_distance)
    s = _sum_of_minima(v, s_min=2.0 * (1.0 - max_distance) / (2.0 - max_distance))
    s.data = np.clip(1.0 - s.data / (2.0 - s.data), 0.0, None)
    s.setdiag(0.0)
    s = s.tocsr()
    s.sort_indices()
    return s


def _check_hubs(v: sp.csr_matrix, k1: int, max_hub_ratio: float, max_pair_work: float) -> None:
    """Refuse a neighbour graph whose sum of minima would touch a large share of all pairs (see
    :func:`jaccard_distance`)."""
    n = v.shape[0]
    if n == 0 or v.nnz == 0:
        return
    shared = np.bincount(v.indices, minlength=n).astype(np.float64)  # samples that share neighbour k
    work = float((shared**2).sum())
    ratio = n * work / float(v.nnz) ** 2
    hub = shared.max() > max(0.5 * n, 20 * k1)  # one neighbour of most samples: far beyond any k1-neighbourhood
    if hub or ratio > max_hub_ratio or work > max_pair_work:
        raise DegenerateNeighbourhoods(
            f"hub-dominated neighbour graph: {int(shared.max())} of {n} samples share one neighbour, and the "
            f"Jaccard step would compare {work:.2g} pairs ({ratio:.1f}x an even spread of the same neighbour "
            "sets) — collapsed or badly initialised features")


def _filter(mat: sp.csr_matrix, mask: np.ndarray) -> sp.csr_matrix:
    coo = mat.tocoo()
    return sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=mat.shape)


def cosine_distance_graph(features: np.ndarray, k: int = 30, max_distance: float = 1.0,
                          knn: np.ndarray | None = None) -> sp.csr_matrix:
    """Sparse ``1 - cos`` to each point's ``k`` nearest neighbours (symmetrised), below ``max_distance``."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    knn = knn_inner_product(x, min(k + 1, n)) if knn is None else knn[:, :min(k + 1, n)]
    pattern = _rows_to_csr(knn, n)
    pattern = (pattern + pattern.T).tocsr()
    pattern.data[:] = 1.0
    pattern.sort_indices()
    d = 1.0 - _pairwise_cosine(x, pattern).astype(np.float64)
    d[d < 0] = 0.0
    mat = sp.csr_matrix((d, pattern.indices.copy(), pattern.indptr.copy()), shape=(n, n))
    mat.setdiag(0.0)
    mat = mat.tocsr()
    if max_distance < 1.0:
        mat = _filter(mat, mat.data < max_distance)
    mat.sort_indices()
    return mat


def dense_jaccard_reference(features: np.ndarray, k1: int = 30, k2: int = 6,
                            dtype: type = np.float64, knn_convention: str = "zhong") -> np.ndarray:
    """A direct transcription of the published dense algorithm (N x N arrays). For tests and benchmarks.

    ``zhong``: Zhong et al.'s ``re_ranking`` (the full rank table); ``field``: cluster-contrast's
    ``compute_jaccard_distance``, whose rank table holds k1 columns (the point included).
    """
    x = np.asarray(features, dtype=dtype)
    n = x.shape[0]
    original = 2.0 - 2.0 * x @ x.T
    initial_rank = np.argsort(-(x @ x.T), axis=1, kind="stable")
    if knn_convention == "field":
        initial_rank = initial_rank[:, :k1]

    def k_reciprocal(i: int, k: int) -> np.ndarray:
        forward = initial_rank[i, : k + 1]
        backward = initial_rank[forward, : k + 1]
        return forward[np.where(backward == i)[0]]

    v = np.zeros((n, n), dtype=dtype)
    for i in range(n):
        rec = k_reciprocal(i, k1)
        expansion = rec
        for cand in rec:
            cand_rec = k_reciprocal(cand, int(np.around(k1 / 2)))
            if len(np.intersect1d(cand_rec, rec)) > 2.0 / 3 * len(cand_rec):
                expansion = np.append(expansion, cand_rec)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        v[i, expansion] = weight / weight.sum()
    if k2 != 1:
        v = np.stack([v[initial_rank[i, :k2]].mean(axis=0) for i in range(n)])
    # the published inverted-index loop: only columns that row i touches are visited
    inv_index = [np.where(v[:, k] != 0)[0] for k in range(n)]
    jaccard = np.zeros((n, n), dtype=v.dtype)
    for i in range(n):
        temp_min = np.zeros(n, dtype=v.dtype)
        nonzero = np.where(v[i] != 0)[0]
        for k in nonzero:
            rows = inv_index[k]
            temp_min[rows] += np.minimum(v[i, k], v[rows, k])
        jaccard[i] = 1.0 - temp_min / (2.0 - temp_min)
    return np.clip(jaccard, 0.0, None)
