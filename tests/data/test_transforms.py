import torch
from PIL import Image

from cpcl.config import AugmentConfig
from cpcl.data.transforms import build_eval_transform, build_train_transform
from cpcl.model.preprocess import Preprocess


def test_eval_transform_resizes_to_height_by_width_and_normalises():
    pre = Preprocess((384, 128))
    out = build_eval_transform(pre)(Image.new("RGB", (64, 200), (255, 0, 0)))
    assert out.shape == (3, 384, 128)
    assert torch.allclose(out[0], torch.full((384, 128), (1 - pre.mean[0]) / pre.std[0]), atol=1e-4)
    same = build_eval_transform(Preprocess((20, 10)))(Image.new("RGB", (10, 20), (0, 0, 0)))
    assert same.shape == (3, 20, 10)


def test_train_transform_keeps_shape_and_is_seeded():
    pre = Preprocess((64, 32))
    tf = build_train_transform(pre, AugmentConfig(random_erasing=1.0))
    img = Image.effect_noise((32, 64), 50).convert("RGB")
    torch.manual_seed(0)
    a = tf(img)
    torch.manual_seed(0)
    b = tf(img)
    assert a.shape == (3, 64, 32) and torch.equal(a, b)
    assert (a == 0).any()  # the erased block holds the (normalised) mean colour
