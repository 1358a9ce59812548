"""Every problem of a dataset before any work is done: the records' (from the parser) and the images'.

Decoding every image of CUHK-PEDES takes a while, so the result for each file is remembered by path, size
and modification time (``$CPCL_CACHE_DIR``, default ``~/.cache/cpcl``): ``cpcl data check`` and every
``cpcl train`` on the same files decode them once. A file that changes is decoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cpcl.data.records import Annotations, DatasetError, ImageRecord, Problem
from cpcl.io import atomic_write_text

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cpcl"
    return Path(os.environ.get("CPCL_CACHE_DIR", default))


def dataset_problems(ann: Annotations, decode_images: bool = True,
                     progress: Callable | None = None) -> list[Problem]:
    """The parser's problems, then (``decode_images``) every image that does not decode, each naming its record."""
    problems = list(ann.problems)
    if decode_images:
        problems += image_problems(ann.records, ann.annotation_file, progress)
    return problems


def require_clean(ann: Annotations, progress: Callable | None = None) -> Annotations:
    """``ann`` if neither a record nor an image has a problem; else a :class:`DatasetError` listing them."""
    problems = dataset_problems(ann, progress=progress)
    if problems:
        raise DatasetError(problems)
    if not ann.records:
        raise DatasetError([Problem(str(ann.annotation_file), "no records")])
    return ann


def image_problems(records: Sequence[ImageRecord], annotation_file: Path,
                   progress: Callable | None = None) -> list[Problem]:
    """Open and fully decode every record's image (each file once, results cached); a problem for each failure."""
    key = hashlib.sha1(str(Path(annotation_file).resolve()).encode()).hexdigest()[:16]
    cache_file = cache_dir() / f"images-{key}.json"
    known = _read_cache(cache_file)
    paths = sorted({str(r.image_path) for r in records})
    stamps = {p: _stamp(p) for p in paths}
    todo = [p for p in paths if stamps[p] is not None and known.get(p, [None])[:2] != stamps[p]]
    if todo:
        workers = min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:  # decoding releases the GIL
            results = pool.map(_decode_error, todo)
            for path, error in zip(todo, progress(results, total=len(todo)) if progress else results, strict=True):
                known[path] = [*stamps[path], error]
        _write_cache(cache_file, {p: known[p] for p in paths if p in known})
    problems = []
    for rec in records:
        path = str(rec.image_path)
        error = "file not found" if stamps[path] is None else known[path][2]
        if error:
            problems.append(Problem(rec.source, f"unreadable image {rec.image_path}: {error}"))
    return problems


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _decode_error(path: str) -> str | None:
    from PIL import Image

    from cpcl.data.images import to_rgb

    try:
        with Image.open(path) as im:
            to_rgb(im).load()
    except Exception as exc:  # any decoder failure is a problem to report, not a crash
        return str(exc) or type(exc).__name__
    return None


def _read_cache(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("images", {}) if data.get("version") == CACHE_VERSION else {}


def _write_cache(path: Path, images: dict[str, list]) -> None:
    try:
        atomic_write_text(path, json.dumps({"version": CACHE_VERSION, "images": images}))
    except OSError as exc:  # a read-only home: the check still ran, it is only not remembered
        log.debug("image check cache not written (%s)", exc)
