"""Batched feature extraction in a fixed order with eval transforms."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cpcl.model.retrieval_model import RetrievalModel


@torch.no_grad()
def encode_images(model: RetrievalModel, images: Dataset, device: torch.device, batch_size: int = 256,
                  num_workers: int = 0, progress: bool = False, desc: str = "encode images",
                  on_unreadable: Callable[[int], None] | None = None) -> torch.Tensor:
    """Encode a dataset yielding ``(image, index)`` in its own order -> ``(N, D)`` float32 on the CPU.

    A dataset may yield the index ``-1 - i`` (and any image) for an item ``i`` it could not read, so that a
    worker process does not raise: ``on_unreadable(i)`` is then called in this process (it may raise) and
    row ``i`` stays zero."""
    was_training = model.training
    model.eval()
    # a generator of its own: a DataLoader otherwise draws its workers' base seed from the global RNG, so that
    # evaluating (or not) would change the random augmentations of the training that follows
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0))
    out = torch.zeros(len(images), model.embed_dim)
    for batch, index in tqdm(loader, desc=desc, disable=None if progress else True, leave=False):
        read = index >= 0
        if not read.all():
            for i in (-1 - index[~read]).tolist():
                on_unreadable(i)
            batch, index = batch[read], index[read]
            if not len(index):
                continue
        out[index] = model.encode_image(batch.to(device, non_blocking=True)).float().cpu()
    model.train(was_training)
    return out


@torch.no_grad()
def encode_texts(model: RetrievalModel, tokens: torch.Tensor, device: torch.device, batch_size: int = 512,
                 progress: bool = False, desc: str = "encode texts") -> torch.Tensor:
    """Encode ``(N, L)`` token ids -> ``(N, D)`` float32 on the CPU, in the input order.

    Captions are batched by length so that each batch runs only as many positions as it needs.
    """
    was_training = model.training
    model.eval()
    out = torch.empty(len(tokens), model.embed_dim)
    order = torch.argsort(tokens.argmax(dim=-1), stable=True)
    for start in tqdm(range(0, len(tokens), batch_size), desc=desc, disable=None if progress else True, leave=False):
        idx = order[start:start + batch_size]
        out[idx] = model.encode_text(tokens[idx].long().to(device)).float().cpu()
    model.train(was_training)
    return out

