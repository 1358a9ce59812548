"""The Milvus backend next to the FAISS files: build, search latency and recall at 100k and 1M images.

The gallery is the one of ``search_latency.py`` (clustered 512-d unit vectors, seed 0; queries near random
centres). For each size and kind, the same vectors go into the file index (``GalleryIndex.create``) and into
a Milvus collection through ``MilvusGallery.add`` (as `cpcl index build --backend milvus` writes them, in
chunks): Milvus Lite (``lite``, a local file) and a Milvus 2.3 standalone server (``server``: started here
with the ``milvus-server`` extra, on this machine, or the one at ``--server-uri``). Build time runs from the
first write until the collection is loaded for search. Then 200 queries are answered one at a time (top-10,
the embedding given: the query encoder is measured by ``query_encoder.py``). Recall@10 is against exact
search.

On the demo (``--demo-index``, the demo's exact file index of its test gallery): the same gallery built
into Milvus Lite by ``build_index(..., uri=...)`` with the checkpoint that built the file index, every test
caption searched in both, and recall@10 of Milvus' top-10 against the files' (and how often the order
is the same).

    python benchmarks/milvus_search.py --sizes 100000
    python benchmarks/milvus_search.py --sizes 100000 1000000 --backends files server --demo-index '' \
        --name milvus_server

write benchmarks/results/milvus_search.{json,md} and milvus_server.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from report import command, machine, markdown_table, write_results
from search_latency import _gallery, _percentiles

from cpcl.retrieval.index import GalleryIndex, exact_top_k
from cpcl.retrieval.milvus import MilvusGallery

MODEL = {"fingerprint": "bench", "checkpoint": "-", "arch": "ViT-B-16", "embed_dim": 512}


def _timed_search(index, queries: np.ndarray, nprobe: int | None) -> tuple[dict, np.ndarray]:
    latencies, found = [], []
    for i, q in enumerate(np.concatenate([queries[:5], queries])):
        t0 = time.perf_counter()
        hits = index.search_hits(q[None], 10, nprobe=nprobe)[0]
        if i >= 5:  # warm-up excluded
            latencies.append(time.perf_counter() - t0)
            found.append([h.item for h in hits])
    return _percentiles(latencies), np.array(found)


BACKEND_NAMES = {"files": "FAISS files", "lite": "Milvus Lite", "server": "Milvus server"}


def measure(n: int, kinds: list[str], nprobes: list[int], queries: int, chunk: int, backends: list[str],
            server_uri: str = "") -> list[dict]:
    gallery, query_vectors = _gallery(n, 512)
    query_vectors = query_vectors[:queries]
    exact = exact_top_k(np.asfortranarray(gallery), query_vectors, 10)[1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "g"
        paths = [root / f"{i:07d}.png" for i in range(n)]  # names only: nothing is read
        for kind in kinds:
            for backend in backends:
                t0 = time.perf_counter()
                if backend == "files":
                    index = GalleryIndex.create(Path(tmp) / kind, root, gallery, paths, MODEL, kind=kind)
                else:
                    uri = server_uri if backend == "server" else str(Path(tmp) / f"{kind}.db")
                    index = MilvusGallery.create(uri, "bench", root, MODEL, 512, kind=kind, expected=n,
                                                 overwrite=True)
                    for start in range(0, n, chunk):
                        index.add(gallery[start:start + chunk], paths[start:start + chunk])
                    index = MilvusGallery.load(index.uri, "bench")  # as a search process opens it
                build_s = time.perf_counter() - t0
                for nprobe in ([None] if kind == "exact" else nprobes):
                    latency, found = _timed_search(index, query_vectors, nprobe)
                    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)]))
                    rows.append({"size": n, "backend": backend, "kind": kind, "nprobe": nprobe, "build_s": build_s,
                                 "search": latency, "recall_at_10_vs_exact": recall})
                    print(json.dumps(rows[-1]), flush=True)
                if backend != "files":
                    index.client.drop_collection("bench")
                del index
    return rows


def measure_demo(index_dir: Path, annotations: Path) -> dict:
    from cpcl.retrieval.retriever import load_retriever
    from cpcl.retrieval.service import build_index

    files = GalleryIndex.load(index_dir)
    retriever = load_retriever(files.checkpoint)
    captions = [c for r in json.loads(annotations.read_text()) if r.get("split") == "test" for c in r["captions"]]
    queries = retriever.encode_text(captions)
    with tempfile.TemporaryDirectory() as tmp:
        milvus = build_index(retriever, [files.absolute_path(i) for i in range(len(files))], "demo", root=files.root,
                             uri=str(Path(tmp) / "demo.db"))
        a = [[h.path for h in hits] for hits in files.search_hits(queries, 10)]
        b = [[h.path for h in hits] for hits in milvus.search_hits(queries, 10)]
    row = {"gallery": len(files), "queries": len(captions),
           "recall_at_10_vs_files": float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b, strict=True)])),
           "same_order": float(np.mean([x == y for x, y in zip(a, b, strict=True)]))}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--kinds", nargs="+", default=["exact", "ivf-sq8"])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=2048, help="rows per add (the CLI's chunk)")
    parser.add_argument("--backends", nargs="+", default=["files", "lite"], choices=list(BACKEND_NAMES))
    parser.add_argument("--server-uri", default="", help="a running Milvus server (default: start one here)")
    parser.add_argument("--demo-index", default="runs/demo/index", help="the demo's file index ('' to skip)")
    parser.add_argument("--annotations", default="data/synthpedes-demo/reid_raw.json")
    parser.add_argument("--name", default="milvus_search", help="results file stem")
    args = parser.parse_args()
    demo = measure_demo(Path(args.demo_index), Path(args.annotations)) if args.demo_index else None
    server, server_uri = None, args.server_uri
    if "server" in args.backends and not server_uri:
        from milvus_server import MilvusServer

        server = MilvusServer(Path(tempfile.mkdtemp(prefix="milvus-server-")))
        server_uri = server.start()
    try:
        rows = [r for n in args.sizes
                for r in measure(n, args.kinds, args.nprobe, args.queries, args.chunk, args.backends, server_uri)]
    finally:
        if server is not None:
            server.stop()
    table = markdown_table(
        ["gallery", "backend", "kind", "build (s)", "search p50 / p99", "recall@10 vs exact"],
        [[f"{r['size']:,}", BACKEND_NAMES[r["backend"]],
          r["kind"] + (f" (nprobe {r['nprobe']})" if r["nprobe"] else ""), f"{r['build_s']:.1f}",
          f"{r['search']['p50_ms']:.2f} / {r['search']['p99_ms']:.2f} ms", f"{r['recall_at_10_vs_exact']:.3f}"]
         for r in rows])
    demo_line = "" if demo is None else (
        f"On the demo ({demo['gallery']} test images, {demo['queries']} test captions, exact search in both): "
        f"recall@10 of Milvus Lite against the file index {demo['recall_at_10_vs_files']:.3f}, the same top-10 "
        f"order for {100 * demo['same_order']:.1f} % of the queries.\n\n")
    write_results(args.name, {"command": command(), "machine": machine(), "demo": demo, "rows": rows},
                  f"# {' and '.join(BACKEND_NAMES[b] for b in args.backends)}\n\n`{command()}` on {machine()}."
                  f"\n\n{demo_line}"
                  f"{args.queries} queries one at a time, top-10, 512-d clustered unit vectors:\n\n{table}\n")


if __name__ == "__main__":
    main()
