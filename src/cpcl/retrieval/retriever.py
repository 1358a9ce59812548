"""The Python encode API: a trained checkpoint turned into text and image encoders.

>>> model = load_retriever("runs/demo/synthpedes_cpcl/best.pt", device="cpu")
>>> q = model.encode_text(["a woman in a red coat with a black bag"])   # (1, D) float32, unit rows
>>> g = model.encode_images(["crops/0001.jpg", pil_image])              # (2, D) float32, unit rows
>>> scores = q @ g.T

The preprocessing (image size, normalisation, tokenizer, context length) is the one stored in the
checkpoint, and the encoders are the same functions the evaluation uses, so a query scored here ranks the
gallery exactly as ``cpcl eval`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cpcl.data.datasets import read_image, tokenize_all
from cpcl.data.images import to_rgb
from cpcl.data.transforms import build_eval_transform
from cpcl.errors import CpclError
from cpcl.model.checkpoint import load_checkpoint, model_fingerprint
from cpcl.model.encode import encode_images, encode_texts
from cpcl.retrieval.onnx_text import OnnxTextEncoder, TextEncoderError

ImageInput = str | Path | Image.Image


class UnreadableImageError(CpclError, OSError):
    """An image file could not be decoded; the message names it and the reason."""


class _ImageInputs(Dataset):
    """Paths or PIL images -> ``(image tensor, index)`` with the checkpoint's eval transform; a file that cannot
    be read yields ``(zeros, -1 - index)`` (see :func:`~cpcl.model.encode.encode_images`), so that a worker
    process does not raise it as a traceback."""

    def __init__(self, images: Sequence[ImageInput], transform, image_size: tuple[int, int]):
        self.images = list(images)
        self.transform = transform
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.images[index]
        if isinstance(item, Image.Image):
            image = to_rgb(item)
        elif isinstance(item, (str, Path)):
            try:
                image = read_image(Path(item))
            except OSError:
                return torch.zeros(3, *self.image_size), -1 - index
        else:
            raise TypeError(f"image {index}: expected a path or a PIL image, got {type(item).__name__}")
        return self.transform(image), index


class Retriever:
    """Text and image encoders of one checkpoint, on one device; outputs are L2-normalised numpy arrays."""

    def __init__(self, model, tokenizer, preprocess, config, device: torch.device, checkpoint: Path | None = None,
                 batch_size: int = 128, num_workers: int = 0, text_encoder: OnnxTextEncoder | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.config = config
        self.device = device
        self.checkpoint = checkpoint
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.transform = build_eval_transform(preprocess)
        self._fingerprint: str | None = None
        self.text_encoder = text_encoder
        if text_encoder is not None and text_encoder.fingerprint != self.fingerprint:
            raise TextEncoderError(f"text encoder {text_encoder.path} was exported from model "
                                   f"{text_encoder.fingerprint}, but {checkpoint or 'this checkpoint'} is model "
                                   f"{self.fingerprint}; export this checkpoint with `cpcl export onnx`")

    @property
    def embed_dim(self) -> int:
        return self.model.embed_dim

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model, self.config.to_dict())
        return self._fingerprint

    def encode_text(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Captions -> ``(N, D)`` float32 unit rows, in input order."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings; wrap a single query as [query]")
        tokens = tokenize_all(self.tokenizer, list(texts))
        if len(tokens) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        if self.text_encoder is not None:
            size = batch_size or self.batch_size
            return np.concatenate([self.text_encoder(tokens[i:i + size].numpy())
                                   for i in range(0, len(tokens), size)])
        return encode_texts(self.model, tokens, self.device, batch_size or self.batch_size).numpy()

    def encode_images(self, images: Sequence[ImageInput], batch_size: int | None = None,
                      progress: bool = False, unreadable: list[int] | None = None) -> np.ndarray:
        """Image paths and/or PIL images -> ``(N, D)`` float32 unit rows, in input order.

        A file that cannot be read raises ``OSError`` naming it; with ``unreadable`` (a list), such files are
        left out of the result instead and their positions in ``images`` appended to it."""
        if isinstance(images, (str, Path, Image.Image)):
            raise TypeError("encode_images takes a list; wrap a single image as [image]")
        data = _ImageInputs(images, self.transform, tuple(self.config.model.image_size))
        if len(data) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        workers = self.num_workers if not any(isinstance(i, Image.Image) for i in data.images) else 0
        failed: list[int] = []

        def on_unreadable(i: int) -> None:
            if unreadable is None:
                try:
                    read_image(Path(data.images[i]))
                except OSError as exc:  # its message names the file and the reason
                    raise UnreadableImageError(str(exc)) from None
                raise UnreadableImageError(f"cannot read image {data.images[i]} (it could be read on a second try)")
            failed.append(i)

        out = encode_images(self.model, data, self.device, batch_size or self.batch_size, num_workers=workers,
                            progress=progress, desc="encode gallery", on_unreadable=on_unreadable).numpy()
        if not failed:
            return out
        unreadable.extend(sorted(failed))
        return np.delete(out, failed, axis=0)


def load_retriever(checkpoint: str | Path, device: str | torch.device = "cpu", batch_size: int = 128,
                   num_workers: int = 0, text_encoder: str | Path | None = None) -> Retriever:
    """Load a cpcl checkpoint (``best.pt``/``last.pt``) as a :class:`Retriever`; ``text_encoder``: an ONNX text
    tower that ``cpcl export onnx`` wrote from the same checkpoint, to encode queries with onnxruntime."""
    device = torch.device(device)
    model, tokenizer, preprocess, config, _ = load_checkpoint(checkpoint, device)
    onnx_text = OnnxTextEncoder(text_encoder) if text_encoder is not None else None
    return Retriever(model, tokenizer, preprocess, config, device, checkpoint=Path(checkpoint).resolve(),
                     batch_size=batch_size, num_workers=num_workers, text_encoder=onnx_text)
