"""The in-memory form every annotation format parses into."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cpcl.errors import CpclError

SPLITS = ("train", "val", "test")


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
