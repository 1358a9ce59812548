"""The in-memory form every annotation format parses into."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cpcl.config import ConfigError
from cpcl.errors import CpclError

SPLITS = ("train", "val", "test")
HOLD_OUT_SEED = 0  # the draw of ``Annotations.hold_out_val``: fixed, so that every run holds out the same persons


def normalise_split(value: str) -> str:
    """The field's rule: ``train`` -> train, ``test`` -> test, anything else -> val."""
    value = str(value).strip().lower()
    return value if value in ("train", "test") else "val"


@dataclass(frozen=True)
class ImageRecord:
    """One image and its captions.

    ``person_id`` is the identity label: kept for evaluation and diagnostics, never handed to training.
    ``source`` says where the record came from (``file#index``) so errors can name it.
    """

    image_path: Path
    captions: tuple[str, ...]
    person_id: int | None
    split: str
    source: str


@dataclass(frozen=True)
class Problem:
    source: str  # "file#record" or a file
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass
class Annotations:
    """All records of one dataset and every problem found while reading it."""

    name: str
    annotation_file: Path
    image_root: Path
    records: list[ImageRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was read but is worth knowing (repeated lines, ...)

    def split(self, name: str) -> list[ImageRecord]:
        return [r for r in self.records if r.split == name]

    def summary(self) -> dict[str, dict[str, int]]:
        """Per split: images, captions and identities (identities: records that carry one)."""
        out = {}
        for split in SPLITS:
            recs = self.split(split)
            ids = {r.person_id for r in recs if r.person_id is not None}
            out[split] = {"images": len(recs), "captions": sum(len(r.captions) for r in recs),
                          "identities": len(ids)}
        return out

    def fingerprint(self) -> dict:
        """What a run read, to tell later whether it is the same data: the annotation file (absolute), a SHA-256
        of every record as read (split, image path under the image root, captions, identity) and the
        per-split counts. A copy of the dataset elsewhere has the same digest."""
        digest = hashlib.sha256()
        for r in self.records:
            where = Path(os.path.relpath(r.image_path, self.image_root)).as_posix()
            digest.update(json.dumps([r.split, where, list(r.captions), r.person_id]).encode())
        return {"annotations": str(self.annotation_file.resolve()), "sha256": digest.hexdigest(),
                "splits": self.summary()}

    def _check_hold_out(self, key: str, count: int, unit: str) -> str:
        """The checks both hold-outs share -> ``"key=count"`` for their messages."""
        where = f"{key}={count}"
        if count < 0:
            raise ConfigError(f"{where}: expected a number of {unit}, at least 0")
        if self.split("val"):
            raise ConfigError(f"{where}: {self.annotation_file} already has a val split "
                              f"({len(self.split('val'))} images); set it to 0")
        return where

    def hold_out_val(self, num_ids: int, key: str = "data.val_ids_from_train") -> Annotations:
        """A copy whose val split is ``num_ids`` persons of the training split, drawn once with a fixed seed
        (every run and ``cpcl eval`` see the same ones), every image of each: they leave training whole.

        For datasets published without a val split (ICFG-PEDES), so that checkpoints and settings are still
        chosen on persons the model was not trained on. The identity labels decide only which records move;
        training never sees them."""
        if num_ids == 0:
            return self
        where = self._check_hold_out(key, num_ids, "persons")
        train = self.split("train")
        missing = sum(r.person_id is None for r in train)
        if missing:
            raise ConfigError(f"{where} needs a person id on every training record; {missing} in "
                              f"{self.annotation_file} have none")
        persons = sorted({r.person_id for r in train})
        if num_ids >= len(persons):
            raise ConfigError(f"{where}: the training split of {self.annotation_file} has only {len(persons)} "
                              "persons; keep some to train on")
        held = set(np.random.default_rng(HOLD_OUT_SEED).choice(persons, size=num_ids, replace=False).tolist())
        records = [replace(r, split="val") if r.split == "train" and r.person_id in held else r
                   for r in self.records]
        return replace(self, records=records)

    def hold_out_pairs(self, num_images: int, key: str = "data.val_pairs_from_train") -> Annotations:
        """A copy whose val split is ``num_images`` images of the training split with all their captions, drawn
        once with a fixed seed (every run sees the same ones); they leave training.

        For data without a val split and without identities (a practitioner's own pairs): held-out pairs the
        model was not trained on, which label-free selection scores on. No identity label is read: a held-out
        record loses its ``person_id``, if it had one, since its person may have other images in the training
        split, and nothing may be chosen on training identities."""
        if num_images == 0:
            return self
        where = self._check_hold_out(key, num_images, "images")
        train = [i for i, r in enumerate(self.records) if r.split == "train"]
        if num_images >= len(train):
            raise ConfigError(f"{where}: the training split of {self.annotation_file} has only {len(train)} "
                              "images; keep some to train on")
        held = set(np.random.default_rng(HOLD_OUT_SEED).choice(train, size=num_images, replace=False).tolist())
        return replace(self, records=[replace(r, split="val", person_id=None) if i in held else r
                                      for i, r in enumerate(self.records)])

    def duplicate_images(self) -> list[Path]:
        counts = Counter(r.image_path for r in self.records)
        return [p for p, n in counts.items() if n > 1]


class DatasetError(CpclError, ValueError):
    """A dataset could not be read; the message names the file and the records at fault."""

    def __init__(self, problems: list[Problem], limit: int = 10):
        self.problems = problems
        shown = "\n  ".join(str(p) for p in problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more (run `cpcl data check` for all)" if len(
            problems) > limit else ""
        super().__init__(f"{len(problems)} problem(s) in the dataset:\n  {shown}{more}")
