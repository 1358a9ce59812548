"""Image transforms of the field: resize, flip, pad + random crop, random erasing; CLIP mean/std."""

from __future__ import annotations

from PIL import Image
from torchvision import transforms as T

from cpcl.config import AugmentConfig
from cpcl.model.backbone import Preprocess


class ResizeIfNeeded:
    """Bicubic resize to (height, width), skipped for images that already have that size."""

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)
        self.resize = T.Resize(self.size, interpolation=T.InterpolationMode.BICUBIC)

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if (image.height, image.width) == self.size else self.resize(image)


def build_eval_transform(pre: Preprocess) -> T.Compose:
    return T.Compose([
        ResizeIfNeeded(pre.image_size),
        T.ToTensor(),
        T.Normalize(pre.mean, pre.std),
    ])


def build_train_transform(pre: Preprocess, aug: AugmentConfig) -> T.Compose:
    steps: list = [ResizeIfNeeded(pre.image_size)]
    if aug.hflip:
        steps.append(T.RandomHorizontalFlip(0.5))
    if aug.pad > 0:
        steps += [T.Pad(aug.pad), T.RandomCrop(pre.image_size)]
    steps += [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    if aug.random_erasing > 0:
        # value 0 on the normalised tensor = the dataset mean colour
        steps.append(T.RandomErasing(p=aug.random_erasing, scale=aug.erasing_scale, value=0))
    return T.Compose(steps)
