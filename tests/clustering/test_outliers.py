import numpy as np

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
