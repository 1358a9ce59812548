"""What a run reads and claims before its first epoch: the run folder, the dataset's training and evaluation
sets, and what will choose ``best.pt`` — each refused in one sentence before any training."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cpcl.config import Config, ConfigError
from cpcl.data.datasets import ImageSet, TrainPairs
from cpcl.data.sources import load_dataset
from cpcl.data.transforms import build_eval_transform, build_train_transform
from cpcl.engine.distributed import DistInfo, on_main_first
from cpcl.errors import DataChangedError
from cpcl.evaluation.evaluate import EvalSplit
from cpcl.io import claim_outputs
from cpcl.model.backbone import build_tokenizer
from cpcl.model.preprocess import Preprocess
from cpcl.timing import phase

log = logging.getLogger("cpcl.engine.trainer")  # the run's log lines keep the name they always had

RUN_FILES = ("config.yaml", "metrics.jsonl", "best.pt", "best-on-val.pt", "best-label-free.pt", "last.pt",
             "curves.png", "results.json", "results.md", "pseudo_labels", "tensorboard")


@dataclass
class TrainData:
    """A config's data, ready to train and evaluate on."""

    name: str  # for titles: the dataset format
    train_set: TrainPairs
    extract_set: ImageSet  # the training images with eval transforms, for pseudo labelling
    val: EvalSplit | None  # rank 0 only; its pairs score label-free, its identities (if any) on val
    test: EvalSplit | None  # rank 0 only
    # identities of the training images: read for the pseudo-label report, and by the supervised upper bound;
    # never by a loss, a sampler or the mining of a weakly supervised run
    report_ids: np.ndarray | None
    select_on: str | None = None  # what chooses best.pt: "val", "label-free", or None (nothing held out)
    backoff_on: str | None = None  # what the back-off counts (cluster.backoff_on resolved), None without one
    fingerprint: dict | None = None  # what was read (Annotations.fingerprint): a resume must read the same


def recorded_paths(config: Config) -> Config:
    """``config`` with ``data.root`` and a ``model.pretrained`` file made absolute, as a run records them: a run
    resumed (or evaluated) from another folder reads the files it started with, not others of the same
    relative name."""
    data = replace(config.data, root=str(Path(config.data.root).expanduser().resolve()))
    weights = config.model.pretrained
    if weights and Path(weights).expanduser().is_file():
        return replace(config, data=data, model=replace(config.model,
                                                        pretrained=str(Path(weights).expanduser().resolve())))
    return replace(config, data=data)


def check_same_data(started: dict | None, now: dict, out: Path) -> None:
    """Refuse to resume the run in ``out`` on other data than it started on, naming what changed (a run saved
    before cpcl recorded its data is resumed with a warning: it cannot be checked)."""
    if started is None:
        log.warning("%s does not record the data it started on (an older cpcl): resuming without checking that "
                    "%s is the same", out, now["annotations"])
        return
    if started["sha256"] == now["sha256"]:
        if started["annotations"] != now["annotations"]:
            log.info("resuming on %s, the same records as %s, where the run started", now["annotations"],
                     started["annotations"])
        return
    changed = [f"{split}: {was['images']} images / {was['captions']} captions then, {is_['images']} / "
               f"{is_['captions']} now" for split, was in started["splits"].items()
               if (is_ := now["splits"].get(split, {"images": 0, "captions": 0})) != was]
    where = (f"{started['annotations']}" if started["annotations"] == now["annotations"] else
             f"{started['annotations']}, and this resume reads {now['annotations']}")
    raise DataChangedError(
        f"cannot resume {out}: it started on {where}, whose records differ "
        f"({'; '.join(changed) or 'the same counts, other paths, captions or identities'}); a run continues on the "
        "data it started on: train this data into a new --out (cpcl eval of its checkpoints on any data stays "
        "possible)")


def claim_run_dir(out: Path, overwrite: bool = False) -> None:
    """Refuse a directory that holds a run (or, with ``overwrite``, remove that run's files). The config and
    metrics log of a run that never completed an epoch (no ``last.pt``) are no run: they are replaced."""
    never_trained = out.is_dir() and not (out / "last.pt").exists() and all(
        p.name in ("config.yaml", "metrics.jsonl") for p in out.iterdir() if p.name in RUN_FILES)
    claim_outputs(out, RUN_FILES, overwrite=overwrite or never_trained, holds="a training run",
                  instead=f"continue it with `cpcl train --resume {out}`, or choose another --out")


def load_train_data(config: Config, dist: DistInfo, progress: bool) -> TrainData:
    """Read (or generate, on rank 0) the dataset of ``config``, refused with every problem of its records and
    images before any work, and build the training and evaluation sets."""
    ann = on_main_first(lambda: load_dataset(config.data, progress=progress), dist)
    train_records, val_records, test_records = ann.split("train"), ann.split("val"), ann.split("test")
    if not train_records:
        raise ValueError(f"{ann.annotation_file}: no training records")
    log.info("data %s: %s", ann.annotation_file, ann.summary())
    tokenizer = build_tokenizer(config.model.arch, config.model.context_length)
    preprocess = Preprocess.of(config.model)
    train_set = TrainPairs(train_records, tokenizer, build_train_transform(preprocess, config.augment),
                           cache_images=config.data.cache_images)
    if train_set.images.caches and config.data.num_workers:  # workers end with each epoch: fill it here, once
        with phase(log, f"cache {len(train_set.images)} training images"):
            train_set.images.fill(config.data.num_workers, progress)
    ids = [r.person_id for r in train_records]
    report_ids = None if any(i is None for i in ids) else np.asarray(ids, dtype=np.int64)
    if config.train.supervised and report_ids is None:
        raise ValueError("train.supervised=true needs a person_id on every training record")
    extract_set = ImageSet(train_set.images.paths, build_eval_transform(preprocess), train_set.images)
    select_on, backoff_on = resolve_select_on(config, ann.annotation_file, val_records)
    val = test = None
    if dist.is_main:
        val = EvalSplit(val_records, tokenizer, preprocess, config.data.cache_images) if val_records else None
        test = EvalSplit(test_records, tokenizer, preprocess) if test_records else None
        if test is not None and not test.has_ids:
            log.info("the test split is scored on %s", test.scored_as)
        if select_on is None:
            log.warning("no val split: every epoch is kept as 'last' and no best checkpoint is chosen (hold pairs "
                        "out with data.val_pairs_from_train=N to choose label-free)")
        elif select_on == "label-free":
            log.info("best.pt is chosen label-free: %s on the %d held-out pairs, no identity read "
                     "(train.select_on=%s)", config.train.label_free_score, len(val.captions),
                     config.train.select_on)
    return TrainData(ann.name, train_set, extract_set, val, test, report_ids, select_on, backoff_on,
                     ann.fingerprint())


def resolve_select_on(config: Config, annotation_file: Path, val_records: list) -> tuple[str | None, str | None]:
    """What chooses best.pt (``train.select_on``) and what the back-off counts (``cluster.backoff_on``) ->
    ``(select_on, backoff_on)``.

    ``select_on`` "auto" is "val" where the val split has identities, "label-free" where it has pairs only, None
    without a val split; ``backoff_on`` "auto" is what ``select_on`` resolved to (None without a back-off).
    An explicit choice the data cannot serve, or a back-off that would read val identities while best.pt is
    chosen without any, is refused in one sentence, before any training."""
    has_ids = bool(val_records) and all(r.person_id is not None for r in val_records)
    wanted = config.train.select_on
    if wanted == "auto":
        wanted = "val" if has_ids else "label-free" if val_records else None
    if wanted == "val" and not has_ids:
        what = (f"{sum(r.person_id is None for r in val_records)} of its {len(val_records)} val records have no "
                "person_id") if val_records else "it has no val split"
        raise ConfigError(f"train.select_on=val needs identities in the val split, and {annotation_file}: {what}; "
                          "choose label-free (train.select_on=label-free)")
    if wanted == "label-free" and not val_records:
        raise ConfigError(f"train.select_on=label-free needs held-out pairs, and {annotation_file} has no val "
                          "split: hold some out with data.val_pairs_from_train=N")
    if not config.cluster.backoff_patience:
        return wanted, None
    if not val_records:
        raise ConfigError(f"cluster.backoff_patience needs held-out data, and {annotation_file} has no val split")
    backoff_on = wanted if config.cluster.backoff_on == "auto" else config.cluster.backoff_on
    if backoff_on == "val" and wanted == "label-free":
        raise ConfigError(f"cluster.backoff_on=val reads val identities, but best.pt is chosen label-free "
                          f"({annotation_file}: train.select_on={config.train.select_on}), which reads none; count the "
                          "back-off label-free (cluster.backoff_on=auto or label-free)")
    if backoff_on == "val" and not has_ids:
        raise ConfigError(f"cluster.backoff_on=val needs identities in the val split of {annotation_file}; "
                          "count the back-off label-free (cluster.backoff_on=label-free)")
    return wanted, backoff_on
