"""PyTorch datasets over :class:`~cpcl.data.records.ImageRecord` lists.

The training dataset yields image-caption pairs and their dataset indices, and **never** an identity:
pseudo labels are looked up by these indices, and ground-truth identities stay in the records, which
only evaluation and diagnostics read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cpcl.data.images import to_rgb
from cpcl.data.records import ImageRecord


def read_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except Exception as exc:
        raise OSError(f"cannot read image {path}: {exc}") from exc


class ImageStore:
    """Reads images by index; optionally keeps decoded images in memory (small datasets, many epochs).

    The cache lives in the process that reads. DataLoader worker processes are started anew every epoch,
    so a cache they filled would be lost with them: :meth:`fill` decodes every image once, in this process
    (with worker processes of its own), before any loader starts, and the workers inherit it.
    """

    def __init__(self, paths: Sequence[Path], cache: bool = False):
        self.paths = list(paths)
        self._cache: list[np.ndarray | None] | None = [None] * len(self.paths) if cache else None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def caches(self) -> bool:
        return self._cache is not None

    def fill(self, num_workers: int = 0, progress: bool = False) -> None:
        """Decode every image not cached yet into the cache (a no-op without a cache)."""
        if self._cache is None:
            return
        todo = [i for i, arr in enumerate(self._cache) if arr is None]
        if not todo:
            return
        # a generator of its own: the loader draws its workers' seed from one, and the global one would change
        # a randomly initialised model built after the cache (its state with workers unlike without)
        loader = DataLoader(_Decode(self.paths, todo), batch_size=64, num_workers=num_workers,
                            collate_fn=_as_list, generator=torch.Generator().manual_seed(0))
        with tqdm(total=len(todo), desc="cache images", disable=None if progress else True, leave=False) as bar:
            for batch in loader:
                for index, arr in batch:
                    self._cache[index] = arr
                bar.update(len(batch))

    def get(self, index: int) -> Image.Image:
        if self._cache is None:
            return read_image(self.paths[index])
        arr = self._cache[index]
        if arr is None:
            arr = np.asarray(read_image(self.paths[index]))
            self._cache[index] = arr
        return Image.fromarray(arr)


class _Decode(Dataset):
    """``(index, decoded RGB array)`` of the images ``todo`` of ``paths``."""

    def __init__(self, paths: Sequence[Path], todo: Sequence[int]):
        self.paths, self.todo = paths, todo

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, position: int) -> tuple[int, np.ndarray]:
        index = self.todo[position]
        return index, np.asarray(read_image(self.paths[index]))


def _as_list(batch: list) -> list:
    return batch


class TrainPairs(Dataset):
    """Every (image, caption) pair of the training records.

    Item: ``{"image": (3,H,W), "tokens": (L,), "index": pair index, "image_index": unique image index}``.
    ``caption_to_image[i]`` maps pair ``i`` to its image, so per-image and per-caption pseudo labels can
    be looked up by dataset index. No identity label is stored here.
    """

    def __init__(self, records: Sequence[ImageRecord], tokenizer: Callable, transform: Callable,
                 cache_images: bool = False):
        self.images = ImageStore([r.image_path for r in records], cache=cache_images)
        captions, owner = [], []
        for img_idx, rec in enumerate(records):
            for cap in rec.captions:
                captions.append(cap)
                owner.append(img_idx)
        self.captions = captions
        self.caption_to_image = torch.tensor(owner, dtype=torch.long)
        self.tokens = tokenize_all(tokenizer, captions)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        img_idx = int(self.caption_to_image[index])
        return {"image": self.transform(self.images.get(img_idx)), "tokens": self.tokens[index],
                "index": index, "image_index": img_idx}


class ImageSet(Dataset):
    """Images by path, with the eval transform; yields ``(image, index)``."""

    def __init__(self, paths: Sequence[Path], transform: Callable, store: ImageStore | None = None):
        self.store = store or ImageStore(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.store.get(index)), index


def tokenize_all(tokenizer: Callable, captions: Sequence[str], batch: int = 4096) -> torch.Tensor:
    """Tokenise captions once, up front: ``(N, context_length)`` int32."""
    if not captions:
        return torch.zeros(0, 77, dtype=torch.int32)
    parts = [tokenizer(list(captions[i:i + batch])).to(torch.int32) for i in range(0, len(captions), batch)]
    return torch.cat(parts)


def eval_split(records: Sequence[ImageRecord]) -> tuple[list[Path], torch.Tensor, list[str], torch.Tensor]:
    """Gallery (image paths, person ids) and queries (captions, person ids) of an evaluation split."""
    unlabeled = [r.source for r in records if r.person_id is None]
    if unlabeled:
        raise ValueError(f"{len(unlabeled)} evaluation records have no person_id (first: {unlabeled[0]}); "
                         "evaluation needs identity labels")
    paths = [r.image_path for r in records]
    gallery_ids = torch.tensor([r.person_id for r in records], dtype=torch.long)
    captions = [c for r in records for c in r.captions]
    query_ids = torch.tensor([r.person_id for r in records for _ in r.captions], dtype=torch.long)
    return paths, gallery_ids, captions, query_ids
