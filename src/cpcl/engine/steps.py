"""One training step: the loss terms (the only place where they are weighted and summed), mixed precision,
and gradient caching for ``train.accumulate``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cpcl.config import Config
from cpcl.engine.distributed import SINGLE, DistInfo, all_gather_tensor, all_gather_with_grad, all_reduce_sum
from cpcl.losses.contrastive import itc_loss, pair_positives, sdm_loss
from cpcl.losses.prototype import prototype_loss
from cpcl.memory.prototypes import PrototypeMemory

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Memories:
    image: PrototypeMemory
    text: PrototypeMemory


@dataclass
class BatchLabels:
    """Pseudo labels of a batch, looked up by dataset index: ``image`` (B,) of each pair's image,
    ``text`` (B,) of each pair's caption; -1 for outliers."""

    image: torch.Tensor
    text: torch.Tensor


def compute_losses(image_features: torch.Tensor, text_features: torch.Tensor, image_index: torch.Tensor,
                   labels: BatchLabels | None, memories: Memories | None, config: Config,
                   dist: DistInfo = SINGLE) -> dict[str, torch.Tensor]:
    """Named loss terms and their weighted total under ``"loss"``.

    ``L = L_inst + λ_intra (CE(v M_img, y_img) + CE(t M_txt, y_txt))``
    ``          + λ_cross (CE(v M_txt, y_txt) + CE(t M_img, y_img))``
    where ``L_inst`` is ITC on pairs, or SDM whose positives share a pseudo label (``loss.many_to_many``).
    Without labels (baseline, warm-up or a degenerate clustering) only ``L_inst`` on pairs remains.

    Under distributed training with ``train.gather_negatives``, ``L_inst`` compares this rank's rows with
    the features of every rank, and the prototype terms are normalised by the global count of labelled
    samples, so that the gradient averaged over ranks is the single-process gradient of the global batch.
    """
    v, t = image_features, text_features
    cfg = config.loss
    keys: dict[str, torch.Tensor] = {}
    columns = None
    if dist.enabled and config.train.gather_negatives:
        keys = {"image_keys": all_gather_with_grad(v, dist), "text_keys": all_gather_with_grad(t, dist)}
        columns = (all_gather_tensor(image_index, dist),
                   all_gather_tensor(labels.image, dist) if labels is not None else None,
                   all_gather_tensor(labels.text, dist) if labels is not None else None)
    terms: dict[str, torch.Tensor] = {}
    if cfg.many_to_many and labels is not None:
        positives = pair_positives(image_index, labels.image, labels.text, columns=columns)
        terms["sdm"] = sdm_loss(v, t, cfg.temperature, positives, **keys)
        total = terms["sdm"]
    else:
        positives = pair_positives(image_index, columns=(columns[0], None, None) if columns else None)
        terms["itc"] = itc_loss(v, t, cfg.temperature, positives=positives, **keys)
        total = terms["itc"]
    if labels is not None and memories is not None:
        tau = config.memory.temperature
        count_img = count_txt = None
        if dist.enabled:
            counts = all_reduce_sum(torch.stack([(labels.image >= 0).sum(), (labels.text >= 0).sum()]), dist)
            count_img, count_txt = (counts.float().clamp(min=1) / dist.world_size).unbind()
        if cfg.intra_weight > 0:
            terms["intra_image"] = prototype_loss(memories.image.logits(v, tau), labels.image, count_img)
            terms["intra_text"] = prototype_loss(memories.text.logits(t, tau), labels.text, count_txt)
            total = total + cfg.intra_weight * (terms["intra_image"] + terms["intra_text"])
        if cfg.cross_weight > 0:
            terms["cross_image"] = prototype_loss(memories.text.logits(v, tau), labels.text, count_txt)
            terms["cross_text"] = prototype_loss(memories.image.logits(t, tau), labels.image, count_img)
            total = total + cfg.cross_weight * (terms["cross_image"] + terms["cross_text"])
    terms["loss"] = total
    return terms


def autocast(device: torch.device, precision: str):
    """Autocast for bf16/fp16 (weights stay fp32; losses run in fp32 on cast features); nothing for fp32."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def forward_backward(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor,
                     loss_fn: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]], chunks: int,
                     precision: str, scaler: torch.amp.GradScaler) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Forward, loss and backward of one batch -> ``(terms, image_features, text_features)`` (detached).

    With ``chunks`` > 1 the batch runs as micro-batches with gradient caching: features of every chunk
    first (no graph), the loss over the whole batch and its gradient with respect to the features, then
    each chunk again with its graph, back-propagating its share. Every negative of the batch is in the
    loss, so the result does not depend on ``chunks``; the activation memory is one chunk's.
    """
    device = images.device
    if chunks == 1:
        with autocast(device, precision):
            v, t = model(images, tokens)
        terms = loss_fn(v.float(), t.float())
        scaler.scale(terms["loss"]).backward()
        return terms, v.detach().float(), t.detach().float()
    if len(images) % chunks:
        raise ValueError(f"a batch of {len(images)} per process does not split into train.accumulate={chunks} "
                         "equal micro-batches")
    image_chunks, token_chunks = images.chunk(chunks), tokens.chunk(chunks)
    with torch.no_grad(), autocast(device, precision):
        parts = [model(i, tk) for i, tk in zip(image_chunks, token_chunks, strict=True)]
    v = torch.cat([p[0] for p in parts]).float().requires_grad_()
    t = torch.cat([p[1] for p in parts]).float().requires_grad_()
    terms = loss_fn(v, t)
    scaler.scale(terms["loss"]).backward()
    grads = zip(image_chunks, token_chunks, v.grad.chunk(chunks), t.grad.chunk(chunks), strict=True)
    for n, (i, tk, gv, gt) in enumerate(grads):
        # under DDP, gradients are averaged across ranks once, after the last chunk
        sync = contextlib.nullcontext() if n == chunks - 1 or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(device, precision):
                vi, ti = model(i, tk)
            torch.autograd.backward([vi.float(), ti.float()], [gv, gt])
    return {k: x.detach() for k, x in terms.items()}, v.detach(), t.detach()
