"""The preprocessing an image needs before a model: input size, normalisation, resize interpolation. It travels
with the weights (in every checkpoint's config and in ``export.json``); ``cpcl.data.transforms`` builds the
transforms from it."""

from __future__ import annotations

from dataclasses import dataclass

from cpcl.config import ModelConfig

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
