"""Parsers for the annotation formats: CUHK-PEDES, ICFG-PEDES, RSTPReid and a generic JSONL.

Each parser reads every record, collects every problem (missing key, wrong type, empty caption,
missing image) with the file and record index, and returns :class:`Annotations`. ``load_annotations``
raises :class:`DatasetError` when there is any problem; ``cpcl data check`` lists them all instead, with
the images that do not decode (:mod:`cpcl.data.checks`, which training runs too).
Parsers are registered in :data:`FORMATS` under the name ``--format`` / ``data.format`` takes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpcl.data.records import Annotations, DatasetError, ImageRecord, Problem, normalise_split
from cpcl.registry import Registry

Parser = Callable[[Path, bool], Annotations]  # (root, check that image files exist) -> annotations
FORMATS: Registry[Parser] = Registry("dataset format")


def _locate(root: Path, folder: str, names: tuple[str, ...]) -> Path:
    """Accept either the dataset folder itself or its parent as ``root``."""
    for base in (root, root / folder):
        for name in names:
            if (base / name).is_file():
                return base / name
    tried = ", ".join(str(b / n) for b in (root, root / folder) for n in names)
    raise DatasetError([Problem(str(root), f"annotation file not found (looked for {tried})")])


def _check_person_id(value: Any, where: str, problems: list[Problem]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        problems.append(Problem(where, f"'id' must be an integer, got {value!r}"))
        return None
    try:
        return int(value)
    except ValueError:
        problems.append(Problem(where, f"'id' must be an integer, got {value!r}"))
        return None


def _check_captions(value: Any, where: str, problems: list[Problem]) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        problems.append(Problem(where, f"'captions' must be a non-empty list of strings, got {value!r}"))
        return None
    out = []
    for j, cap in enumerate(value):
        if not isinstance(cap, str):
            problems.append(Problem(where, f"caption {j} is not a string: {cap!r}"))
            return None
        if not cap.strip():
            problems.append(Problem(where, f"caption {j} is empty"))
            return None
        out.append(cap.strip())
    return tuple(out)


@dataclass(frozen=True)
class ListFormat:
    """A benchmark's JSON list of records: its folder, candidate file names and the key of the image path."""

    name: str
    folder: str
    files: tuple[str, ...]
    path_key: str

    def __call__(self, root: Path, check_files: bool) -> Annotations:
        return _parse_list_format(self, root, check_files)


for _format in (ListFormat("cuhk-pedes", "CUHK-PEDES", ("reid_raw.json",), "file_path"),
                ListFormat("icfg-pedes", "ICFG-PEDES", ("ICFG-PEDES.json", "ICFG_PEDES.json"), "file_path"),
                ListFormat("rstpreid", "RSTPReid", ("data_captions.json",), "img_path")):
    FORMATS.register(_format.name, _format)


def _parse_list_format(fmt: ListFormat, root: Path, check_files: bool) -> Annotations:
    path_key = fmt.path_key
    ann_file = _locate(root, fmt.folder, fmt.files)
    image_root = ann_file.parent / "imgs"
    result = Annotations(name=fmt.name, annotation_file=ann_file, image_root=image_root)
    try:
        data = json.loads(ann_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError([Problem(str(ann_file), f"invalid JSON: {exc}")]) from None
    if not isinstance(data, list):
        raise DatasetError([Problem(str(ann_file), "expected a JSON list of records")])
    for i, rec in enumerate(data):
        where = f"{ann_file}#{i}"
        if not isinstance(rec, dict):
            result.problems.append(Problem(where, "record is not an object"))
            continue
        missing = [k for k in ("split", "captions", path_key, "id") if k not in rec]
        if missing:
            result.problems.append(Problem(where, f"missing key(s): {', '.join(missing)}"))
            continue
        captions = _check_captions(rec["captions"], where, result.problems)
        person_id = _check_person_id(rec["id"], where, result.problems)
        rel = rec[path_key]
        if not isinstance(rel, str) or not rel:
            result.problems.append(Problem(where, f"'{path_key}' must be a non-empty string"))
            continue
        if not isinstance(rec["split"], str):
            result.problems.append(Problem(where, f"'split' must be a string, got {rec['split']!r}"))
            continue
        path = image_root / rel
        if check_files and not path.is_file():
            result.problems.append(Problem(where, f"image not found: {path}"))
            continue
        if captions is None or person_id is None:
            continue
        result.records.append(ImageRecord(path, captions, person_id, normalise_split(rec["split"]), where))
    return result


@FORMATS.register("jsonl")
def _parse_jsonl(root: Path, check_files: bool) -> Annotations:
    ann_file = root if root.is_file() else root / "annotations.jsonl"
    if not ann_file.is_file():
        raise DatasetError([Problem(str(root), f"annotation file not found: {ann_file}")])
    image_root = ann_file.parent
    result = Annotations(name="jsonl", annotation_file=ann_file, image_root=image_root)
    by_image: dict[str, dict[str, Any]] = {}
    for i, line in enumerate(ann_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{ann_file}:{i}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            result.problems.append(Problem(where, f"invalid JSON: {exc}"))
            continue
        if not isinstance(rec, dict):
            result.problems.append(Problem(where, "line is not a JSON object"))
            continue
        unknown = set(rec) - {"image", "caption", "captions", "person_id", "split"}
        if unknown:
            result.problems.append(Problem(where, f"unknown key(s): {', '.join(sorted(unknown))}"))
            continue
        if "image" not in rec or not isinstance(rec["image"], str) or not rec["image"]:
            result.problems.append(Problem(where, "'image' (a path relative to the file) is required"))
            continue
        if "caption" not in rec and "captions" not in rec:
            result.problems.append(Problem(where, "missing key: caption"))
            continue
        captions = _check_captions(rec.get("captions", rec.get("caption")), where, result.problems)
        if captions is None:
            continue
        person_id = None
        if rec.get("person_id") is not None:
            person_id = _check_person_id(rec["person_id"], where, result.problems)
            if person_id is None:
                continue
        split = normalise_split(rec.get("split", "train"))
        entry = by_image.get(rec["image"])
        if entry is None:
            by_image[rec["image"]] = {"captions": list(captions), "person_id": person_id, "split": split,
                                      "where": where}
            continue
        if entry["person_id"] != person_id or entry["split"] != split:
            result.problems.append(Problem(where, f"image {rec['image']} appears again (first at "
                                                  f"{entry['where']}) with another person_id or split"))
            continue
        repeated = [c for c in captions if c in entry["captions"]]
        if repeated:  # the same line twice would be two training pairs, and two queries at test
            result.notes.append(f"{where}: repeats a caption of {rec['image']} (first at {entry['where']}); "
                                "kept once")
        entry["captions"].extend(c for c in captions if c not in entry["captions"])
    for rel, entry in by_image.items():
        path = image_root / rel
        if check_files and not path.is_file():
            result.problems.append(Problem(entry["where"], f"image not found: {path}"))
            continue
        result.records.append(ImageRecord(path, tuple(entry["captions"]), entry["person_id"], entry["split"],
                                          entry["where"]))
    return result


def read_annotations(fmt: str, root: str | Path, check_files: bool = True) -> Annotations:
    """Parse a dataset, collecting every problem instead of stopping at the first."""
    return FORMATS.get(fmt)(Path(root), check_files)


def load_annotations(fmt: str, root: str | Path) -> Annotations:
    """Parse a dataset and raise :class:`DatasetError` naming the file and records if any is bad."""
    ann = read_annotations(fmt, root)
    if ann.problems:
        raise DatasetError(ann.problems)
    if not ann.records:
        raise DatasetError([Problem(str(ann.annotation_file), "no records")])
    return ann
