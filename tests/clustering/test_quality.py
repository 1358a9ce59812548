import numpy as np

from cpcl.clustering.quality import label_free_quality


def test_agreement_and_stability_on_constructed_labels():
    owner = np.array([0, 0, 1, 1, 2, 2, 3, 3])  # two captions per image
    image = np.array([0, 0, 1, 1])
    same = label_free_quality(image, np.array([5, 5, 5, 5, 7, 7, 7, 7]), owner, previous=(image, image[owner]))
    assert same == {"agreement": 1.0, "image_stability": 1.0, "text_stability": 1.0}
    crossed = label_free_quality(image, np.array([0, 1, 0, 1, 0, 1, 0, 1]), owner)
    assert set(crossed) == {"agreement"} and crossed["agreement"] < 0.1
    # outliers are singletons: two epochs of outliers only are not "stable clusters" of one big group
    outliers = np.full(4, -1)
    moved = label_free_quality(outliers, np.full(8, -1), owner, previous=(image, image[owner]))
    assert moved["image_stability"] == 0.0 and moved["text_stability"] == 0.0
