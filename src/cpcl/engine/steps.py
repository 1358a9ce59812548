"""One training step's losses: the only place where loss terms are weighted and summed."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cpcl.config import Config
from cpcl.losses.contrastive import itc_loss, pair_positives, sdm_loss
from cpcl.losses.prototype import prototype_loss
from cpcl.memory.prototypes import PrototypeMemory


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
                   labels: BatchLabels | None, memories: Memories | None, config: Config) -> dict[str, torch.Tensor]:
    """Named loss terms and their weighted total under ``"loss"``.

    ``L = L_inst + λ_intra (CE(v M_img, y_img) + CE(t M_txt, y_txt))``
    ``          + λ_cross (CE(v M_txt, y_txt) + CE(t M_img, y_img))``
    where ``L_inst`` is ITC on pairs, or SDM whose positives share a pseudo label (``loss.many_to_many``).
    Without labels (baseline, warm-up or a degenerate clustering) only ``L_inst`` on pairs remains.
    """
    v, t = image_features, text_features
    cfg = config.loss
    terms: dict[str, torch.Tensor] = {}
    if cfg.many_to_many and labels is not None:
        terms["sdm"] = sdm_loss(v, t, cfg.temperature, pair_positives(image_index, labels.image, labels.text))
        total = terms["sdm"]
    else:
        terms["itc"] = itc_loss(v, t, cfg.temperature, image_index)
        total = terms["itc"]
    if labels is not None and memories is not None:
        tau = config.memory.temperature
        if cfg.intra_weight > 0:
            terms["intra_image"] = prototype_loss(memories.image.logits(v, tau), labels.image)
            terms["intra_text"] = prototype_loss(memories.text.logits(t, tau), labels.text)
            total = total + cfg.intra_weight * (terms["intra_image"] + terms["intra_text"])
        if cfg.cross_weight > 0:
            terms["cross_image"] = prototype_loss(memories.text.logits(v, tau), labels.text)
            terms["cross_text"] = prototype_loss(memories.image.logits(t, tau), labels.image)
            total = total + cfg.cross_weight * (terms["cross_image"] + terms["cross_text"])
    terms["loss"] = total
    return terms
