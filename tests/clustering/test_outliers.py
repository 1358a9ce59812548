import numpy as np
import pytest

from cpcl.clustering.outliers import mine_outliers


def test_outliers_borrow_labels_through_the_other_modality():
    # images 0,1 in image cluster 0; image 2 in cluster 1; image 3 an outlier.
    # captions: one per image (cap i -> img i) plus cap 4 -> img 0.
    y_img = np.array([0, 0, 1, -1])
    y_txt = np.array([5, 5, 6, 6, -1])  # cap 3 (of outlier image 3) sits in text cluster 6, with cap 2
    owner = np.array([0, 1, 2, 3, 0])
    f_img = np.eye(4, dtype=np.float32)
    f_img[3] = [0.1, 0.0, 0.99, 0.0]  # image 3 looks like image 2
    f_txt = np.eye(5, dtype=np.float32)
    f_txt[4] = [0.2, 0.98, 0, 0, 0]  # caption 4 looks most like caption 1
    res = mine_outliers(y_img, y_txt, f_img, f_txt, owner)
    # image 3: its caption is in text cluster 6, whose clustered images are {2} -> label 1
    assert res.image_labels.tolist() == [0, 0, 1, 1]
    # caption 4: its image 0 is in image cluster 0, whose clustered captions are {0, 1}; most similar: 1
    assert res.text_labels.tolist() == [5, 5, 6, 6, 5]
    assert res.image_recovered.tolist() == [3] and res.text_recovered.tolist() == [4]


def test_threshold_and_unreachable_outliers():
    y_img = np.array([0, -1, -1])
    y_txt = np.array([3, 3, -1])
    owner = np.array([0, 1, 2])
    f_img = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    f_txt = np.eye(3, dtype=np.float32)
    res = mine_outliers(y_img, y_txt, f_img, f_txt, owner, threshold=0.5)
    assert res.image_labels.tolist() == [0, -1, -1]  # image 1 too dissimilar; image 2's caption is an outlier
    assert res.text_labels.tolist() == [3, 3, -1]  # caption 2's image is an outlier too
    assert res.image_recovered.size == 0


def _per_outlier_reference(y_img, y_txt, f_img, f_txt, owner, threshold=None):
    """The method's rule (CPCL_METHOD.md §6) one outlier at a time, as cpcl first wrote it: an image outlier
    takes the label of the most similar clustered image having a caption in a text cluster of its captions; a
    caption outlier that of the most similar clustered caption of its image's cluster (ties: lowest index)."""
    from collections import defaultdict

    images_in_text_cluster, captions_in_image_cluster = defaultdict(set), defaultdict(list)
    for cap, img in enumerate(owner):
        if y_txt[cap] >= 0 and y_img[img] >= 0:
            images_in_text_cluster[y_txt[cap]].add(img)
            captions_in_image_cluster[y_img[img]].append(cap)

    def recover(labels, outliers, candidate_sets, features):
        new, recovered = labels.copy(), []
        for idx, cands in zip(outliers, candidate_sets, strict=True):
            if len(cands) == 0:
                continue
            cands = np.asarray(cands)
            sims = features[cands] @ features[idx]
            best = int(np.argmax(sims))
            if threshold is None or sims[best] >= threshold:
                new[idx] = labels[cands[best]]
                recovered.append(idx)
        return new, recovered

    img_out = np.where(y_img < 0)[0]
    img_sets = [sorted(set().union(*[images_in_text_cluster[y_txt[c]] for c in np.where(owner == i)[0]
                                     if y_txt[c] >= 0])) for i in img_out]
    txt_out = np.where(y_txt < 0)[0]
    txt_sets = [captions_in_image_cluster[y_img[owner[c]]] if y_img[owner[c]] >= 0 else [] for c in txt_out]
    return recover(y_img, img_out, img_sets, f_img), recover(y_txt, txt_out, txt_sets, f_txt)


@pytest.mark.parametrize("seed", range(12))
def test_vectorised_mining_equals_the_per_outlier_rule(seed, monkeypatch):
    from cpcl.clustering import outliers

    monkeypatch.setattr(outliers, "BLOCK", 7)  # many blocks per cluster
    rng = np.random.default_rng(seed)
    n_img, dim = 60, 6
    owner = np.sort(np.concatenate([np.arange(n_img), rng.integers(0, n_img, 50)]))
    # features on a coarse grid: every product is exact in float32, so equal similarities are real ties
    f_img = rng.integers(-2, 3, (n_img, dim)).astype(np.float32) / 4
    f_txt = rng.integers(-2, 3, (len(owner), dim)).astype(np.float32) / 4
    giant = seed % 3 == 0  # one cluster holding most samples
    y_img = np.where(rng.random(n_img) < 0.3, -1, rng.integers(0, 2 if giant else 8, n_img))
    y_txt = np.where(rng.random(len(owner)) < 0.3, -1, rng.integers(0, 2 if giant else 9, len(owner)))
    threshold = [None, 0.25][seed % 2]
    got = mine_outliers(y_img, y_txt, f_img, f_txt, owner, threshold)
    (img, img_rec), (txt, txt_rec) = _per_outlier_reference(y_img, y_txt, f_img, f_txt, owner, threshold)
    assert got.image_labels.tolist() == img.tolist() and got.image_recovered.tolist() == img_rec
    assert got.text_labels.tolist() == txt.tolist() and got.text_recovered.tolist() == txt_rec
    assert img_rec or txt_rec  # the case mines something


def test_a_degenerate_clustering_is_rejected_before_any_mining(monkeypatch):
    """One cluster holding most images is refused; OPLM must not run on it first."""
    import torch

    from cpcl.config import ClusterConfig, OplmConfig
    from cpcl.engine import pseudo
    from cpcl.engine.pseudo import _cluster

    def never(*args, **kwargs):
        raise AssertionError("OPLM ran on a clustering that is then rejected")

    monkeypatch.setattr(pseudo, "mine_outliers", never)
    rng = np.random.default_rng(0)
    centre = rng.standard_normal(16)
    f_img = centre + 0.01 * rng.standard_normal((40, 16))  # one tight blob: one giant cluster
    f_img[-4:] = rng.standard_normal((4, 16)) * 5  # and a few outliers to mine
    f_img = torch.from_numpy(f_img / np.linalg.norm(f_img, axis=1, keepdims=True)).float()
    owner = torch.arange(40)
    labels = _cluster(f_img, f_img.clone(), owner, ClusterConfig(enabled=True, distance="cosine", k1=8, eps=0.2),
                      OplmConfig(enabled=True), None, None)
    assert not labels.usable and "giant cluster" in labels.stats["degenerate"]
    assert (labels.image < 0).any()  # there were outliers it did not mine
