"""Encode an evaluation split (every caption queries every image) and compute its metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from cpcl.data.datasets import ImageSet, ImageStore, eval_split, tokenize_all
from cpcl.data.formats import load_annotations
from cpcl.data.records import ImageRecord
from cpcl.data.transforms import build_eval_transform
from cpcl.evaluation.label_free import pair_scores
from cpcl.evaluation.metrics import RetrievalMetrics, retrieval_metrics
from cpcl.model.checkpoint import load_checkpoint
from cpcl.model.encode import encode_images, encode_texts
from cpcl.model.preprocess import Preprocess
from cpcl.model.retrieval_model import RetrievalModel


class EvalSplit:
    """A split's gallery and queries, tokenised once and reused every epoch.

    ``caption_to_image`` (N_cap,) is the gallery column of each query's own image, which label-free scores
    read. Records without identities make a split of pairs alone: ``has_ids`` is False, :meth:`evaluate`
    (which needs them) refuses it, and :meth:`report` gives its pair scores instead."""

    def __init__(self, records: Sequence[ImageRecord], tokenizer: Callable, preprocess: Preprocess,
                 cache_images: bool = False):
        self.has_ids, self._no_ids = True, ""
        try:
            paths, self.gallery_ids, self.captions, self.query_ids = eval_split(records)
        except ValueError as exc:  # records without identities: pairs alone
            self.has_ids, self._no_ids = False, str(exc)
            paths, self.captions = [r.image_path for r in records], [c for r in records for c in r.captions]
            self.gallery_ids = self.query_ids = None
        self.caption_to_image = torch.tensor([i for i, r in enumerate(records) for _ in r.captions], dtype=torch.long)
        self.images = ImageSet(paths, build_eval_transform(preprocess), ImageStore(paths, cache=cache_images))
        self.tokens = tokenize_all(tokenizer, self.captions)

    def features(self, model: RetrievalModel, device: torch.device, batch_size: int = 256,
                 progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(queries (num_captions, D), gallery (num_images, D))`` unit features, on ``device``."""
        gallery = encode_images(model, self.images, device, batch_size, progress=progress)
        queries = encode_texts(model, self.tokens, device, batch_size, progress=progress)
        return queries.to(device), gallery.to(device)

    def similarity(self, model: RetrievalModel, device: torch.device, batch_size: int = 256,
                   progress: bool = False) -> torch.Tensor:
        """``(num_captions, num_images)`` cosine similarities, on ``device`` (the metrics run where they are)."""
        queries, gallery = self.features(model, device, batch_size, progress)
        return queries @ gallery.t()

    def metrics(self, similarity: torch.Tensor) -> RetrievalMetrics:
        """Identity-level retrieval metrics of a :meth:`similarity` matrix."""
        if not self.has_ids:
            raise ValueError(self._no_ids)
        return retrieval_metrics(similarity, self.query_ids, self.gallery_ids)

    def evaluate(self, model: RetrievalModel, device: torch.device, batch_size: int = 256,
                 progress: bool = False) -> RetrievalMetrics:
        return self.metrics(self.similarity(model, device, batch_size, progress))

    def report(self, model: RetrievalModel, device: torch.device, batch_size: int = 256,
               progress: bool = False) -> dict[str, float]:
        """What the split can tell of ``model``: the identity metrics (``rank1`` ... ``rSum``) where its records
        have identities, else the pair scores (``pair-R1``, ``pair-mAP``: each caption retrieving its own image)."""
        similarity = self.similarity(model, device, batch_size, progress)
        if self.has_ids:
            return self.metrics(similarity).as_dict()
        return {**pair_scores(similarity, self.caption_to_image), "num_queries": len(self.captions),
                "num_gallery": len(self.images)}

    @property
    def scored_as(self) -> str:
        """One phrase for titles and logs: what :meth:`report` measures on this split."""
        return "identities" if self.has_ids else "pairs only (no person_id: pair-R1 and pair-mAP, each caption " \
                                                 "retrieving its own image; identity metrics need identities)"


def load_eval_split(checkpoint, data_format: str, root, split: str, device: torch.device,
                    val_ids_from_train: int = 0):
    """A checkpoint's model and a dataset split ready to rank -> ``(model, EvalSplit, checkpoint payload)``.

    ``val_ids_from_train``: the val split is that many persons held out of the training split, as a run
    with ``data.val_ids_from_train`` holds them out."""
    model, tokenizer, preprocess, config, payload = load_checkpoint(checkpoint, device)
    records = load_annotations(data_format, root).hold_out_val(val_ids_from_train, "--val-ids-from-train").split(split)
    if not records:
        held = config.data.val_ids_from_train
        hint = (f" (the checkpoint's run held {held} persons of the training split out as val: pass "
                f"--val-ids-from-train {held})" if split == "val" and held else "")
        raise ValueError(f"{root} has no {split} split{hint}")
    return model, EvalSplit(records, tokenizer, preprocess), payload
