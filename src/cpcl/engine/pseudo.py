"""Before each epoch: extract features in a fixed order, cluster each modality, mine outliers. Pseudo labels
are keyed by dataset index (image index / caption index); the objective rebuilds its memories from them."""

from __future__ import annotations

import contextlib
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cpcl.clustering.outliers import mine_outliers
from cpcl.clustering.pseudo_labels import cluster_features, relabel, summarise
from cpcl.config import ClusterConfig, Config, OplmConfig
from cpcl.data.datasets import ImageSet, TrainPairs
from cpcl.engine.distributed import SINGLE, DistInfo, broadcast_object, gather_in_order
from cpcl.engine.steps import autocast
from cpcl.evaluation.diagnostics import pseudo_label_quality, recovery_purity
from cpcl.io import atomic_write_bytes
from cpcl.model.encode import encode_images, encode_texts
from cpcl.model.retrieval_model import RetrievalModel
from cpcl.threads import labelling_threads, library_threads
from cpcl.timing import phase

log = logging.getLogger(__name__)


@dataclass
class LabelTimings:
    """Seconds an epoch's labelling took: extraction, clustering (with OPLM), and each phase within them
    (k-NN, distances, DBSCAN, OPLM; the trainer adds the memories)."""

    extract: float = 0.0
    cluster: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)


@dataclass
class EpochLabels:
    image: torch.Tensor  # (N_img,) pseudo label of every training image, -1 = outlier
    text: torch.Tensor  # (N_cap,) pseudo label of every training caption
    # what the report shows of them: cluster counts, outlier shares, OPLM recoveries, quality, "degenerate"
    stats: dict[str, Any] = field(default_factory=dict)
    usable: bool = True  # False: degenerate clustering, the epoch trains the instance loss alone
    # indices of the image / caption outliers OPLM gave a label (empty without OPLM)
    image_recovered: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    text_recovered: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    timings: LabelTimings = field(default_factory=LabelTimings)

    def save(self, path: Path) -> None:
        """The labels as ``.npz`` (a few bytes per sample): ``image``, ``text``, ``image_recovered``,
        ``text_recovered`` (int32) and ``usable``; written atomically."""
        buf = io.BytesIO()
        np.savez_compressed(buf, image=self.image.numpy().astype(np.int32), text=self.text.numpy().astype(np.int32),
                            image_recovered=self.image_recovered.astype(np.int32),
                            text_recovered=self.text_recovered.astype(np.int32), usable=np.bool_(self.usable))
        atomic_write_bytes(path, buf.getvalue())


def _fuse(image_features: torch.Tensor, text_features: torch.Tensor, owner: torch.Tensor):
    """Image + mean of its captions; caption + its image (both renormalised)."""
    sums = torch.zeros_like(image_features).index_add_(0, owner, text_features)
    counts = torch.bincount(owner, minlength=image_features.shape[0]).clamp(min=1)[:, None]
    fused_img = F.normalize(image_features + F.normalize(sums / counts, dim=1), dim=1)
    fused_txt = F.normalize(text_features + image_features[owner], dim=1)
    return fused_img, fused_txt


class _Shard(Dataset):
    """Items ``indices`` of an ``(image, index)`` dataset, yielded as ``(image, position in the shard)``."""

    def __init__(self, dataset: ImageSet, indices: torch.Tensor):
        self.dataset, self.indices = dataset, indices.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        return self.dataset[self.indices[position]][0], position


def extract_features(model: RetrievalModel, train_set: TrainPairs, image_set: ImageSet, device: torch.device,
                     batch_size: int, dist: DistInfo = SINGLE, progress: bool = False, precision: str = "fp32",
                     num_workers: int = 0):
    """Features of every training image and caption in dataset order, ``(N_img, D)`` and ``(N_cap, D)``
    float32 on the CPU.

    Each rank encodes every ``world_size``-th item; the shards are gathered so that every rank holds all.
    On CUDA the encoders run in the training ``precision`` (features are returned in float32).
    """
    img_idx = torch.arange(dist.rank, len(image_set), dist.world_size)
    txt_idx = torch.arange(dist.rank, len(train_set.tokens), dist.world_size)
    cast = autocast(device, precision) if device.type == "cuda" else contextlib.nullcontext()
    with cast, phase(log, f"extract images ({len(image_set)})"):
        f_img = encode_images(model, _Shard(image_set, img_idx), device, batch_size, num_workers=num_workers,
                              progress=progress, desc="extract images")
        f_img = gather_in_order(f_img, img_idx, len(image_set), dist)
    with cast, phase(log, f"extract captions ({len(train_set.tokens)})"):
        f_txt = encode_texts(model, train_set.tokens[txt_idx], device, batch_size, progress=progress,
                             desc="extract captions")
        f_txt = gather_in_order(f_txt, txt_idx, len(train_set.tokens), dist)
    return f_img, f_txt


class Labeller:
    """Pseudo labels for the epochs of one run: how to cluster (``cluster``, ``oplm``), how to extract
    (``batch_size``, ``precision``, ``num_workers``), and the identities it may read — ``supervised_ids``
    (N_img,) replace clustering by the true identities (the supervised upper bound only); ``report_ids``
    (N_img,) feed the quality diagnostics and nothing else.

    Under distributed training the extraction is sharded, rank 0 clusters, and every rank gets its labels.
    """

    def __init__(self, cluster: ClusterConfig, oplm: OplmConfig, batch_size: int, *, precision: str = "fp32",
                 num_workers: int = 0, supervised_ids: np.ndarray | None = None,
                 report_ids: np.ndarray | None = None, dist: DistInfo = SINGLE, progress: bool = False):
        self.cluster, self.oplm, self.batch_size = cluster, oplm, batch_size
        self.precision, self.num_workers, self.dist, self.progress = precision, num_workers, dist, progress
        self.supervised_ids, self.report_ids = supervised_ids, report_ids

    @classmethod
    def for_run(cls, config: Config, report_ids: np.ndarray | None, dist: DistInfo = SINGLE,
                progress: bool = False) -> Labeller:
        """The labeller a run's ``config`` describes (``train.supervised``: the true identities label)."""
        return cls(config.cluster, config.oplm, config.train.eval_batch_size, precision=config.train.precision,
                   num_workers=config.data.num_workers, report_ids=report_ids, dist=dist, progress=progress,
                   supervised_ids=report_ids if config.train.supervised else None)

    def __call__(self, model: RetrievalModel, train_set: TrainPairs, image_set: ImageSet,
                 device: torch.device) -> tuple[EpochLabels, torch.Tensor, torch.Tensor]:
        """Pseudo labels for the coming epoch -> ``(labels, image_features, text_features)``.

        The features (``(N_img, D)`` and ``(N_cap, D)``, dataset order, on the CPU) are those the labels were
        computed on. A degenerate clustering (no cluster, one giant cluster, or a hub-dominated neighbour
        graph that is not clustered at all) comes back with ``usable=False`` and a warning.
        """
        t0 = time.perf_counter()
        f_img, f_txt = extract_features(model, train_set, image_set, device, self.batch_size, self.dist,
                                        self.progress, self.precision, self.num_workers)
        time_extract = time.perf_counter() - t0
        labels = None
        if self.dist.is_main:
            threads = labelling_threads(self.dist.enabled)
            log.info("labelling on %d thread(s)%s", threads,
                     " (rank 0 labels, the other ranks wait)" if self.dist.enabled else "")
            labels = _cluster(f_img, f_txt, train_set.caption_to_image, self.cluster, self.oplm,
                              self.supervised_ids, self.report_ids, device, threads)
            labels.timings.extract = time_extract
        return broadcast_object(labels, self.dist), f_img, f_txt


def _cluster(f_img: torch.Tensor, f_txt: torch.Tensor, owner: torch.Tensor, cluster: ClusterConfig,
             oplm: OplmConfig, supervised_ids: np.ndarray | None, report_ids: np.ndarray | None,
             device: torch.device | None = None, threads: int | None = None) -> EpochLabels:
    stats: dict[str, Any] = {}
    timings = LabelTimings()
    t1 = time.perf_counter()
    skipped, recovered = {}, {}
    if supervised_ids is not None:
        y_img = relabel(supervised_ids)
        y_txt = y_img[owner.numpy()]
    else:
        feats_img, feats_txt = _fuse(f_img, f_txt, owner) if cluster.fuse_modalities else (f_img, f_txt)
        kwargs = dict(distance=cluster.distance, k1=cluster.k1, k2=cluster.k2, eps=cluster.eps,
                      min_samples=cluster.min_samples, device=device, knn_convention=cluster.knn_convention,
                      threads=threads)
        results = {"image": cluster_features(feats_img.numpy(), name="image", **kwargs),
                   "text": cluster_features(feats_txt.numpy(), name="text", **kwargs)}
        y_img, y_txt = results["image"].labels, results["text"].labels
        skipped = {name: r.skipped for name, r in results.items() if r.skipped}
        timings.phases.update({k: v for r in results.values() for k, v in r.seconds.items()})
    timings.cluster = time.perf_counter() - t1
    for name, y in (("image", y_img), ("text", y_txt)):
        s = summarise(y)
        stats[f"{name}_clusters"] = s.num_clusters
        stats[f"{name}_outliers"] = s.outlier_fraction
    if skipped:  # not clustered at all: nothing to mine, report or train on
        name, reason = next(iter(skipped.items()))
        log.warning("%s clustering skipped for this epoch (%s): it trains the instance loss only", name, reason)
        reason = name, reason
    else:
        reason = _degenerate(y_img, y_txt, cluster, supervised_ids)  # before mining: a rejected one is not mined
        if oplm.enabled and supervised_ids is None and reason is None:
            with phase(log, "OPLM", timings.phases), library_threads(threads):
                mined = mine_outliers(y_img, y_txt, f_img.numpy(), f_txt.numpy(), owner.numpy(), oplm.threshold)
            stats["image_recovered"] = int(mined.image_recovered.size)
            stats["text_recovered"] = int(mined.text_recovered.size)
            if report_ids is not None:
                stats.update(recovery_purity(mined, report_ids, owner.numpy()))
            y_img, y_txt = mined.image_labels, mined.text_labels
            recovered = {"image_recovered": mined.image_recovered, "text_recovered": mined.text_recovered}
            reason = _degenerate(y_img, y_txt, cluster, supervised_ids)  # mining can grow a cluster past the limit
        if report_ids is not None:
            stats.update({f"image_{k}": v for k, v in pseudo_label_quality(y_img, report_ids).items()})
            stats.update({f"text_{k}": v for k, v in pseudo_label_quality(y_txt, report_ids[owner.numpy()]).items()})
        if reason is not None:
            log.warning("%s clustering is degenerate (%s): this epoch trains the instance loss only", *reason)
    if reason is not None:
        stats["degenerate"] = "{}: {}".format(*reason)
    return EpochLabels(torch.as_tensor(y_img, dtype=torch.long), torch.as_tensor(y_txt, dtype=torch.long), stats,
                       usable=reason is None, timings=timings, **recovered)


def _degenerate(y_img: np.ndarray, y_txt: np.ndarray, cluster: ClusterConfig,
                supervised_ids: np.ndarray | None) -> tuple[str, str] | None:
    """``(modality, why)`` of the first modality whose clustering cannot train prototypes; None when both can
    (the true identities of the upper bound always can)."""
    if supervised_ids is not None:
        return None
    for name, y in (("image", y_img), ("text", y_txt)):
        reason = summarise(y).degenerate(cluster.max_cluster_fraction)
        if reason:
            return name, reason
    return None
