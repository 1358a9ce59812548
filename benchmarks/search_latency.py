"""Search latency, index build throughput and index memory at 10k / 100k / 1M gallery images.

For each gallery size, in a fresh process:
- gallery embeddings: clustered unit vectors of dimension 512 (ViT-B/16's), about three per centre, like a
  person's images; queries are new points near random centres, so that approximate search has real
  neighbours to find;
- build: ``GalleryIndex.create`` from the embeddings (training of the IVF quantiser, adding, writing to
  disk) -> vectors/s;
- load + search: the index is loaded from disk (resident memory before/after = its memory) and each query
  is answered as `cpcl serve` does: a real caption encoded by the ViT-B/16 text tower (random weights: the
  same compute as trained ones), then top-10. Latency = encode + search, one query at a time;
- recall@10 of the approximate kinds against the exact top-10.

Image encoding, the real cost of `cpcl index build` on crops, is measured separately (`encode` rows): the
demo's small model at 128x64 and ViT-B/16 at 384x128, on the CPU, decoding PNG crops from disk.

    python benchmarks/search_latency.py --sizes 10000 100000 1000000

writes benchmarks/results/search_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import command, machine, markdown_table, write_results

CAPTIONS = [
    "a man in a black jacket and blue jeans",
    "a woman wearing a red dress and carrying a black bag",
    "The woman has long brown hair and wears a white blouse, a grey pleated skirt and black heels.",
    "young man, navy hoodie, khaki shorts, white sneakers, a red backpack over one shoulder",
    "a person in a yellow raincoat holding an umbrella",
    "He is wearing a striped shirt with short sleeves, dark trousers and brown shoes. He carries a laptop bag.",
    "girl with a ponytail, pink t-shirt, denim shorts",
    "an older man with grey hair in a long beige coat and black trousers walking with a cane",
]


def _gallery(n: int, dim: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 3), dim)).astype(np.float32)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):  # in blocks: no (n, dim) float64 temporaries
        m = min(100_000, n - start)
        block = centres[rng.integers(0, len(centres), m)] + 0.6 * rng.normal(size=(m, dim)).astype(np.float32)
        x[start:start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    q = centres[rng.integers(0, len(centres), 500)] + 0.6 * rng.normal(size=(500, dim)).astype(np.float32)
    return x, q / np.linalg.norm(q, axis=1, keepdims=True)


def _percentiles(values) -> dict:
    import numpy as np

    v = np.asarray(values) * 1e3
    return {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)), "mean_ms": float(v.mean())}


TEXT_MODELS = {"ViT-B-16": ("ViT-B-16", (384, 128), None), "small": ("cpcl-vit-tiny", (128, 64), "cpcl:synthclip-tiny")}


def _text_encoder(name: str):
    from cpcl.model.backbone import build_clip, build_tokenizer
    from cpcl.model.retrieval_model import RetrievalModel

    arch, size, weights = TEXT_MODELS[name]
    model = RetrievalModel(build_clip(arch, size, weights)).eval()
    return model, build_tokenizer(arch, 77)


def measure_size(n: int, text_model: str, kinds: list[str], queries: int, nprobes: list[int]) -> list[dict]:
    """Runs inside the child process."""
    import numpy as np
    import torch

    from cpcl.retrieval.index import GalleryIndex

    model, tokenizer = _text_encoder(text_model)
    dim = model.embed_dim
    gallery, query_vectors = _gallery(n, dim)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / "g" / f"{i:07d}.png" for i in range(n)]  # names only: nothing is read
        exact_top = None
        for kind in kinds:
            out = Path(tmp) / kind
            t0 = time.perf_counter()
            GalleryIndex.create(out, Path(tmp) / "g", gallery, paths, {"fingerprint": "bench", "checkpoint": "-",
                                "arch": text_model, "embed_dim": dim}, kind=kind)
            build_s = time.perf_counter() - t0
            disk_mb = sum(f.stat().st_size for f in out.iterdir()) / 2**20
            index = GalleryIndex.load(out)
            if kind == "exact":
                index_mb = index.embeddings.nbytes / 2**20
            else:  # what the FAISS index holds (codes, ids, centroids); the embeddings are not read to search
                import faiss

                index.embeddings = None
                index_mb = faiss.serialize_index(index._faiss).nbytes / 2**20
            for nprobe in ([None] if kind == "exact" else nprobes):
                enc, srch, total, found = [], [], [], []
                with torch.inference_mode():
                    for i in range(queries + 5):
                        caption = CAPTIONS[i % len(CAPTIONS)]
                        t0 = time.perf_counter()
                        model.encode_text(tokenizer([caption]))
                        t1 = time.perf_counter()
                        _, items = index.search(query_vectors[i % len(query_vectors)][None], 10, nprobe=nprobe)
                        t2 = time.perf_counter()
                        if i >= 5:  # warm-up excluded
                            enc.append(t1 - t0)
                            srch.append(t2 - t1)
                            total.append(t2 - t0)
                            found.append(items[0])
                found = np.stack(found)
                if kind == "exact":
                    exact_top = found
                recall = (None if exact_top is None else float(np.mean(
                    [len(set(a) & set(b)) / 10 for a, b in zip(found, exact_top, strict=True)])))
                rows.append({"size": n, "text_model": text_model, "dim": dim, "kind": kind,
                             "nlist": index.manifest.get("nlist"), "nprobe": nprobe, "build_s": build_s,
                             "build_vectors_per_s": n / build_s, "disk_mb": disk_mb, "index_rss_mb": index_mb,
                             "search": _percentiles(srch), "encode": _percentiles(enc),
                             "total": _percentiles(total), "recall_at_10_vs_exact": recall})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            del index
    return rows


def measure_encode(images: int) -> list[dict]:
    """Image encoding throughput of `cpcl index build` (decode + transform + forward), in the child."""
    import numpy as np
    import torch
    from PIL import Image

    from cpcl.config import config_from_dict
    from cpcl.model.checkpoint import build_model
    from cpcl.model.preprocess import Preprocess
    from cpcl.retrieval.retriever import Retriever

    rows = []
    for arch, size, weights, count in (("cpcl-vit-tiny", (128, 64), "cpcl:synthclip-tiny", images),
                                       ("ViT-B-16", (384, 128), None, min(images, 64))):
        config = config_from_dict({"model": {"arch": arch, "image_size": list(size), "pretrained": weights}})
        model = build_model(config.model)
        retriever = Retriever(model, None, Preprocess.of(config.model), config, device=torch.device("cpu"),
                              batch_size=64, num_workers=2)
        with tempfile.TemporaryDirectory() as tmp:
            rng = np.random.default_rng(0)
            paths = []
            for i in range(count):
                p = Path(tmp) / f"{i}.png"
                Image.fromarray(rng.integers(0, 255, (size[0], size[1], 3), dtype=np.uint8)).save(p)
                paths.append(p)
            retriever.encode_images(paths[:8])  # warm-up
            t0 = time.perf_counter()
            retriever.encode_images(paths)
            wall = time.perf_counter() - t0
        rows.append({"arch": arch, "image_size": list(size), "images": count, "seconds": wall,
                     "images_per_s": count / wall})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def measure_real(checkpoint: str, ids: int, nprobes: list[int], queries: int = 1000) -> list[dict]:
    """Recall@10 of the IVF kinds against exact search on real embeddings: a SynthPedes gallery the
    checkpoint has not seen (another seed and domain), queried by its own captions. In the child."""
    import numpy as np

    from cpcl.data.formats import load_annotations
    from cpcl.data.synth import generate_synthpedes
    from cpcl.retrieval.index import GalleryIndex
    from cpcl.retrieval.retriever import load_retriever

    root = Path("runs/bench-search-gallery")
    if not (root / "reid_raw.json").is_file():
        generate_synthpedes(root, num_ids=ids, seed=7, domain="indoor", val_ids=0, test_ids=0, montage=False)
    records = load_annotations("cuhk-pedes", root).records
    retriever = load_retriever(checkpoint, batch_size=256, num_workers=2)
    gallery = retriever.encode_images([r.image_path for r in records])
    captions = [c for r in records for c in r.captions]
    picked = np.random.default_rng(0).choice(len(captions), min(queries, len(captions)), replace=False)
    q = retriever.encode_text([captions[i] for i in picked])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = [r.image_path for r in records]
        model = {"fingerprint": "bench", "checkpoint": checkpoint, "arch": "-", "embed_dim": gallery.shape[1]}
        exact = GalleryIndex.create(Path(tmp) / "exact", root, gallery, paths, model).search(q, 10)[1]
        for kind in ("ivf", "ivf-sq8"):
            index = GalleryIndex.create(Path(tmp) / kind, root, gallery, paths, model, kind=kind)
            for nprobe in nprobes:
                found = index.search(q, 10, nprobe=nprobe)[1]
                recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)]))
                rows.append({"gallery": len(paths), "dim": int(gallery.shape[1]), "kind": kind,
                             "nlist": index.manifest["nlist"], "nprobe": nprobe, "queries": len(q),
                             "recall_at_10_vs_exact": recall})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _child(args: list[str]) -> list[dict]:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    sys.stderr.write(proc.stderr)
    if proc.returncode:
        raise SystemExit(f"child {args} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(results: dict) -> str:
    search = markdown_table(
        ["text model", "gallery", "kind", "build (vectors/s)", "disk", "index in memory", "encode p50",
         "search p50 / p99", "**encode + search p50 / p99**", "recall@10 vs exact"],
        [[f"{r['text_model']} ({r['dim']}-d)", f"{r['size']:,}",
          r["kind"] + (f" (nlist {r['nlist']}, nprobe {r['nprobe']})" if r["nlist"] else ""),
          f"{r['build_vectors_per_s']:,.0f} ({r['build_s']:.1f} s)", f"{r['disk_mb']:.0f} MB",
          f"{r['index_rss_mb']:.0f} MB", f"{r['encode']['p50_ms']:.1f} ms",
          f"{r['search']['p50_ms']:.2f} / {r['search']['p99_ms']:.2f} ms",
          f"**{r['total']['p50_ms']:.1f} / {r['total']['p99_ms']:.1f} ms**",
          "exact" if r["kind"] == "exact" else f"{r['recall_at_10_vs_exact']:.3f}"] for r in results["search"]])
    real = markdown_table(["gallery", "kind", "nlist", "nprobe", "recall@10"],
                          [[f"{r['gallery']:,} x {r['dim']}-d", r["kind"], r["nlist"], r["nprobe"],
                            f"{r['recall_at_10_vs_exact']:.3f}"] for r in results["real"]])
    encode = markdown_table(["image encoding (`cpcl index build`)", "input", "images", "images/s"],
                            [[r["arch"], f"{r['image_size'][0]}x{r['image_size'][1]} PNG", r["images"],
                              f"{r['images_per_s']:.1f}"] for r in results["encode"]])
    return (f"{search}\n\nRecall@10 against exact search on real embeddings (the demo's CPCL model on an unseen "
            f"SynthPedes gallery, queried by its captions):\n\n{real}\n\n{encode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=["exact", "ivf", "ivf-sq8"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64], help="probes tried on ivf kinds")
    parser.add_argument("--text-models", nargs="+", default=list(TEXT_MODELS), choices=list(TEXT_MODELS))
    parser.add_argument("--encode-images", type=int, default=512)
    parser.add_argument("--checkpoint", default="runs/demo/synthpedes_cpcl/best.pt",
                        help="model for the real-embedding recall (the demo's CPCL model)")
    parser.add_argument("--real-ids", type=int, default=3000, help="identities of that real-embedding gallery")
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child is not None:
        what, *rest = args.child
        if what == "size":
            n, model, queries, nprobes, *kinds = rest
            rows = measure_size(int(n), model, kinds, int(queries), [int(p) for p in nprobes.split(",")])
        elif what == "real":
            rows = measure_real(rest[0], int(rest[1]), [int(p) for p in rest[2].split(",")])
        else:
            rows = measure_encode(int(rest[0]))
        print(json.dumps(rows))
        return
    results = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                           "python": platform.python_version()}, "queries": args.queries,
               "search": [], "encode": _child(["encode", str(args.encode_images)]),
               "real": _child(["real", args.checkpoint, str(args.real_ids), ",".join(map(str, args.nprobe))])}
    for model in args.text_models:
        for n in args.sizes:
            results["search"] += _child(["size", str(n), model, str(args.queries),
                                         ",".join(map(str, args.nprobe)), *args.kinds])
    write_results("search_latency", results,
                  f"# Search latency and index build\n\n{machine()}, {args.queries} queries one at a time, "
                  f"`{command()}`. Encode = the text tower on one caption (ViT-B/16, 512-d, random weights; or the "
                  "demo's small model, 256-d); search = top-10 in a gallery of that dimension. Target: 1M gallery "
                  "p50 <= 50 ms.\n\n" + _table(results))


if __name__ == "__main__":
    main()
