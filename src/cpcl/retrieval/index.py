"""A gallery index on disk: embeddings, image paths relative to a root, and the model that made them.

Layout of an index directory::

    index.json              manifest: format, generation, count, root, model fingerprint, kind, faiss params
    embeddings.<gen>.npy    (N, D) float32 unit rows, Fortran-ordered (see :func:`exact_top_k`)
    paths.<gen>.txt         N paths relative to the root, one per line, in embedding order
    faiss.<gen>.index       the approximate index (kinds ``ivf`` and ``ivf-sq8`` only)

Every save writes a new generation's files and then replaces ``index.json`` atomically, so an index
killed in the middle of ``add`` still opens as it was before. Search is exact inner product by default
(chunked matrix products, no approximation); ``ivf`` / ``ivf-sq8`` build a FAISS inverted-file index for
large galleries, searched with ``nprobe`` lists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpcl.errors import CpclError
from cpcl.io import atomic_write_text, claim_outputs
from cpcl.retrieval.kinds import INDEX_KINDS, IndexKind

log = logging.getLogger(__name__)

INDEX_FORMAT = "cpcl-index"
INDEX_VERSION = 1
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
_EXACT_CHUNK = 1 << 18  # gallery rows per matrix product: bounds the (chunk, Q) score block


class GalleryIndexError(CpclError, RuntimeError):
    """An index cannot be read, written or used as asked."""


class ModelMismatchError(GalleryIndexError):
    """The index was built by another model than the one asked to search it."""


@dataclass(frozen=True)
class SearchHit:
    rank: int  # 1-based
    item: int  # row in the index
    path: str  # relative to the index root, posix separators
    score: float  # cosine similarity

    def as_dict(self) -> dict:
        return {"rank": self.rank, "item": self.item, "path": self.path, "score": round(self.score, 6)}


def list_images(source: str | Path | Sequence[str | Path], root: str | Path | None = None) -> tuple[Path, list[Path]]:
    """The images a build or add names -> ``(root, absolute paths)``.

    ``source`` is a directory (searched recursively for image files, in sorted order), a text file with
    one image path per line (relative to that file's directory; blank lines and ``#`` comments skipped),
    or a list of paths. The root defaults to the directory itself, or the common parent of the images.
    """
    if isinstance(source, (str, Path)):
        source = Path(source)
        if source.is_dir():
            paths = sorted(p.resolve() for p in source.rglob("*")
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not paths:
                raise GalleryIndexError(f"{source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
            base = source.resolve()
        elif source.is_file():
            paths = _read_image_list(source)
            base = None
        else:
            raise GalleryIndexError(f"{source}: no such directory or image list file")
    else:
        paths = [Path(p).resolve() for p in source]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise GalleryIndexError(f"{len(missing)} images do not exist (first: {missing[0]})")
        if not paths:
            raise GalleryIndexError("no images given")
        base = None
    if root is None:
        root = base or Path(os.path.commonpath([p.parent for p in paths]))
    root = Path(root).resolve()
    outside = [p for p in paths if not p.is_relative_to(root)]
    if outside:
        raise GalleryIndexError(f"{len(outside)} images are outside the index root {root} (first: {outside[0]})")
    bad = [p for p in paths if "\n" in str(p)]
    if bad:
        raise GalleryIndexError(f"image path with a line break cannot be indexed: {bad[0]!r}")
    return root, paths


def _read_image_list(source: Path) -> list[Path]:
    paths, missing = [], []
    for lineno, line in enumerate(source.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = (source.parent / line).resolve()
        if path.is_file():
            paths.append(path)
        else:
            missing.append(f"line {lineno}: {line}")
    if missing:
        raise GalleryIndexError(f"{source}: {len(missing)} listed images do not exist (first: {missing[0]})")
    if not paths:
        raise GalleryIndexError(f"{source}: lists no images")
    return paths


INDEX_FILES = ("index.json", "embeddings.*.npy", "paths.*.txt", "faiss.*.index")


def check_new_index_dir(directory: str | Path, overwrite: bool = False) -> None:
    """Refuse a directory that holds an index (or, with ``overwrite``, remove that index's files)."""
    claim_outputs(directory, INDEX_FILES, overwrite=overwrite, holds="an index",
                  instead="add to it with `cpcl index add`, or choose another --out", error=GalleryIndexError)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def default_nlist(count: int) -> int:
    """Inverted lists for ``count`` vectors: about √N (1000 lists for a million), with at least 39 training
    points per list. FAISS suggests up to 16·√N; fewer lists keep k-means training short on a CPU."""
    return max(1, min(int(math.sqrt(count)), count // 39))


def _build_faiss(kind: IndexKind, embeddings: np.ndarray, nlist: int, seed: int = 0):
    index = kind.make_faiss(embeddings.shape[1], nlist)
    # k-means on a sample: 64 points per list is plenty and keeps training cheap on a million vectors
    sample = embeddings
    if len(embeddings) > 64 * nlist:
        rows = np.random.default_rng(seed).choice(len(embeddings), 64 * nlist, replace=False)
        sample = embeddings[np.sort(rows)]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    _faiss_add(index, embeddings)
    return index


def _faiss_add(index, embeddings: np.ndarray, chunk: int = 1 << 16) -> None:
    for start in range(0, len(embeddings), chunk):
        index.add(np.ascontiguousarray(embeddings[start:start + chunk], dtype=np.float32))


class GalleryBase:
    """What every gallery index is, whatever stores it: a manifest (root, kind, the model of the embeddings)
    and relative image paths with a row number each. Subclasses store and search the rows."""

    manifest: dict
    nprobe: int
    incremental = False  # True: ``add`` may be called chunk by chunk as images are encoded

    @property
    def location(self) -> str:
        raise NotImplementedError

    @property
    def root(self) -> Path:
        return Path(self.manifest["root"])

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["model"]["fingerprint"]

    @property
    def checkpoint(self) -> Path:
        return Path(self.manifest["model"]["checkpoint"])

    def query_checkpoint(self, checkpoint: str | Path | None = None) -> Path:
        """The checkpoint to encode with: ``checkpoint`` if given, else the one that built the index; it must exist
        (whether it is the same model is checked against the fingerprint once it is loaded)."""
        path = Path(checkpoint) if checkpoint else self.checkpoint
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} (which built {self.location}) not found; "
                                    "pass --checkpoint with a copy of it")
        return path

    def check_model(self, fingerprint: str, checkpoint: str | Path | None = None) -> None:
        if fingerprint != self.fingerprint:
            which = f"checkpoint {checkpoint}" if checkpoint else "this model"
            raise ModelMismatchError(
                f"index {self.location} was built with model {self.fingerprint} ({self.checkpoint}), but "
                f"{which} is model {fingerprint}: its embeddings are not comparable. Search with the model "
                f"that built the index, or rebuild it with `cpcl index build --checkpoint ...`")

    def relative(self, path: str | Path) -> str:
        """An image path as the index stores it (relative to the root, posix), refused if outside the root."""
        path = Path(path).resolve()
        if not path.is_relative_to(self.root):
            raise GalleryIndexError(f"{path} is outside the index root {self.root}; build a new index for it")
        return path.relative_to(self.root).as_posix()

    def outside(self, image_paths: Sequence[Path]) -> tuple[list[Path], Path]:
        """The images of ``image_paths`` outside the root, and the nearest folder that holds them and the root."""
        outside = [Path(p).resolve() for p in image_paths if not Path(p).resolve().is_relative_to(self.root)]
        return outside, Path(os.path.commonpath([self.root, *(p.parent for p in outside)]))

    def hold(self, image_paths: Sequence[Path]) -> None:
        """Make room for ``image_paths`` (a folder added later, beside the first): a root they lie outside of is
        refused here, naming the command that builds an index holding them all; a file index moves its root
        instead (:meth:`GalleryIndex.hold`)."""
        outside, common = self.outside(image_paths)
        if outside:
            raise GalleryIndexError(
                f"{outside[0]} is outside the root {self.root} of {self.location}, and a Milvus collection keeps its "
                f"root (its paths are the rows' keys): build it again over a folder that holds every image, with "
                f"`cpcl index build --root {common} --images FOLDER_OR_LIST ... --overwrite` (an image list file can "
                "name images of several folders)")

    def item_of(self, relative_path: str) -> int | None:
        """The row of an indexed path, or None: the only way a path maps to a file served from the index."""
        raise NotImplementedError

    def path_of(self, item: int) -> str:
        raise NotImplementedError

    def absolute_path(self, item: int) -> Path:
        return self.root / self.path_of(item)

    def missing(self, relative_paths: Sequence[str]) -> list[str]:
        """The paths of ``relative_paths`` the index does not hold."""
        return [p for p in relative_paths if self.item_of(p) is None]

    def search_hits(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> list[list[SearchHit]]:
        """``queries`` (Q, D) unit rows -> the top-``k`` hits of each, best first."""
        raise NotImplementedError


class GalleryIndex(GalleryBase):
    """Embeddings of a gallery with their relative paths, in files; searched by inner product."""

    def __init__(self, directory: Path, manifest: dict, embeddings: np.ndarray, paths: list[str],
                 faiss_index=None):
        self.directory = Path(directory)
        self.manifest = manifest
        self.embeddings = embeddings
        self.paths = paths
        self._faiss = faiss_index
        self._item_of_path = {p: i for i, p in enumerate(paths)}
        self.nprobe = int(manifest.get("nprobe", 16))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def location(self) -> str:
        return str(self.directory)

    def item_of(self, relative_path: str) -> int | None:
        return self._item_of_path.get(relative_path)

    def path_of(self, item: int) -> str:
        return self.paths[item]

    # --------------------------------------------------------------------------------- create / load

    @classmethod
    def create(cls, directory: str | Path, root: str | Path, embeddings: np.ndarray, image_paths: Sequence[Path],
               model: dict, kind: str = "exact", nlist: int | None = None, nprobe: int = 16) -> GalleryIndex:
        """Write a new index. ``model`` = ``{"fingerprint", "checkpoint", "arch", "embed_dim"}``."""
        index_kind = INDEX_KINDS.get(kind)
        directory, root = Path(directory), Path(root).resolve()
        check_new_index_dir(directory)
        embeddings = _check_embeddings(embeddings, len(image_paths))
        paths = [Path(p).resolve().relative_to(root).as_posix() for p in image_paths]
        if len(set(paths)) != len(paths):
            raise GalleryIndexError("the same image is listed twice")
        manifest = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "generation": 0, "root": str(root),
                    "kind": kind, "model": dict(model), "dim": int(embeddings.shape[1]), "nprobe": int(nprobe)}
        faiss_index = None
        if not index_kind.exact:
            manifest["nlist"] = int(nlist or default_nlist(len(paths)))
            faiss_index = _build_faiss(index_kind, embeddings, manifest["nlist"])
        index = cls(directory, manifest, embeddings, paths, faiss_index)
        index._save()
        return index

    @classmethod
    def load(cls, directory: str | Path) -> GalleryIndex:
        directory = Path(directory)
        manifest_path = directory / "index.json"
        if not manifest_path.is_file():
            raise GalleryIndexError(f"{directory}: not an index (no index.json); build one with `cpcl index build`")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise GalleryIndexError(f"{manifest_path}: not valid JSON ({exc})") from None
        if manifest.get("format") != INDEX_FORMAT or manifest.get("version") != INDEX_VERSION:
            raise GalleryIndexError(f"{manifest_path}: not a {INDEX_FORMAT} v{INDEX_VERSION} manifest")
        files = _generation_files(directory, manifest["generation"])
        if manifest.get("kind") not in INDEX_KINDS:
            raise GalleryIndexError(f"{manifest_path}: unknown index kind {manifest.get('kind')!r} "
                                    f"(this cpcl knows {', '.join(INDEX_KINDS.names())})")
        exact = INDEX_KINDS.get(manifest["kind"]).exact
        for name, digest in manifest.get("sha256", {}).items():  # indexes written before checksums: unchecked
            if files[name].is_file() and file_digest(files[name]) != digest:
                raise GalleryIndexError(f"{files[name]} is damaged: it no longer matches the checksum index.json "
                                        "recorded when it was written; build the index again with `cpcl index "
                                        "build`")
        try:
            # stored Fortran-ordered, so no copy; an IVF index searches its own codes, and the embeddings are
            # only read (mapped, not loaded) when images are added
            try:
                embeddings = np.asfortranarray(np.load(files["embeddings"], mmap_mode=None if exact else "r"))
            except (ValueError, EOFError) as exc:  # a file cut short: numpy's text names neither file nor index
                raise GalleryIndexError(f"{directory}: {files['embeddings'].name} cannot be read ({exc}): the index "
                                        "is damaged; build it again with `cpcl index build`") from None
            paths = files["paths"].read_text().split("\n")[:-1] if manifest["count"] else []
        except OSError as exc:
            raise GalleryIndexError(f"{directory}: index files missing or unreadable ({exc})") from None
        if len(paths) != manifest["count"] or embeddings.shape != (manifest["count"], manifest["dim"]):
            raise GalleryIndexError(f"{directory}: {len(paths)} paths and {embeddings.shape} embeddings do not "
                                    f"match the manifest's {manifest['count']} x {manifest['dim']}")
        faiss_index = None
        if not exact:
            import faiss

            try:
                faiss_index = faiss.read_index(str(files["faiss"]))
            except RuntimeError as exc:
                raise GalleryIndexError(f"{files['faiss']}: missing or unreadable ({exc})") from None
            if faiss_index.ntotal != manifest["count"]:
                raise GalleryIndexError(f"{files['faiss']}: holds {faiss_index.ntotal} vectors, "
                                        f"the manifest {manifest['count']}")
        return cls(directory, manifest, embeddings, paths, faiss_index)

    def hold(self, image_paths: Sequence[Path]) -> None:
        """Move the root up to the nearest folder that holds ``image_paths`` as well, where some lie outside it
        (a second folder of crops beside the first): every stored path gains the old root's place under the
        new one. Saved with the next :meth:`add`, in the same generation, so an add that fails leaves the index
        as it was."""
        outside, common = self.outside(image_paths)
        if not outside:
            return
        prefix = self.root.relative_to(common)
        log.info("%s: the root moves from %s to %s to hold %s too (stored paths now start with %s/)",
                 self.location, self.root, common, outside[0].parent, prefix.as_posix())
        self.paths = [(prefix / p).as_posix() for p in self.paths]
        self._item_of_path = {p: i for i, p in enumerate(self.paths)}
        self.manifest["root"] = str(common)

    def add(self, embeddings: np.ndarray, image_paths: Sequence[Path]) -> int:
        """Append images not yet indexed (by relative path) and save; returns how many were added."""
        embeddings = _check_embeddings(embeddings, len(image_paths), dim=self.manifest["dim"])
        keep, paths, seen = [], [], set()
        for row, path in enumerate(image_paths):
            rel = self.relative(path)
            if rel not in self._item_of_path and rel not in seen:
                keep.append(row)
                paths.append(rel)
                seen.add(rel)
        if not paths:
            return 0
        new = embeddings[keep]
        self.embeddings = np.asfortranarray(np.concatenate([self.embeddings, new]))
        for rel in paths:
            self._item_of_path[rel] = len(self.paths)
            self.paths.append(rel)
        if self._faiss is not None:
            _faiss_add(self._faiss, new)
        self.manifest["generation"] += 1
        self._save()
        return len(paths)

    def _save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        gen = self.manifest["generation"]
        files = _generation_files(self.directory, gen)
        with open(files["embeddings"], "wb") as f:
            np.save(f, np.asfortranarray(self.embeddings, dtype=np.float32))
            f.flush()
            os.fsync(f.fileno())
        files["paths"].write_text("".join(p + "\n" for p in self.paths))
        if self._faiss is not None:
            import faiss

            faiss.write_index(self._faiss, str(files["faiss"]))
        self.manifest["count"] = len(self.paths)
        # what each file held when written, checked when the index is opened: a damaged file is said, not searched
        self.manifest["sha256"] = {name: file_digest(path) for name, path in files.items() if path.is_file()}
        atomic_write_text(self.directory / "index.json", json.dumps(self.manifest, indent=2) + "\n")
        # only now are the previous generation's files unreferenced
        for stale in self.directory.glob("*.*.*"):
            if stale.name.split(".")[1] != str(gen) and stale.name.split(".")[0] in ("embeddings", "paths", "faiss"):
                stale.unlink()

    # ------------------------------------------------------------------------------------------ use

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``queries`` (Q, D) unit rows -> ``(scores, items)`` each (Q, min(k, N)), best first."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.manifest["dim"]:
            raise GalleryIndexError(f"queries have dimension {queries.shape[1]}, the index {self.manifest['dim']}")
        k = min(int(k), len(self))
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self._faiss is not None:
            self._faiss.nprobe = int(nprobe or self.nprobe)
            scores, items = self._faiss.search(queries, k)
            return scores, items.astype(np.int64)
        return exact_top_k(self.embeddings, queries, k)

    def search_hits(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> list[list[SearchHit]]:
        scores, items = self.search(queries, k, nprobe)
        return [self.hits(s, i) for s, i in zip(scores, items, strict=True)]

    def hits(self, scores: np.ndarray, items: np.ndarray) -> list[SearchHit]:
        """One query's row of :meth:`search` as hits (faiss pads short lists with -1: dropped)."""
        return [SearchHit(rank, int(i), self.paths[i], float(s))
                for rank, (s, i) in enumerate(zip(scores, items, strict=True), 1) if i >= 0]


def open_gallery(index: str | Path, uri: str | None = None) -> GalleryBase:
    """An index directory, or — with ``uri`` — the Milvus collection named ``index`` at ``uri``."""
    if uri is None:
        return GalleryIndex.load(index)
    from cpcl.retrieval.milvus import MilvusGallery

    return MilvusGallery.load(uri, str(index))


def exact_top_k(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product, in gallery chunks: ``(Q, k)`` scores and rows, best first.

    Runs in PyTorch's thread pool, the one the query encoder uses (numpy's OpenBLAS threads keep spinning
    for a while after a product and slow down the next encode). Fastest when ``gallery`` is Fortran-ordered:
    its transpose is then a contiguous ``(D, N)`` matrix and a query scans it row by row.
    """
    import torch

    g = torch.from_numpy(gallery.T)  # (D, N) view
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    best_scores = torch.empty(len(queries), 0)
    best_items = torch.empty(len(queries), 0, dtype=torch.long)
    for start in range(0, g.shape[1], _EXACT_CHUNK):
        block = q @ g[:, start:start + _EXACT_CHUNK]  # (Q, chunk)
        scores, items = torch.topk(block, min(k, block.shape[1]), dim=1)
        best_scores = torch.cat([best_scores, scores], dim=1)
        best_items = torch.cat([best_items, items + start], dim=1)
        if best_scores.shape[1] > k:
            best_scores, keep = torch.topk(best_scores, k, dim=1)
            best_items = torch.gather(best_items, 1, keep)
    return best_scores.numpy(), best_items.numpy()


def _check_embeddings(embeddings: np.ndarray, count: int, dim: int | None = None) -> np.ndarray:
    embeddings = np.asfortranarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) != count:
        raise GalleryIndexError(f"expected ({count}, D) embeddings, got {embeddings.shape}")
    if dim is not None and embeddings.shape[1] != dim:
        raise GalleryIndexError(f"embeddings have dimension {embeddings.shape[1]}, the index {dim}")
    return embeddings


def _generation_files(directory: Path, generation: int) -> dict[str, Path]:
    return {"embeddings": directory / f"embeddings.{generation}.npy", "paths": directory / f"paths.{generation}.txt",
            "faiss": directory / f"faiss.{generation}.index"}
