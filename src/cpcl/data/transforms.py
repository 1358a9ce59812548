"""What an image goes through before the model: the preprocessing that travels with the weights, and the
field's transforms (resize, flip, pad + random crop, random erasing; CLIP mean/std)."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image
from torchvision import transforms as T

from cpcl.config import AugmentConfig, ModelConfig

# OpenAI CLIP's normalisation (open_clip.OPENAI_DATASET_MEAN / _STD; a test keeps them equal)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocess:
    """What an image must go through before the model; travels with the weights."""

    image_size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resize: str = "bicubic"  # interpolation to image_size: bicubic | bilinear

    @classmethod
    def of(cls, model: ModelConfig) -> Preprocess:
        return cls(image_size=tuple(model.image_size), resize=model.resize)


class ResizeIfNeeded:
    """Resize to (height, width) with ``interpolation`` (bicubic or bilinear), skipped for images that already
    have that size."""

    def __init__(self, size: tuple[int, int], interpolation: str = "bicubic"):
        self.size = tuple(size)
        self.resize = T.Resize(self.size, interpolation=T.InterpolationMode(interpolation))

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if (image.height, image.width) == self.size else self.resize(image)


def build_eval_transform(pre: Preprocess) -> T.Compose:
    return T.Compose([
        ResizeIfNeeded(pre.image_size, pre.resize),
        T.ToTensor(),
        T.Normalize(pre.mean, pre.std),
    ])


def build_train_transform(pre: Preprocess, aug: AugmentConfig) -> T.Compose:
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
