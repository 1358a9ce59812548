import numpy as np
import pytest
import torch

from cpcl.evaluation import chance_metrics, retrieval_metrics


def naive_metrics(sim: np.ndarray, qids: np.ndarray, gids: np.ndarray) -> dict[str, float]:
    """A per-query loop straight from the definitions."""
    r = {1: 0, 5: 0, 10: 0}
    aps, inps = [], []
    for i in range(sim.shape[0]):
        order = sorted(range(sim.shape[1]), key=lambda j: (-sim[i, j], j))
        rel = [gids[j] == qids[i] for j in order]
        ranks = [k + 1 for k, hit in enumerate(rel) if hit]
        for k in r:
            r[k] += ranks[0] <= k
        aps.append(np.mean([(n + 1) / rank for n, rank in enumerate(ranks)]))
        inps.append(len(ranks) / ranks[-1])
    q = sim.shape[0]
    return {"rank1": 100 * r[1] / q, "rank5": 100 * r[5] / q, "rank10": 100 * r[10] / q,
            "mAP": 100 * np.mean(aps), "mINP": 100 * np.mean(inps)}


def test_hand_computed_case():
    # gallery ids: [1, 2, 1, 3]; query 0 is person 1, query 1 is person 3
    sim = torch.tensor([[0.9, 0.8, 0.1, 0.0],   # ranking 0(1) 1(2) 2(1) 3(3): hits at ranks 1 and 3
                        [0.9, 0.8, 0.7, 0.6]])  # ranking 0 1 2 3: the only hit (person 3) at rank 4
    m = retrieval_metrics(sim, [1, 3], [1, 2, 1, 3])
    assert m.rank1 == pytest.approx(50.0)
    assert m.rank5 == pytest.approx(100.0)
    # AP: query 0 = (1/1 + 2/3) / 2 = 0.8333; query 1 = 1/4
    assert m.mAP == pytest.approx(100 * (0.8333333 + 0.25) / 2, abs=1e-4)
    # INP: query 0 = 2/3; query 1 = 1/4
    assert m.mINP == pytest.approx(100 * (2 / 3 + 0.25) / 2, abs=1e-4)
    assert m.rSum == pytest.approx(m.rank1 + m.rank5 + m.rank10)
    assert (m.num_queries, m.num_gallery) == (2, 4)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_matches_naive_loop(chunk):
    rng = np.random.default_rng(0)
    gids = rng.integers(0, 12, size=60)
    qids = rng.choice(gids, size=45)
    sim = rng.normal(size=(45, 60)).round(1)  # rounding creates ties, broken by gallery order
    got = retrieval_metrics(sim, qids, gids, chunk_size=chunk).as_dict()
    want = naive_metrics(sim, qids, gids)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


def test_perfect_and_numpy_inputs():
    ids = np.array([5, 6, 7])
    m = retrieval_metrics(np.eye(3), ids, ids)
    assert (m.rank1, m.mAP, m.mINP) == (100.0, 100.0, 100.0)


def test_query_without_relevant_item_is_an_error():
    with pytest.raises(ValueError, match="1 of 2 queries have no relevant"):
        retrieval_metrics(torch.rand(2, 3), [1, 9], [1, 2, 3])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="expected"):
        retrieval_metrics(torch.rand(2, 3), [1, 2, 3], [1, 2, 3])


def test_chance_is_near_the_analytic_rank_k():
    """3 relevant images among 300: P(hit in the top k) = 1 - C(297, k) / C(300, k). 2000 queries put the
    sample's standard deviation near 0.2 (R1) to 0.7 (R10) points; the bound is three of them."""
    from math import comb

    gids = np.repeat(np.arange(100), 3)
    m = chance_metrics(np.repeat(np.arange(100), 20), gids)
    for k, got in ((1, m.rank1), (5, m.rank5), (10, m.rank10)):
        p = 1 - comb(297, k) / comb(300, k)
        assert got == pytest.approx(100 * p, abs=3 * 100 * (p * (1 - p) / 2000) ** 0.5), k


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_counted_ranks_match_the_naive_loop_with_many_ties_and_uneven_identities(seed):
    """Scores on a coarse grid (ties everywhere), identities with 1 to 9 images, queries in any order."""
    rng = np.random.default_rng(seed)
    gids = np.repeat(np.arange(15), rng.integers(1, 10, size=15))
    rng.shuffle(gids)
    qids = rng.choice(gids, size=40)
    sim = rng.integers(0, 5, size=(40, len(gids))) / 4.0
    got = retrieval_metrics(sim, qids, gids, chunk_size=int(rng.integers(1, 40))).as_dict()
    for key, value in naive_metrics(sim, qids, gids).items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
