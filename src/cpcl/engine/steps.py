"""Forward and backward of one batch: mixed precision, and gradient caching for ``train.accumulate``.

The loss itself is the objective's (:mod:`cpcl.engine.objective`); here it is only evaluated on the
batch's features and back-propagated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """Autocast for bf16/fp16 (weights stay fp32; losses run in fp32 on cast features); nothing for fp32."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def forward_backward(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor, loss_fn: LossFn, chunks: int,
                     precision: str, scaler: torch.amp.GradScaler) -> tuple[torch.Tensor, dict, torch.Tensor,
                                                                            torch.Tensor]:
    """Forward, loss and backward of one batch -> ``(loss, terms, image_features, text_features)``, detached.

    ``loss_fn(image_features, text_features)`` returns ``(loss, named terms)``.

    With ``chunks`` > 1 the batch runs as micro-batches with gradient caching: features of the whole batch
    first (one pass, no graph), the loss over the whole batch and its gradient with respect to the features,
    then each chunk again with its graph, back-propagating its share. Every negative of the batch is in the
    loss, so the result does not depend on ``chunks``; the activation memory is one chunk's.
    """
    device = images.device
    if chunks == 1:
        with autocast(device, precision):
            v, t = model(images, tokens)
        loss, terms = loss_fn(v.float(), t.float())
        scaler.scale(loss).backward()
        return loss.detach(), _detached(terms), v.detach().float(), t.detach().float()
    if len(images) % chunks:
        raise ValueError(f"a batch of {len(images)} per process does not split into train.accumulate={chunks} "
                         "equal micro-batches")
    image_chunks, token_chunks = images.chunk(chunks), tokens.chunk(chunks)
    # the features without a graph, in one pass: no activation is kept, so the whole batch fits where its
    # graph would not, and a GPU runs one large batch instead of K small ones (K small passes cost about K
    # times a large one where the kernels, not the arithmetic, set the pace)
    with torch.no_grad(), autocast(device, precision):
        v, t = model(images, tokens)
    v, t = v.float().requires_grad_(), t.float().requires_grad_()
    loss, terms = loss_fn(v, t)
    scaler.scale(loss).backward()
    grads = zip(image_chunks, token_chunks, v.grad.chunk(chunks), t.grad.chunk(chunks), strict=True)
    for n, (i, tk, gv, gt) in enumerate(grads):
        # under DDP, gradients are averaged across ranks once, after the last chunk
        sync = contextlib.nullcontext() if n == chunks - 1 or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(device, precision):
                vi, ti = model(i, tk)
            torch.autograd.backward([vi.float(), ti.float()], [gv, gt])
    return loss.detach(), _detached(terms), v.detach(), t.detach()


def _detached(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.detach() for name, value in terms.items()}
