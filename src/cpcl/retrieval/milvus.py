"""A gallery in Milvus: the same index, searched by the same service, stored in a Milvus collection.

``--backend milvus --uri gallery.db`` is Milvus Lite: an embedded engine in a local file (no server;
the default for laptops). ``--uri http://HOST:19530`` is a Milvus server or cluster, for a gallery that
outgrows one machine: the same code, the same results (the tests run against both: Milvus Lite, and a
Milvus 2.3 standalone server started on this machine). Collections are read with strong consistency: a
search sees every row written before it.

A collection holds one row per image — ``path`` (relative to the gallery root; the primary key),
``item`` (a stable row number) and ``embedding`` (unit float32 vector) — and, in its properties, the
manifest every cpcl index has: the root, the kind and the model that made the embeddings (fingerprint,
checkpoint, arch), which search checks as for a file index. Rows are written with ``upsert`` in chunks (each
flushed to Milvus Lite's file; a server's write-ahead log keeps every acknowledged chunk): an ``add`` killed
mid-way keeps what it wrote, and running it again adds the rest, never a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cpcl.retrieval.index import GalleryBase, GalleryIndexError, SearchHit, default_nlist

MANIFEST_KEY = "cpcl.manifest"
MAX_PATH = 4096
# reads that must see every row written before them (counts, the rows an add skips); a server's default,
# "Bounded", may miss the last seconds' rows. Searches read strongly only after their own writes: see MilvusGallery
CONSISTENCY = "Strong"
# cpcl kind -> (Milvus index type, build parameters for N vectors)
MILVUS_KINDS = {"exact": ("FLAT", lambda n, nlist: {}),
                "ivf": ("IVF_FLAT", lambda n, nlist: {"nlist": nlist or default_nlist(n)}),
                "ivf-sq8": ("IVF_SQ8", lambda n, nlist: {"nlist": nlist or default_nlist(n)})}


class _LiteUnimplemented(logging.Filter):
    """Drops the traceback Milvus Lite's embedded gRPC server logs each time pymilvus probes a method it lacks
    (``AllocTimestamp``): the client falls back by itself, and the call succeeds."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, NotImplementedError) and "not implemented" in str(exc).lower())


_LITE_FILTER = _LiteUnimplemented()


def collection_lock_dir(uri: str, collection: str) -> Path:
    """The folder whose lock (:func:`cpcl.io.exclusive`) holds a collection for one writer on this machine."""
    from cpcl.data.checks import cache_dir

    where = uri if _is_remote(uri) else str(Path(uri).expanduser().resolve())
    return cache_dir() / "locks" / f"milvus-{hashlib.sha256(f'{where}#{collection}'.encode()).hexdigest()[:16]}"


def _is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://", "unix:"))


def connect(uri: str):
    """A client for ``uri`` (a local ``.db`` file: Milvus Lite; ``http(s)://``: a server), or a one-sentence error."""
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise GalleryIndexError("the Milvus backend needs pymilvus (and milvus-lite for a local file): "
                                "pip install 'cpcl[milvus]'") from None
    if not _is_remote(uri):
        path = Path(uri)
        if path.suffix != ".db":
            raise GalleryIndexError(f"--uri {uri}: a Milvus Lite gallery is a file ending in .db (e.g. gallery.db), "
                                    "a Milvus server an http://HOST:19530 address")
        if not path.parent.is_dir():
            raise GalleryIndexError(f"--uri {uri}: the folder {path.parent} does not exist")
        logging.getLogger("grpc._server").addFilter(_LITE_FILTER)  # a set: adding it again is a no-op
    try:
        return MilvusClient(uri=uri, timeout=10)
    except Exception as exc:  # pymilvus raises MilvusException and transport errors alike
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GalleryIndexError(f"cannot reach Milvus at {uri} ({first}); is the server running and the address "
                                "right?") from None


class MilvusGallery(GalleryBase):
    """A gallery index in a Milvus collection; the interface of :class:`~cpcl.retrieval.index.GalleryIndex`."""

    incremental = True  # rows are written as they are encoded (``add`` in chunks)

    def __init__(self, client, uri: str, collection: str, manifest: dict):
        self.client = client
        self.uri = uri
        self.collection = collection
        self.manifest = manifest
        self.nprobe = int(manifest.get("nprobe", 16))
        # a strong read when the gallery is opened: every row written before is visible from then on (a query
        # node's safe time only moves forward), so searches need not wait for the next time tick (~200 ms on a
        # server) each time — unless this gallery writes rows itself (add), after which they read strongly
        self._count = self._row_count()
        self._wrote = False

    @property
    def location(self) -> str:
        return f"Milvus collection {self.collection} at {self.uri}"

    @property
    def remote(self) -> bool:
        """A Milvus server (an address), rather than Milvus Lite (a local file)."""
        return _is_remote(self.uri)

    def __len__(self) -> int:
        return self._count

    # --------------------------------------------------------------------------------- create / load

    @classmethod
    def create(cls, uri: str, collection: str, root: str | Path, model: dict, dim: int, kind: str = "exact",
               nlist: int | None = None, nprobe: int = 16, expected: int = 0, overwrite: bool = False) -> MilvusGallery:
        """An empty collection for embeddings of ``model`` (``{"fingerprint", "checkpoint", "arch",
        "embed_dim"}``); ``expected``: how many images will be added (sizes the inverted lists)."""
        from pymilvus import DataType, MilvusClient

        if kind not in MILVUS_KINDS:
            raise GalleryIndexError(f"index kind {kind!r} has no Milvus form; use one of {', '.join(MILVUS_KINDS)}")
        client = connect(uri)
        if client.has_collection(collection):
            if not overwrite:
                raise GalleryIndexError(f"{uri} already holds a collection {collection}; add to it with `cpcl index "
                                        "add`, choose another --out, or pass --overwrite to replace it")
            client.drop_collection(collection)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH, is_primary=True)
        schema.add_field("item", DataType.INT64)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=int(dim))
        index_type, params = MILVUS_KINDS[kind]
        build = params(max(expected, 1), nlist)
        index_params = client.prepare_index_params()
        index_params.add_index(field_name="embedding", index_type=index_type, metric_type="IP", params=build)
        manifest = {"format": "cpcl-index", "backend": "milvus", "root": str(Path(root).resolve()), "kind": kind,
                    "model": dict(model), "dim": int(dim), "nprobe": int(nprobe), **build}
        client.create_collection(collection, schema=schema, index_params=index_params, consistency_level=CONSISTENCY,
                                 properties={MANIFEST_KEY: json.dumps(manifest)})
        return cls(client, uri, collection, manifest)

    @classmethod
    def load(cls, uri: str, collection: str) -> MilvusGallery:
        client = connect(uri)
        if not client.has_collection(collection):
            known = client.list_collections()
            raise GalleryIndexError(f"{uri} has no collection {collection}" + (
                f" (it has: {', '.join(sorted(known))})" if known else "") + "; build one with `cpcl index build "
                "--backend milvus`")
        properties = client.describe_collection(collection).get("properties", {})
        if MANIFEST_KEY not in properties:
            raise GalleryIndexError(f"collection {collection} at {uri} was not written by cpcl (no {MANIFEST_KEY} "
                                    "property); choose another collection")
        client.load_collection(collection)
        return cls(client, uri, collection, json.loads(properties[MANIFEST_KEY]))

    def _row_count(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"], consistency_level=CONSISTENCY)
        return int(rows[0]["count(*)"])

    # ------------------------------------------------------------------------------------------ use

    def missing(self, relative_paths: Sequence[str], chunk: int = 1000) -> list[str]:
        """The paths of ``relative_paths`` the collection does not hold."""
        present = set()
        for start in range(0, len(relative_paths), chunk):
            rows = self.client.get(self.collection, ids=list(relative_paths[start:start + chunk]),
                                   output_fields=["path"], consistency_level=CONSISTENCY)
            present |= {r["path"] for r in rows}
        return [p for p in relative_paths if p not in present]

    def item_of(self, relative_path: str) -> int | None:
        rows = self.client.get(self.collection, ids=[relative_path], output_fields=["item"],
                               consistency_level=CONSISTENCY)
        return int(rows[0]["item"]) if rows else None

    def path_of(self, item: int) -> str:
        rows = self.client.query(self.collection, filter=f"item == {int(item)}", output_fields=["path"], limit=1,
                                 consistency_level=CONSISTENCY)
        if not rows:
            raise GalleryIndexError(f"{self.location} has no item {item}")
        return rows[0]["path"]

    def add(self, embeddings: np.ndarray, image_paths: Sequence[Path]) -> int:
        """Write the images not held yet (by relative path) -> how many were added; repeated rows are upserts."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape != (len(image_paths), self.manifest["dim"]):
            raise GalleryIndexError(f"expected ({len(image_paths)}, {self.manifest['dim']}) embeddings, "
                                    f"got {embeddings.shape}")
        relative = [self.relative(p) for p in image_paths]
        new = set(self.missing(relative))
        rows, next_item = [], self._next_item()
        for path, vector in zip(relative, embeddings, strict=True):
            if path in new:
                new.discard(path)  # a path listed twice is written once
                rows.append({"path": path, "item": next_item, "embedding": vector})
                next_item += 1
        if rows:
            self.client.upsert(self.collection, rows)
            if not self.remote:  # a server's write-ahead log keeps what it acknowledged; a flush there seals a
                self.client.flush(self.collection)  # segment (~5 s): once a chunk would make many small ones
            self._count += len(rows)  # every row was missing: the acknowledged write added them all
            self._wrote = True
        return len(rows)

    def _next_item(self) -> int:
        if not self._count:
            return 0
        # the largest item so far: rows are few per call and items dense, so look at the top of the range
        rows = self.client.query(self.collection, filter=f"item >= {max(0, self._count - 1)}",
                                 output_fields=["item"], consistency_level=CONSISTENCY)
        return max([int(r["item"]) for r in rows], default=self._count - 1) + 1

    def search_hits(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> list[list[SearchHit]]:
        """``queries`` (Q, D) unit rows -> the top-``k`` hits of each, best first."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.manifest["dim"]:
            raise GalleryIndexError(f"queries have dimension {queries.shape[1]}, the index {self.manifest['dim']}")
        k = min(int(k), len(self))
        if k <= 0:
            return [[] for _ in queries]
        params = {"metric_type": "IP"}
        if self.kind != "exact":
            params["params"] = {"nprobe": int(nprobe or self.nprobe)}
        found = self.client.search(self.collection, data=list(queries), limit=k, output_fields=["path", "item"],
                                   search_params=params,
                                   consistency_level=CONSISTENCY if self._wrote else "Bounded")
        return [[SearchHit(rank, int(hit["entity"]["item"]), hit["entity"]["path"], float(hit["distance"]))
                 for rank, hit in enumerate(row, 1)] for row in found]
