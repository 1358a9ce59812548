"""The training objective and the state it owns: the instance loss, the prototype memories and their terms.

``L = L_inst + λ_intra (CE(v M_img, y_img) + CE(t M_txt, y_txt)) + λ_cross (CE(v M_txt, y_txt) + CE(t M_img, y_img))``

where ``L_inst`` is ITC on pairs, or SDM whose positives share a pseudo label (``loss.many_to_many``), and
``M_img`` / ``M_txt`` are the prototype memories of the two modalities. This module is the only place the
terms are weighted and summed, and the only one that creates, resets, reads or updates the memories:

- :meth:`Objective.on_labels` after each epoch's pseudo labelling: keeps the labels (looked up by dataset
  index for every batch) and rebuilds the memories from the features they were computed on;
- :meth:`Objective.__call__` on a batch's features: ``(loss, terms)``;
- :meth:`Objective.after_step` after the optimiser step: each memory moves towards its own modality's
  features;
- :meth:`Objective.state_dict` / :meth:`Objective.load_state_dict` for checkpoints.

Without usable labels (the baseline, a warm-up epoch or a degenerate clustering) only ``L_inst`` on pairs
remains. A new loss term is one more entry in :meth:`Objective.__call__`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cpcl.config import LossConfig, MemoryConfig
from cpcl.engine.distributed import SINGLE, DistInfo, all_gather_tensor, all_gather_with_grad, all_reduce_sum
from cpcl.engine.pseudo import EpochLabels
from cpcl.losses.contrastive import Pairs, itc_loss, pair_positives, sdm_loss
from cpcl.losses.prototype import prototype_loss
from cpcl.memory.prototypes import PrototypeMemory


@dataclass(frozen=True)
class BatchLabels:
    """Pseudo labels of a batch: ``image`` (B,) of each pair's image, ``text`` (B,) of each pair's caption;
    -1 for outliers."""

    image: torch.Tensor
    text: torch.Tensor

    @classmethod
    def lookup(cls, labels: EpochLabels, index: torch.Tensor, image_index: torch.Tensor,
               device: torch.device) -> BatchLabels:
        """The labels of pairs ``index`` (B,) whose images are ``image_index`` (B,): by dataset index, never
        by position in the batch. A caption's label is its own, not its image's."""
        return cls(labels.image[image_index.cpu()].to(device), labels.text[index.cpu()].to(device))


@dataclass(frozen=True)
class Batch:
    """What the objective needs to know about a batch besides its features."""

    image_index: torch.Tensor  # (B,) the image of each pair: captions of one image are positives of each other
    labels: BatchLabels | None  # None: the instance loss on pairs alone


@dataclass(frozen=True)
class Columns:
    """What a rank's rows are contrasted with, in one value: the column pairs and their features — the batch
    itself (keys None), or under ``train.gather_negatives`` the global batch gathered from every rank (the
    features with their gradient)."""

    pairs: Pairs
    image_keys: torch.Tensor | None = None
    text_keys: torch.Tensor | None = None


class Objective:
    """The CPCL objective (and, with its weights at 0, the ITC baseline) with its two prototype memories."""

    def __init__(self, embed_dim: int, loss: LossConfig, memory: MemoryConfig, device: torch.device,
                 dist: DistInfo = SINGLE, gather_negatives: bool = True):
        self.loss = loss
        self.memory_temperature = memory.temperature
        self.image_memory = PrototypeMemory(embed_dim, memory.momentum, memory.hard).to(device)
        self.text_memory = PrototypeMemory(embed_dim, memory.momentum, memory.hard).to(device)
        self.device = device
        self.dist = dist
        self.gather_negatives = gather_negatives and dist.enabled
        self.labels: EpochLabels | None = None  # the labels of the current epoch, when usable

    # --------------------------------------------------------------------------------- per epoch

    def on_labels(self, labels: EpochLabels | None, image_features: torch.Tensor | None = None,
                  text_features: torch.Tensor | None = None) -> None:
        """Take an epoch's labels; usable ones rebuild the memories as the normalised means of
        ``image_features`` (N_img, D) and ``text_features`` (N_cap, D) per label. ``None`` or unusable
        labels leave the memories as they are and train the instance loss alone."""
        if labels is None or not labels.usable:
            self.labels = None
            return
        self.labels = labels
        self.image_memory.reset(image_features.to(self.device), labels.image.to(self.device))
        self.text_memory.reset(text_features.to(self.device), labels.text.to(self.device))

    def batch(self, index: torch.Tensor, image_index: torch.Tensor) -> Batch:
        """The batch of pairs ``index`` (B,) with images ``image_index`` (B,), as the loader yields them."""
        labels = None if self.labels is None else BatchLabels.lookup(self.labels, index, image_index, self.device)
        return Batch(image_index.to(self.device), labels)

    # --------------------------------------------------------------------------------- per step

    def __call__(self, image_features: torch.Tensor, text_features: torch.Tensor,
                 batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, terms)`` for ``(B, D)`` unit features of the batch's pairs.

        Under distributed training with ``train.gather_negatives``, the instance loss compares this rank's
        rows with the features of every rank, and the prototype terms are normalised by the global count of
        labelled samples, so that the gradient averaged over ranks is the single-process gradient of the
        global batch.
        """
        v, t, labels = image_features, text_features, batch.labels
        terms = {}
        name, total = self._instance_term(v, t, batch)
        terms[name] = total
        if labels is not None:
            tau = self.memory_temperature
            count_img, count_txt = self._label_counts(labels)
            if self.loss.intra_weight > 0:
                terms["intra_image"] = prototype_loss(self.image_memory.logits(v, tau), labels.image, count_img)
                terms["intra_text"] = prototype_loss(self.text_memory.logits(t, tau), labels.text, count_txt)
                total = total + self.loss.intra_weight * (terms["intra_image"] + terms["intra_text"])
            if self.loss.cross_weight > 0:
                terms["cross_image"] = prototype_loss(self.text_memory.logits(v, tau), labels.text, count_txt)
                terms["cross_text"] = prototype_loss(self.image_memory.logits(t, tau), labels.image, count_img)
                total = total + self.loss.cross_weight * (terms["cross_image"] + terms["cross_text"])
        return total, terms

    def _instance_term(self, v: torch.Tensor, t: torch.Tensor, batch: Batch) -> tuple[str, torch.Tensor]:
        """ITC on pairs, or SDM whose positives share a pseudo label: ``(name, value)``."""
        rows = Pairs(batch.image_index, *self._sdm_labels(batch.labels))
        columns = self._columns(v, t, rows)
        positives = pair_positives(*rows, columns=columns.pairs)
        if self.loss.many_to_many and batch.labels is not None:
            return "sdm", sdm_loss(v, t, self.loss.temperature, positives, image_keys=columns.image_keys,
                                   text_keys=columns.text_keys)
        return "itc", itc_loss(v, t, self.loss.temperature, positives=positives, image_keys=columns.image_keys,
                               text_keys=columns.text_keys)

    def _columns(self, v: torch.Tensor, t: torch.Tensor, rows: Pairs) -> Columns:
        if not self.gather_negatives:
            return Columns(rows)
        keys = all_gather_with_grad(v, self.dist), all_gather_with_grad(t, self.dist)
        pairs = Pairs(*(None if x is None else all_gather_tensor(x, self.dist) for x in rows))
        return Columns(pairs, *keys)

    def _sdm_labels(self, labels: BatchLabels | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The pseudo labels that make SDM positives (``loss.sdm_positives``), besides the pair itself."""
        if labels is None or not self.loss.many_to_many:
            return None, None
        choice = self.loss.sdm_positives
        return (labels.image if choice in ("union", "image-label") else None,
                labels.text if choice in ("union", "text-label") else None)

    def _label_counts(self, labels: BatchLabels):
        """Labelled samples per rank, averaged over ranks (distributed), or None (the batch's own mean)."""
        if not self.dist.enabled:
            return None, None
        counts = all_reduce_sum(torch.stack([(labels.image >= 0).sum(), (labels.text >= 0).sum()]), self.dist)
        return (counts.float().clamp(min=1) / self.dist.world_size).unbind()

    @torch.no_grad()
    def after_step(self, image_features: torch.Tensor, text_features: torch.Tensor, batch: Batch) -> None:
        """After the optimiser step: the image memory moves towards the image features, the text memory
        towards the text features, with the global batch in global order on every rank."""
        if batch.labels is None:
            return
        gather = lambda x: all_gather_tensor(x, self.dist)  # noqa: E731
        self.image_memory.update(gather(image_features), gather(batch.labels.image))
        self.text_memory.update(gather(text_features), gather(batch.labels.text))

    # --------------------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {"memory_image": self.image_memory.prototypes.cpu(), "memory_text": self.text_memory.prototypes.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the memories; labels are not restored (each epoch recomputes them from the model first)."""
        self.image_memory.prototypes = state["memory_image"].to(self.device)
        self.text_memory.prototypes = state["memory_text"].to(self.device)
