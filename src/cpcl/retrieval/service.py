"""Text search over a gallery index: validation, query encoding and ranking, shared by the CLI and the server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cpcl.errors import CpclError
from cpcl.retrieval.index import (
    GalleryBase,
    GalleryIndex,
    GalleryIndexError,
    SearchHit,
    check_new_index_dir,
    list_images,
    open_gallery,
)
from cpcl.retrieval.retriever import Retriever, load_retriever

if TYPE_CHECKING:
    import torch

MAX_QUERY_CHARS = 500
MAX_K = 100
EXAMPLE_QUERIES = (
    "a man in a black jacket and blue jeans",
    "a woman wearing a red dress and carrying a black bag",
    "a person in a white shirt and grey trousers with a backpack",
    "a woman with long hair in a yellow top and black shorts",
)


class QueryError(CpclError, ValueError):
    """A search request that cannot be answered as asked (empty or over-long query, k out of range)."""


@dataclass
class SearchResult:
    query: str
    hits: list[SearchHit]
    encode_ms: float
    search_ms: float
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"query": self.query, "k": len(self.hits), "hits": [h.as_dict() for h in self.hits],
                "timing_ms": {"encode": round(self.encode_ms, 2), "search": round(self.search_ms, 2)}, **self.extra}


def validate_query(query: str, k: int) -> str:
    if not isinstance(query, str):
        raise QueryError(f"the query must be text (a str), got {type(query).__name__}")
    if not query.strip():
        raise QueryError("the query is empty: describe the person, e.g. 'a man in a grey hoodie'")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8, carried as lone surrogates
        raise QueryError(f"the query {query!r} is not valid UTF-8 text") from None
    if not any(ch.isalnum() for ch in query):  # "...", "!!!", an emoji, a zero-width space: no word to encode
        raise QueryError(f"the query {query!r} has no word (no letter or digit): describe the person, e.g. "
                         "'a man in a grey hoodie'")
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(f"the query has {len(query)} characters; at most {MAX_QUERY_CHARS} are accepted")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise QueryError(f"k must be a whole number between 1 and {MAX_K}, got {k!r}")
    if not 1 <= int(k) <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K}, got {k}")
    return query.strip()


class SearchService:
    """A retriever and the index it built, checked to belong together.

    Safe to call from many threads. Without batching, queries run one at a time on the model and the index
    (each already uses every core; concurrent ones only fight over them). With ``batch_window_ms`` set,
    concurrent queries are encoded and searched together (:class:`~cpcl.retrieval.batching.QueryBatcher`):
    the same answers, several times the throughput under load.
    """

    def __init__(self, retriever: Retriever, index: GalleryBase, batch_window_ms: float | None = None,
                 max_batch: int = 32):
        index.check_model(retriever.fingerprint, retriever.checkpoint)
        self.retriever = retriever
        self.index = index
        self._lock = threading.Lock()
        self._batcher = None
        if batch_window_ms is not None:
            from cpcl.retrieval.batching import QueryBatcher

            self._batcher = QueryBatcher(self._run_batch, window_ms=batch_window_ms, max_batch=max_batch)

    @classmethod
    def open(cls, index: str | Path, checkpoint: str | Path | None = None,
             device: str | torch.device = "cpu", text_encoder: str | Path | None = None, uri: str | None = None,
             **batching) -> SearchService:
        """Open an index (a directory; with ``uri``, a Milvus collection) with the checkpoint that built it (or
        ``checkpoint``, if it is the same model); ``text_encoder``: an ONNX export of that model's text tower to
        encode queries with; ``batching``: ``batch_window_ms`` and ``max_batch`` of :class:`SearchService`."""
        index = open_gallery(index, uri)
        retriever = load_retriever(index.query_checkpoint(checkpoint), device=device, text_encoder=text_encoder)
        return cls(retriever, index, **batching)

    def search(self, query: str, k: int = 10, nprobe: int | None = None) -> SearchResult:
        """One query -> its top ``k``; with batching on, it may be answered together with concurrent ones."""
        query = validate_query(query, k)
        if self._batcher is not None:
            return self._batcher.submit(query, k, nprobe)
        return self._run_batch([query], k, nprobe)[0]

    async def search_async(self, query: str, k: int = 10, nprobe: int | None = None) -> SearchResult:
        """:meth:`search` for an event loop (the server): waits without holding a thread."""
        query = validate_query(query, k)
        if self._batcher is not None:
            return await self._batcher.submit_async(query, k, nprobe)
        return (await asyncio.to_thread(self._run_batch, [query], k, nprobe))[0]

    def search_many(self, queries: Sequence[str], k: int = 10, nprobe: int | None = None) -> list[SearchResult]:
        """Several queries encoded as one batch and searched together -> one result each, in order."""
        checked = []
        for number, query in enumerate(queries, 1):
            try:
                checked.append(validate_query(query, k))
            except QueryError as exc:
                if len(queries) == 1:
                    raise
                raise QueryError(f"query {number} of {len(queries)}: {exc}") from None
        return self._run_batch(checked, k, nprobe)

    def warm_up(self) -> None:
        """Encode and search a batch of each size the server will see first, so that the first users do not pay
        for the one-time set-up of each new batch shape (about 0.2 s on a CPU)."""
        sizes = {1, self._batcher.max_batch} if self._batcher is not None else {1}
        for size in sorted(sizes):
            self._run_batch([EXAMPLE_QUERIES[i % len(EXAMPLE_QUERIES)] for i in range(size)], 10, None)

    def close(self) -> None:
        """Stop the batching thread (queries already queued are answered first)."""
        if self._batcher is not None:
            self._batcher.close()

    def _run_batch(self, queries: Sequence[str], k: int, nprobe: int | None) -> list[SearchResult]:
        with self._lock:
            t0 = time.perf_counter()
            embeddings = self.retriever.encode_text(list(queries))
            t1 = time.perf_counter()
            hits = self.index.search_hits(embeddings, k, nprobe=nprobe)
            t2 = time.perf_counter()
        encode_ms, search_ms = (t1 - t0) * 1e3, (t2 - t1) * 1e3
        return [SearchResult(q, h, encode_ms, search_ms) for q, h in zip(queries, hits, strict=True)]


def model_info(retriever: Retriever) -> dict:
    """What an index records about the model that built it."""
    return {"fingerprint": retriever.fingerprint, "checkpoint": str(retriever.checkpoint),
            "arch": retriever.config.model.arch, "embed_dim": retriever.embed_dim}


def build_index(retriever: Retriever, images: str | Path | Sequence[Path], out: str | Path,
                root: str | Path | None = None, kind: str = "exact", nlist: int | None = None, nprobe: int = 16,
                progress: bool = False, overwrite: bool = False, uri: str | None = None,
                unreadable: list[Path] | None = None) -> GalleryBase:
    """Encode the images :func:`~cpcl.retrieval.index.list_images` finds and write an index to ``out`` (which
    must not hold one, unless ``overwrite``); with ``uri``, ``out`` is a Milvus collection there, filled
    chunk by chunk as the images are encoded.

    An image file that cannot be read stops the build, naming it, before anything is written; with
    ``unreadable`` (a list), such files are left out of the index and appended to it."""
    root, paths = list_images(images, root)
    if kind != "exact" and nlist is not None and nlist > len(paths):
        raise GalleryIndexError(f"--nlist {nlist}: an {kind} index trains its {nlist} lists on the images, and "
                                f"{len(paths)} were found under {root}; choose --nlist {len(paths)} or fewer (or leave "
                                "it out for a size that fits), or --kind exact")
    if uri is not None:
        from cpcl.retrieval.milvus import MilvusGallery

        gallery = MilvusGallery.create(uri, str(out), root, model_info(retriever), retriever.embed_dim, kind=kind,
                                       nlist=nlist, nprobe=nprobe, expected=len(paths), overwrite=overwrite)
        add_images(retriever, gallery, paths, progress=progress, unreadable=unreadable)
        return gallery
    check_new_index_dir(out, overwrite)  # fail before encoding, not after
    embeddings, paths = _encode_readable(retriever, paths, progress, unreadable)
    if not paths:
        raise GalleryIndexError(f"none of the images under {root} could be read: nothing to index")
    return GalleryIndex.create(out, root, embeddings, paths, model_info(retriever), kind=kind, nlist=nlist,
                               nprobe=nprobe)


def _encode_readable(retriever: Retriever, paths: list[Path], progress: bool,
                     unreadable: list[Path] | None) -> tuple[np.ndarray, list[Path]]:
    """The embeddings of ``paths`` and the paths they belong to: without ``unreadable``, all of them (a file
    that cannot be read raises); with it, those that could be read, the others appended to it."""
    if unreadable is None:
        return retriever.encode_images(paths, progress=progress), paths
    failed: list[int] = []
    embeddings = retriever.encode_images(paths, progress=progress, unreadable=failed)
    unreadable.extend(paths[i] for i in failed)
    skip = set(failed)
    return embeddings, [p for i, p in enumerate(paths) if i not in skip]


ADD_CHUNK = 2048  # images encoded and written at a time to an incremental (Milvus) index


def add_images(retriever: Retriever, index: GalleryBase, images: str | Path | Sequence[Path],
               progress: bool = False, chunk: int = ADD_CHUNK,
               unreadable: list[Path] | None = None) -> tuple[int, int]:
    """Encode and append the images of a folder or list that the index does not hold yet -> (added, already
    indexed).

    An incremental index (Milvus) is written ``chunk`` images at a time: an add killed mid-way keeps the
    chunks it finished, and running it again encodes only the rest. Images outside the index root (another
    folder) move a file index's root up to the folder that holds both (:meth:`GalleryIndex.hold`). An image
    file that cannot be read stops the add, naming it (a file index is then unchanged); with ``unreadable``
    (a list), such files are left out and appended to it (a later add tries them again)."""
    index.check_model(retriever.fingerprint, retriever.checkpoint)
    _, paths = list_images(images)
    index.hold(paths)  # a folder beside the first: a file index moves its root up to hold both
    by_relative = {index.relative(p): p for p in paths}
    new = [by_relative[r] for r in index.missing(list(by_relative))]
    step = chunk if index.incremental else max(len(new), 1)
    added = 0
    for start in range(0, len(new), step):
        embeddings, part = _encode_readable(retriever, new[start:start + step], progress, unreadable)
        if part:
            added += index.add(embeddings, part)
    return added, len(paths) - len(new)
