"""What an image goes through before the model: the field's transforms (resize, flip, pad + random crop, random
erasing, normalisation), built for the preprocessing that travels with the weights (``cpcl.model.preprocess``)."""

from __future__ import annotations

from typing import Protocol

from PIL import Image
from torchvision import transforms as T

from cpcl.config import AugmentConfig


class ImageGeometry(Protocol):
    """What the transforms need of the preprocessing that travels with the weights (``cpcl.model.Preprocess``):
    the input size (height, width), the normalisation, the resize interpolation."""

    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str


class ResizeIfNeeded:
    """Resize to (height, width) with ``interpolation`` (bicubic or bilinear), skipped for images that already
    have that size."""

    def __init__(self, size: tuple[int, int], interpolation: str = "bicubic"):
        self.size = tuple(size)
        self.resize = T.Resize(self.size, interpolation=T.InterpolationMode(interpolation))

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if (image.height, image.width) == self.size else self.resize(image)


def build_eval_transform(pre: ImageGeometry) -> T.Compose:
    return T.Compose([
        ResizeIfNeeded(pre.image_size, pre.resize),
        T.ToTensor(),
        T.Normalize(pre.mean, pre.std),
    ])


def build_train_transform(pre: ImageGeometry, aug: AugmentConfig) -> T.Compose:
    steps: list = [ResizeIfNeeded(pre.image_size, pre.resize)]
    if aug.hflip:
        steps.append(T.RandomHorizontalFlip(0.5))
    if aug.pad > 0:
        steps += [T.Pad(aug.pad), T.RandomCrop(pre.image_size)]
    steps += [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    if aug.random_erasing > 0:
        # on the normalised tensor: (0, 0, 0) is the mean colour; IRRA's value is CLIP's mean itself
        steps.append(T.RandomErasing(p=aug.random_erasing, scale=aug.erasing_scale, value=list(aug.erasing_value)))
    return T.Compose(steps)
